#!/usr/bin/env bash
# switchyard soak: a bounded run (fixed duration, stops by itself), loopback only.
#
#   bench/soak.sh                 # DURATION=120
#   DURATION=60 bench/soak.sh
#
# switchyard fronts two `switchyard mock` upstreams (route `chat-default`: up1 then up2,
# fallback). Good traffic (oha, JSON and streamed) runs the whole time beside hostile clients
# (slowloris, malformed and oversized bodies, clients that vanish mid-stream), while faults are
# injected on a schedule through the mocks' admin planes:
#   10%  up1 outage (503)             -> fallback to up2
#   25%  up1 back
#   35%  429 storm on up1 (Retry-After 1), every 3rd call on up2
#   45%  storm over
#   55%  config touched (hot reload)
#   65%  up2 killed and restarted
#   72%  Redis (switchyard's shared state, its own redis-server here) killed
#   76%  Redis restarted, empty
#   80%  up1 stalls streams after 3 events (latency 200 ms on up2)
#   90%  all faults cleared
# switchyard's RSS and open fds are sampled every SAMPLE seconds. The report prints the good
# traffic's success rate and status codes, hostile outcomes, and RSS / fd over time.
# Every process started here is stopped on exit; every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=soak
LOG_CLOCK=1
READY_TIMEOUT_S=10

DURATION="${DURATION:-120}"
SAMPLE="${SAMPLE:-5}"
CONC="${CONC:-8}"
UP1_PORT="${UP1_PORT:-9201}"; UP1_ADMIN="${UP1_ADMIN:-9211}"
UP2_PORT="${UP2_PORT:-9202}"; UP2_ADMIN="${UP2_ADMIN:-9212}"
SY_PORT="${SY_PORT:-4200}"; SY_ADMIN="${SY_ADMIN:-9566}"
REDIS_PORT="${REDIS_PORT:-6391}"   # a redis-server of the soak's own, killed and restarted
CALLER_KEY="sk-soak-caller-$$"
require_tools curl python3 cargo redis-server redis-cli
ensure_oha
build_switchyard

bench_setup soak
require_free_ports "UP1_PORT/UP1_ADMIN/UP2_PORT/UP2_ADMIN/SY_PORT/SY_ADMIN/REDIS_PORT" \
  "$UP1_PORT" "$UP1_ADMIN" "$UP2_PORT" "$UP2_ADMIN" "$SY_PORT" "$SY_ADMIN" "$REDIS_PORT"

start_mock() { # NAME PORT ADMIN
  "$SY_BIN" mock --port "$2" --admin-port "$3" >"$WORK/$1.log" 2>&1 &
  PIDS+=("$!"); eval "${1}_PID=$!"
  wait_http "http://127.0.0.1:$2/" any "$!"
}
start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=("$!"); REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  die "redis-server on $REDIS_PORT not up"
}
start_redis
start_mock up1 "$UP1_PORT" "$UP1_ADMIN"
start_mock up2 "$UP2_PORT" "$UP2_ADMIN"

CONFIG="$WORK/switchyard.yaml"
cat >"$CONFIG" <<EOF
listen: 127.0.0.1:$SY_PORT
admin: 127.0.0.1:$SY_ADMIN
max_body_bytes: 1048576
header_read_timeout_secs: 5
body_read_timeout_secs: 5
providers:
  - name: up1
    kind: openai_compatible
    base_url: http://127.0.0.1:$UP1_PORT/v1
    api_key: sk-soak-1
    idle_timeout_secs: 2
    breaker: {cooldown_secs: 2}
  - name: up2
    kind: openai_compatible
    base_url: http://127.0.0.1:$UP2_PORT/v1
    api_key: sk-soak-2
    idle_timeout_secs: 2
    breaker: {cooldown_secs: 2}
models:
  - name: chat-default
    targets: [up1/echo, up2/echo]
  - name: chat-stream
    targets: [up1/lorem, up2/lorem]
