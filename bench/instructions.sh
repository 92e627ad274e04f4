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
#
# Compare the bare proxy the same way: TARGET=bare bench/instructions.sh.
# Loopback only; every process is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${N:-2000}"
MODES="${MODES:-unary stream}"
TARGET="${TARGET:-switchyard}"     # switchyard | bare
TOP="${TOP:-0}"
MOCK_PORT="${MOCK_PORT:-9111}"
PORT="${PORT:-4111}"
ADMIN_PORT="${ADMIN_PORT:-9575}"
AUTH="${AUTH:-}"
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '[instr] %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "valgrind is required (apt-get install valgrind)"; exit 1; }

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# The release profile keeps line tables (Cargo.toml), so callgrind_annotate names functions.
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bin switchyard)
SY_BIN="$TARGET_DIR/release/switchyard"
if [[ "$TARGET" == bare ]]; then
  CARGO_TARGET_DIR="$TARGET_DIR/bare-proxy" \
    cargo build --release --locked --manifest-path "$ROOT/bench/bare-proxy/Cargo.toml"
  BARE_BIN="$TARGET_DIR/bare-proxy/release/bare-proxy"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-instr.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_http() { # wait_http URL: up to 60 s (valgrind starts slowly)
  for _ in $(seq 1 1200); do curl -s -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  log "not ready: $1"; exit 1
}

"$SY_BIN" mock --port "$MOCK_PORT" --host 127.0.0.1 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MOCK_PORT/"
CONFIG_SRC="${CONFIG:-$ROOT/bench/switchyard.yaml}"
sed "s#http://127.0.0.1:9101/v1#http://127.0.0.1:$MOCK_PORT/v1#" "$CONFIG_SRC" >"$WORK/switchyard.yaml"

body() { # body MODE
  local model
  if [[ "$TARGET" == bare ]]; then
    [[ "$1" == stream ]] && model=lorem || model=echo
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
    wait_http "http://127.0.0.1:$PORT/"
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" "$SY_BIN" serve --config "$WORK/switchyard.yaml" \
      --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" >"$WORK/target.log" 2>&1 &
    pid=$!
    wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"
  fi
  if (( n > 0 )); then
    python3 "$ROOT/bench/ttfb.py" "http://127.0.0.1:$PORT/v1/chat/completions" "$(body "$mode")" "$n" \
      ${AUTH:+"authorization: $AUTH"} --any >/dev/null
  fi
  kill -TERM "$pid"
  timeout 60 tail --pid="$pid" -f /dev/null || { kill -KILL "$pid"; log "target did not stop"; exit 1; }
  wait "$pid" 2>/dev/null || true
  awk '/^summary:|^totals:/ { print $2; exit }' "$out"
}

for mode in $MODES; do
  base="$(count "$mode" 0)"
  total="$(count "$mode" "$N")"
  per=$(( (total - base) / N ))
  printf '%s %s: %d instructions/request (N=%d; fixed cost %d)\n' "$TARGET" "$mode" "$per" "$N" "$base"
  if [[ -n "${KEEP:-}" ]]; then mkdir -p "$KEEP"; cp "$WORK/cg.$mode.$N" "$KEEP/$TARGET.$mode.callgrind"; fi
  if (( TOP > 0 )); then
    callgrind_annotate --inclusive=yes "$WORK/cg.$mode.$N" 2>/dev/null | sed -n "1,$((TOP + 25))p" \
      | grep -v '^--' | grep -E '^\s*[0-9,]+ ' | head -n "$TOP"
  fi
done
