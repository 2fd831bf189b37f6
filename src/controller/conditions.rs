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

#[cfg(test)]
mod tests {
    use super::*;

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
