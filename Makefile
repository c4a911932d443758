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

.PHONY: build-static
build-static: ## the image's build for this machine: static, no cgo (runs on an empty base)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -buildid=" -o $(BIN)/habring-static ./cmd/habring

IMAGE_REPO ?= ghcr.io/habring/habring

.PHONY: image
image: ## bin/habring.oci.tar: the multi-arch image (linux/amd64, linux/arm64) as an OCI layout tar, no container engine needed (IMAGEFLAGS=--help)
	$(GO) run ./tools/image --out $(BIN)/habring.oci.tar --repository $(IMAGE_REPO) $(IMAGEFLAGS)

.PHONY: docker-image
docker-image: ## the same content with docker build, tagged $(IMAGE) (needs docker or podman as docker)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "docker-image needs a running docker; make image builds the same image without one"; exit 1; }
	docker build --build-arg VERSION=$$(git describe --tags --always --dirty) --build-arg REVISION=$$(git rev-parse HEAD) -t $(IMAGE) .

# The chart's alerting rules are checked and tested with Prometheus's promtool (Debian's).
.PHONY: promtool
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then echo "installing promtool (Debian's prometheus) for the chart's alerting rules"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else echo "the chart's alert tests need promtool: apt-get install --no-install-recommends prometheus"; exit 1; fi; }

.PHONY: unit
unit: promtool ## unit, golden and fuzz-seed tests (fast, no cluster), and the Helm chart's render and lint tests
	$(GO) test -race -count=1 ./...
	cd test/helm && $(GO) test -count=1 ./...

.PHONY: cluster-build
cluster-build: ## build the local control plane (first time ~15-25 min on 2 cores; cached after)
	$(GO) run ./test/cluster/cmd/localcluster -build-only

.PHONY: e2e
e2e: cluster-build promtool ## end-to-end tests on a real kube-apiserver, controller-manager, scheduler and etcd; then the Helm chart installed, upgraded from the previous release and uninstalled on one
	HABRING_E2E=1 $(GO) test -count=1 -v -timeout 60m ./test/e2e
	cd test/helm && HABRING_E2E=1 $(GO) test -count=1 -v -timeout 30m -run 'TestInstall|TestUpgrade' ./...

GOLANGCI_LINT_VERSION := v2.15.0

.PHONY: lint
lint: ## golangci-lint (.golangci.yml), installed from the Go module proxy into bin/
	@test -x $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION) || { echo "installing golangci-lint $(GOLANGCI_LINT_VERSION)"; \
	  GOBIN=$(BIN)/.lint $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) && \
	  mv $(BIN)/.lint/golangci-lint $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION); }
	$(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION) run ./...
	cd test/helm && $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION) run ./...

.PHONY: test
test: verify lint unit e2e ## everything CI runs: verify, lint, unit, golden, fuzz seeds, end-to-end
	@echo "make test: all passed"

DEMO_DIR := $(CURDIR)/.demo

# The example HA Redis runs Debian's redis-server in each redis pod.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then echo "installing redis-server (Debian's) for the example HA Redis"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else echo "the example HA Redis needs redis-server and redis-cli: apt-get install redis-server"; exit 1; fi; }

.PHONY: demo
demo: cluster-build redis-server ## local control plane + habring + the HA Redis of examples/ running (needs root); prints peers, roles, Redis replication, rings; keeps running
	@if [ -f $(DEMO_DIR)/pid ] && kill -0 $$(cat $(DEMO_DIR)/pid) 2>/dev/null; then echo "the demo is already running: make demo-down first"; exit 1; fi
	@rm -rf $(DEMO_DIR); mkdir -p $(DEMO_DIR)
	$(GO) build -o $(BIN)/demo ./test/demo
	@setsid $(BIN)/demo -dir $(DEMO_DIR) > $(DEMO_DIR)/table.txt 2> $(DEMO_DIR)/demo.log < /dev/null & echo $$! > $(DEMO_DIR)/pid
	@tail -n +1 -f $(DEMO_DIR)/demo.log & tailpid=$$!; \
	  while [ ! -f $(DEMO_DIR)/ready ] && [ ! -f $(DEMO_DIR)/failed ] && kill -0 $$(cat $(DEMO_DIR)/pid) 2>/dev/null; do sleep 1; done; \
	  kill $$tailpid 2>/dev/null; \
	  if [ ! -f $(DEMO_DIR)/ready ]; then echo "demo failed; see $(DEMO_DIR)/demo.log"; exit 1; fi
	@echo; cat $(DEMO_DIR)/table.txt

