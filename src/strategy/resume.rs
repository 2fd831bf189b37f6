//! The action record of a resumed remediation: what the interrupted run applied stays recorded.
//!
//! A run that dies between two steps (a crash, or a leader killed and replaced) leaves the
//! planned actions recorded but not stamped. The resumed run plans again from what it reads:
//! a step already in place is not planned again, so its action would vanish from the record
//! and undo would not restore it (a standby left scaled up, a route left cut).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::Action;

fn same_object(a: &Action, b: &Action) -> bool {
    (&a.api_version, &a.kind, &a.name) == (&b.api_version, &b.kind, &b.name)
}

/// Merges, in the recorded order (undo runs it backwards): each recorded action becomes the
/// resumed run's action on the same object if it performed one; a recorded action on an object
/// the resumed plan left alone was found in place, so it stays, stamped `now` if it was not; one
/// the resumed plan still had but did not perform (it failed first) is dropped, as in a first
/// run. Performed actions on objects not recorded come last.
pub fn resume_actions(
    recorded: &[Action],
    planned: &[Action],
    performed: Vec<Action>,
    now: Timestamp,
) -> Vec<Action> {
    let mut out = vec![];
    for r in recorded {
        if let Some(p) = performed.iter().find(|p| same_object(p, r)) {
            out.push(p.clone());
        } else if !planned.iter().any(|p| same_object(p, r)) {
            let mut kept = r.clone();
            kept.applied_at.get_or_insert(Time(now));
            out.push(kept);
        }
    }
    let extra: Vec<Action> = performed
        .into_iter()
        .filter(|p| !recorded.iter().any(|r| same_object(p, r)))
        .collect();
    out.extend(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: &str, name: &str, applied: bool) -> Action {
        Action {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: None,
            summary: format!("{kind} {name}"),
            previous: None,
            applied_at: applied.then_some(Time(Timestamp::UNIX_EPOCH)),
            undone: false,
        }
    }

    #[test]
    fn a_step_found_in_place_stays_recorded_before_the_resumed_ones() {
        // Interrupted after scaling the standby, before switching the Service.
        let recorded = [
            action("Deployment", "web-blue", false),
            action("Service", "web", false),
        ];
        let planned = [action("Service", "web", false)];
        let performed = vec![action("Service", "web", true)];
        let now = Timestamp::now();
        let merged = resume_actions(&recorded, &planned, performed, now);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(merged[0].name, "web-blue");
        assert_eq!(merged[0].applied_at, Some(Time(now)));
        assert_eq!(merged[1].kind, "Service");
        assert_eq!(merged[1].applied_at, Some(Time(Timestamp::UNIX_EPOCH)));
    }

    #[test]
    fn a_first_run_records_what_it_performed_only() {
        let planned = [
            action("Deployment", "web", false),
            action("Service", "web", false),
        ];
        // Failed at the second step.
        let performed = vec![action("Deployment", "web", true)];
        let merged = resume_actions(&[], &planned, performed.clone(), Timestamp::now());
        assert_eq!(merged, performed);
        // Resumed and failed again at the same step: the unperformed one is not recorded.
        let merged = resume_actions(&planned, &planned, performed.clone(), Timestamp::now());
        assert_eq!(merged, performed);
    }

    #[test]
    fn an_earlier_stamp_is_kept_and_new_objects_come_last() {
        let recorded = [action("HorizontalPodAutoscaler", "web", true)];
        let performed = vec![action("Deployment", "web", true)];
        let merged = resume_actions(&recorded, &[], performed, Timestamp::now());
        assert_eq!(merged[0].applied_at, Some(Time(Timestamp::UNIX_EPOCH)));
        assert_eq!(merged[1].kind, "Deployment");
    }
}
