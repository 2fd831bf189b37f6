//! Integration tests, one binary (modules inside) to keep link time down. They run against the
//! real test environment (scripts/testenv.sh) or a cluster given in KUBECONFIG.

mod api_schema;
mod apiserver;
mod assessment;
mod backtest;
mod chart;
mod cli;
mod operator;
mod remediation;
mod simulator;
mod support;
mod tooling;
mod triggers;
mod verify;
