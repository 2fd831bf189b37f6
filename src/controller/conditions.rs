//! Status conditions as a list-map keyed by `type` (Kubernetes API conventions).

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// A condition; `lastTransitionTime` is filled in by [`set_condition`].
pub fn condition(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(Timestamp::now()),
        observed_generation: None,
    }
}

/// Puts `new` into `conditions`, keeping the previous transition time when the status did not
/// change (so `kubectl describe` shows since when a condition holds).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Ready reasons that no retry can fix: the spec must change. Anything else not ready (a
/// missing target or rung reference) may resolve when the object appears.
const STALLED_REASONS: &[&str] = &["InvalidSpec", "InvalidQuery", "DuplicateTarget"];

/// The kstatus conditions (`Reconciling`, `Stalled`) derived from `Ready`, and
/// `observedGeneration` on every condition, so `kubectl wait --for=condition=Ready`, Helm 4's
/// `--wait=watcher` and Flux health checks read the policy's state. Call last, before writing.
pub fn kstatus(conditions: &mut Vec<Condition>, generation: Option<i64>) {
    let ready = conditions
        .iter()
        .find(|c| c.type_ == crate::api::conditions::READY)
        .cloned();
    let (ready, reason, message) = match &ready {
        Some(c) => (c.status == "True", c.reason.clone(), c.message.clone()),
        None => (false, "Pending".into(), "not reconciled yet".into()),
    };
    let stalled = !ready && STALLED_REASONS.contains(&reason.as_str());
    let reconciling = !ready && !stalled;
    let (reconciling_reason, reconciling_message) = if reconciling {
        (reason.as_str(), format!("waiting: {message}"))
    } else {
        ("Reconciled", "nothing pending".into())
    };
    set_condition(
        conditions,
        condition(
            crate::api::conditions::RECONCILING,
            reconciling,
            reconciling_reason,
            reconciling_message,
        ),
    );
    let (stalled_reason, stalled_message) = if stalled {
        (reason.as_str(), format!("the spec must change: {message}"))
    } else {
        ("NotStalled", "no blocking error".into())
    };
    set_condition(
        conditions,
        condition(
            crate::api::conditions::STALLED,
            stalled,
            stalled_reason,
            stalled_message,
        ),
    );
    for c in conditions.iter_mut() {
        c.observed_generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(list: &'a [Condition], type_: &str) -> (&'a str, &'a str, Option<i64>) {
        let c = list.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.observed_generation)
    }

    #[test]
    fn kstatus_follows_ready() {
        let mut list = vec![condition("Ready", true, "Valid", "ok")];
        kstatus(&mut list, Some(4));
        assert_eq!(get(&list, "Ready"), ("True", "Valid", Some(4)));
        assert_eq!(get(&list, "Reconciling"), ("False", "Reconciled", Some(4)));
        assert_eq!(get(&list, "Stalled"), ("False", "NotStalled", Some(4)));

        set_condition(
            &mut list,
            condition("Ready", false, "TargetNotFound", "Deployment web not found"),
        );
        kstatus(&mut list, Some(5));
        assert_eq!(
            get(&list, "Reconciling"),
            ("True", "TargetNotFound", Some(5))
        );
        assert_eq!(get(&list, "Stalled").0, "False");

        set_condition(
            &mut list,
            condition("Ready", false, "InvalidQuery", "bad PromQL"),
        );
        kstatus(&mut list, Some(6));
        assert_eq!(get(&list, "Reconciling").0, "False");
        assert_eq!(get(&list, "Stalled"), ("True", "InvalidQuery", Some(6)));
        assert_eq!(list.len(), 3);

        let mut empty = vec![];
        kstatus(&mut empty, Some(1));
        assert_eq!(get(&empty, "Reconciling"), ("True", "Pending", Some(1)));
    }

    #[test]
    fn transition_time_kept_while_status_holds() {
        let mut list = vec![];
        set_condition(&mut list, condition("Ready", false, "TargetNotFound", "x"));
        let first = list[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(2));
        set_condition(&mut list, condition("Ready", false, "TargetNotFound", "y"));
        assert_eq!(list[0].last_transition_time, first);
        assert_eq!(list[0].message, "y");
        set_condition(&mut list, condition("Ready", true, "Valid", "ok"));
        assert_ne!(list[0].last_transition_time, first);
        assert_eq!(list.len(), 1);
    }
}
