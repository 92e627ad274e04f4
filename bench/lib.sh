# shellcheck shell=bash
# Shared plumbing for the bench scripts; sourced, never run:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It defines ROOT (the repository), puts ~/.cargo/bin on PATH, and gives:
#   log / die             progress and errors on stderr, as "[LOG_TAG] ..." (with LOG_CLOCK=1:
#                         "[LOG_TAG    Ns] ...", seconds since T0)
#   require_tools         fail unless every tool named is on PATH
#   ensure_oha            cargo install oha when it is missing
#   build_switchyard      release build of switchyard into CARGO_TARGET_DIR; sets TARGET_DIR, SY_BIN
#   build_bare_proxy      release build of bench/bare-proxy; sets BARE_BIN
#   to_secs               "10s" / "1.5m" / "500ms" / "10" -> whole seconds, rounded up
#   bench_setup NAME      a private work directory (WORK) and the exit trap that stops every
#                         process in PIDS (TERM, up to STOP_WAIT_S seconds, KILL, reap), prints
#                         the tail of $WORK/*.log when the script fails, and removes WORK
#   stop_pid PID [S]      the same for one process now; non-zero if it had to be killed
#   untrack_pid PID       forget a process the script stopped itself
#   port_in_use / require_free_ports
#   wait_http URL [WANT [PID]]
#                         poll URL until it answers WANT (a status, or "any" answer) within
#                         READY_TIMEOUT_S, every READY_POLL_S; fails early if PID exits
#   now_ns, cpu_ticks
#
# Each script sets LOG_TAG and READY_TIMEOUT_S (and LOG_CLOCK, READY_POLL_S, STOP_WAIT_S where
# its own differ) after sourcing this file: LOG_TAG, LOG_CLOCK, READY_POLL_S and STOP_WAIT_S are
# set here, so the environment never changes them.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

LOG_TAG=bench        # the "[tag]" every log line starts with
LOG_CLOCK=           # non-empty: the tag also shows the seconds since T0
READY_POLL_S=0.05    # wait_http's poll interval
STOP_WAIT_S=5        # how long a process gets between TERM and KILL
WORK=
PIDS=()

log() {
  if [[ -n "$LOG_CLOCK" ]]; then
    printf '[%s %4ss] %s\n' "$LOG_TAG" "$(( $(date +%s) - ${T0:-$(date +%s)} ))" "$*" >&2
  else
    printf '[%s] %s\n' "$LOG_TAG" "$*" >&2
  fi
}
die() { log "error: $*"; exit 1; }

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done
}

ensure_oha() {
  if ! command -v oha >/dev/null; then
    log "installing oha (cargo install oha --locked)"
    cargo install oha --locked
  fi
}

# ---------------------------------------------------------------------------------------------
# Builds
# ---------------------------------------------------------------------------------------------
# What the binaries under test are built from, for a report; call it before building (the tree
# may change during a long run): the checkout's commit, "(dirty)" when the sources that go into
# the binaries have changes, or the given binary when SY_BIN names one.
built_from() {
  local rev
  rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "${SY_BIN:-}" ]]; then
    echo "SY_BIN=$SY_BIN, run from checkout $rev"
    return
  fi
  if [[ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock bench/bare-proxy 2>/dev/null)" ]]; then
    rev="$rev (dirty)"
  fi
  echo "$rev"
}

# shellcheck disable=SC2034 # TARGET_DIR, SY_BIN and BARE_BIN are for the sourcing script
build_switchyard() {
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  if [[ -n "${SY_BIN:-}" ]]; then # a binary built elsewhere (comparing two builds)
    [[ -x "$SY_BIN" ]] || die "SY_BIN=$SY_BIN is not an executable"
    log "using $SY_BIN (SY_BIN), not building"
    return
  fi
  log "building switchyard (release) into $TARGET_DIR"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bin switchyard) >&2
  SY_BIN="$TARGET_DIR/release/switchyard"
}

# The bare proxy is its own crate with its own lockfile, built under $TARGET_DIR/bare-proxy.
# shellcheck disable=SC2034 # TARGET_DIR, SY_BIN and BARE_BIN are for the sourcing script
build_bare_proxy() {
  TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
  log "building bench/bare-proxy (release) into $TARGET_DIR/bare-proxy"
  CARGO_TARGET_DIR="$TARGET_DIR/bare-proxy" \
    cargo build --release --locked --manifest-path "$ROOT/bench/bare-proxy/Cargo.toml" >&2
  BARE_BIN="$TARGET_DIR/bare-proxy/release/bare-proxy"
}

# ---------------------------------------------------------------------------------------------
# Durations and clocks
# ---------------------------------------------------------------------------------------------
# "10s" / "1.5m" / "500ms" / "10" -> whole seconds, rounded up (for the outer timeouts).
to_secs() {
  awk -v d="$1" 'BEGIN {
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u)
    m = (u == "ms") ? 0.001 : (u == "m") ? 60 : (u == "h") ? 3600 : 1
    s = n * m; printf "%d", (s == int(s)) ? s : int(s) + 1 }'
}

now_ns() { date +%s%N; }

# utime + stime (all threads) in clock ticks; the comm field may hold spaces, so cut after ')'.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# ---------------------------------------------------------------------------------------------
# Processes: every one started goes into PIDS, and is stopped on any exit
# ---------------------------------------------------------------------------------------------
bench_setup() { # bench_setup NAME
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-$1.XXXXXX")"
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# untrack_pid PID: drop a process that is gone (and reaped) from PIDS, so that the exit trap
# never signals whatever process reuses its number.
untrack_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# stop_pid PID [WAIT_S]: TERM, up to WAIT_S (default STOP_WAIT_S) seconds for it to exit, then
# KILL; reaps it (when it is this shell's child) and untracks it. Returns 1 if it had to be killed.
stop_pid() {
  local p="$1" wait_s="${2:-$STOP_WAIT_S}" i rc=1
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$p" 2>/dev/null || { rc=0; break; }
    sleep 0.1
  done
  if (( rc != 0 )); then kill -KILL "$p" 2>/dev/null || true; fi
  wait "$p" 2>/dev/null || true
  untrack_pid "$p"
  return "$rc"
}

bench_cleanup() {
  local rc=$? p i f
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    log "failed (exit $rc); process logs:"
    for f in "$WORK"/*.log; do
      if [[ -f "$f" ]]; then echo "--- $f" >&2; tail -n 20 "$f" >&2; fi
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_free_ports HINT PORT...: fail if something already listens on any of them.
require_free_ports() {
  local hint="$1" p
  shift
  for p in "$@"; do
    if port_in_use "$p"; then die "127.0.0.1:$p is already in use (override with $hint)"; fi
  done
}

# wait_http URL [WANT [PID]]: poll (bounded) until URL answers with status WANT ("any", the
# default, = any HTTP answer at all). Fails if PID (when given) exits, or READY_TIMEOUT_S passes.
wait_http() {
  local url="$1" want="${2:-any}" pid="${3:-}" timeout_s="${READY_TIMEOUT_S:-20}" code=""
  local deadline=$(( $(now_ns) + timeout_s * 1000000000 ))
  while (( $(now_ns) < deadline )); do
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      die "process $pid exited before $url was ready"
    fi
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)"
    if [[ "$want" == any && "$code" != 000 && -n "$code" ]] || [[ "$code" == "$want" ]]; then
      return 0
    fi
    sleep "$READY_POLL_S"
  done
  die "$url not ready within ${timeout_s}s (last status ${code:-none})"
}
