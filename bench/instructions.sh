#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable on a noisy shared
# machine (the count does not depend on what else runs), so it measures what a hot-path change
# buys. switchyard (release, debug symbols) runs under callgrind in front of the built-in mock;
# a client sends N requests over one keep-alive connection; the same run with 0 requests gives
# the fixed cost (start, shutdown), and the difference / N is the cost of one request.
#
#   bench/instructions.sh                   # N=2000, unary and 16-token stream, default config
#   N=500 MODES=stream bench/instructions.sh
#   CONFIG=my.yaml AUTH="Bearer sk-..." bench/instructions.sh
#   TOP=25 bench/instructions.sh            # also print the 25 costliest functions (inclusive)
#   KEEP=/tmp/cg bench/instructions.sh      # keep the callgrind files for callgrind_annotate
#                                           # (the N-request run, and the 0-request run as .0)
#
# Compare the bare proxy the same way: TARGET=bare bench/instructions.sh.
# Loopback only; every process is stopped on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=instr
READY_TIMEOUT_S=60 # valgrind starts slowly
STOP_WAIT_S=20     # and stops slowly (callgrind writes its file)

N="${N:-2000}"
MODES="${MODES:-unary stream}"
TARGET="${TARGET:-switchyard}"     # switchyard | bare
TOP="${TOP:-0}"
MOCK_PORT="${MOCK_PORT:-9111}"
PORT="${PORT:-4111}"
ADMIN_PORT="${ADMIN_PORT:-9575}"
AUTH="${AUTH:-}"
require_tools curl python3 cargo
command -v valgrind >/dev/null || die "valgrind is required (apt-get install valgrind)"

# The release profile keeps line tables (Cargo.toml), so callgrind_annotate names functions.
build_switchyard
if [[ "$TARGET" == bare ]]; then build_bare_proxy; fi

bench_setup instr
require_free_ports "MOCK_PORT/PORT/ADMIN_PORT" "$MOCK_PORT" "$PORT" "$ADMIN_PORT"

"$SY_BIN" mock --port "$MOCK_PORT" --host 127.0.0.1 >"$WORK/mock.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$MOCK_PORT/" any "$!"
CONFIG_SRC="${CONFIG:-$ROOT/bench/switchyard.yaml}"
sed "s#http://127.0.0.1:9101/v1#http://127.0.0.1:$MOCK_PORT/v1#" "$CONFIG_SRC" >"$WORK/switchyard.yaml"

body() { # body MODE
  local model
  if [[ "$TARGET" == bare ]]; then
    [[ "$1" == stream ]] && model=lorem || model="echo"
  else
    [[ "$1" == stream ]] && model=chat-stream || model=chat-default
  fi
  if [[ "$1" == stream ]]; then
    printf '{"model":"%s","messages":[{"role":"user","content":"Say hello to the benchmark in one short sentence."}],"max_tokens":16,"stream":true}' "$model"
  else
    printf '{"model":"%s","messages":[{"role":"user","content":"Say hello to the benchmark in one short sentence."}]}' "$model"
  fi
}

# count MODE REQUESTS -> total instructions of one process lifetime
count() {
  local mode="$1" n="$2" out="$WORK/cg.$1.$2" pid
  if [[ "$TARGET" == bare ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BARE_BIN" "127.0.0.1:$PORT" "127.0.0.1:$MOCK_PORT" \
      >"$WORK/target.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$PORT/" any "$pid"
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$SY_BIN" serve --config "$WORK/switchyard.yaml" \
      --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/target.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" any "$pid"
  fi
  if (( n > 0 )); then
    python3 "$ROOT/bench/ttfb.py" "http://127.0.0.1:$PORT/v1/chat/completions" "$(body "$mode")" "$n" \
      ${AUTH:+"authorization: $AUTH"} --any >/dev/null
  fi
  stop_pid "$pid" 60 || die "target did not stop"
  awk '/^summary:|^totals:/ { print $2; exit }' "$out"
}

for mode in $MODES; do
  base="$(count "$mode" 0)"
  total="$(count "$mode" "$N")"
  per=$(( (total - base) / N ))
  printf '%s %s: %d instructions/request (N=%d; fixed cost %d)\n' "$TARGET" "$mode" "$per" "$N" "$base"
  if [[ -n "${KEEP:-}" ]]; then mkdir -p "$KEEP"; cp "$WORK/cg.$mode.$N" "$KEEP/$TARGET.$mode.callgrind"
    cp "$WORK/cg.$mode.0" "$KEEP/$TARGET.$mode.0.callgrind"; fi
  if (( TOP > 0 )); then
    callgrind_annotate --inclusive=yes "$WORK/cg.$mode.$N" 2>/dev/null | sed -n "1,$((TOP + 25))p" \
      | grep -v '^--' | grep -E '^\s*[0-9,]+ ' | head -n "$TOP"
  fi
done
