#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubelet from this
# wrapper module into a cache outside the repository and prints the
# directory that holds them.
#
# The cache is keyed by the Kubernetes version and a hash of go.mod and
# go.sum, so a warm run costs a hash and a stat; a cold one about 4-7 min on
# 2 cores (all binaries in one `go build`, sharing the compile; the
# controller manager adds about 35 s to the other two). The cache
# root is $IMDS_PROXY_CACHE (default /var/cache/imds-proxy, shared with
# build/images-local.sh).
set -euo pipefail
cd "$(dirname "$0")"

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' go.mod)
[[ $version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || {
	echo "kubebin: cannot read the k8s.io/kubernetes version from go.mod" >&2
	exit 1
}
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
key=$(cat go.mod go.sum | sha256sum | cut -c1-12)
root=${IMDS_PROXY_CACHE:-/var/cache/imds-proxy}
dir=$root/kubernetes/$version-$key

bins=(kube-apiserver kube-controller-manager kubelet)
built() {
	local b
	for b in "${bins[@]}"; do [[ -x $dir/$b ]] || return 1; done
}

if ! built; then
	mkdir -p "$root/kubernetes"
	# One build at a time: test packages running in parallel (and make
	# kubebin) may all ask for the binaries; the others wait here and then
	# find them built.
	exec 9>"$root/kubernetes/.lock"
	flock -n 9 || {
		echo "kubebin: waiting for another build of the Kubernetes binaries" >&2
		flock 9
	}
fi
if ! built; then
	tmp=$(mktemp -d "$dir.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	# Without these the binaries report v0.0.0-master and clients refuse
	# to parse the server version.
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	echo "kubebin: building ${bins[*]} $version into $dir (cold: several minutes)" >&2
	start=$SECONDS
	go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
		"${bins[@]/#/k8s.io/kubernetes/cmd/}"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
	echo "kubebin: built in $((SECONDS - start)) s" >&2
fi
echo "$dir"
