//! frys-rollback: a Kubernetes operator that keeps Deployments healthy through bad releases.
//!
//! One module per concern: `api` (the CRD types), `config` (operator-wide defaults and their
//! resolution), `egress` (where the operator's HTTP may go), `prometheus` (queries, templates, shared-query planning), `assess` and `decide`
//! (the pure engine: data in, decisions out, no I/O), `strategy` (the five remediations: pure
//! planners and a thin apply layer), `controller` (reconcilers), `server` (HTTP endpoints),
//! `telemetry` (logs and metrics), `units` (numbers for people), `verify` (the six checks after
//! a remediation), `leader` (leader election and the fence every write checks), `profile` (environment
//! profiles: the defaults of policies that leave fields out), `cli` (the commands).

pub mod alerts;
pub mod api;
pub mod assess;
pub mod backtest;
pub mod cli;
pub mod config;
pub mod controller;
pub mod decide;
pub mod egress;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod gitops;
pub mod kube_client;
pub mod leader;
pub mod notify;
pub mod profile;
pub mod prometheus;
pub mod server;
pub mod strategy;
pub mod telemetry;
pub mod units;
pub mod verify;