state:
  backend: redis
  url: redis://127.0.0.1:$REDIS_PORT
  timeout_ms: 50
keys:
  - name: soak
    key: $CALLER_KEY
    rpm: 10000000
    tpm: 10000000000
    budget_usd_per_day: 1000000
EOF
"$SY_BIN" serve --config "$CONFIG" >"$WORK/switchyard.log" 2>&1 &
SY_PID=$!; PIDS+=("$SY_PID")
wait_http "http://127.0.0.1:$SY_ADMIN/readyz" any "$SY_PID"
T0=$(date +%s)
END=$(( T0 + DURATION ))
log "switchyard pid $SY_PID on 127.0.0.1:$SY_PORT; soak for ${DURATION}s"

# --- sampler: RSS (KiB) and open fds of switchyard --------------------------------------------
(
  while (( $(date +%s) < END )); do
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$SY_PID/status" 2>/dev/null || echo 0)
    # shellcheck disable=SC2012 # fd names are numbers
    fds=$(ls "/proc/$SY_PID/fd" 2>/dev/null | wc -l)
    echo "$(( $(date +%s) - T0 )) $rss $fds"
    sleep "$SAMPLE"
  done
) >"$WORK/samples" &
PIDS+=("$!")

# --- good traffic ------------------------------------------------------------------------------
URL="http://127.0.0.1:$SY_PORT/v1/chat/completions"
oha -z "${DURATION}s" -c "$CONC" --no-tui --output-format json -m POST \
  -H 'content-type: application/json' -H "authorization: Bearer $CALLER_KEY" \
  -d '{"model":"chat-default","messages":[{"role":"user","content":"soak"}]}' \
  "$URL" >"$WORK/oha-json.json" 2>"$WORK/oha-json.log" &
OHA1=$!; PIDS+=("$OHA1")
oha -z "${DURATION}s" -c 2 --no-tui --output-format json -m POST \
  -H 'content-type: application/json' -H "authorization: Bearer $CALLER_KEY" \
  -d '{"model":"chat-stream","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"soak"}]}' \
  "$URL" >"$WORK/oha-stream.json" 2>"$WORK/oha-stream.log" &
OHA2=$!; PIDS+=("$OHA2")

# --- probe: one JSON and one streamed request every second, status per second (per phase) ----
(
  while (( $(date +%s) < END )); do
    t=$(( $(date +%s) - T0 ))
    j=$(curl -s -o "$WORK/probe-json.body" -w '%{http_code}' --max-time 5 "$URL" -H 'content-type: application/json' -H "authorization: Bearer $CALLER_KEY" \
      -d '{"model":"chat-default","messages":[{"role":"user","content":"probe"}]}' || true)
    st=$(curl -s -o "$WORK/probe.body" -w '%{http_code}' --max-time 5 "$URL" -H 'content-type: application/json' -H "authorization: Bearer $CALLER_KEY" \
      -d '{"model":"chat-stream","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"probe"}]}' || true)
    err=""
    [[ "$st" != 200 ]] && err="stream: $(head -c 200 "$WORK/probe.body" | tr -d '\n')"
    [[ "$j" != 200 ]] && err="json: $(head -c 200 "$WORK/probe-json.body" | tr -d '\n') $err"
    echo "$t $j $st $err"
    sleep 1
  done
) >"$WORK/probe" &
PIDS+=("$!")

# --- hostile clients ---------------------------------------------------------------------------
cat >"$WORK/hostile.py" <<'EOF'
"""Hostile clients in a loop until the deadline; prints counts of outcomes as JSON."""
import json, socket, sys, threading, time
port, end, key = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode()
counts, lock = {}, threading.Lock()
def count(k):
    with lock: counts[k] = counts.get(k, 0) + 1
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10); return s
def status(s):
    try:
        d = s.recv(64)
        return d.split(b" ")[1].decode() if d.startswith(b"HTTP/") else ("closed" if not d else "garbage")
    except socket.timeout: return "timeout"
    except OSError: return "reset"
