#!/usr/bin/env bash
# switchyard long-run streams check: N concurrent streamed requests held open for DURATION
# seconds through switchyard, its memory and file descriptors sampled the whole time.
#
#   bench/streams.sh                          # N=1000 DURATION=600
#   N=200 DURATION=60 bench/streams.sh        # a short run
#
# The mock upstream (`switchyard mock --token-interval-ms TOKEN_MS`) streams `lorem` one word
# per TOKEN_MS; switchyard fronts it (route `chat-stream`). bench/streams_client.py keeps
# exactly N streams open (each a request for MAX_TOKENS words, restarted on its keep-alive
# connection when it ends), reads every event and checks every reply ends in `data: [DONE]`
# with the expected number of events. switchyard's VmRSS, VmHWM, open fds, threads and CPU are
# sampled every SAMPLE seconds: idle before, under load, and idle for IDLE_AFTER seconds after
# the client hung up. The report (a table over time and a verdict) goes to
# bench/results/YYYY-MM-DD-HHMM-streams.md. Loopback only; every process started here is
# stopped on exit; every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=streams
LOG_CLOCK=1

N="${N:-1000}"
DURATION="${DURATION:-600}"
SAMPLE="${SAMPLE:-10}"
TOKEN_MS="${TOKEN_MS:-250}"
MAX_TOKENS="${MAX_TOKENS:-240}"
RAMP="${RAMP:-20}"
IDLE_AFTER="${IDLE_AFTER:-100}"
MOCK_PORT="${MOCK_PORT:-9301}"; MOCK_ADMIN="${MOCK_ADMIN:-9311}"
SY_PORT="${SY_PORT:-9302}"; SY_ADMIN="${SY_ADMIN:-9312}"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-20}"
COMMAND="N=$N DURATION=$DURATION SAMPLE=$SAMPLE TOKEN_MS=$TOKEN_MS MAX_TOKENS=$MAX_TOKENS RAMP=$RAMP IDLE_AFTER=$IDLE_AFTER bench/streams.sh"
require_tools curl python3 cargo

# Each stream is one fd in the client, two in switchyard (caller and upstream) and one in the
# mock; children inherit this shell's limit (switchyard and the mock also raise their own soft
# limit to the hard one at start).
need=$(( 2 * N + 256 ))
soft=$(ulimit -Sn); hard=$(ulimit -Hn)
if [[ "$soft" != unlimited && "$soft" -lt "$need" ]]; then
  if [[ "$hard" == unlimited || "$hard" -ge "$need" ]]; then ulimit -Sn "$need"
  else die "open-file limit: need $need, hard limit is $hard (ulimit -Hn)"; fi
fi
log "open-file limit $(ulimit -Sn) (soft), $(ulimit -Hn) (hard)"

BUILT_FROM="$(built_from)"
build_switchyard

bench_setup streams
require_free_ports "MOCK_PORT/MOCK_ADMIN/SY_PORT/SY_ADMIN" "$MOCK_PORT" "$MOCK_ADMIN" "$SY_PORT" "$SY_ADMIN"

"$SY_BIN" mock --port "$MOCK_PORT" --admin-port "$MOCK_ADMIN" --token-interval-ms "$TOKEN_MS" \
  >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/" any "$MOCK_PID"

CONFIG="$WORK/switchyard.yaml"
sed -e "s#127.0.0.1:9101#127.0.0.1:$MOCK_PORT#" \
    -e "s#^listen: .*#listen: 127.0.0.1:$SY_PORT#" \
    -e "s#^admin: .*#admin: 127.0.0.1:$SY_ADMIN#" \
    "$ROOT/bench/switchyard.yaml" >"$CONFIG"
"$SY_BIN" serve --config "$CONFIG" >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!; PIDS+=("$SY_PID")
wait_http "http://127.0.0.1:$SY_ADMIN/readyz" 200 "$SY_PID"
log "mock pid $MOCK_PID (${TOKEN_MS} ms per event), switchyard pid $SY_PID on 127.0.0.1:$SY_PORT"

# --- smoke: one short paced stream, to learn how many SSE events a reply of n words has ------
URL="http://127.0.0.1:$SY_PORT/v1/chat/completions"
smoke() { # WORDS -> event count
  curl -sS --max-time $(( 10 + 2 * TOKEN_MS * $1 / 1000 )) "$URL" -H 'content-type: application/json' \
    -d "{\"model\":\"chat-stream\",\"stream\":true,\"max_tokens\":$1,\"messages\":[{\"role\":\"user\",\"content\":\"smoke\"}]}" \
    >"$WORK/smoke.$1"
  tail -c 14 "$WORK/smoke.$1" | grep -q 'data: \[DONE\]' || die "smoke stream ($1 words) did not end in [DONE]: $(tail -c 300 "$WORK/smoke.$1")"
  python3 -c 'import sys; print(open(sys.argv[1], "rb").read().count(b"\n\n"))' "$WORK/smoke.$1"
}
e4=$(smoke 4); e8=$(smoke 8)
(( e8 - e4 == 4 )) || die "smoke: 4 words gave $e4 events, 8 words $e8; expected one event per word"
EXPECT=$(( e4 - 4 + MAX_TOKENS ))
log "a reply of $MAX_TOKENS words is $EXPECT SSE events (~$(( MAX_TOKENS * TOKEN_MS / 1000 )) s)"

