#!/usr/bin/env bash
# How exactly replicas sharing Redis keep a key's RPM limit, for each `state.sync_ms`: two
# switchyard replicas with one caller key (shared prefix in Redis) are both driven past the
# limit at once; the run counts the requests admitted against what the limit allows (a burst
# of RPM plus RPM/60 a second), and where the admissions were decided
# (`switchyard_state_admissions_total{decided}`). Prints a markdown table.
#
#   bench/shared-limits.sh                           # RPM=20000 SYNC="0 100 1000" DURATION=3s CONC=8
#   RPM=3000 SYNC="0 100" DURATION=5s bench/shared-limits.sh
#
# Needs the Redis at REDIS_URL (default the machine's 127.0.0.1:6379). Loopback only; every
# process started is stopped on exit; every wait is bounded.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=limits
READY_TIMEOUT_S=20

RPM="${RPM:-20000}"
SYNC="${SYNC:-0 100 1000}"
DURATION="${DURATION:-3s}"
CONC="${CONC:-8}"                       # connections per replica
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
MOCK_PORT="${MOCK_PORT:-9131}"
A_PORT="${A_PORT:-4131}"; A_ADMIN="${A_ADMIN:-9132}"
B_PORT="${B_PORT:-4133}"; B_ADMIN="${B_ADMIN:-9134}"
[[ "$RPM" =~ ^[1-9][0-9]*$ ]] || die "RPM must be a positive whole number"
ensure_oha
require_tools jq curl cargo
build_switchyard

bench_setup limits
require_free_ports "MOCK_PORT/A_PORT/A_ADMIN/B_PORT/B_ADMIN" \
  "$MOCK_PORT" "$A_PORT" "$A_ADMIN" "$B_PORT" "$B_ADMIN"
"$SY_BIN" mock --port "$MOCK_PORT" --host 127.0.0.1 >"$WORK/mock.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$MOCK_PORT/" any "$!"

BODY='{"model":"chat","messages":[{"role":"user","content":"hello"}]}'
SECS="$(to_secs "$DURATION")"
ALLOWED=$(( RPM + RPM * SECS / 60 ))
echo "| state.sync_ms | admitted | the limit allows | refused | decided shared / copy / local |"
echo "| --: | --: | --: | --: | --: |"
for sync in $SYNC; do
  [[ "$sync" =~ ^[0-9]+$ ]] || die "SYNC holds whole numbers of milliseconds, not '$sync'"
  cat >"$WORK/sy.yaml" <<YAML
providers:
  - {name: upstream, kind: openai_compatible, base_url: "http://127.0.0.1:$MOCK_PORT/v1", api_key: sk-bench}
models:
  - {name: chat, targets: [upstream/echo]}
state: {backend: redis, url: "$REDIS_URL", prefix: "switchyard-limits-$$-$sync", sync_ms: $sync}
keys:
  - {name: bench, key: sk-bench-limits, team: bench, rpm: $RPM}
YAML
  replicas=()
  for r in "$A_PORT:$A_ADMIN" "$B_PORT:$B_ADMIN"; do
    "$SY_BIN" serve --config "$WORK/sy.yaml" --listen "127.0.0.1:${r%%:*}" \
      --admin "127.0.0.1:${r##*:}" >"$WORK/replica-${r%%:*}.log" 2>&1 &
    PIDS+=("$!"); replicas+=("$!")
    wait_http "http://127.0.0.1:${r##*:}/readyz" 200 "$!"
  done
  log "sync_ms $sync: both replicas at $CONC connections for $DURATION"
  loads=()
  for port in "$A_PORT" "$B_PORT"; do
    oha --no-tui --output-format json -z "$DURATION" -c "$CONC" -m POST \
      -H 'content-type: application/json' -H 'authorization: Bearer sk-bench-limits' \
      -d "$BODY" "http://127.0.0.1:$port/v1/chat/completions" >"$WORK/oha-$port.json" &
    loads+=("$!")
  done
  wait "${loads[@]}"
  ok=0; refused=0; shared=0; copy=0; local_=0
  for port in "$A_PORT" "$B_PORT"; do
    ok=$(( ok + $(jq '.statusCodeDistribution["200"] // 0' "$WORK/oha-$port.json") ))
    refused=$(( refused + $(jq '.statusCodeDistribution["429"] // 0' "$WORK/oha-$port.json") ))
  done
  for admin in "$A_ADMIN" "$B_ADMIN"; do
    metrics="$(curl -sf "http://127.0.0.1:$admin/metrics")"
    count() { awk -v d="decided=\"$1\"" 'index($0, "switchyard_state_admissions_total{" d "}") == 1 { print $2 }' <<<"$metrics"; }
    shared=$(( shared + $(count shared) )); copy=$(( copy + $(count copy) )); local_=$(( local_ + $(count local) ))
  done
  echo "| $sync | $ok | $ALLOWED | $refused | $shared / $copy / $local_ |"
  for pid in "${replicas[@]}"; do stop_pid "$pid" || true; done
done
