# habring: `make help` lists the targets. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
IMAGE ?= ghcr.io/habring/habring:dev
FUZZTIME ?= 2m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/habring
	$(GO) build -trimpath -o $(BIN)/habring ./cmd/habring

.PHONY: unit
unit: ## unit, golden and fuzz-seed tests (fast, no cluster)
	$(GO) test -race -count=1 ./...

.PHONY: test
test: verify unit ## everything CI runs
	@echo "make test: all passed"

.PHONY: verify
verify: ## fail on gofmt, go vet, go mod tidy drift and stale golden files
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy; \
	  if ! git diff --quiet -- go.mod go.sum; then git diff -- go.mod go.sum; echo "go mod tidy changed go.mod/go.sum: commit the result"; exit 1; fi
	$(GO) test -count=1 ./patch ./render -run TestGolden -update
	@if ! git diff --quiet -- patch/testdata render/testdata; then git diff --stat -- patch/testdata render/testdata; echo "golden files are stale: read 'git diff patch/testdata render/testdata', then commit"; exit 1; fi

.PHONY: fuzz
fuzz: ## fuzz the admission request path for FUZZTIME (default 2m)
	$(GO) test ./webhook -run '^$$' -fuzz FuzzMutate -fuzztime $(FUZZTIME)

.PHONY: golden
golden: ## rewrite the golden files of patch/ and render/ (read the diff before committing)
	$(GO) test ./patch ./render -run TestGolden -update
	git diff --stat -- patch/testdata render/testdata
