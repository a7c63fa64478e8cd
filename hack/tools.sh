#!/usr/bin/env bash
# Installs a developer tool at the version pinned here, once, into a cache
# outside the repository, and prints the path of its binary:
#
#   "$(hack/tools.sh golangci-lint)" run ./...
#
# The tool is built from source with `go install module@version` (the Go
# module proxy is the only download). The cache is
# $IMDS_PROXY_TOOLS, default ${XDG_CACHE_HOME:-~/.cache}/imds-proxy/tools,
# one directory per tool and version, so changing a pin installs the new
# version beside the old one. Progress goes to stderr.
set -euo pipefail

# golangci-lint v2, built with the Go toolchain of this machine (a linter
# must be built with a Go at least as new as the code it reads).
GOLANGCI_LINT_VERSION=v2.15.0

tool=${1:?usage: hack/tools.sh golangci-lint}
case $tool in
golangci-lint)
	module=github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	version=$GOLANGCI_LINT_VERSION
	;;
*)
	echo "tools: unknown tool $tool" >&2
	exit 2
	;;
esac

GO=${GO:-go}
if ! command -v "$GO" >/dev/null && [ -x /usr/local/go/bin/go ]; then
	GO=/usr/local/go/bin/go
fi
dir=${IMDS_PROXY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/imds-proxy/tools}/$tool-$version
bin=$dir/$tool
if [ ! -x "$bin" ]; then
	echo "tools: go install $module@$version into $dir" >&2
	mkdir -p "$dir"
	# Outside the repository, so this module's go.mod plays no part.
	(cd "$dir" && GOBIN=$dir "$GO" install "$module@$version")
fi
echo "$bin"
