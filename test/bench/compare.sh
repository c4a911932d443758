#!/usr/bin/env bash
# make bench: every figure of docs/performance.md's table, before (a base revision, default
# BENCH_BASE in the Makefile) and after (this tree), on this machine, one after the other:
#   1. the admission path: go test -bench, 5 runs each, compared by benchstat;
#   2. TLS load beside the echo floor: this tree's test/load run against both trees' code;
#   3. on the local control plane: webhook and labeler RSS, first label, 300-pod scale-up.
# Output: bin/bench/ (raw results) and the comparison on standard output.
set -euo pipefail
base=${1:?usage: compare.sh <base revision>}
cd "$(dirname "$0")/../.."
benchstat=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
out=bin/bench
mkdir -p "$out"
wt=$(mktemp -d /tmp/habring-bench-base.XXXXXX)
cleanup() { git worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; }
trap cleanup EXIT
git worktree add -q --detach "$wt" "$base"
# The same load generator for both: this tree's (alternating rounds) against each tree's handler.
rm -rf "$wt/test/load" && cp -r test/load "$wt/test/load"
# A base from before the product packages moved under internal/.
if [ ! -d "$wt/internal" ]; then
  sed -i 's#"github.com/habring/habring/internal/#"github.com/habring/habring/#' "$wt/test/load/main.go"
fi
# A base from before package contract had its names in package patch.
if [ ! -d "$wt/contract" ]; then
  sed -i -e 's/\bcontract\./patch./g' -e '/"github.com\/habring\/habring\/contract"/d' "$wt/test/load/main.go"
fi
# A base from before patch.Injector took the handler's options as they were.
if ! grep -q 'func NewInjector' "$wt/patch/"*.go; then
  sed -i -E 's/Injector: patch\.NewInjector\((patch\.Options\{[^}]*\})\)\}/Options: \1}/' "$wt/test/load/main.go"
fi
echo "before: $(git log -1 --format='%h %cs %s' "$base" | cut -c1-100)"
echo "after:  this tree ($(git describe --always --dirty))"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3), $(date -u +%F)"

echo; echo "== 1/3 admission path: go test -bench, 5 runs each (progress on stderr)"
for side in before after; do
  dir=.; [ "$side" = before ] && dir=$wt
  echo "bench: $side" >&2
  pkg=./webhook; [ -d "$dir/internal/webhook" ] && pkg=./internal/webhook
  (cd "$dir" && go test "$pkg" -run '^$' -bench . -benchmem -benchtime 1s -count 5) > "$out/$side.txt"
done
go run "$benchstat" "$out/before.txt" "$out/after.txt"

echo; echo "== 2/3 TLS load beside the echo floor (16 connections; 1,000 req/s open loop)"
for side in before after; do
  dir=.; [ "$side" = before ] && dir=$wt
  echo "-- $side"
  (cd "$dir" && go run ./test/load -duration 10s -rate 1000 -conns 16 2>/dev/null) | tee "$out/load-$side.txt"
done

echo; echo "== 3/3 on the local control plane (webhook RSS, labeler RSS and first label, scale-up ratio)"
for side in before after; do
  dir=.; [ "$side" = before ] && dir=$wt
  echo "-- $side"
  (cd "$dir" && HABRING_E2E=1 HABRING_BENCH=1 go test -count=1 -v -timeout 30m -run 'TestBench' ./test/e2e 2>&1) > "$out/cluster-$side.txt" || { tail -30 "$out/cluster-$side.txt"; exit 1; }
  grep -E 'RSS|first label|scale-up|requests per ring' "$out/cluster-$side.txt" | sed -E 's/^ +[a-z_]+\.go:[0-9]+: /  /'
done
