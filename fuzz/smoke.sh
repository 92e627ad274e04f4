#!/usr/bin/env bash
# Fuzz every target (or $TARGETS) for a short, fixed time (default 10 s each; `fuzz/smoke.sh 60` for the
# long runs), seeding each corpus from the golden files and the kept regression inputs.
# Prints executions and coverage per target; exits non-zero on the first crash, leaving the
# input in fuzz/artifacts/<target>/. One target at a time: the machine is shared.
# Built with debug assertions and overflow checks (-a): an arithmetic overflow on a number an
# upstream or a caller chose is a bug even where release builds would wrap silently.
set -euo pipefail
secs="${1:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"
export RUSTC_BOOTSTRAP=1

targets=(openai_chat_request openai_embeddings_request anthropic_request surface
         upstream_replies upstream_errors stream_decoders stream_encoders sse_parser config_load
         admission_review)
# TARGETS="sse_parser config_load" fuzz/smoke.sh 60: only these.
if [ -n "${TARGETS:-}" ]; then read -r -a targets <<<"$TARGETS"; fi

seed() {
  local t="$1" dir="corpus/$1"
  mkdir -p "$dir"
  case "$t" in
    openai_chat_request|openai_embeddings_request|anthropic_request)
      cp "$root"/tests/golden/*/*request*.json "$dir"/ 2>/dev/null || true ;;
    upstream_replies|upstream_errors)
      cp "$root"/tests/golden/*/reply*.json "$dir"/ 2>/dev/null || true ;;
    stream_decoders|sse_parser)
      cp "$root"/tests/golden/*/*.sse "$dir"/ 2>/dev/null || true ;;
    surface)
      # Byte 0 picks the endpoint (see fuzz_targets/surface.rs), byte 1 = 0: no path segment.
      local sel f
      for f in "$root"/tests/golden/*/*request*.json; do
        for sel in 00 01 02 03 22 23; do
          { printf "\\x$sel\\x00"; cat "$f"; } >"$dir/$sel-$(basename "$f")"
        done
      done
      printf '\x0d\x0bmock%%2Fecho' >"$dir/model-path"
      printf '\x2c\x00' >"$dir/anthropic-models" ;;
    config_load)
      cp "$root"/switchyard.example.yaml "$dir"/ ;;
    admission_review)
      cp "$root"/tests/golden/inject/*.review.json "$dir"/ ;;
  esac
  if [ -d "$root/tests/regressions/$t" ]; then
    cp "$root/tests/regressions/$t"/* "$dir"/ 2>/dev/null || true
  fi
}

dict() {
  case "$1" in
    openai_chat_request|openai_embeddings_request|anthropic_request|surface) echo requests ;;
    upstream_replies|upstream_errors|stream_decoders|sse_parser) echo replies ;;
    config_load|admission_review) echo "$1" | sed 's/_load$//' ;;
  esac
}

cargo fuzz build -O -a >/dev/null 2>&1 || cargo fuzz build -O -a
start=$(date +%s)
printf '%-28s %12s %8s %8s %8s %8s\n' target execs exec/s cov ft corpus
for t in "${targets[@]}"; do
  seed "$t"
  log="$(mktemp)"
  d="$(dict "$t")"
  if ! cargo fuzz run -O -a "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
      -rss_limit_mb=2048 -max_len=65536 ${d:+-dict="dicts/$d.dict"} >"$log" 2>&1; then
    # The panic (or sanitizer report) and where the input was kept; not libFuzzer's dump
    # of the input's bytes.
    grep -E -m1 -A6 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$log" | cut -c1-600 || true
    grep -A2 'Failing input' "$log" || true
    echo "CRASH in $t: input kept in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  rate=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  ft=$(grep -E '^#[0-9]+.*(DONE|ft:)' "$log" | tail -1 | sed -E 's/.*ft: ([0-9]+).*/\1/')
  printf '%-28s %12s %8s %8s %8s %8s\n' "$t" "$execs" "$rate" "$cov" "$ft" \
    "$(find "corpus/$t" -type f | wc -l)"
  rm -f "$log"
done
echo "total: $(( $(date +%s) - start )) s"
