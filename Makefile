# tenantscope — run `make help` for the targets.
SHELL := /usr/bin/env bash
GO    ?= go
BIN   := bin/tenantscope
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DATA  ?= ./data
CONFIG ?= examples/tenantscope.yaml

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: chdb
chdb: ## fetch the embedded ClickHouse engine (libchdb, pinned and checksummed) into the user cache
	@scripts/fetch-chdb.sh >/dev/null

.PHONY: build
build: ## build bin/tenantscope
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/tenantscope

.PHONY: run
run: chdb build ## fetch what is needed, build, and start the whole suite with demo tenants
	$(BIN) serve --config $(CONFIG) --data $(DATA) --demo

.PHONY: engine
engine: chdb build ## serve only the embedded ClickHouse engine on 127.0.0.1:8123
	$(BIN) engine --data $(DATA)/engine

.PHONY: browser
browser: ## install Debian's chromium for the browser test when it is missing
	@scripts/apt-install.sh chromium chromium

.PHONY: prometheus
prometheus: ## install Debian's prometheus and promtool for the metrics tests when they are missing
	@scripts/apt-install.sh prometheus prometheus promtool

.PHONY: test
test: chdb browser prometheus ## run every test against the embedded NATS and ClickHouse engines (one package at a time: latency tests stay meaningful); screenshots land in test-output/
	@rm -rf test-output && mkdir -p test-output
	TENANTSCOPE_REQUIRE_BROWSER=1 TENANTSCOPE_REQUIRE_PROMETHEUS=1 $(GO) test -count=1 -p 1 -timeout 45m -artifacts -outputdir $(CURDIR)/test-output ./...

.PHONY: certs
certs: build ## write a local CA and TLS certificates for docker-compose's services into deploy/certs
	$(BIN) certs --dir deploy/certs

.PHONY: bench
bench: chdb build ## run the Go benchmarks and the benchmark commands that print tables
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 30m ./...
	$(BIN) bench engine
	$(BIN) bench ingest
	$(BIN) bench sdk
	$(BIN) bench otlp
	$(BIN) bench otlp --peer otelcol
	$(BIN) bench audit
	$(BIN) bench cost
	$(BIN) bench erase
	$(BIN) bench move
	$(BIN) bench move --two-servers

.PHONY: bench-otelcol
bench-otelcol: chdb build ## build the OpenTelemetry Collector (bench/otelcol, a module of its own) and run it beside the suite on the same OTLP load: three rounds with the exporter uncompressed (the median of each ratio), then one with its default lz4
	$(BIN) bench otlp --peer otelcol --rounds 3
	$(BIN) bench otlp --peer otelcol --peer-compress lz4

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@for t in $$(grep -rhoE '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' . | cut -d' ' -f2); do \
	  pkg=$$(grep -rlE "^func $$t\(" --include='*_test.go' . | xargs dirname); \
	  echo "== $$t ($$pkg)"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-30s} $$pkg || exit 1; \
	done

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: generate
generate: ## regenerate generated code (templ)
	$(GO) generate ./...

.PHONY: check-generated
check-generated: generate ## fail when generated code is stale
	@git diff --exit-code --stat -- . || (echo "generated code is stale: run 'make generate' and commit"; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- '*_templ.go')" || (echo "untracked generated files"; exit 1)

.PHONY: clean
clean: ## remove build output and the local data directory
	rm -rf bin $(DATA)
