#!/usr/bin/env bash
# The whole loop on this machine, narrated: the local test environment (API server,
# Prometheus, workload simulator), the operator, a demo workload with a RollbackPolicy, a bad
# release, and its automatic rollback until the RollbackEvent is Succeeded.
#
# Designed to run against a real cluster too (FRYS_USE_KUBECONFIG=1, with Prometheus in
# PROMETHEUS_URL and a workload whose metrics follow DESIGN.md's series); that path has not
# been verified on the project's machines, which have no cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

export FRYS_CACHE_DIR="${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FRYS_CACHE_DIR/target}"
NS=${FRYS_DEMO_NAMESPACE:-frys-demo}
started=$(date +%s)

say() { printf '\n\033[1m[%3ss] %s\033[0m\n' "$(($(date +%s) - started))" "$*"; }
note() { printf '       %s\n' "$*"; }

say "Building the operator and the workload simulator (cached after the first run; a cold build takes a few minutes)"
cargo build --workspace --locked

if [[ ${FRYS_USE_KUBECONFIG:-0} == 1 ]]; then
	say "Using the cluster in KUBECONFIG=${KUBECONFIG:?} and Prometheus at ${PROMETHEUS_URL:?}"
else
	export FRYS_SIM_BIN="$CARGO_TARGET_DIR/debug/frys-sim"
	say "Starting the local test environment (first run: fetches packages and builds the API server, a few minutes)"
	env_lines=$(scripts/testenv.sh up)
	eval "$env_lines"
fi

say "Installing the CRDs and the demo namespace"
kubectl apply -f crds/ >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl delete rbp,rbe --all -n "$NS" --ignore-not-found >/dev/null
kubectl delete deployment web web-blue -n "$NS" --ignore-not-found >/dev/null

say "Starting the operator (logs: $FRYS_CACHE_DIR/demo-operator.log)"
"$CARGO_TARGET_DIR/debug/frys-rollback" run --namespace "$NS" --metrics-addr 127.0.0.1:0 \
	--prometheus-url "$PROMETHEUS_URL" --log-format text >"$FRYS_CACHE_DIR/demo-operator.log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT

say "Deploying web (demo:v1, 3 replicas), its blue standby web-blue and the RollbackPolicy (deploy/examples/demo.yaml)"
kubectl apply -n "$NS" -f deploy/examples/demo.yaml >/dev/null

field() { kubectl get rbp web -n "$NS" -o "jsonpath=$1" 2>/dev/null || true; }
wait_for() { # description, timeout seconds, command
	local what=$1 limit=$2 t=0
	shift 2
	until "$@"; do
		((t++ < limit)) || {
			echo "gave up waiting for $what; operator log: $FRYS_CACHE_DIR/demo-operator.log" >&2
			exit 1
		}
		sleep 1
	done
}
# Numbers for people, as the operator's messages show them (src/units.rs): 3 significant digits.
sig() { [[ -n $1 ]] && awk -v v="$1" -v f="${2:-1}" 'BEGIN { printf "%.3g", v * f }' || printf -- -; }
errors() { printf '%s %%' "$(sig "$(field '{.status.health.metrics.errors}')" 100)"; }
latency() { printf '%s ms' "$(sig "$(field '{.status.health.metrics.latency}')")"; }
healthy() { [[ $(field '{.status.conditions[?(@.type=="Healthy")].status}') == True ]]; }
# Comfortably healthy: every signal well inside its warning threshold (see README "Health score").
settled() { healthy && awk -v s="$(field '{.status.health.score}')" 'BEGIN { exit !(s >= 95) }'; }
ready() { kubectl wait --for=condition=Ready rbp/web -n "$NS" --timeout=1s >/dev/null 2>&1; }
wait_for "the policy to be Ready (kubectl wait --for=condition=Ready rbp/web)" 60 ready
note "$(field '{.status.conditions[?(@.type=="Ready")].message}')"
wait_for "a healthy assessment" 120 settled
note "health $(field '{.status.health.status}'), score $(field '{.status.health.score}'), errors $(errors), p95 latency $(latency)"

say "Releasing demo:v2-faulty (the simulator serves 30 % errors for it)"
kubectl set image deployment/web -n "$NS" app=demo:v2-faulty >/dev/null
released=$(date +%s)

last=""
progress() {
	local line phase
	phase=$(kubectl get rbe -n "$NS" -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true)
	line="health $(field '{.status.health.status}') | score $(field '{.status.health.score}') | errors $(errors) | streak $(field '{.status.failureStreak}')/3 | incident $(field '{.status.incident.class}') | event ${phase:-none}"
	if [[ $line != "$last" ]]; then
		note "$line"
		last=$line
	fi
	[[ $phase == Succeeded || $phase == Failed ]]
}
wait_for "the remediation" 240 progress

say "Decision and remediation ($(($(date +%s) - released))s after the release)"
event=$(kubectl get rbe -n "$NS" -o jsonpath='{.items[0].metadata.name}')
note "detected:  $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.spec.reason}')"
note "decided:   $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.spec.strategy}') ($(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.spec.type}'))"
note "patched:   $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.status.actions[0].summary}')"
note "verified:  $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.status.verification.overallStatus}')"
note "image now: $(kubectl get deployment web -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}')"

say "Waiting for the assessment to clear (the 10s rate window still holds v2's samples)"
wait_for "a healthy assessment after the rollback" 120 settled
note "health $(field '{.status.health.status}'), score $(field '{.status.health.score}'), errors $(errors), p95 latency $(latency), $(($(date +%s) - released))s after the release"

say "kubectl get deployments,rbp,rbe -n $NS"
kubectl get deployments,rbp,rbe -n "$NS"

phase=$(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.status.phase}')
say "What just happened"
note "1. rollbackpolicy/web (READY $(field '{.status.conditions[?(@.type=="Ready")].status}')) watched web: errors and p95 latency from Prometheus every 2s."
note "2. demo:v2-faulty raised errors past the 5 % critical threshold; after 3 failing evaluations in a row"
note "   the engine opened a $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.spec.reason}' | cut -d: -f1) incident and chose $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.spec.strategy}') (the EnvironmentSwitch rung is for other incidents)."
note "3. rollbackevent/$event rolled web back to $(kubectl get deployment web -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].image}'); its verification is $(kubectl get rbe "$event" -n "$NS" -o jsonpath='{.status.verification.overallStatus}'), the event is $phase."
note "4. web is $(field '{.status.health.status}') again with score $(field '{.status.health.score}'); the standby web-blue was never needed."
note ""
note "What the engine sees now, in its own words (frys-rollback explain web -n $NS):"
"$CARGO_TARGET_DIR/debug/frys-rollback" explain web -n "$NS" | sed 's/^/       /'

say "Done in $(($(date +%s) - started))s: the RollbackEvent is $phase. Explore further:"
note "eval \"\$(scripts/testenv.sh env)\"        # this environment in your shell"
note "kubectl describe rbp web -n $NS          # conditions and Kubernetes Events"
note "kubectl frys explain web -n $NS          # once installed as kubectl-frys (docs/kubectl-plugin.md)"
note "kubectl get rbe $event -n $NS -o yaml    # actions with the state they replaced"
note "scripts/testenv.sh down                  # stop the environment"
[[ $phase == Succeeded ]]
