//! Alertmanager as an input (docs/alertmanager.md): an authenticated webhook receiver that maps
//! alerts to policies and keeps each policy's firing alerts in `status.alerts`.
//!
//! State lives in the policy, not in memory: the request may land on any replica (the Service
//! balances over both, only one leads), so the receiver writes the firing alerts durably under
//! its own field manager and the leader's evaluator reads them at its next evaluation. A
//! restart or failover loses nothing, and a second replica needs no coordination beyond the
//! resourceVersion compare-and-swap of each write.

pub mod payload;
pub mod receiver;
pub mod state;
pub mod tls;

pub use receiver::{Receiver, Settings};
