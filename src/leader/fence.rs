//! The fence: a cheap, cloneable view of this process's leadership that every write checks.
//!
//! A term of leadership has an end: the instant the lease could pass to another replica,
//! counted on this process's own monotonic clock from the moment it *sent* its last successful
//! renewal, minus a safety margin. A partitioned leader that has not heard it lost the lease
//! still stops at that instant: its fence closes by the clock, with no news from the API server.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Where this process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// Standing by: another replica holds the lease, or none was won yet.
    Follower,
    /// Holds the lease and may act until `until`.
    Leader { until: Instant },
    /// Lost or released the lease; a process never leads again after that (it exits).
    Ended,
    /// Leader election is off (`--leader-election=false`): always allowed to act.
    Unfenced,
}

impl Term {
    /// True when a write may go out at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        match self {
            Term::Leader { until } => now < *until,
            Term::Unfenced => true,
            Term::Follower | Term::Ended => false,
        }
    }
}

/// The part of the lease kept back: a write checked just before the term's end still has to
/// travel to the API server, and clocks of two machines do not tick at exactly the same rate.
pub fn safety_margin(lease: Duration) -> Duration {
    lease / 3
}

/// The end of a term won or renewed by a request sent at `sent`: another replica takes over
/// only once it has seen the lease unrenewed for a whole `lease` duration, and it cannot have
/// seen our renewal before we sent it.
pub fn term_end(sent: Instant, lease: Duration) -> Instant {
    sent + lease - safety_margin(lease)
}

/// A write refused because this process is not, or no longer, the leader.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "not the leader: the lease expired or passed to another replica, so this process does not act"
)]
pub struct NotLeader;

/// Leadership as the writers see it. Clones share one elector.
#[derive(Clone, Debug)]
pub struct Fence {
    term: watch::Receiver<Term>,
}

impl Fence {
    /// A fence for a process without leader election: always open.
    pub fn unfenced() -> Self {
        let (_, term) = watch::channel(Term::Unfenced);
        Self { term }
    }

    pub(super) fn new(term: watch::Receiver<Term>) -> Self {
        Self { term }
    }

    /// True while this process may write.
    pub fn is_leader(&self) -> bool {
        self.term.borrow().holds(Instant::now())
    }

    /// `Ok` while this process may write; call it right before each write that acts.
    pub fn check(&self) -> Result<(), NotLeader> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(NotLeader)
        }
    }

    /// Completes once this process leads (at once when unfenced); `Err` when the elector
    /// stopped before that.
    pub async fn acquired(&self) -> Result<(), NotLeader> {
        let mut term = self.term.clone();
        loop {
            match *term.borrow_and_update() {
                Term::Leader { .. } | Term::Unfenced => return Ok(()),
                Term::Ended => return Err(NotLeader),
                Term::Follower => {}
            }
            if term.changed().await.is_err() {
                return Err(NotLeader);
            }
        }
    }

    /// Completes when a term that was won ends: the elector says so, or the term's end passes
    /// without a renewal. Never completes when unfenced.
    pub async fn lost(&self) {
        let mut term = self.term.clone();
        loop {
            let current = *term.borrow_and_update();
            match current {
                Term::Unfenced => return std::future::pending().await,
                Term::Leader { until } if Instant::now() < until => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until.into()) => {}
                        changed = term.changed() => if changed.is_err() { return },
                    }
                }
                Term::Leader { .. } | Term::Follower | Term::Ended => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_leader_holds_until_the_term_end_and_not_at_it() {
        let sent = Instant::now();
        let end = term_end(sent, LEASE);
        assert_eq!(
            end - sent,
            Duration::from_secs(10),
            "15 s lease, 5 s margin"
        );
        let term = Term::Leader { until: end };
        assert!(term.holds(sent));
        assert!(term.holds(end - Duration::from_millis(1)));
        assert!(!term.holds(end), "the end itself is outside the term");
        assert!(!term.holds(end + Duration::from_secs(60)));
    }

    #[test]
    fn the_term_ends_before_another_replica_may_take_the_lease() {
        // Another replica saw our renewal no earlier than we sent it, and waits a whole lease.
        for lease in [1, 3, 15, 60].map(Duration::from_secs) {
            let sent = Instant::now();
            let earliest_takeover = sent + lease;
            let end = term_end(sent, lease);
            assert!(end < earliest_takeover, "{lease:?}");
            assert_eq!(earliest_takeover - end, safety_margin(lease), "{lease:?}");
        }
    }

    #[test]
    fn followers_and_ended_terms_never_hold_unfenced_always_does() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        for at in [now, later] {
            assert!(!Term::Follower.holds(at));
            assert!(!Term::Ended.holds(at));
            assert!(Term::Unfenced.holds(at));
        }
    }

    #[test]
    fn the_fence_follows_its_elector() {
        let (tx, rx) = watch::channel(Term::Follower);
        let fence = Fence::new(rx);
        assert!(fence.check().is_err());
        tx.send(Term::Leader {
            until: Instant::now() + Duration::from_secs(60),
        })
        .unwrap();
        assert!(fence.check().is_ok());
        // A term whose end passed closes the fence without any word from the elector.
        tx.send(Term::Leader {
            until: Instant::now() - Duration::from_millis(1),
        })
        .unwrap();
        assert!(fence.check().is_err());
        tx.send(Term::Ended).unwrap();
        assert!(!fence.is_leader());
        assert!(Fence::unfenced().check().is_ok());
    }

    #[tokio::test]
    async fn lost_completes_when_an_unrenewed_term_runs_out() {
        let (tx, rx) = watch::channel(Term::Leader {
            until: Instant::now() + Duration::from_millis(50),
        });
        let fence = Fence::new(rx);
        fence.acquired().await.unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), fence.lost())
            .await
            .expect("the term ran out");
        assert!(started.elapsed() >= Duration::from_millis(40));
        drop(tx);
        // Unfenced never loses.
        let never = tokio::time::timeout(Duration::from_millis(50), Fence::unfenced().lost()).await;
        assert!(never.is_err());
    }
}
