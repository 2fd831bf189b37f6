//! Workload simulator (being written).
fn main() {}
