# ward — see README.md. Every target installs what it needs itself.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: run build test bench lint generate

run: ## core on the embedded SQLite database in ./ward-data, API on :8000
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/ward core

build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/ward ./cmd/ward

test: ## every test, with -race, on SQLite and a throwaway PostgreSQL
	./scripts/test.sh

bench: ## performance figures beside their targets (see bench/README.md)
	./scripts/install-deps.sh
	$(GO) run ./bench/cmd/wardbench all

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

generate: ## regenerates generated code (protobuf arrives with the gateway link)
	$(GO) generate ./...
