#!/usr/bin/env bash
# Added latency of the redis state backend vs memory: the same `switchyard serve` (one key
# with rpm, tpm and a daily budget, so every request takes a GCRA step and a budget
# reservation, and settles afterwards) in front of the built-in mock, once per backend, driven
# by oha. Needs a Redis on REDIS_URL (default redis://127.0.0.1:6379).
#
#   bench/redis/run.sh                         # DURATION=10s CONCURRENCY="1 16"
#   DURATION=5s CONCURRENCY="1" bench/redis/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-1 16}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
TARGET=${CARGO_TARGET_DIR:-target}
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -q
BIN=$TARGET/release/switchyard
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

config() { # backend port admin
  cat <<YAML
listen: 127.0.0.1:$2
admin: 127.0.0.1:$3
state:
  backend: $1
  url: $REDIS_URL
  prefix: sybench-$$-$1
keys:
  - name: bench
    key: sk-bench
    rpm: 1000000000
    tpm: 1000000000000
    budget_usd_per_day: 1000000000
YAML
}
# No-limit baseline: auth off, no keys (the layers pass through).
printf 'listen: 127.0.0.1:4310\nadmin: 127.0.0.1:9610\n' > "$work/none.yaml"
config memory 4311 9611 | grep -v '  url:' > "$work/memory.yaml"
config redis 4312 9612 > "$work/redis.yaml"
for b in none memory redis; do
  "$BIN" serve --config "$work/$b.yaml" 2>"$work/$b.log" & pids+=($!)
done
for port in 9610 9611 9612; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done
body='{"model":"echo","messages":[{"role":"user","content":"hello"}]}'
echo "| backend | concurrency | req/s | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- |"
for c in $CONCURRENCY; do
  for b in none memory redis; do
    case $b in none) port=4310 ;; memory) port=4311 ;; redis) port=4312 ;; esac
    args=(-z "$DURATION" -c "$c" --no-tui --output-format json -m POST
      -H 'content-type: application/json' -H 'authorization: Bearer sk-bench' -d "$body"
      "http://127.0.0.1:$port/v1/chat/completions")
    oha -z 1s -c "$c" --no-tui --output-format quiet "${args[@]:4}" >/dev/null 2>&1 || true
    oha "${args[@]}" > "$work/out.json"
    python3 - "$work/out.json" "$b" "$c" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
assert set(codes) <= {"200"}, codes
print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['requestsPerSec']:.0f} | {p['p50']*1e3:.3f} | {p['p99']*1e3:.3f} |")
PY
  done
done
