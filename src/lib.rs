//! frys-rollback: a Kubernetes operator that keeps Deployments healthy through bad releases.
//!
//! One module per concern: `api` (the CRD types), `config` (operator-wide defaults and their
//! resolution), `controller` (reconcilers), `server` (HTTP endpoints), `strategy` (the five
//! remediations), `telemetry` (logs and metrics), `cli` (the commands).

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod server;
pub mod strategy;
pub mod telemetry;
