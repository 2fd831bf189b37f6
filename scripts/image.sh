#!/usr/bin/env bash
# The operator's OCI image without a Docker engine: a distroless-style root filesystem made of
# the Debian packages the release binary needs (glibc, libgcc, CA certificates), a nonroot user
# 65532, and the binary; assembled with umoci (Debian sid), written as an OCI archive (a tar of
# an OCI image layout), which `docker load` (Docker 25+), `kind load image-archive`,
# `ctr images import` and `skopeo copy oci-archive:...` accept.
#
#   scripts/image.sh build [BINARY]   build (default BINARY: the release build in
#                                     $CARGO_TARGET_DIR); prints the archive's path
#   scripts/image.sh check [ARCHIVE]  unpack it, run `frys-rollback --version` from its root
#                                     filesystem, check user, entrypoint and labels
#   scripts/image.sh tools            only fetch umoci (fails when Debian is unreachable and
#                                     nothing is cached)
#
# Output: $FRYS_CACHE_DIR/image/frys-rollback-<version>.oci.tar, tagged <version> inside.
# Push:   skopeo copy oci-archive:ARCHIVE:<version> docker://ghcr.io/OWNER/frys-rollback:<version>
#
# Debian packages are fetched like scripts/testenv.sh does (a private apt state in the cache,
# never the system's), into $FRYS_CACHE_DIR/image/debs. The Dockerfile stays for Docker users.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR=${FRYS_CACHE_DIR:-$HOME/.cache/frys-rollback}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
WORK=$CACHE_DIR/image
APT_DIR=$CACHE_DIR/apt
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCHIVE=$WORK/frys-rollback-$VERSION.oci.tar
# What the binary links (ldd: libc, libm, libgcc_s, the loader) and what it trusts (TLS).
ROOTFS_DEBS=(libc6 libgcc-s1 ca-certificates)
TOOL_DEBS=(umoci)

