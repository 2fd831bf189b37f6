//! Pure rollout bookkeeping: Deployment and ReplicaSet status, conditions, ready delays.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Deployment annotation overriding `--ready-delay` for its pods, e.g. `500ms`.
pub const READY_DELAY_ANNOTATION: &str = "sim.frys.io/ready-delay";

/// Parses durations such as `2s`, `500ms`, `1m30s` or ISO 8601 `PT2S`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("negative duration {s:?}"))
}

/// Pod counts of one Deployment, taken after this pass's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutCounts {
    pub desired: i32,
    /// Live pods of every ReplicaSet of the Deployment.
    pub total: i32,
    /// Live pods of the current ReplicaSet.
    pub updated: i32,
    pub ready: i32,
    pub updated_ready: i32,
}

impl RolloutCounts {
    /// The rollout is finished: only current pods, all of them ready.
    pub fn complete(&self) -> bool {
        self.updated == self.desired
            && self.total == self.desired
            && self.updated_ready == self.desired
    }
}

/// A condition as computed now, before merging with the stored one.
struct Cond {
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

/// Deployment status for `counts`; times of unchanged conditions and conditions of other types
/// are kept from `prev`, so an unchanged rollout yields a status equal to `prev`.
pub fn deployment_status(
    prev: Option<&DeploymentStatus>,
    generation: Option<i64>,
    counts: RolloutCounts,
    new_rs: &str,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    // Availability ignores maxUnavailable: the simulator scales in one step (see controller.rs).
    let available = counts.ready;
    let available_cond = if available >= counts.desired {
        Cond {
            type_: "Available",
            status: "True",
            reason: "MinimumReplicasAvailable",
            message: "Deployment has minimum availability.".into(),
        }
    } else {
        Cond {
            type_: "Available",
            status: "False",
            reason: "MinimumReplicasUnavailable",
            message: "Deployment does not have minimum availability.".into(),
        }
    };
    let progressing_cond = if counts.complete() {
        Cond {
            type_: "Progressing",
            status: "True",
            reason: "NewReplicaSetAvailable",
            message: format!("ReplicaSet \"{new_rs}\" has successfully progressed."),
        }
    } else {
        Cond {
            type_: "Progressing",
            status: "True",
            reason: "ReplicaSetUpdated",
            message: format!("ReplicaSet \"{new_rs}\" is progressing."),
        }
    };
    let mut conditions = prev.and_then(|s| s.conditions.clone()).unwrap_or_default();
    for cond in [available_cond, progressing_cond] {
        merge_condition(&mut conditions, cond, now);
    }
    DeploymentStatus {
        observed_generation: generation,
        replicas: Some(counts.total),
        updated_replicas: Some(counts.updated),
        ready_replicas: Some(counts.ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((counts.desired - available).max(0)),
        conditions: Some(conditions),
        collision_count: prev.and_then(|s| s.collision_count),
        terminating_replicas: prev.and_then(|s| s.terminating_replicas),
    }
}

fn merge_condition(conditions: &mut Vec<DeploymentCondition>, cond: Cond, now: jiff::Timestamp) {
    let now = Some(Time(now));
    let fresh = DeploymentCondition {
        type_: cond.type_.into(),
        status: cond.status.into(),
        reason: Some(cond.reason.into()),
        message: Some(cond.message),
        last_transition_time: now.clone(),
        last_update_time: now,
    };
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        None => conditions.push(fresh),
        Some(old) => {
            let same_status = old.status == fresh.status;
            let same_text =
                same_status && old.reason == fresh.reason && old.message == fresh.message;
            let transition = if same_status {
                old.last_transition_time.clone()
            } else {
                fresh.last_transition_time.clone()
            };
            let update = if same_text {
                old.last_update_time.clone()
            } else {
                fresh.last_update_time.clone()
            };
            *old = DeploymentCondition {
                last_transition_time: transition.or(fresh.last_transition_time.clone()),
                last_update_time: update.or(fresh.last_update_time.clone()),
                ..fresh
            };
        }
    }
}

/// ReplicaSet status for its live and ready pods (available = ready: minReadySeconds ignored).
pub fn replica_set_status(
    prev: Option<&ReplicaSetStatus>,
    generation: Option<i64>,
    pods: i32,
    ready: i32,
) -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas: pods,
        fully_labeled_replicas: Some(pods),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: generation,
        conditions: prev.and_then(|s| s.conditions.clone()),
        terminating_replicas: prev.and_then(|s| s.terminating_replicas),
    }
}

/// The API server drops zero counts (`omitempty`), so a status written with explicit zeros
/// reads back without them: compare with zeros and absent fields treated alike.
fn zero_is_none(v: Option<i32>) -> Option<i32> {
    v.filter(|n| *n != 0)
}

pub fn same_deployment_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let norm = |s: &DeploymentStatus| DeploymentStatus {
        available_replicas: zero_is_none(s.available_replicas),
        collision_count: zero_is_none(s.collision_count),
        ready_replicas: zero_is_none(s.ready_replicas),
        replicas: zero_is_none(s.replicas),
        terminating_replicas: s.terminating_replicas,
        unavailable_replicas: zero_is_none(s.unavailable_replicas),
        updated_replicas: zero_is_none(s.updated_replicas),
        observed_generation: s.observed_generation.filter(|g| *g != 0),
        conditions: s.conditions.clone().filter(|c| !c.is_empty()),
    };
    norm(a) == norm(b)
}

