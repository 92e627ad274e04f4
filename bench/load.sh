#!/usr/bin/env bash
# switchyard load benchmark: mock upstream vs bare hyper proxy vs switchyard, side by side.
#
#   bench/load.sh                                  # CONCURRENCY="1 16 64 256" DURATION=10s
#   DURATION=5s CONCURRENCY="1 64" bench/load.sh
#   ROUNDS=3 DURATION=5s bench/load.sh            # every target once per round, interleaved;
#                                                  # medians, and ratios per round
#   SYNC_MS=1000 bench/load.sh                     # full-sync's state.sync_ms (0: no full-sync)
#
# See bench/README.md for what is measured and what the columns mean. Everything binds to
# 127.0.0.1; every process started here is stopped on exit; every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=bench
READY_POLL_S=0.005 # the readiness poll also times switchyard's start (SY_READY_MS)

CONCURRENCY="${CONCURRENCY:-1 16 64 256}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-1s}"            # unmeasured oha run before each measured one ("0" to skip)
ROUNDS="${ROUNDS:-1}"             # measured runs per target and concurrency, interleaved
MOCK_PORT="${MOCK_PORT:-9101}"
BARE_PORT="${BARE_PORT:-9102}"
BARE1_PORT="${BARE1_PORT:-9104}"        # the bare proxy on one thread, like switchyard's default
SY_PORT="${SY_PORT:-4100}"
SY_ADMIN_PORT="${SY_ADMIN_PORT:-9565}"
FULL_PORT="${FULL_PORT:-4101}"          # switchyard with every feature on (keys, Redis, tracing)
FULL_ADMIN_PORT="${FULL_ADMIN_PORT:-9566}"
SINK_PORT="${SINK_PORT:-9103}"          # OTLP/HTTP sink for the full variant's spans
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
SYNC_PORT="${SYNC_PORT:-4102}"          # full-sync: full admitting on its copy (state.sync_ms)
SYNC_ADMIN_PORT="${SYNC_ADMIN_PORT:-9567}"
SYNC_MS="${SYNC_MS:-100}"               # full-sync's state.sync_ms (0 leaves full-sync out)
TTFB_REQUESTS="${TTFB_REQUESTS:-300}"   # sequential streamed requests per target for TTFB
READY_TIMEOUT_S="${READY_TIMEOUT_S:-20}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
CMDLINE="ROUNDS=$ROUNDS DURATION=$DURATION CONCURRENCY=\"$CONCURRENCY\" WARMUP=$WARMUP bench/load.sh${*:+ $*}"
[[ "$ROUNDS" == 1 ]] && CMDLINE="${CMDLINE#ROUNDS=1 }"
[[ "$SYNC_MS" == 100 ]] || CMDLINE="SYNC_MS=$SYNC_MS $CMDLINE"
[[ "$SYNC_MS" =~ ^[0-9]+$ ]] || die "SYNC_MS must be a whole number of milliseconds"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number"

require_tools curl jq python3 cargo getconf
RUN_TIMEOUT_S=$(( $(to_secs "$DURATION") + 60 ))
WARM_TIMEOUT_S=$(( $(to_secs "$WARMUP") + 60 ))

# ---------------------------------------------------------------------------------------------
# Tools and builds
# ---------------------------------------------------------------------------------------------
ensure_oha
OHA_JSON=(-j)
if oha --help 2>/dev/null | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); fi
OHA_WAIT=()
if oha --help 2>/dev/null | grep -q -- '--wait-ongoing-requests-after-deadline'; then
  OHA_WAIT=(--wait-ongoing-requests-after-deadline)
fi

GIT_REV="$(built_from)"
build_switchyard
build_bare_proxy
[[ -x "$SY_BIN" && -x "$BARE_BIN" ]] || die "binaries missing after build"

# ---------------------------------------------------------------------------------------------
# Processes: started here, stopped on any exit
# ---------------------------------------------------------------------------------------------
bench_setup bench
require_free_ports "MOCK_PORT/BARE_PORT/BARE1_PORT/SY_PORT/SY_ADMIN_PORT/FULL_PORT/FULL_ADMIN_PORT/SINK_PORT/SYNC_PORT/SYNC_ADMIN_PORT" \
  "$MOCK_PORT" "$BARE_PORT" "$BARE1_PORT" "$SY_PORT" "$SY_ADMIN_PORT" "$FULL_PORT" "$FULL_ADMIN_PORT" "$SINK_PORT" \
  "$SYNC_PORT" "$SYNC_ADMIN_PORT"

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# Reset VmHWM to the current RSS (Linux >= 4.0), so each run's peak is its own. Best effort.
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }
CLK_TCK="$(getconf CLK_TCK)"