log() { printf '[image %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

apt_opts() {
	printf '%s\n' -q "-oDir::Etc::SourceList=$APT_DIR/sources.list" -oDir::Etc::SourceParts=/dev/null \
		"-oDir::State::Lists=$APT_DIR/lists" "-oDir::Cache=$APT_DIR/cache" -oDir::State::status=/dev/null \
		-oAPT::Sandbox::User=root -oAcquire::Languages=none
}

# fetch DIR NAMES...: the .debs of NAMES from Debian sid into DIR (kept once fetched).
fetch() {
	local dir=$1 n
	shift
	local -a missing=() opts
	mkdir -p "$dir" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
	for n in "$@"; do compgen -G "$dir/${n}_*.deb" >/dev/null || missing+=("$n"); done
	((${#missing[@]})) || return 0
	mapfile -t opts < <(apt_opts)
	echo 'deb http://deb.debian.org/debian sid main' >"$APT_DIR/sources.list"
	if ! compgen -G "$APT_DIR/lists/*_Packages*" >/dev/null; then
		log "apt-get update (private lists, Debian sid)"
		apt-get "${opts[@]}" update >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed: $WORK/apt-update.log"
	fi
	log "downloading ${missing[*]}"
	(cd "$dir" && apt-get "${opts[@]}" download "${missing[@]}") >"$WORK/apt-download.log" 2>&1 ||
		die "could not download ${missing[*]} (log: $WORK/apt-download.log)"
}

# The tools (umoci) extracted into $WORK/tools; puts them on PATH.
tools() {
	fetch "$WORK/tool-debs" "${TOOL_DEBS[@]}"
	if [[ ! -x $WORK/tools/usr/bin/umoci ]]; then
		local f
		for f in "$WORK"/tool-debs/*.deb; do dpkg-deb -x "$f" "$WORK/tools"; done
	fi
	PATH=$WORK/tools/usr/bin:$PATH
	umoci --version >/dev/null || die "umoci does not run"
}

cmd_build() {
	local binary=${1:-$CARGO_TARGET_DIR/release/frys-rollback}
	[[ -x $binary ]] || die "no binary at $binary (cargo build --release --locked --bin frys-rollback)"
	mkdir -p "$WORK"
	tools
	fetch "$WORK/debs" "${ROOTFS_DEBS[@]}"
	local t0=$SECONDS tmp rootfs
	tmp=$(mktemp -d "$WORK/build.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	rootfs=$tmp/rootfs
	mkdir -p "$rootfs"
	local n f
	for n in "${ROOTFS_DEBS[@]}"; do
		for f in "$WORK/debs/${n}"_*.deb; do dpkg-deb -x "$f" "$rootfs"; done
	done
	# Merged /usr: the top-level links Debian's base-files would provide.
	for n in bin lib lib64 sbin; do
		[[ -e $rootfs/$n || ! -d $rootfs/usr/$n ]] || ln -s "usr/$n" "$rootfs/$n"
	done
	# Only what runs: no docs, manuals, locales or maintainer scripts' helpers.
	rm -rf "$rootfs"/usr/share/{doc,man,info,lintian,locale} "$rootfs"/usr/sbin "$rootfs"/usr/bin/* \
		"$rootfs"/usr/lib/x86_64-linux-gnu/gconv "$rootfs"/etc/ca-certificates.conf.d "$rootfs"/usr/libexec
	# The bundle update-ca-certificates would write, from the certificates the package ships.
	mkdir -p "$rootfs/etc/ssl/certs"
	find "$rootfs/usr/share/ca-certificates" -name '*.crt' -print0 | LC_ALL=C sort -z |
		xargs -0 cat >"$rootfs/etc/ssl/certs/ca-certificates.crt"
	[[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || die "no CA certificates in ca-certificates"
	# Users as distroless has them: root and nonroot (65532), no login shell.
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
	mkdir -p "$rootfs/home/nonroot" "$rootfs/tmp" "$rootfs/root"
	chmod 1777 "$rootfs/tmp"
	chmod 700 "$rootfs/root"
	install -D -m 0755 "$binary" "$rootfs/usr/local/bin/frys-rollback"

	local layout=$tmp/layout image
	image=$layout:$VERSION
	umoci init --layout "$layout"
	umoci new --image "$image"
	umoci unpack --rootless --image "$image" "$tmp/bundle" >/dev/null
	cp -a "$rootfs/." "$tmp/bundle/rootfs/"
	umoci repack --image "$image" "$tmp/bundle"
	# Ownership in the layer: root for everything but the nonroot home.
	local created
	created=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%dT%H:%M:%SZ)
	umoci config --image "$image" --os linux --architecture amd64 --created "$created" \
		--config.user 65532:65532 --config.workingdir / \
		--clear=config.entrypoint --config.entrypoint /usr/local/bin/frys-rollback \
		--clear=config.cmd --config.cmd run \
		--config.exposedports 8080/tcp \
		--config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
		--config.label "org.opencontainers.image.title=frys-rollback" \
		--config.label "org.opencontainers.image.version=$VERSION" \
		--config.label "org.opencontainers.image.description=Kubernetes operator that keeps Deployments healthy through bad releases" \
		--config.label "org.opencontainers.image.licenses=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)" \
		--config.label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		--config.label "org.opencontainers.image.base.name=debian:sid (libc6 libgcc-s1 ca-certificates)" \
		--history.created_by "scripts/image.sh build"
	umoci gc --layout "$layout"
	# An OCI archive is a tar of the layout, index.json at its root.
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$created" -C "$layout" -cf "$ARCHIVE.tmp" .
	mv "$ARCHIVE.tmp" "$ARCHIVE"
	log "built $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1), tag $VERSION) in $((SECONDS - t0))s"
	echo "$ARCHIVE"
}

cmd_check() {
	local archive=${1:-$ARCHIVE}
	[[ -f $archive ]] || die "no archive at $archive (scripts/image.sh build)"
	tools
	local tmp
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/frys-image.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	mkdir "$tmp/layout"
	tar -C "$tmp/layout" -xf "$archive"
	umoci unpack --rootless --image "$tmp/layout:$VERSION" "$tmp/bundle" >/dev/null
	local rootfs=$tmp/bundle/rootfs
	# The image configuration: user, entrypoint, command, labels.
	python3 - "$tmp/layout" "$VERSION" <<-'EOF'
		import json, pathlib, sys
		layout, version = pathlib.Path(sys.argv[1]), sys.argv[2]
		blob = lambda d: json.loads((layout / "blobs" / d.replace(":", "/", 1)).read_text())
		index = json.loads((layout / "index.json").read_text())
		tags = [m["annotations"].get("org.opencontainers.image.ref.name") for m in index["manifests"]]
		assert tags == [version], f"tags {tags}"
		manifest = blob(index["manifests"][0]["digest"])
		config = blob(manifest["config"]["digest"])
		c = config["config"]
		checks = {
		    "os": (config["os"], "linux"),
		    "user": (c.get("User"), "65532:65532"),
		    "entrypoint": (c.get("Entrypoint"), ["/usr/local/bin/frys-rollback"]),
		    "cmd": (c.get("Cmd"), ["run"]),
		    "version label": (c.get("Labels", {}).get("org.opencontainers.image.version"), version),
		    "title label": (c.get("Labels", {}).get("org.opencontainers.image.title"), "frys-rollback"),
		}
		bad = {k: v for k, v in checks.items() if v[0] != v[1]}
		assert not bad, f"image config: {bad}"
		assert len(manifest["layers"]) == 1, manifest["layers"]
		print(f"image config ok: user {c['User']}, entrypoint {c['Entrypoint']} {c['Cmd']}, {len(c['Labels'])} labels")
	EOF
	# Nothing else ships a shell or a package manager.
	[[ ! -e $rootfs/bin/sh && ! -e $rootfs/usr/bin/sh ]] || die "the image has a shell"
	grep -q '^nonroot:x:65532:65532:' "$rootfs/etc/passwd" || die "no nonroot user 65532"
	[[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || die "no CA bundle"
	# Run the binary from the image's own root filesystem, with the image's loader and libraries.
	local out
	if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
		out=$(chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/frys-rollback --version)
	else
		out=$("$rootfs/lib64/ld-linux-x86-64.so.2" --library-path "$rootfs/usr/lib/x86_64-linux-gnu" \
			"$rootfs/usr/local/bin/frys-rollback" --version)
	fi
	[[ $out == "frys-rollback $VERSION" ]] || die "--version from the image said: $out"
	log "check ok: $archive runs '$out' from its own root filesystem as 65532"
}

case ${1:-} in
tools) mkdir -p "$WORK" && tools ;;
build) shift && cmd_build "$@" ;;
check) shift && cmd_check "$@" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
