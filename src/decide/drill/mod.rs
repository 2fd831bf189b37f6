//! The pure part of rollback drills (the reconciler is `controller/drill`): when a drill is due
//! and allowed and what it waits for, what "restored exactly" compares, and the report.

pub mod report;
pub mod schedule;
pub mod snapshot;
