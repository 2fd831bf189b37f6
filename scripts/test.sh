#!/usr/bin/env bash
# The project's test command (README): formatting, lints, unit tests, and the integration
# tests against the real test environment (scripts/testenv.sh), which it installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."

export FRYS_CACHE_DIR="${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}"
# Builds live in the cache, not the clone, so a fresh clone is not a cold build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FRYS_CACHE_DIR/target}"

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