def slowloris():  # headers one byte at a time, never finished: must be cut by the server
    while time.time() < end - 2:
        s = conn(); t = time.time(); cut = "unfinished_at_end"
        try:
            for b in b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 10000:
                s.send(bytes([b])); time.sleep(0.2)
                if time.time() > end: break
        except OSError: cut = "cut_after_%ds" % min(int(time.time() - t), 9)
        count("slowloris_" + cut); s.close()
def silent():  # connects, says nothing
    while time.time() < end - 2:
        s = conn(); t = time.time(); s.settimeout(30)
        try: d = s.recv(1); r = "closed" if not d else "data"
        except OSError: r = "reset"
        count("silent_%s_after_%ds" % (r, min(int(time.time() - t), 9))); s.close()
def malformed():
    bodies = [b"{", b'{"model": 5}', b"[" * 50000, b'{"model":"chat-default","messages":"x"}',
              b"\xff\xfe", b'{"model":"chat-default","messages":[{"role":"user","content":"' + b"x" * 1100000 + b'"}]}']
    i = 0
    while time.time() < end:
        b = bodies[i % len(bodies)]; i += 1
        s = conn()
        try:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + key + b"\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(b) + b)
        except OSError: pass
        count("malformed_" + status(s)); s.close(); time.sleep(0.05)
def vanish():  # asks for a long stream, reads a little, disconnects
    body = b'{"model":"chat-stream","stream":true,"max_tokens":2000,"messages":[{"role":"user","content":"x"}]}'
    while time.time() < end:
        s = conn()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer " + key + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        count("vanish_" + status(s)); s.close(); time.sleep(0.1)
ts = [threading.Thread(target=f, daemon=True) for f in (slowloris, slowloris, silent, malformed, vanish)]
for t in ts: t.start()
while time.time() < end and any(t.is_alive() for t in ts): time.sleep(0.5)
print(json.dumps(counts, sort_keys=True))
EOF
python3 "$WORK/hostile.py" "$SY_PORT" "$END" "$CALLER_KEY" >"$WORK/hostile.json" 2>"$WORK/hostile.log" &
HOSTILE=$!; PIDS+=("$HOSTILE")

# --- faults on a schedule ----------------------------------------------------------------------
fault() { curl -s -o /dev/null --max-time 2 -X "$1" "http://127.0.0.1:$2/mock/faults${3:+?$3}" || true; }
at() { local t=$(( T0 + DURATION * $1 / 100 )); while (( $(date +%s) < t )); do sleep 0.2; done; }
at 10; log "fault: up1 outage (503)";           fault POST "$UP1_ADMIN" "status=503"
at 25; log "fault: up1 back";                   fault DELETE "$UP1_ADMIN"
at 35; log "fault: 429 storm on up1, every 3rd on up2"
fault POST "$UP1_ADMIN" "status=429&retry_after_secs=1"; fault POST "$UP2_ADMIN" "status=429&every=3"
at 45; log "fault: storm over";                 fault DELETE "$UP1_ADMIN"; fault DELETE "$UP2_ADMIN"
at 55; log "fault: config touched (reload)";    echo "# touched $(date +%s)" >>"$CONFIG"
at 65; log "fault: up2 killed and restarted"
# shellcheck disable=SC2154 # up2_PID is set by start_mock
kill -KILL "$up2_PID" 2>/dev/null || true; wait "$up2_PID" 2>/dev/null || true; untrack_pid "$up2_PID"; sleep 2
start_mock up2 "$UP2_PORT" "$UP2_ADMIN"
at 72; log "fault: Redis killed"
kill -KILL "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; untrack_pid "$REDIS_PID"
at 76; log "fault: Redis restarted (empty)"; start_redis
at 80; log "fault: up1 stalls streams after 3 events, up2 +200 ms"
fault POST "$UP1_ADMIN" "stall_after_events=3"; fault POST "$UP2_ADMIN" "latency_ms=200"
at 90; log "fault: all cleared";                fault DELETE "$UP1_ADMIN"; fault DELETE "$UP2_ADMIN"

