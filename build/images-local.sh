#!/usr/bin/env bash
# Builds the proxy and proxy-init images on this machine with buildah/podman,
# pulling nothing from any registry (the `make images-local` equivalent of the
# docker buildx build in build/images.sh):
#
#   proxy       FROM scratch + the static proxy binary + the host's CA bundle,
#               numeric USER, ENTRYPOINT the binary (what Dockerfile.proxy makes
#               from a distroless base).
#   proxy-init  a minimal Debian root filesystem made with debootstrap
#               (--variant=minbase, iptables: both the nft and legacy backends),
#               cached outside the repository, plus the static proxy-init
#               binary, imported with `podman import` (what Dockerfile.init
#               makes from debian-slim).
#
# Usage: build/images-local.sh [all|proxy|init]
#        build/images-local.sh debian IMAGE NAME PACKAGES
#            (the proxy-init root filesystem plus the comma-separated
#            PACKAGES, cached as NAME; test/podman uses it for its client)
#
# Environment:
#   VERSION           version stamped into the binaries and image tags
#                     (default: git describe, else "dev")
#   PROXY_IMAGE       default localhost/imds-proxy/proxy:$VERSION
#   INIT_IMAGE        default localhost/imds-proxy/proxy-init:$VERSION
#   IMDS_PROXY_CACHE  debootstrap cache directory (default /var/cache/imds-proxy)
#   CA_BUNDLE_SRC     CA bundle copied into the proxy image
#                     (default /etc/ssl/certs/ca-certificates.crt)
#   CONTAINERS_CONF   default build/containers.conf (runc, ulimits)
#
# UID, paths, entrypoints and the port come from build/image.env only.
# Needs root (debootstrap, chroot, rootful podman storage). A missing rootfs
# costs one debootstrap run from the Debian mirror (35 s to 6 min here,
# depending on the mirror and the machine's load); later builds take seconds.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=image.env
. "$repo/build/image.env"

export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/build/containers.conf}
VERSION=${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)}
PROXY_IMAGE=${PROXY_IMAGE:-localhost/imds-proxy/proxy:$VERSION}
INIT_IMAGE=${INIT_IMAGE:-localhost/imds-proxy/proxy-init:$VERSION}
CACHE=${IMDS_PROXY_CACHE:-/var/cache/imds-proxy}
CA_BUNDLE_SRC=${CA_BUNDLE_SRC:-/etc/ssl/certs/ca-certificates.crt}
GO=${GO:-go}

log() { printf 'images-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || die "$c not found (Debian packages: podman buildah runc debootstrap; see hack/install-deps.sh)"
	done
}

