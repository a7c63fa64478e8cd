# imds-proxy developer tasks. `make test` runs everything CI runs.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/imds-proxy/imds-proxy/pkg/version.Version=$(VERSION)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'

.PHONY: all build deps test unit fmt vet clean

all: build

build:
	@mkdir -p bin
	$(GOBUILD) -o bin/proxy ./cmd/proxy
	$(GOBUILD) -o bin/proxy-init ./cmd/init

## deps: install Debian and npm packages and Go modules the tests need (root).
deps:
	./hack/install-deps.sh

## test: formatting, vet, and every test with the race detector. Runs the
## real-kernel and e2e tests when root (CI is root); they skip otherwise.
test: deps fmt vet
	$(GO) test -race -count=1 ./...

## unit: the fast subset, no root needed.
unit:
	$(GO) test -race -count=1 -short ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

clean:
	rm -rf bin out