log "waiting for the load to finish"
for p in "$OHA1" "$OHA2" "$HOSTILE"; do
  for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  wait "$p" 2>/dev/null || true
done
sleep "$SAMPLE"
kill -0 "$SY_PID" 2>/dev/null || die "switchyard died during the soak"

# --- report ------------------------------------------------------------------------------------
python3 - "$WORK" "$DURATION" <<'EOF'
import json, sys, os
work, duration = sys.argv[1], sys.argv[2]
print(f"\n## switchyard soak — {duration}s, loopback, faults on a schedule\n")
for name, label in (("oha-json", "good JSON (c=8)"), ("oha-stream", "good streams (c=2)")):
    try: r = json.load(open(os.path.join(work, name + ".json")))
    except Exception as e: print(f"{label}: no result ({e})"); continue
    s = r.get("summary", {}); codes = r.get("statusCodeDistribution", {})
    errs = r.get("errorDistribution", {})
    # oha cuts requests still in flight at its deadline: those are not failures.
    errs = {k: v for k, v in errs.items() if "deadline" not in k}
    total = sum(codes.values()) + sum(errs.values()); ok = codes.get("200", 0)
    lat = r.get("latencyPercentiles", {})
    print(f"{label}: {total} requests, success {100.0 * ok / max(total, 1):.3f}% "
          f"({s.get('requestsPerSec', 0):.0f} req/s), p50 {1000 * (lat.get('p50') or 0):.1f} ms, "
          f"p99 {1000 * (lat.get('p99') or 0):.1f} ms")
    print(f"  status codes: {dict(sorted(codes.items()))}" + (f"; client errors: {errs}" if errs else ""))
try: print("hostile clients:", json.load(open(os.path.join(work, "hostile.json"))))
except Exception as e: print(f"hostile clients: no result ({e})")
print("\nprobe (one JSON + one stream request per second): non-200 by phase")
phases = [(0, "steady"), (10, "up1 outage"), (25, "up1 back"), (35, "429 storm"), (45, "storm over"),
          (55, "config touched"), (65, "up2 restart"), (72, "redis down"), (76, "redis back"),
          (80, "stall/latency"), (90, "cleared")]
dur = int(duration); seen = {}
for line in open(os.path.join(work, "probe")):
    parts = line.split(" ", 3)
    t, j, st = int(parts[0]), parts[1], parts[2]
    name = [n for p, n in phases if t >= dur * p / 100][-1]
    k = seen.setdefault(name, {"n": 0, "json_fail": 0, "stream_fail": 0, "errors": set()})
    k["n"] += 1
    if j != "200": k["json_fail"] += 1
    if st != "200":
        k["stream_fail"] += 1
    if (st != "200" or j != "200") and len(parts) > 3:
        k["errors"].add(parts[3].strip()[:220])
for _, name in phases:
    if name in seen:
        k = seen[name]
        print(f"  {name:15s} {k['n']:3d} probes, JSON failed {k['json_fail']}, stream failed {k['stream_fail']}"
              + (f"  e.g. {sorted(k['errors'])[:2]}" if k["errors"] else ""))
print("\nt(s)  RSS(MiB)  fds")
for line in open(os.path.join(work, "samples")):
    t, rss, fds = line.split()
    print(f"{int(t):4d}  {int(rss) / 1024:8.1f}  {fds:>4}")
EOF
log "config reloads as switchyard counted them:"
curl -s --max-time 2 "http://127.0.0.1:$SY_ADMIN/metrics" | grep -E '^switchyard_config_reload_total' || true
log "shared state as switchyard saw it (1 = Redis answering):"
curl -s --max-time 2 "http://127.0.0.1:$SY_ADMIN/metrics" | grep -E '^switchyard_state_backend' || true