# --- sampler -------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
sample() { # PHASE: one line: phase t rss_kib hwm_kib fds threads sy_ticks mock_ticks client_ticks client-status anon_kib
  local st rss hwm thr fds cl anon
  st=$(cat "/proc/$SY_PID/status" 2>/dev/null) || die "switchyard (pid $SY_PID) is gone"
  rss=$(awk '$1 == "VmRSS:" { print $2 }' <<<"$st")
  hwm=$(awk '$1 == "VmHWM:" { print $2 }' <<<"$st")
  thr=$(awk '$1 == "Threads:" { print $2 }' <<<"$st")
  anon=$(awk '$1 == "RssAnon:" { print $2 }' <<<"$st")
  fds=$(find "/proc/$SY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  cl=$(cat "$WORK/client.status" 2>/dev/null || echo "0 0 0 0")
  echo "$1 $(( $(date +%s) - T0 )) $rss $hwm $fds $thr $(ticks "$SY_PID") $(ticks "$MOCK_PID") $(ticks "${CLIENT_PID:-0}") $cl $anon"
}
T0=$(date +%s)
for _ in 1 2 3; do sample idle-before >>"$WORK/samples"; sleep 1; done

# --- load ----------------------------------------------------------------------------------------
log "holding $N streams for ${DURATION}s (ramp ${RAMP}s), sampling every ${SAMPLE}s"
nice -n 5 python3 "$ROOT/bench/streams_client.py" --port "$SY_PORT" --streams "$N" \
  --duration "$DURATION" --ramp "$RAMP" --max-tokens "$MAX_TOKENS" --expect-events "$EXPECT" \
  --status-file "$WORK/client.status" >"$WORK/client.json" 2>"$WORK/client.log" &
CLIENT_PID=$!; PIDS+=("$CLIENT_PID")
END=$(( $(date +%s) + DURATION ))
while (( $(date +%s) + SAMPLE < END )); do
  sleep "$SAMPLE"
  kill -0 "$CLIENT_PID" 2>/dev/null || break
  sample load >>"$WORK/samples"
  tail -n 1 "$WORK/samples" | awk '{ printf "rss %.1f MiB, fds %d, streams open %d, completed %d, errors %d\n", $3/1024, $5, $10, $11, $12 }' \
    | while read -r l; do log "$l"; done
done
for _ in $(seq 600); do kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$CLIENT_PID" 2>/dev/null && die "the client did not finish within 60 s of its deadline"
wait "$CLIENT_PID" || die "the client failed: $(tail -n 5 "$WORK/client.log")"
[[ -s "$WORK/client.json" ]] || die "the client wrote no summary"
sample load-end >>"$WORK/samples"

# --- idle after: the client hung up on every stream in flight ------------------------------------
log "client done: $(cat "$WORK/client.json")"
log "idle for ${IDLE_AFTER}s (upstream pool idle timeout is 90 s)"
IDLE_END=$(( $(date +%s) + IDLE_AFTER ))
while (( $(date +%s) < IDLE_END )); do
  sleep "$SAMPLE"
  sample idle-after >>"$WORK/samples"
done
kill -0 "$SY_PID" 2>/dev/null || die "switchyard died"

# --- report --------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
REPORT="$RESULTS_DIR/$(date +%Y-%m-%d-%H%M)-streams.md"
python3 - "$WORK" "$CLK_TCK" "$COMMAND" "$N" "$DURATION" "$TOKEN_MS" "$MAX_TOKENS" "$EXPECT" \
  "$BUILT_FROM" >"$REPORT" <<'EOF'
import json, os, platform, sys
work, tck, command, n, duration, token_ms, max_tokens, expect, rev = sys.argv[1:]
tck, n, duration = int(tck), int(n), int(duration)
rows = [l.split() for l in open(os.path.join(work, "samples"))]
client = json.load(open(os.path.join(work, "client.json")))
mib = lambda kib: int(kib) / 1024
def cpu_pct(i, col):  # over the interval since the previous sample, % of one core
    if i == 0: return None
    dt = int(rows[i][1]) - int(rows[i - 1][1])
    prev, cur = int(rows[i - 1][col]), int(rows[i][col])
    if dt <= 0 or cur < prev or (col == 8 and prev == 0):  # the client runs during the load only
        return None
    return 100.0 * (cur - prev) / tck / dt
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"# switchyard: {n} concurrent streams for {duration} s\n")
print(f"Command: `{command}` (switchyard {rev})\n")
print(f"Machine: {os.cpu_count()} cores, {cpu_model}, Linux {platform.release()}. The mock upstream "
      f"streams one word per {token_ms} ms; each request asks for {max_tokens} words "
      f"({expect} SSE events, ~{int(max_tokens) * int(token_ms) // 1000} s). The client "
      f"(`bench/streams_client.py`, nice 5) keeps {n} streams open, restarting each as it ends.\n")