pub fn same_replica_set_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let norm = |s: &ReplicaSetStatus| ReplicaSetStatus {
        replicas: s.replicas,
        available_replicas: zero_is_none(s.available_replicas),
        fully_labeled_replicas: zero_is_none(s.fully_labeled_replicas),
        ready_replicas: zero_is_none(s.ready_replicas),
        terminating_replicas: s.terminating_replicas,
        observed_generation: s.observed_generation.filter(|g| *g != 0),
        conditions: s.conditions.clone().filter(|c| !c.is_empty()),
    };
    norm(a) == norm(b)
}

/// Time left before a pod created `age` ago becomes ready (`None`: ready now).
pub fn ready_in(age: Duration, delay: Duration) -> Option<Duration> {
    delay.checked_sub(age).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn cond<'a>(s: &'a DeploymentStatus, t: &str) -> &'a DeploymentCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rolling_then_complete() {
        let t0 = ts("2026-11-25T10:00:00Z");
        let rolling = RolloutCounts {
            desired: 3,
            total: 4,
            updated: 3,
            ready: 1,
            updated_ready: 0,
        };
        let s1 = deployment_status(None, Some(2), rolling, "web-abc", t0);
        assert_eq!(s1.observed_generation, Some(2));
        assert_eq!(s1.replicas, Some(4));
        assert_eq!(s1.unavailable_replicas, Some(2));
        assert_eq!(cond(&s1, "Available").status, "False");
        assert_eq!(
            cond(&s1, "Progressing").reason.as_deref(),
            Some("ReplicaSetUpdated")
        );

        // Same counts later: identical status (no write needed).
        let again = deployment_status(
            Some(&s1),
            Some(2),
            rolling,
            "web-abc",
            ts("2026-11-25T10:00:05Z"),
        );
        assert_eq!(again, s1);

        let t1 = ts("2026-11-25T10:00:10Z");
        let done = RolloutCounts {
            desired: 3,
            total: 3,
            updated: 3,
            ready: 3,
            updated_ready: 3,
        };
        let s2 = deployment_status(Some(&s1), Some(2), done, "web-abc", t1);
        let avail = cond(&s2, "Available");
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );
        assert_eq!(avail.last_transition_time, Some(Time(t1)));
        let prog = cond(&s2, "Progressing");
        assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
        // Still True: transition time kept, update time moved.
        assert_eq!(prog.last_transition_time, Some(Time(t0)));
        assert_eq!(prog.last_update_time, Some(Time(t1)));
        assert_eq!(s2.unavailable_replicas, Some(0));
    }

    #[test]
    fn scaled_to_zero_is_available_and_complete() {
        let zero = RolloutCounts::default();
        let s = deployment_status(None, Some(1), zero, "web-abc", ts("2026-11-25T10:00:00Z"));
        assert_eq!(cond(&s, "Available").status, "True");
        assert_eq!(
            cond(&s, "Progressing").reason.as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(s.replicas, Some(0));
    }

    #[test]
    fn other_conditions_are_kept() {
        let prev = DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let s = deployment_status(
            Some(&prev),
            None,
            RolloutCounts::default(),
            "x",
            ts("2026-11-25T10:00:00Z"),
        );
        assert_eq!(s.conditions.unwrap().len(), 3);
    }

    #[test]
    fn ready_delay() {
        assert_eq!(
            ready_in(Duration::from_secs(3), Duration::from_secs(2)),
            None
        );
        assert_eq!(
            ready_in(Duration::from_secs(2), Duration::from_secs(2)),
            None
        );
        assert_eq!(
            ready_in(Duration::from_millis(500), Duration::from_secs(2)),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn zero_counts_compare_equal_to_absent_ones() {
        let written = replica_set_status(None, Some(2), 0, 0);
        let read_back = ReplicaSetStatus {
            replicas: 0,
            observed_generation: Some(2),
            ..Default::default()
        };
        assert!(same_replica_set_status(&written, &read_back));
        assert!(!same_replica_set_status(
            &replica_set_status(None, Some(2), 1, 0),
            &read_back
        ));

        let t = ts("2026-11-25T10:00:00Z");
        let written = deployment_status(None, Some(1), RolloutCounts::default(), "x", t);
        let read_back = DeploymentStatus {
            observed_generation: Some(1),
            conditions: written.conditions.clone(),
            ..Default::default()
        };
        assert!(same_deployment_status(&written, &read_back));
        assert!(!same_deployment_status(
            &written,
            &DeploymentStatus {
                ready_replicas: Some(1),
                ..read_back
            }
        ));
    }

    #[test]
    fn replica_set_counts() {
        let s = replica_set_status(None, Some(4), 3, 2);
        assert_eq!(
            (s.replicas, s.ready_replicas, s.available_replicas),
            (3, Some(2), Some(2))
        );
        assert_eq!(s.observed_generation, Some(4));
    }
}
