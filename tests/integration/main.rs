//! Integration tests, one binary (modules inside) to keep link time down. They run against the
//! real test environment (scripts/testenv.sh) or a cluster given in KUBECONFIG, started on first
//! use (`support::env`): tests that need neither (most of `notify`, `prometheus` with its own
//! Prometheus) run without it.

mod api_schema;
mod apiserver;
mod alerts;
mod assessment;
mod backtest;
mod chart;
mod cli;
mod decisions;
mod failover;
mod faults;
mod install;
mod isolation;
mod notify;
mod operator;
mod prometheus;
mod remediation;
mod simulator;
mod strategy;
mod support;
mod tenant;
mod tooling;
mod triggers;
mod trust_undo;
mod verify;
