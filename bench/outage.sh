#!/usr/bin/env bash
# Load during an injected outage: switchyard in front of two mock upstreams (route
# [a/echo, b/echo], fallback), constant load with oha, and upstream `a` failing with 503 for
# the middle of the run. Reports the success rate, latency and attempts per request of a
# baseline run and of the outage run, side by side.
#
#   bench/outage.sh                        # DURATION=20s CONC=16
#   DURATION=30s CONC=64 bench/outage.sh
#
# Loopback only; every process started is stopped on exit; every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=outage
READY_TIMEOUT_S=20

DURATION="${DURATION:-20s}"
CONC="${CONC:-16}"
A_PORT="${A_PORT:-9111}"; A_ADMIN="${A_ADMIN:-9112}"
B_PORT="${B_PORT:-9113}"; B_ADMIN="${B_ADMIN:-9114}"
SY_PORT="${SY_PORT:-4110}"; SY_ADMIN="${SY_ADMIN:-9575}"
ensure_oha
require_tools jq
BIN="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin switchyard)

bench_setup outage
require_free_ports "A_PORT/A_ADMIN/B_PORT/B_ADMIN/SY_PORT/SY_ADMIN" \
  "$A_PORT" "$A_ADMIN" "$B_PORT" "$B_ADMIN" "$SY_PORT" "$SY_ADMIN"

"$BIN" mock --port "$A_PORT" --admin-port "$A_ADMIN" 2>"$WORK/a.log" & A_PID=$!; PIDS+=("$A_PID")
"$BIN" mock --port "$B_PORT" --admin-port "$B_ADMIN" 2>"$WORK/b.log" & B_PID=$!; PIDS+=("$B_PID")
cat >"$WORK/sy.yaml" <<YAML
listen: 127.0.0.1:$SY_PORT
admin: 127.0.0.1:$SY_ADMIN
providers:
  - {name: a, kind: openai_compatible, base_url: "http://127.0.0.1:$A_PORT/v1", models: [echo]}
  - {name: b, kind: openai_compatible, base_url: "http://127.0.0.1:$B_PORT/v1", models: [echo]}
models:
  - name: chat
    targets: [a/echo, b/echo]
YAML
"$BIN" serve --config "$WORK/sy.yaml" 2>"$WORK/sy.log" & SY_PID=$!; PIDS+=("$SY_PID")
wait_http "http://127.0.0.1:$A_ADMIN/mock/faults" 200 "$A_PID"
wait_http "http://127.0.0.1:$B_ADMIN/mock/faults" 200 "$B_PID"
wait_http "http://127.0.0.1:$SY_ADMIN/readyz" 200 "$SY_PID"

calls() { curl -fs "http://127.0.0.1:$1/mock/faults" | jq .calls; }
BODY='{"model":"chat","messages":[{"role":"user","content":"hello there"}]}'
secs=${DURATION%s}

run() { # name, fault-schedule-function
  local name=$1 schedule=$2
  local a0 b0 a1 b1
  a0=$(calls "$A_ADMIN"); b0=$(calls "$B_ADMIN")
  $schedule &
  local sched=$!; PIDS+=("$sched")
  oha --no-tui --output-format json -z "$DURATION" -c "$CONC" -m POST \
    -H 'content-type: application/json' -d "$BODY" \
    "http://127.0.0.1:$SY_PORT/v1/chat/completions" >"$WORK/$name.json"
  wait "$sched" || true; untrack_pid "$sched"
  curl -fs -X DELETE "http://127.0.0.1:$A_ADMIN/mock/faults" >/dev/null
  a1=$(calls "$A_ADMIN"); b1=$(calls "$B_ADMIN")
  jq -r --arg name "$name" --argjson a $((a1 - a0)) --argjson b $((b1 - b0)) '
    (.summary.successRate * 100) as $ok
    | ([.statusCodeDistribution | to_entries[] | .value] | add) as $n
    | "| \($name) | \(.summary.requestsPerSec | floor) | \($ok | . * 100 | floor / 100)% | \(.latencyPercentiles.p50 * 1000 | . * 1000 | floor / 1000) | \(.latencyPercentiles.p99 * 1000 | . * 1000 | floor / 1000) | \($a) | \($b) | \((($a + $b) / $n) * 10000 | floor / 10000) | \(.statusCodeDistribution | tostring) |"' \
    "$WORK/$name.json"
}

no_faults() { :; }
outage() {
  # a fails with 503 from 25% to 75% of the run, then recovers.
  sleep "$(awk -v s="$secs" 'BEGIN{print s*0.25}')"
  curl -fs -X POST "http://127.0.0.1:$A_ADMIN/mock/faults?status=503" >/dev/null
  sleep "$(awk -v s="$secs" 'BEGIN{print s*0.5}')"
  curl -fs -X DELETE "http://127.0.0.1:$A_ADMIN/mock/faults" >/dev/null
}

echo "bench/outage.sh: DURATION=$DURATION CONC=$CONC ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| run | req/s | success | p50 ms | p99 ms | calls to a | calls to b | attempts/request | statuses |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|---|"
run baseline no_faults
run outage outage
echo
# grep -c prints 0 but exits 1 when nothing matches: a run without a transition is no failure.
{ grep -c "circuit breaker changed state" "$WORK/sy.log" || true; } | sed 's/^/breaker transitions logged: /'