work=$(mktemp -d)
containers=()
cleanup() {
	local c
	for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# build_bin PACKAGE OUT: a static, trimmed binary stamped with VERSION, as in
# the Dockerfiles' build stage.
build_bin() {
	(cd "$repo" && CGO_ENABLED=0 GOOS=linux "$GO" build -trimpath \
		-ldflags "-s -w -X github.com/imds-proxy/imds-proxy/pkg/version.Version=$VERSION" \
		-o "$2" "$1")
}

# remove_rootfs DIR: deletes a (possibly half-made) root filesystem. An
# interrupted debootstrap can leave /proc or /sys mounted inside it: unmount
# those first and never cross into another file system.
remove_rootfs() {
	local dir=$1 mnt
	[ -e "$dir" ] || return 0
	while read -r mnt; do
		umount -l "$mnt" 2>/dev/null || true
	done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
	rm -rf --one-file-system "$dir"
}

# ensure_rootfs NAME PACKAGES: prints the path of a debootstrapped minbase root
# filesystem with PACKAGES, creating it when missing or made with other
# arguments. Concurrent builds serialise on a lock in the cache directory.
ensure_rootfs() {
	local name=$1 pkgs=$2 dir="$CACHE/$1" stamp want
	want="debootstrap --variant=minbase --include=$pkgs $DEBIAN_SUITE $DEBIAN_MIRROR"
	stamp="$CACHE/$name.stamp"
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ -d "$dir" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		exec 9>&-
		printf '%s\n' "$dir"
		return
	fi
	need debootstrap
	log "creating $dir: $want"
	remove_rootfs "$dir"
	remove_rootfs "$dir.tmp"
	rm -f "$stamp"
	local start=$SECONDS
	# --cache-dir keeps the downloaded packages, so a second root filesystem
	# (the test client's) downloads only what the first did not.
	mkdir -p "$CACHE/debs"
	debootstrap --variant=minbase --include="$pkgs" --cache-dir="$CACHE/debs" \
		"$DEBIAN_SUITE" "$dir.tmp" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log" >&2; remove_rootfs "$dir.tmp"; die "debootstrap failed"; }
	# Package caches and lists only make the image bigger; resolv.conf and
	# hostname are the build host's (podman mounts the pod's own).
	rm -rf "$dir.tmp"/var/cache/apt/archives/*.deb "$dir.tmp"/var/cache/apt/*.bin "$dir.tmp"/var/lib/apt/lists/*
	rm -f "$dir.tmp/etc/resolv.conf" "$dir.tmp/etc/hostname"
	mv "$dir.tmp" "$dir"
	printf '%s\n' "$want" >"$stamp"
	log "debootstrap took $((SECONDS - start)) s"
	exec 9>&-
	printf '%s\n' "$dir"
}

# derive_rootfs NAME PACKAGES: prints the path of a copy of the proxy-init
# root filesystem with the comma-separated PACKAGES added by apt-get in a
# chroot (a fraction of a second debootstrap's time), cached like
# ensure_rootfs.
derive_rootfs() {
	local name=$1 pkgs=${2//,/ } dir="$CACHE/$1" base stamp want
	base=$(ensure_rootfs rootfs-init "$INIT_PACKAGES")
	want="$(cat "$CACHE/rootfs-init.stamp") + apt-get install $pkgs"
	stamp="$CACHE/$name.stamp"
	exec 9>"$CACHE/.lock"
	flock 9
	if [ -d "$dir" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		exec 9>&-
		printf '%s\n' "$dir"
		return
	fi
	log "creating $dir: $want"
	remove_rootfs "$dir"
	remove_rootfs "$dir.tmp"
	rm -f "$stamp"
	local start=$SECONDS
	cp -a "$base" "$dir.tmp"
	cp /etc/resolv.conf "$dir.tmp/etc/resolv.conf"
	# shellcheck disable=SC2086 # word splitting of the package list
	chroot "$dir.tmp" /usr/bin/env -i DEBIAN_FRONTEND=noninteractive PATH="$INIT_PATH" \
		sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' sh $pkgs \
		>"$work/apt.log" 2>&1 ||
		{ tail -n 30 "$work/apt.log" >&2; remove_rootfs "$dir.tmp"; die "apt-get install $pkgs failed"; }
	rm -rf "$dir.tmp"/var/cache/apt/archives/*.deb "$dir.tmp"/var/cache/apt/*.bin "$dir.tmp"/var/lib/apt/lists/*
	rm -f "$dir.tmp/etc/resolv.conf"
	mv "$dir.tmp" "$dir"
	printf '%s\n' "$want" >"$stamp"
	log "apt-get in the chroot took $((SECONDS - start)) s"
	exec 9>&-
	printf '%s\n' "$dir"
}

build_proxy() {
	need buildah
	[ -r "$CA_BUNDLE_SRC" ] || die "CA bundle $CA_BUNDLE_SRC not readable (Debian package ca-certificates)"
	build_bin ./cmd/proxy "$work/proxy"
	local c
	c=$(buildah from scratch)
	containers+=("$c")
	buildah copy --quiet --chmod 0555 "$c" "$work/proxy" "$PROXY_BIN" >/dev/null
	buildah copy --quiet --chmod 0444 "$c" "$CA_BUNDLE_SRC" "$CA_BUNDLE" >/dev/null
	buildah config \
		--user "$PROXY_UID:$PROXY_GID" \
		--entrypoint "[\"$PROXY_BIN\"]" \
		--label "org.opencontainers.image.version=$VERSION" \
		--label "org.opencontainers.image.source=https://github.com/imds-proxy/imds-proxy" \
		"$c"
	buildah commit --quiet --rm "$c" "$PROXY_IMAGE" >/dev/null
	containers=()
	log "built $PROXY_IMAGE"
}

# import_rootfs ROOTFS IMAGE [FILE DEST [--change ...]]: podman import of ROOTFS
# (plus FILE placed at the absolute path DEST) with PATH and the version label
# set, and any further --change arguments.
import_rootfs() {
	local rootfs=$1 image=$2 extra=()
	shift 2
	if [ $# -ge 2 ]; then
		mkdir -p "$work/extra/$(dirname "${2#/}")"
		install -m 0555 -o 0 -g 0 "$1" "$work/extra/${2#/}"
		extra=(-C "$work/extra" "${2#/}")
		shift 2
	fi
	tar --numeric-owner -C "$rootfs" -c . "${extra[@]}" |
		podman import --quiet \
			--change "ENV PATH=$INIT_PATH" \
			--change "LABEL org.opencontainers.image.version=$VERSION" \
			"$@" - "$image" >/dev/null
}

build_init() {
	need podman
	local rootfs
	rootfs=$(ensure_rootfs rootfs-init "$INIT_PACKAGES")
	build_bin ./cmd/init "$work/proxy-init"
	import_rootfs "$rootfs" "$INIT_IMAGE" "$work/proxy-init" "$INIT_BIN" \
		--change "ENTRYPOINT [\"$INIT_BIN\"]" \
		--change "USER $INIT_UID:$INIT_UID"
	log "built $INIT_IMAGE"
}

# build_debian IMAGE NAME PACKAGES: the proxy-init root filesystem plus
# PACKAGES, running as root with no entrypoint (commands come from the pod
# spec).
build_debian() {
	need podman
	local rootfs
	rootfs=$(derive_rootfs "$2" "$3")
	import_rootfs "$rootfs" "$1"
	log "built $1"
}

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and rootful podman storage)"
target=${1:-all}
case $target in
all) build_proxy; build_init ;;
proxy) build_proxy ;;
init) build_init ;;
debian)
	[ $# -eq 4 ] || die "usage: $0 debian IMAGE NAME PACKAGES"
	build_debian "$2" "$3" "$4"
	;;
*) die "unknown target $target (all, proxy, init, debian)" ;;
esac
