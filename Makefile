# ward — see README.md. Every target installs what it needs itself.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: run build test bench lint generate proto vendor-web

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

HTMX_VERSION  := 2.0.11
UPLOT_VERSION := 1.6.32
vendor-web: ## re-fetch the browser libraries internal/web embeds (npm pack; needs npm only here)
	rm -rf .vendor-web && mkdir .vendor-web
	cd .vendor-web && npm pack --silent htmx.org@$(HTMX_VERSION) uplot@$(UPLOT_VERSION) && for f in *.tgz; do mkdir -p $${f%.tgz} && tar xzf $$f -C $${f%.tgz}; done
	cp .vendor-web/htmx.org-$(HTMX_VERSION)/package/dist/htmx.min.js internal/web/static/vendor/htmx-$(HTMX_VERSION).min.js
	cp .vendor-web/htmx.org-$(HTMX_VERSION)/package/LICENSE internal/web/static/vendor/htmx.LICENSE
	cp .vendor-web/uplot-$(UPLOT_VERSION)/package/dist/uPlot.iife.min.js internal/web/static/vendor/uPlot-$(UPLOT_VERSION).iife.min.js
	cp .vendor-web/uplot-$(UPLOT_VERSION)/package/dist/uPlot.min.css internal/web/static/vendor/uPlot-$(UPLOT_VERSION).min.css
	cp .vendor-web/uplot-$(UPLOT_VERSION)/package/LICENSE internal/web/static/vendor/uPlot.LICENSE
	rm -rf .vendor-web
