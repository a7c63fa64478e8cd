#!/usr/bin/env bash
# `make images`: builds Dockerfile.proxy and Dockerfile.init with docker buildx
# on a machine with a Docker engine (this CI machine has none: use
# build/images-local.sh there).
#
# Environment:
#   REGISTRY   image repository prefix (default ghcr.io/imds-proxy)
#   VERSION    tag and version stamped into the binaries (default: git describe)
#   PUSH=1     push a multi-arch manifest list for PLATFORMS (default
#              linux/amd64,linux/arm64); without PUSH the images are loaded
#              into the local engine for the host platform only, because the
#              classic image store cannot hold a multi-platform image.
#   PLATFORMS  override the platform list
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

REGISTRY=${REGISTRY:-ghcr.io/imds-proxy}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
if [ "${PUSH:-}" = 1 ]; then
	PLATFORMS=${PLATFORMS:-linux/amd64,linux/arm64}
	output=--push
else
	PLATFORMS=${PLATFORMS:-linux/$(go env GOARCH)}
	output=--load
fi

command -v docker >/dev/null || { echo "images: docker not found; on this machine use build/images-local.sh (make images-local)" >&2; exit 1; }

for spec in proxy:Dockerfile.proxy proxy-init:Dockerfile.init; do
	name=${spec%%:*} file=${spec#*:}
	docker buildx build \
		--platform "$PLATFORMS" \
		--build-arg "VERSION=$VERSION" \
		--file "$file" \
		--tag "$REGISTRY/$name:$VERSION" \
		"$output" \
		.
done
