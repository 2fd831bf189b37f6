//! frys-rollback: a Kubernetes operator that keeps Deployments healthy through bad releases.
//!
//! One module per concern: `api` (the CRD types), `config` (operator-wide defaults and their
//! resolution), `controller` (reconcilers), `prometheus` (queries, templates, shared-query planning), `server` (HTTP endpoints), `telemetry` (logs and
//! metrics), `cli` (the commands).

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod prometheus;
pub mod server;
pub mod telemetry;