print("| phase | t (s) | RSS MiB | anon MiB | HWM MiB | fds | threads | switchyard CPU % | mock CPU % | client CPU % | streams open | completed | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate(rows):
    c = [cpu_pct(i, k) for k in (6, 7, 8)]
    f = lambda v: "" if v is None else f"{v:.0f}"
    print(f"| {r[0]} | {r[1]} | {mib(r[2]):.1f} | {mib(r[13]):.1f} | {mib(r[3]):.1f} | {r[4]} | {r[5]} | {f(c[0])} | {f(c[1])} | {f(c[2])} | {r[9]} | {r[10]} | {r[11]} |")
idle_before = [r for r in rows if r[0] == "idle-before"]
load = [r for r in rows if r[0] == "load"]
after = [r for r in rows if r[0] == "idle-after"]
# Flatness is judged once every slot has started (the ramp is over).
steady = [r for r in load if int(r[9]) >= 0.98 * n] or load
half = len(steady) // 2
mean = lambda rs: sum(mib(r[2]) for r in rs) / max(len(rs), 1)
first, second = mean(steady[:half]), mean(steady[half:])
max_rss = max(mib(r[2]) for r in rows)
max_hwm = max(mib(r[3]) for r in rows)
span_min = (int(steady[-1][1]) - int(steady[0][1])) / 60 if len(steady) > 1 else 0
def slope_of(rs):  # least-squares MiB per minute
    xs = [int(r[1]) for r in rs]; ys = [mib(r[2]) for r in rs]
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1)
slope = slope_of(steady)
late = steady[half:]
late_min = (int(late[-1][1]) - int(late[0][1])) / 60 if len(late) > 1 else 0
errors = client.get("errors", {})
growth = second - first
verdict = []
verdict.append(("ok" if max_rss <= 64 else "OVER") + f": max RSS {max_rss:.1f} MiB under load (budget 64 MiB; VmHWM {max_hwm:.1f} MiB)")
verdict.append(("ok" if mib(idle_before[0][2]) <= 20 else "OVER") + f": idle RSS {mib(idle_before[0][2]):.1f} MiB "
               f"before the load (budget 20 MiB); {mib(after[-1][2]) if after else float('nan'):.1f} MiB idle after it "
               "(memory the allocator keeps for reuse; see bench/README.md)")
verdict.append(("ok" if growth <= max(1.0, 0.03 * first) else "GROWS") +
               f": RSS mean over the steady part {first:.1f} MiB (first half) → {second:.1f} MiB (second half), "
               f"{growth:+.1f} MiB; least-squares slope {slope:+.2f} MiB/min over {span_min:.1f} min, "
               f"{slope_of(late):+.2f} MiB/min over the last {late_min:.1f} min "
               f"({mib(late[0][2]) if late else 0:.1f} → {mib(late[-1][2]) if late else 0:.1f} MiB)")
verdict.append(f"fds: {idle_before[0][4]} idle before, {max(int(r[4]) for r in load) if load else '?'} max under load, "
               f"{steady[-1][4] if steady else '?'} at the last sample with every stream open, "
               f"{after[-1][4] if after else '?'} idle after")
verdict.append(f"threads: {idle_before[0][5]} idle, {max(int(r[5]) for r in rows)} max")
verdict.append(("ok" if not errors else "ERRORS") + f": {client['completed']} streams completed "
               f"({client['started']} started, {client['cut_at_deadline']} cut at the deadline by the client, "
               f"{client['events']} events read), errors: {errors or 'none'}")
print("\n## Verdict\n")
for v in verdict: print(f"- {v}")
print("\nCPU % is of one core, over the interval since the previous sample. `fds` counts "
      "/proc/PID/fd: listeners, the caller connections and the pooled upstream connections "
      "(kept up to 90 s idle). `anon` is `RssAnon`: the RSS less the pages of the binary and "
      "libraries mapped from files.")
EOF
cat "$REPORT"
log "report: $REPORT"