log "starting mock upstream on 127.0.0.1:$MOCK_PORT"
"$SY_BIN" mock --port "$MOCK_PORT" --host 127.0.0.1 >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/" any "$MOCK_PID"

log "starting bare proxy on 127.0.0.1:$BARE_PORT -> 127.0.0.1:$MOCK_PORT"
"$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$MOCK_PORT" >"$WORK/bare.log" 2>&1 &
BARE_PID=$!; PIDS+=("$BARE_PID")
wait_http "http://127.0.0.1:$BARE_PORT/" any "$BARE_PID"
BARE_IDLE_RSS_KIB="$(status_kib "$BARE_PID" VmRSS)"
log "starting bare proxy (one thread) on 127.0.0.1:$BARE1_PORT -> 127.0.0.1:$MOCK_PORT"
BARE_PROXY_THREADS=1 "$BARE_BIN" "127.0.0.1:$BARE1_PORT" "127.0.0.1:$MOCK_PORT" >"$WORK/bare1.log" 2>&1 &
BARE1_PID=$!; PIDS+=("$BARE1_PID")
wait_http "http://127.0.0.1:$BARE1_PORT/" any "$BARE1_PID"

sed "s#http://127.0.0.1:9101/v1#http://127.0.0.1:$MOCK_PORT/v1#" "$ROOT/bench/switchyard.yaml" >"$WORK/switchyard.yaml"
log "starting switchyard on 127.0.0.1:$SY_PORT (admin 127.0.0.1:$SY_ADMIN_PORT)"
SY_T0="$(now_ns)"
"$SY_BIN" serve --config "$WORK/switchyard.yaml" \
  --listen "127.0.0.1:$SY_PORT" --admin "127.0.0.1:$SY_ADMIN_PORT" >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!; PIDS+=("$SY_PID")
wait_http "http://127.0.0.1:$SY_ADMIN_PORT/readyz" 200 "$SY_PID"
SY_READY_MS="$(awk -v ns="$(( $(now_ns) - SY_T0 ))" 'BEGIN { printf "%.1f", ns / 1e6 }')"
SY_IDLE_RSS_KIB="$(status_kib "$SY_PID" VmRSS)"
log "switchyard ready in ${SY_READY_MS} ms, idle RSS ${SY_IDLE_RSS_KIB} KiB"

# The "full" variant: the same routes with a caller key (auth), per-key RPM/TPM limits and a
# daily budget kept in Redis, metrics, and every span exported over OTLP/HTTP to a local sink.
# "full-sync" is the same with state.sync_ms: admitted on the replica's copy of the numbers.
cat >"$WORK/sink.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/sink.py" "$SINK_PORT" >"$WORK/sink.log" 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
wait_http "http://127.0.0.1:$SINK_PORT/" any "$SINK_PID"
FULL_KEY="sk-bench-caller-$$"
full_config() { # full_config SYNC_MS PREFIX
  cat "$WORK/switchyard.yaml"
  cat <<YAML
telemetry:
  otlp_endpoint: http://127.0.0.1:$SINK_PORT
  otlp_protocol: http/protobuf
  service_name: switchyard-bench
state:
  backend: redis
  url: $REDIS_URL
  prefix: $2
  sync_ms: $1
keys:
  - name: bench
    key: $FULL_KEY
    team: bench
    models: ["chat-*"]
    rpm: 100000000
    tpm: 100000000000
    budget_usd_per_day: 1000000
# Priced, so every reply is charged to the key's and the team's spend (as in production).
prices:
  echo: {input: 1.0, output: 2.0}
  lorem: {input: 1.0, output: 2.0}
YAML
}
full_config 0 "switchyard-bench-$$" >"$WORK/switchyard-full.yaml"
log "starting switchyard (full) on 127.0.0.1:$FULL_PORT (admin 127.0.0.1:$FULL_ADMIN_PORT, Redis $REDIS_URL)"
"$SY_BIN" serve --config "$WORK/switchyard-full.yaml" \
  --listen "127.0.0.1:$FULL_PORT" --admin "127.0.0.1:$FULL_ADMIN_PORT" >"$WORK/full.log" 2>&1 &
