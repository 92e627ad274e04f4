#!/usr/bin/env bash
# Tracing on vs off: the same switchyard build, the same mock upstream and load, once without
# trace export and once exporting every span over OTLP/HTTP to a local sink. Runs alternate
# (off, on, off, on, ...) so drift on a shared machine hits both alike.
#
#   bench/otel-overhead.sh                       # ROUNDS=3 DURATION=10s CONCURRENCY=16
#   MODEL=chat-stream bench/otel-overhead.sh     # streamed replies
#   SY_RUST_LOG=info bench/otel-overhead.sh      # with the per-request log line on stderr
#
# Everything binds to 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=otel-bench
READY_TIMEOUT_S=20

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONCURRENCY="${CONCURRENCY:-16}"
MODEL="${MODEL:-chat-default}"        # chat-default (unary echo) or chat-stream (lorem)
SY_RUST_LOG="${SY_RUST_LOG:-warn}"    # info: the per-request log line is written too
MOCK_PORT="${MOCK_PORT:-9201}"
SY_PORT="${SY_PORT:-4200}"
SY_ADMIN_PORT="${SY_ADMIN_PORT:-9665}"
SINK_PORT="${SINK_PORT:-4318}"
require_tools curl jq python3 oha

build_switchyard
bench_setup otel
require_free_ports "MOCK_PORT/SY_PORT/SY_ADMIN_PORT/SINK_PORT" "$MOCK_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$SINK_PORT"
CLK_TCK="$(getconf CLK_TCK)"

# An OTLP/HTTP sink: accepts every export with 200 and an empty protobuf reply, counts spans'
# batches. Exports are batched (<= 512 spans or 1 s), so a Python server keeps up.
cat >"$WORK/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    n = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        H.n += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/sink.py" "$SINK_PORT" & PIDS+=("$!")

"$SY_BIN" mock --port "$MOCK_PORT" --host 127.0.0.1 >"$WORK/mock.log" 2>&1 & PIDS+=("$!")
sed "s/127.0.0.1:9101/127.0.0.1:$MOCK_PORT/" "$ROOT/bench/switchyard.yaml" >"$WORK/switchyard.yaml"
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models" 200 "$!"

BODY='{"model":"'"$MODEL"'","max_tokens":16,"stream":'"$([[ $MODEL == chat-stream ]] && echo true || echo false)"',"messages":[{"role":"user","content":"hello from the load test"}]}'
printf 'tracing\tround\treq/s\tp50 ms\tp99 ms\tCPU us/req\tspans dropped\n' >"$WORK/results.tsv"

run() { # run off|on ROUND
  local mode=$1 round=$2 env=()
  [[ $mode == on ]] && env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
  env "${env[@]}" RUST_LOG="$SY_RUST_LOG" "$SY_BIN" serve --config "$WORK/switchyard.yaml" \
    --listen "127.0.0.1:$SY_PORT" --admin "127.0.0.1:$SY_ADMIN_PORT" >"$WORK/sy.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$SY_ADMIN_PORT/readyz" 200 "$pid"
  local url="http://127.0.0.1:$SY_PORT/v1/chat/completions"
  oha --no-tui -z 2s -c "$CONCURRENCY" -m POST -H 'content-type: application/json' -d "$BODY" "$url" >/dev/null
  local c0; c0="$(cpu_ticks "$pid")"
  oha --no-tui --output-format json -z "$DURATION" -c "$CONCURRENCY" -m POST \
    -H 'content-type: application/json' -d "$BODY" "$url" >"$WORK/oha.json"
  local c1; c1="$(cpu_ticks "$pid")"
  sleep 2 # let the last batch go out before reading the dropped counter
  local dropped; dropped="$(curl -fsS "http://127.0.0.1:$SY_ADMIN_PORT/metrics" |
    awk '/^switchyard_trace_spans_dropped_total/ { s += $2 } END { print s + 0 }')"
  stop_pid "$pid" 10 || true
  jq -r --arg m "$mode" --arg r "$round" --arg c "$((c1 - c0))" --arg t "$CLK_TCK" --arg d "$dropped" '
    ([.statusCodeDistribution[]] | add // 0) as $n |
    [ $m, $r, (.summary.requestsPerSec | floor), (.latencyPercentiles.p50 * 1000 * 1000 | floor / 1000),
      (.latencyPercentiles.p99 * 1000 * 1000 | floor / 1000),
      (($c | tonumber) / ($t | tonumber) * 1e6 / $n | floor * 10 / 10), $d ] | map(tostring) | join("\t")' \
    "$WORK/oha.json" >>"$WORK/results.tsv"
}

for r in $(seq 1 "$ROUNDS"); do
  log "round $r: tracing off"; run off "$r"
  log "round $r: tracing on";  run on "$r"
done

echo "# tracing overhead, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD)"
echo "command: ROUNDS=$ROUNDS DURATION=$DURATION CONCURRENCY=$CONCURRENCY MODEL=$MODEL SY_RUST_LOG=$SY_RUST_LOG bench/otel-overhead.sh"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), nproc $(nproc)"
column -t -s $'\t' "$WORK/results.tsv"
awk -F'\t' 'NR > 1 { n[$1]++; rps[$1] += $3; p50[$1] += $4; p99[$1] += $5; cpu[$1] += $6 }
  END { for (m in n) printf "mean %s: %.0f req/s, p50 %.3f ms, p99 %.3f ms, %.1f CPU us/req\n",
        m, rps[m]/n[m], p50[m]/n[m], p99[m]/n[m], cpu[m]/n[m] }' "$WORK/results.tsv" | sort
