#!/usr/bin/env bash
# The project's test command (README): formatting, lints, unit tests, and the integration
# tests against the real test environment, which it installs (scripts/testenv.sh: Debian
# packages, control plane build, kubectl, helm, Prometheus), starts privately and stops after.
#
#   FRYS_USE_KUBECONFIG=1 scripts/test.sh   run against the cluster in $KUBECONFIG instead
#                                           (simulator-dependent tests then skip, saying why)
set -euo pipefail
cd "$(dirname "$0")/.."

export FRYS_CACHE_DIR="${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}"
# Builds live in the cache, not the clone, so a fresh clone is not a cold build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FRYS_CACHE_DIR/target}"

step() { printf '\n==> %s [%s]\n' "$*" "$(date +%T)" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build (operator and workload simulator)"
cargo build --workspace --locked

if [[ ${FRYS_USE_KUBECONFIG:-0} == 1 ]]; then
	step "using the cluster in KUBECONFIG=${KUBECONFIG:?FRYS_USE_KUBECONFIG=1 needs KUBECONFIG}"
else
	unset KUBECONFIG
	# A private environment per run, so a developer's own `testenv.sh up` is left alone.
	FRYS_TESTENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/frys-testenv.XXXXXX")
	export FRYS_TESTENV_DIR
	export FRYS_SIM_BIN="$CARGO_TARGET_DIR/debug/frys-sim"
	trap 'scripts/testenv.sh down >&2 || true; rm -rf "$FRYS_TESTENV_DIR"' EXIT
	step "starting the test environment in $FRYS_TESTENV_DIR"
	env_lines=$(scripts/testenv.sh up)
	eval "$env_lines"
fi

step "cargo test"
cargo test --workspace --locked