FULL_PID=$!; PIDS+=("$FULL_PID")
wait_http "http://127.0.0.1:$FULL_ADMIN_PORT/readyz" 200 "$FULL_PID"
SYNC_PID=
if (( SYNC_MS > 0 )); then
  full_config "$SYNC_MS" "switchyard-bench-sync-$$" >"$WORK/switchyard-full-sync.yaml"
  log "starting switchyard (full-sync, state.sync_ms $SYNC_MS) on 127.0.0.1:$SYNC_PORT (admin 127.0.0.1:$SYNC_ADMIN_PORT)"
  "$SY_BIN" serve --config "$WORK/switchyard-full-sync.yaml" \
    --listen "127.0.0.1:$SYNC_PORT" --admin "127.0.0.1:$SYNC_ADMIN_PORT" >"$WORK/full-sync.log" 2>&1 &
  SYNC_PID=$!; PIDS+=("$SYNC_PID")
  wait_http "http://127.0.0.1:$SYNC_ADMIN_PORT/readyz" 200 "$SYNC_PID"
fi

# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------
PROMPT='Say hello to the benchmark in one short sentence.'
body() { # body MODEL MODE
  if [[ "$2" == stream ]]; then
    printf '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":16,"stream":true}' "$1" "$PROMPT"
  else
    printf '{"model":"%s","messages":[{"role":"user","content":"%s"}]}' "$1" "$PROMPT"
  fi
}
url_of() { case "$1" in mock) echo "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
  bare) echo "http://127.0.0.1:$BARE_PORT/v1/chat/completions" ;;
  bare1) echo "http://127.0.0.1:$BARE1_PORT/v1/chat/completions" ;;
  switchyard) echo "http://127.0.0.1:$SY_PORT/v1/chat/completions" ;;
  full) echo "http://127.0.0.1:$FULL_PORT/v1/chat/completions" ;;
  full-sync) echo "http://127.0.0.1:$SYNC_PORT/v1/chat/completions" ;; esac; }
model_of() { # model_of TARGET MODE: the mock's model names directly, switchyard's route names
  if [[ "$1" == switchyard || "$1" == full* ]]; then [[ "$2" == stream ]] && echo chat-stream || echo chat-default
  else [[ "$2" == stream ]] && echo lorem || echo echo; fi
}
pid_of() { case "$1" in mock) echo "$MOCK_PID" ;; bare) echo "$BARE_PID" ;; bare1) echo "$BARE1_PID" ;;
  switchyard) echo "$SY_PID" ;;
  full) echo "$FULL_PID" ;; full-sync) echo "$SYNC_PID" ;; esac; }
# auth_of TARGET: the caller key header the full variants require (none for the others).
auth_of() { [[ "$1" == full* ]] && echo "authorization: Bearer $FULL_KEY" || echo "x-bench: 1"; }

TARGETS=(mock bare bare1 switchyard full)
[[ -z "$SYNC_PID" ]] || TARGETS+=(full-sync)
MODES=(unary stream)

# Smoke test: one request per target and mode must answer 200 with the expected shape.
for mode in "${MODES[@]}"; do
  for t in "${TARGETS[@]}"; do
    out="$WORK/smoke-$t-$mode"
    code="$(curl -s -o "$out" -w '%{http_code}' --max-time 5 -X POST -H "$(auth_of "$t")" \
      -H 'content-type: application/json' -d "$(body "$(model_of "$t" "$mode")" "$mode")" "$(url_of "$t")")"
    [[ "$code" == 200 ]] || die "smoke $t/$mode: HTTP $code: $(head -c 300 "$out")"
    if [[ "$mode" == stream ]]; then
      grep -q '^data: \[DONE\]' "$out" || die "smoke $t/$mode: no [DONE] in $(head -c 300 "$out")"
    else
      jq -e '.choices[0].message.content' "$out" >/dev/null || die "smoke $t/$mode: $(head -c 300 "$out")"
    fi
    log "smoke $t/$mode: 200, $(wc -c <"$out") bytes"
  done
done

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS_TSV="$WORK/results.tsv"
: >"$RESULTS_TSV"
ERRORS_TXT="$WORK/errors.txt"
: >"$ERRORS_TXT"

