//! The Lease record, pure: whether this replica may take or keep the lease, and what it writes.
//!
//! As client-go's leader election: a lease held by another replica counts as expired once this
//! replica has seen the same record for a whole lease duration by its *own* clock (the holder's
//! `renewTime` is never compared with local time, so clock skew between nodes does not matter).
//! Every write carries the resourceVersion that was read, so two replicas cannot both win.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::{api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime};

/// What to do with the lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ours: renew it.
    Renew,
    /// Free, released or expired: take it.
    Take,
    /// Another replica holds it and renewed it recently enough.
    Wait { holder: String },
}

/// The record as last read, and when (by this replica's clock) it last changed.
#[derive(Clone, Debug)]
pub struct Observed {
    pub spec: LeaseSpec,
    pub since: Instant,
}

impl Observed {
    /// Records a fresh read at `now`; the clock restarts only when the record changed.
    pub fn update(previous: Option<Observed>, spec: LeaseSpec, now: Instant) -> Observed {
        match previous {
            Some(p) if p.spec == spec => p,
            _ => Observed { spec, since: now },
        }
    }
}

/// The holder of a record, if any (an empty identity is a released lease).
pub fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Decides from the record as observed.
pub fn decide(observed: &Observed, me: &str, now: Instant) -> Decision {
    match holder(&observed.spec) {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Take,
        Some(h) => {
            let seconds = observed.spec.lease_duration_seconds.unwrap_or(0).max(0);
            let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
            if now >= observed.since + duration {
                Decision::Take
            } else {
                Decision::Wait {
                    holder: h.to_owned(),
                }
            }
        }
    }
}

/// Whole seconds of the record, rounded up so the record never promises less than we keep.
pub fn lease_seconds(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs() + u64::from(lease.subsec_nanos() > 0))
        .unwrap_or(i32::MAX)
        .max(1)
}

/// The record this replica writes to take (`current` is what it replaces, if any) or renew the
/// lease at `now`.
pub fn claimed(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    lease: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
    let renewing = *decision == Decision::Renew;
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(lease_seconds(lease)),
        acquire_time: if renewing {
            current.and_then(|c| c.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        // Counts changes of holder; the first holder of a new lease is not a change.
        lease_transitions: Some(match current.and_then(holder) {
            Some(h) if h != me => transitions + 1,
            _ => transitions,
        }),
        ..LeaseSpec::default()
    }
}

/// The record a leader writes when it stops (SIGTERM): no holder and a 1 s duration, so a
/// follower takes over at its next try instead of waiting out the lease.
pub fn released(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: current.lease_transitions,
        ..LeaseSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn another_holder_is_waited_for_a_whole_lease_by_the_local_clock() {
        let t0 = Instant::now();
        let observed = Observed::update(None, held_by("b", 3), t0);
        let wait = Decision::Wait { holder: "b".into() };
        assert_eq!(decide(&observed, "a", t0), wait);
        assert_eq!(
            decide(&observed, "a", t0 + Duration::from_millis(2999)),
            wait
        );
        assert_eq!(
            decide(&observed, "a", t0 + Duration::from_secs(3)),
            Decision::Take
        );
    }

    #[test]
    fn a_renewal_seen_restarts_the_clock_an_unchanged_record_does_not() {
        let t0 = Instant::now();
        let first = held_by("b", 3);
        let observed = Observed::update(None, first.clone(), t0);
        let later = t0 + Duration::from_secs(2);
        let same = Observed::update(Some(observed.clone()), first, later);
        assert_eq!(same.since, t0);
        let mut renewed = held_by("b", 3);
        renewed.renew_time = Some(MicroTime(
            Timestamp::now() + jiff::SignedDuration::from_secs(1),
        ));
        let fresh = Observed::update(Some(observed), renewed, later);
        assert_eq!(fresh.since, later);
        assert_eq!(
            decide(&fresh, "a", t0 + Duration::from_secs(4)),
            Decision::Wait { holder: "b".into() },
            "renewed at t0+2s, so held until t0+5s"
        );
    }

    #[test]
    fn own_free_and_released_leases() {
        let now = Instant::now();
        let mine = Observed::update(None, held_by("a", 15), now);
        assert_eq!(decide(&mine, "a", now), Decision::Renew);
        let empty = Observed::update(None, LeaseSpec::default(), now);
        assert_eq!(decide(&empty, "a", now), Decision::Take);
        let released = Observed::update(None, released(&held_by("b", 15), Timestamp::now()), now);
        assert_eq!(decide(&released, "a", now), Decision::Take);
    }

    #[test]
    fn taking_counts_a_transition_renewing_keeps_the_acquire_time() {
        let now = Timestamp::now();
        let lease = Duration::from_millis(2500);
        let theirs = held_by("b", 3);
        let taken = claimed(Some(&theirs), &Decision::Take, "a", lease, now);
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_duration_seconds, Some(3), "rounded up");
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));

        let later = now + jiff::SignedDuration::from_secs(2);
        let renewed = claimed(Some(&taken), &Decision::Renew, "a", lease, later);
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(5));

        let fresh = claimed(None, &Decision::Take, "a", lease, now);
        assert_eq!(
            fresh.lease_transitions,
            Some(0),
            "a new lease's first holder"
        );
    }

    #[test]
    fn lease_seconds_round_up_and_never_reach_zero() {
        assert_eq!(lease_seconds(Duration::from_secs(15)), 15);
        assert_eq!(lease_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(10)), 1);
    }
}
