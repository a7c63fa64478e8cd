#!/usr/bin/env bash
# Installs everything the tests, the sandbox and the benchmark need on a
# Debian/Ubuntu machine with Go: Debian packages, npm packages for the e2e
# clients (from the committed lockfile), and Go modules. Safe to run again:
# it installs only what is missing. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(iptables iproute2 curl ca-certificates util-linux procps
	python3-azure azure-cli
	podman buildah runc debootstrap
	etcd-server
	containerd containernetworking-plugins)
missing=()
for p in "${apt_pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "install-deps: apt-get install nodejs npm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# npm ci again whenever the committed lockfile changed since the last install.
node_dir=test/e2e/clients/node
if [ -f "$node_dir/package-lock.json" ]; then
	want=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
	have=$(cat "$node_dir/node_modules/.lock-sha256" 2>/dev/null || true)
	if [ "$want" != "$have" ]; then
		echo "install-deps: npm ci in $node_dir"
		(cd "$node_dir" && npm ci --no-audit --no-fund --silent)
		echo "$want" >"$node_dir/node_modules/.lock-sha256"
	fi
fi

go mod download
