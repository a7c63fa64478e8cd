# imds-proxy developer tasks. `make test` runs everything CI runs.
#
# Targets that need root (network namespaces, iptables, podman) re-run their
# commands through sudo when you are not root; on a root machine (CI) they run
# as they are.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/imds-proxy/imds-proxy/pkg/version.Version=$(VERSION)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
ROOT := $(if $(filter 0,$(shell id -u)),,sudo env "PATH=$(PATH)" KEEP=$(KEEP))

.PHONY: all build deps kubebin test test-k8s unit e2e sandbox bench soak fuzz images images-local fmt vet lint clean

all: build

## build: the two binaries into bin/.
build:
	@mkdir -p bin
	$(GOBUILD) -o bin/proxy ./cmd/proxy
	$(GOBUILD) -o bin/proxy-init ./cmd/init

## deps: Debian and npm packages and Go modules the tests and the sandbox need.
deps:
	$(ROOT) ./hack/install-deps.sh

## kubebin: kube-apiserver, kube-controller-manager and kubelet built from k8s.io/kubernetes
## (test/kubebin) into a cache outside the repository, keyed by version
## (/var/cache/imds-proxy, or $IMDS_PROXY_CACHE). Cold: minutes; warm: instant.
kubebin: deps
	$(ROOT) ./test/kubebin/build.sh >/dev/null

## test: formatting, vet and the linter first (cheap failures), then every
## test with the race detector, as root: unit, real-kernel iptables, e2e with
## real SDK clients, the podman pod run, the tests against a real
## kube-apiserver and on a real kubelet node.
test: fmt vet lint deps kubebin
	$(ROOT) $(GO) test -race -count=1 -timeout 25m ./...

## test-k8s: only the tests against a real kube-apiserver and etcd, and on
## a real kubelet node with containerd (root).
test-k8s: deps kubebin
	$(ROOT) $(GO) test -race -count=1 -timeout 20m -v ./internal/kubeenv/... ./internal/kubenode/... ./test/k8s/...

## unit: the fast subset; needs no root (root-only tests skip and say so).
unit:
	$(GO) test -race -count=1 -short ./...

## e2e: only the end-to-end suite in pod-shaped network namespaces.
e2e: deps
	$(ROOT) $(GO) test -race -count=1 -v ./test/e2e/...

## sandbox: real binaries in pod-shaped namespaces against the Entra emulator;
## prints the token a pod gets. KEEP=1 leaves it running. MODE=appservice shows
## the capability-free layout: no proxy-init, the app asks /msi/token with
## IDENTITY_ENDPOINT and IDENTITY_HEADER (docs/app-service.md).
MODE ?= imds
sandbox: deps
	$(ROOT) $(GO) run ./test/sandbox -mode=$(MODE)

## bench: the proxy against the limit of its own path (root): warm req/s and
## p50/p99/p99.9 at concurrency 1/16/64 against a static Go server behind the
## same redirect, cold stampede, RSS, goroutines, start-up, binary size and
## allocations. Prints a table, writes out/bench-<time>.txt (git-ignored) and
## never fails on a missed target. E.g. make bench BENCH_FLAGS='-d 10s -rounds 5'
bench: deps
	$(ROOT) $(GO) run ./test/bench/cmd/imds-bench $(BENCH_FLAGS)

## soak: the proxy for SOAK_DURATION (default 10m) under mixed load (raw
## requests, the load generator, curl and the Go SDK clients) with a fault
## toggled every 30 s and the projected token rotated (root). Prints
## requests served, errors by kind, RSS, goroutines and open fds at the
## start, every minute and at the end; fails unless the proxy ends flat
## (within 10 % of the warm-up) and no log holds a token, an assertion or
## an Authorization value. `make test` runs a 60 s smoke of it.
## SOAK_FLAGS='-keep-logs out/soak' keeps the logs.
SOAK_DURATION ?= 10m
soak: deps
	$(ROOT) $(GO) run ./test/soak/cmd/imds-soak -duration $(SOAK_DURATION) $(SOAK_FLAGS)

## fuzz: every fuzz target of the repository (found with `go test -list`),
## FUZZTIME each; needs no root. FUZZ (a regexp) narrows the targets and
## FUZZ_PKGS the packages, e.g.
## make fuzz FUZZTIME=5m FUZZ='FuzzClassify|FuzzParseTokenQuery' FUZZ_PKGS=./pkg/imds
## A failing input lands in testdata/fuzz/ of its package: commit it as a seed.
FUZZTIME ?= 30s
fuzz:
	GO='$(GO)' FUZZTIME='$(FUZZTIME)' FUZZ='$(FUZZ)' FUZZ_PKGS='$(FUZZ_PKGS)' ./hack/fuzz.sh

## images: multi-arch images with docker buildx (needs a Docker engine).
images:
	VERSION=$(VERSION) ./build/images.sh

## images-local: the same images with podman/buildah, pulling nothing.
images-local: deps
	$(ROOT) env VERSION=$(VERSION) ./build/images-local.sh

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## lint: golangci-lint with .golangci.yml (the standard set, errorlint, gosec,
## misspell, revive, and the layering rules of docs/architecture.md as
## depguard and forbidigo rules), at the version hack/tools.sh pins; built
## on first use into ~/.cache/imds-proxy/tools (about 1.5 minutes), no root.
lint:
	@lint=$$(GO='$(GO)' ./hack/tools.sh golangci-lint) && "$$lint" run ./...

clean:
	rm -rf bin out
