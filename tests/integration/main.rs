//! Integration tests, one binary (modules inside) to keep link time down. They run against the
//! real test environment (scripts/testenv.sh) or a cluster given in KUBECONFIG, started on first
//! use (`support::env`): tests that need neither (most of `notify`, `prometheus` with its own
//! Prometheus) run without it.

mod alerts;
mod api_schema;
mod apiserver;
mod assessment;
mod backtest;
mod chart;
mod cli;
mod decisions;
mod drills;
mod failover;
mod faults;
mod gitops;
mod install;
mod isolation;
mod notify;
mod operator;
mod profiles;
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
mod webhook;