.PHONY: chaos
chaos: cluster-build ## break running rings side by side: habring (args, watch-file) vs the bootstrap StatefulSet (needs root; ~8 min; CHAOSFLAGS=--help)
	$(GO) run ./test/chaos/cmd/chaos $(CHAOSFLAGS)

.PHONY: failover
failover: cluster-build redis-server ## a Redis failover measured like Jepsen, habring beside the bootstrap StatefulSet (needs root; FAILOVERFLAGS=--help)
	$(GO) run ./test/failover/cmd/failover $(FAILOVERFLAGS)

.PHONY: demo-down
demo-down: ## stop what make demo started
	@if [ -f $(DEMO_DIR)/pid ] && kill -TERM $$(cat $(DEMO_DIR)/pid) 2>/dev/null; then \
	  while kill -0 $$(cat $(DEMO_DIR)/pid) 2>/dev/null; do sleep 0.5; done; echo "demo stopped"; \
	else echo "no demo running"; fi
	@rm -f $(DEMO_DIR)/pid

.PHONY: verify
verify: ## fail on build output in git, gofmt, go vet, go mod tidy drift and stale golden files
	@big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' | awk '$$1 > 1048576 && $$2 !~ /(^|\/)testdata\// {print "  " $$2 " (" $$1 " bytes)"}'); \
	  if [ -n "$$big" ]; then echo "tracked files over 1 MiB outside testdata/ (build output does not belong in git; git rm --cached them and extend .gitignore):"; echo "$$big"; exit 1; fi
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd test/helm && $(GO) vet ./...
	@$(GO) mod tidy && (cd test/helm && $(GO) mod tidy); \
	  if ! git diff --quiet -- go.mod go.sum test/helm/go.mod test/helm/go.sum; then git diff -- go.mod go.sum test/helm/go.mod test/helm/go.sum; echo "go mod tidy changed go.mod/go.sum: commit the result"; exit 1; fi
	$(GO) test -count=1 ./internal/patch ./internal/render -run TestGolden -update
	@if ! git diff --quiet -- internal/patch/testdata internal/render/testdata; then git diff --stat -- internal/patch/testdata internal/render/testdata; echo "golden files are stale: read 'git diff internal/patch/testdata internal/render/testdata', then commit"; exit 1; fi

# The revision docs/performance.md's table compares against ("before").
BENCH_BASE ?= 233c182

.PHONY: bench
bench: cluster-build ## every Performance figure, before (BENCH_BASE) and after (this tree): go test -bench with benchstat, TLS load beside the echo floor, cluster RSS, API load at rest and ratios (~20 min)
	test/bench/compare.sh $(BENCH_BASE)

# Minimizing each new input runs the target many times more; on these large, fully
# instrumented test binaries the default minute of it per input stalls the search.
FUZZFLAGS ?= -fuzzminimizetime 5s

.PHONY: fuzz
fuzz: ## fuzz the admission request path, then the labeler's census decoding, FUZZTIME each (default 2m)
	$(GO) test ./internal/webhook -run '^$$' -fuzz FuzzMutate -fuzztime $(FUZZTIME) $(FUZZFLAGS)
	$(GO) test ./internal/labeler -run '^$$' -fuzz FuzzCensus -fuzztime $(FUZZTIME) $(FUZZFLAGS)

.PHONY: golden
golden: ## rewrite the golden files of internal/patch/ and internal/render/ (read the diff before committing)
	$(GO) test ./internal/patch ./internal/render -run TestGolden -update
	git diff --stat -- internal/patch/testdata internal/render/testdata
