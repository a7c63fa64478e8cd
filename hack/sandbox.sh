#!/usr/bin/env bash
# Runs the sandbox (test/sandbox): the real proxy-init and proxy in
# pod-shaped network namespaces against the local Entra emulator, printing
# the token a pod gets from 169.254.169.254. KEEP=1 leaves it running until
# Ctrl-C. Needs Linux, root, Go, and the tools from hack/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "sandbox: needs root (network namespaces, iptables, setuid): sudo make sandbox" >&2
	exit 1
fi
# sudo resets PATH; Go's tarball install lives in /usr/local/go/bin.
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if ! [ -x "$GO" ] && ! command -v "$GO" >/dev/null; then
	echo "sandbox: Go not found on PATH or in /usr/local/go/bin" >&2
	exit 1
fi
export PATH=$PATH:$(dirname "$(command -v "$GO")")
for tool in ip iptables setpriv curl; do
	command -v "$tool" >/dev/null || { echo "sandbox: $tool not found: run hack/install-deps.sh" >&2; exit 1; }
done
mkdir -p bin
CGO_ENABLED=0 "$GO" build -trimpath -o bin/sandbox ./test/sandbox
# exec: Ctrl-C and SIGTERM reach the sandbox itself, which tears down.
exec bin/sandbox