run_oha() { # run_oha DURATION TIMEOUT CONC TARGET MODE -> JSON on stdout
  local dur="$1" tmo="$2" c="$3" t="$4" mode="$5"
  timeout --kill-after=5 "$tmo" oha --no-tui "${OHA_JSON[@]}" "${OHA_WAIT[@]}" -z "$dur" -c "$c" \
    -m POST -H 'content-type: application/json' -H "$(auth_of "$t")" -d "$(body "$(model_of "$t" "$mode")" "$mode")" \
    "$(url_of "$t")"
}

for mode in "${MODES[@]}"; do
  for c in $CONCURRENCY; do
   for round in $(seq 1 "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
      pid="$(pid_of "$t")"
      if [[ "$(to_secs "$WARMUP")" != 0 ]]; then
        run_oha "$WARMUP" "$WARM_TIMEOUT_S" "$c" "$t" "$mode" >/dev/null || die "warm-up $t/$mode/c=$c failed"
      fi
      kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) died"
      reset_hwm "$pid"
      cpu0="$(cpu_ticks "$pid")"
      json="$WORK/run-$t-$mode-$c-$round.json"
      log "run $t $mode c=$c for $DURATION (round $round of $ROUNDS)"
      run_oha "$DURATION" "$RUN_TIMEOUT_S" "$c" "$t" "$mode" >"$json" || die "oha failed for $t/$mode/c=$c"
      cpu1="$(cpu_ticks "$pid")"
      hwm="$(status_kib "$pid" VmHWM)"
      # completed = responses with a status; ok = 2xx responses.
      read -r rps p50 p99 success completed ok < <(jq -r '
        [ .summary.requestsPerSec, .latencyPercentiles.p50, .latencyPercentiles.p99,
          .summary.successRate,
          ([.statusCodeDistribution[]] | add // 0),
          ([.statusCodeDistribution | to_entries[] | select(.key | startswith("2")) | .value] | add // 0)
        ] | map(tostring) | join(" ")' "$json")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$t" "$mode" "$c" "$rps" "$p50" "$p99" "$success" "$completed" "$ok" \
        "$((cpu1 - cpu0))" "$CLK_TCK" "$hwm" "$round" >>"$RESULTS_TSV"
      jq -r --arg k "$t $mode c=$c" '
        (.errorDistribution // {} | to_entries[] | "\($k): error \(.key) x\(.value)"),
        (.statusCodeDistribution // {} | to_entries[] | select(.key | startswith("2") | not)
          | "\($k): HTTP \(.key) x\(.value)")' "$json" >>"$ERRORS_TXT"
    done
   done
  done
done

# Time to first byte of a stream, one connection, sequential requests (bench/ttfb.py).
TTFB_TSV="$WORK/ttfb.tsv"
: >"$TTFB_TSV"
for t in "${TARGETS[@]}"; do
  args=("$(url_of "$t")" "$(body "$(model_of "$t" stream)" stream)")
  hdr="$(auth_of "$t")"
  timeout 60 python3 "$ROOT/bench/ttfb.py" "${args[@]}" 30 "$hdr" >/dev/null || die "ttfb warm-up $t failed"
  log "ttfb $t: $TTFB_REQUESTS sequential streams"
  json="$(timeout 300 python3 "$ROOT/bench/ttfb.py" "${args[@]}" "$TTFB_REQUESTS" "$hdr")" || die "ttfb $t failed"
  printf '%s\t%s\n' "$t" "$json" >>"$TTFB_TSV"
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
STAMP="$(date +%Y-%m-%d-%H%M)"
OUT="$RESULTS_DIR/$STAMP.md"
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"

STAMP="$STAMP" CMDLINE="$CMDLINE" ROUNDS="$ROUNDS" DURATION="$DURATION" WARMUP="$WARMUP" WARMUP_S="$(to_secs "$WARMUP")" \
MACHINE="nproc=$(nproc), kernel $(uname -r), CPU ${CPU_MODEL:-unknown}, load average before the runs: $LOAD_BEFORE" \
VERSIONS="switchyard $GIT_REV, $(rustc --version 2>/dev/null || echo 'rustc ?'), $(oha --version 2>/dev/null | head -n1)" \
SY_READY_MS="$SY_READY_MS" SY_IDLE_RSS_KIB="$SY_IDLE_RSS_KIB" BARE_IDLE_RSS_KIB="$BARE_IDLE_RSS_KIB" \
SYNC_MS="$SYNC_MS" python3 - "$RESULTS_TSV" "$ERRORS_TXT" "$TTFB_TSV" >"$OUT.tmp" <<'PY'
import json, os, sys
E = os.environ
runs = {}  # (target, mode, conc) -> one row per round, in round order
for line in open(sys.argv[1]):
    t, mode, c, rps, p50, p99, succ, done, ok, ticks, tck, hwm, rnd = line.rstrip("\n").split("\t")
    done = int(done)
    cpu_us = int(ticks) * 1e6 / int(tck) / done if done else float("nan")
    runs.setdefault((t, mode, int(c)), []).append(dict(
        t=t, mode=mode, c=int(c), rps=float(rps), p50=float(p50) * 1e3, p99=float(p99) * 1e3,
        succ=float(succ) * 100, done=done, ok=int(ok), cpu=cpu_us, hwm=int(hwm) / 1024))

def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

# Over several rounds, each figure is the median of the rounds (peak RSS: the highest;
# requests: all of them), and a ratio is the median of the ratios within each round, where
# both ran under the same conditions.
rows = []
for rs in runs.values():
    rows.append(dict(rs[0], rps=median([r["rps"] for r in rs]), p50=median([r["p50"] for r in rs]),
                     p99=median([r["p99"] for r in rs]), succ=min(r["succ"] for r in rs),
                     done=sum(r["done"] for r in rs), ok=sum(r["ok"] for r in rs),
                     cpu=median([r["cpu"] for r in rs]), hwm=max(r["hwm"] for r in rs),
                     rounds=[r["cpu"] for r in rs]))

def cpu_ratio(r, base):
    if len(r["rounds"]) != len(base["rounds"]):
        return r["cpu"] / base["cpu"]
    return median([a / b for a, b in zip(r["rounds"], base["rounds"])])

ROUNDS = int(E.get("ROUNDS", "1"))
JUDGED = ("switchyard", "full", "full-sync")  # the targets the budgets apply to
errors = [l.rstrip("\n") for l in open(sys.argv[2]) if l.strip()]
ttfb = {}
for line in open(sys.argv[3]):
    t, js = line.rstrip("\n").split("\t", 1)
    ttfb[t] = json.loads(js)
by = {(r["t"], r["mode"], r["c"]): r for r in rows}

print("# switchyard load benchmark, " + E["STAMP"])
print()
print("Command: `" + E["CMDLINE"] + "`")
print()
print("Machine: " + E["MACHINE"] + ". oha, the mock upstream and the proxy under test "
      "all share these cores.")
print()
print("Versions: " + E["VERSIONS"])
print()
print("switchyard: start to `/readyz` 200 in **%s ms**; idle RSS before load **%.1f MiB** "
      "(bare proxy idle RSS %.1f MiB)." % (E["SY_READY_MS"], int(E["SY_IDLE_RSS_KIB"]) / 1024,
                                           int(E["BARE_IDLE_RSS_KIB"]) / 1024))
print()
print("Budget (vs bare proxy, same run): unary CPU/request at 1, 16 and 64 connections "
      "<= 1.5x for switchyard (default config), <= 2.5x for full and full-sync (auth + Redis "
      "limits and budget + metrics + OTLP tracing); unary at one connection p50 <= +50 us and "
      "p99 <= +250 us; stream time to first byte <= +100 us. Other rows are measured, not "
      "judged (errors always are).")
print()
print("Targets: **mock** = the upstream alone; **bare** = a minimal hyper pass-through proxy "
      "(bench/bare-proxy) on tokio's multi-thread runtime, the budget's baseline; **bare1** = "
      "the same proxy on tokio's one-thread runtime, as switchyard serves by default; **switchyard** = default config, one provider, metrics on; "
      "**full** = switchyard with a caller key, RPM/TPM limits and a daily budget in Redis, "
      "metrics, every span exported over OTLP/HTTP, every admission a step in Redis (the "
      "default)"
      + ("." if E["SYNC_MS"] == "0" else
         f"; **full-sync** = full with state.sync_ms {E['SYNC_MS']}: admitted on the replica's "
         "copy of the shared numbers while it is fresh, takes written to Redis behind."))
print()
hdr = ["target", "mode", "conc", "req/s", "p50 ms", "p99 ms", "success", "requests",
       "CPU us/req", "CPU ratio vs bare", "vs bare1", "p50 +us vs bare", "p50 +us vs mock",
       "peak RSS MiB", "budget"] + (["CPU ratio vs bare, each round"] if ROUNDS > 1 else [])
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(["---"] * 2 + ["--:"] * 12 + [":-:"] + ["--:"] * (len(hdr) - 15)) + "|")
for r in rows:
    bare = by.get(("bare", r["mode"], r["c"]))
    bare1 = by.get(("bare1", r["mode"], r["c"]))
    mock = by.get(("mock", r["mode"], r["c"]))
    proxy = r["t"] != "mock"
    cpu = "%.1f" % r["cpu"] if proxy else "-"
    ratio = ratio1 = dp50 = dmock = rss = budget = each = "-"
    if proxy:
        rss = "%.1f" % r["hwm"]
        if bare:
            ratio = "%.2fx" % cpu_ratio(r, bare)
            if len(r["rounds"]) == len(bare["rounds"]) > 1:
                each = " / ".join("%.2f" % (a / b) for a, b in zip(r["rounds"], bare["rounds"]))
            dp50 = "%+.0f" % ((r["p50"] - bare["p50"]) * 1e3)
        if bare1 and r["t"] not in ("bare", "bare1"):
            ratio1 = "%.2fx" % cpu_ratio(r, bare1)
        if mock:
            dmock = "%+.0f" % ((r["p50"] - mock["p50"]) * 1e3)
    if r["t"] in JUDGED and bare:
        # The issue's budgets: CPU for unary requests at 1, 16 and 64 connections, added
        # latency for unary requests at one connection (a stream's is its time to first
        # byte, below); errors anywhere.
        over = []
        unary = r["mode"] == "unary"
        if unary and r["c"] in (1, 16, 64) and \
                cpu_ratio(r, bare) > (1.5 if r["t"] == "switchyard" else 2.5):
            over.append("CPU")
        if unary and r["c"] == 1 and (r["p50"] - bare["p50"]) * 1e3 > 50: over.append("p50")
        if unary and r["c"] == 1 and (r["p99"] - bare["p99"]) * 1e3 > 250: over.append("p99")
        if r["succ"] < 100: over.append("errors")
        budget = "ok" if not over else "OVER: " + ", ".join(over)
    print("| %s | %s | %d | %.0f | %.3f | %.3f | %.2f%% | %d | %s | %s | %s | %s | %s | %s | %s |" % (
        r["t"], r["mode"], r["c"], r["rps"], r["p50"], r["p99"], r["succ"], r["done"],
        cpu, ratio, ratio1, dp50, dmock, rss, budget) + (" %s |" % each if ROUNDS > 1 else ""))
print()
if ttfb:
    print("Streams, time to first byte (one keep-alive connection, %d sequential requests "
          "per target, bench/ttfb.py; client cost included alike):" % next(iter(ttfb.values()))["n"])
    print()
    print("| target | TTFB p50 ms | TTFB p90 ms | TTFB p99 ms | TTFB p50 +us vs bare | whole stream p50 ms | budget |")
    print("|---|--:|--:|--:|--:|--:|:-:|")
    b = ttfb.get("bare")
    for t, v in ttfb.items():
        d = "-" if t in ("mock", "bare", "bare1") or not b else "%+.0f" % ((v["ttfb_p50"] - b["ttfb_p50"]) * 1e3)
        ok = "-"
        if t in JUDGED and b:
            ok = "ok" if (v["ttfb_p50"] - b["ttfb_p50"]) * 1e3 <= 100 else "OVER"
        print("| %s | %.3f | %.3f | %.3f | %s | %.3f | %s |" % (
            t, v["ttfb_p50"], v["ttfb_p90"], v["ttfb_p99"], d, v["total_p50"], ok))
    print()
if errors:
    print("Errors and non-2xx responses:")
    print()
    for e in errors:
        print("- " + e)
else:
    print("No errors and no non-2xx responses in any measured run.")
print()
if ROUNDS > 1:
    print("%d rounds, interleaved: within a concurrency, every target ran once per round. Each "
          "figure is the median of the rounds (peak RSS the highest, requests the sum); a CPU "
          "ratio is the median of the ratios within each round." % ROUNDS)
    print()
print("Columns are described in bench/README.md. mode unary = model echo, small prompt; "
      "stream = model lorem, max_tokens 16, stream true (latency = until the last SSE byte). " +
      ("Each measured run of %s follows an unmeasured %s warm-up at the same concurrency."
       % (E["DURATION"], E["WARMUP"]) if E["WARMUP_S"] != "0" else
       "Each measured run of %s had no warm-up (WARMUP=0)." % E["DURATION"]))
PY
mv "$OUT.tmp" "$OUT"
echo
cat "$OUT"
echo
log "saved $OUT"
