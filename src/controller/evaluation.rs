//! One evaluation of a policy's signals: what the evaluator hands the policy reconciler. A leaf
//! module, so the reconcilers and status builders share it without importing each other.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{api::RollbackPolicy, prometheus::Reading};

/// Why a policy could not be evaluated at all.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationError {
    /// PascalCase condition reason.
    pub reason: &'static str,
    pub message: String,
}

/// The result of one evaluation of a policy's signals.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub at: Timestamp,
    pub readings: Result<BTreeMap<String, Reading>, EvaluationError>,
}

/// `namespace/name`: the key of a policy in the evaluator and the guard.
pub fn key(policy: &RollbackPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

/// [`key`] of a policy known by reference.
pub fn ref_key(policy: &ObjectRef<RollbackPolicy>) -> String {
    format!(
        "{}/{}",
        policy.namespace.as_deref().unwrap_or_default(),
        policy.name
    )
}
