//! Delivery metrics (DORA's change failure rate and time to restore), counted by the leader.
//!
//! - A **change** is a release of a protected target: a ReplicaSet of its Deployment first
//!   seen by this leader and created while it leads (a new pod template rolled out; a rollback
//!   re-uses an old ReplicaSet, so the operator's own rollbacks are not changes).
//! - A **change failure** is a change that needed a remediation: a VersionRollback that rolled
//!   back that release and whose verification passed (`Succeeded`), drills excluded.
//! - **Time to restore** is from the bad release's creation to that verified remediation.
//!
//! Each process counts what happened while it led (a new leader does not count history
//! again), so `sum(rate(frys_rollback_change_failures_total)) / sum(rate(frys_rollback_changes_total))`
//! over the replicas is the rate. Pure bookkeeping: what to count, given what was seen.

use std::collections::{BTreeSet, VecDeque};

use jiff::Timestamp;

/// Entries remembered per kind before the oldest are forgotten: far more than the releases
/// and remediations one leader term sees in a window that could repeat them.
const REMEMBERED: usize = 16_384;

/// A set that forgets its oldest entries beyond [`REMEMBERED`].
#[derive(Debug, Default)]
struct Seen {
    set: BTreeSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True the first time `key` is inserted.
    fn insert(&mut self, key: &str) -> bool {
        if !self.set.insert(key.to_owned()) {
            return false;
        }
        self.order.push_back(key.to_owned());
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// What has been counted, since when.
#[derive(Debug, Default)]
pub struct Delivery {
    /// When counting began (the first observation of this leader).
    since: Option<Timestamp>,
    releases: Seen,
    restores: Seen,
}

impl Delivery {
    fn since(&mut self, now: Timestamp) -> Timestamp {
        *self.since.get_or_insert(now)
    }

    /// A ReplicaSet (by uid) created at `created`, seen at `now`: whether it is a new change.
    pub fn release(&mut self, uid: &str, created: Timestamp, now: Timestamp) -> bool {
        let since = self.since(now);
        // creationTimestamp has second precision: compare whole seconds.
        created.as_second() >= since.as_second() && self.releases.insert(uid)
    }

    /// A succeeded VersionRollback (by event uid) of a release created at `released` (when
    /// known), completed at `completed`: None when it is not a new failure, else the time to
    /// restore in seconds (None inside when the release time is unknown).
    pub fn restore(
        &mut self,
        event_uid: &str,
        completed: Timestamp,
        released: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Option<f64>> {
        let since = self.since(now);
        if completed < since || !self.restores.insert(event_uid) {
            return None;
        }
        Some(released.map(|r| completed.duration_since(r).as_secs_f64().max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-12-01T{s}Z").parse().unwrap()
    }

    #[test]
    fn a_release_counts_once_and_only_if_made_while_leading() {
        let mut d = Delivery::default();
        // The first observation starts the count: a release older than it is history.
        assert!(!d.release("rs-old", t("09:00:00"), t("10:00:00")));
        assert!(d.release("rs-new", t("10:05:00"), t("10:05:01")));
        assert!(
            !d.release("rs-new", t("10:05:00"), t("10:05:30")),
            "seen again"
        );
        assert!(d.release("rs-next", t("10:10:00"), t("10:10:01")));
        // creationTimestamp is truncated to the second: one made in the second counting began
        // (after the first look at 10:00:00.4) counts.
        let mut d = Delivery::default();
        let first_look: Timestamp = "2026-12-01T10:00:00.400Z".parse().unwrap();
        assert!(d.release("rs-v2", t("10:00:00"), first_look));
        assert!(!d.release("rs-v0", t("09:59:59"), first_look));
    }

    #[test]
    fn a_verified_remediation_counts_one_failure_with_its_time_to_restore() {
        let mut d = Delivery::default();
        d.release("rs", t("10:00:00"), t("10:00:00"));
        assert_eq!(
            d.restore("ev1", t("10:02:30"), Some(t("10:00:00")), t("10:02:31")),
            Some(Some(150.0))
        );
        assert_eq!(
            d.restore("ev9", t("11:02:30"), Some(t("10:00:00")), t("11:02:31")),
            Some(Some(3750.0)),
            "minutes and hours, not a span component"
        );
        assert_eq!(
            d.restore("ev1", t("10:02:30"), Some(t("10:00:00")), t("10:03:00")),
            None,
            "counted once"
        );
        assert_eq!(
            d.restore("ev2", t("10:09:00"), None, t("10:09:01")),
            Some(None)
        );
        // Completed before this leader counted: the previous leader's.
        assert_eq!(d.restore("ev0", t("09:59:00"), None, t("10:09:02")), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = Seen::default();
        for i in 0..REMEMBERED + 10 {
            assert!(s.insert(&i.to_string()));
        }
        assert_eq!(s.set.len(), REMEMBERED);
        assert!(s.insert("0"), "the oldest was forgotten");
    }
}
