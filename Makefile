# ward — see README.md. Every target installs what it needs itself.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: run build test bench lint generate proto

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

generate: proto ## regenerates all generated code (committed)

proto: ## protoc from Debian (protobuf-compiler), plugins pinned in tools/go.mod
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends protobuf-compiler)
	cd tools && go build -o ../bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go && go build -o ../bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
	  -I proto --go_out=. --go_opt=module=github.com/wardvpn/ward --go-grpc_out=. --go-grpc_opt=module=github.com/wardvpn/ward \
	  proto/ward/gateway/v1/gateway.proto proto/ward/proxy/v1/proxy.proto
