//! Backtest: what a policy would have done over a stretch of history.
//!
//! [`fetch`] reads the policy's signals with range queries (behind [`RangeSource`], so the
//! replay is testable without Prometheus) and turns them into one set of readings per
//! evaluation time, through the same query planner and result routing the evaluator uses.
//! [`replay`] feeds those readings through the controller's own engine entry points
//! (`assess::signals`, `assess::assess_with_baselines`, `decide::decide`), [`suggest`] proposes
//! thresholds from the same history, and [`plot`] draws it.
//!
//! [`RangeSource`]: crate::prometheus::RangeSource

pub mod fetch;
pub mod plot;
pub mod replay;
pub mod suggest;

pub use fetch::{History, fetch};
pub use replay::{Backtest, Incident, Step, Summary, replay};
pub use suggest::{Suggestion, suggest};
