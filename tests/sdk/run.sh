#!/usr/bin/env bash
# Official-SDK tests: the `openai` and `anthropic` SDKs (Python and Node), unchanged, pointed
# at a running switchyard.
#
# Starts, on free loopback ports (each binds port 0; the script reads the address it printed):
#   builtin  `switchyard serve` with no config (the built-in mock provider);
#   upstream `switchyard mock` (the mock provider alone, OpenAI and Anthropic wire formats);
#   gemini   tests/sdk/gemini_mock.py (a Gemini-format upstream: Google AI's v1beta REST API);
#   routed   `switchyard serve --config` routing public model names to that upstream, once as an
#            `openai_compatible` provider and once as an `anthropic` provider, and to the
#            Gemini mock as a `gemini` provider;
# then runs tests/sdk/test_*.py with pytest and tests/sdk/node/*.test.mjs with `node --test`.
#
# Env: SWITCHYARD_BIN (default target/release/switchyard, built if absent),
#      PYTHON (interpreter for the venv, default python3),
#      SDK_PYTEST_ARGS (extra pytest arguments, e.g. "-k stream").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

bin="${SWITCHYARD_BIN:-target/release/switchyard}"
venv="$here/.venv"
node_dir="$here/node"
started=()
work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-sdk.XXXXXX")"

cleanup() {
    local rc=$?
    for pid in "${started[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${started[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -s "$log" ]] || continue
            echo "---- $(basename "$log") (last 40 lines) ----" >&2
            tail -n 40 "$log" >&2
        done
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n== sdk: %s\n' "$*"; }

# ---- Python SDKs ----------------------------------------------------------------------------
step "python venv ($venv)"
py="${PYTHON:-python3}"
if [[ ! -x "$venv/bin/python" ]]; then
    "$py" -m venv "$venv"
fi
# Reinstall only when the pins changed since the last install.
stamp="$venv/.requirements.installed"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi
"$venv/bin/python" - <<'EOF'
import anthropic, openai, pytest
print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, pytest {pytest.__version__}")
EOF

# ---- Node SDKs ------------------------------------------------------------------------------
step "node packages ($node_dir)"
if [[ ! -d "$node_dir/node_modules" ]] || ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.installed"; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$node_dir/package-lock.json" "$node_dir/node_modules/.package-lock.json.installed"
fi
node -e 'const p = (n) => require(require("path").join(process.argv[1], "node_modules", n, "package.json")).version;
console.log(`node ${process.version}, openai ${p("openai")}, @anthropic-ai/sdk ${p("@anthropic-ai/sdk")}`)' "$node_dir"

# ---- the binary -----------------------------------------------------------------------------
step "switchyard binary ($bin)"
if [[ ! -x "$bin" ]]; then
    if [[ -n "${SWITCHYARD_BIN:-}" ]]; then
        echo "SWITCHYARD_BIN=$bin is not an executable file" >&2
        exit 1
    fi
    cargo build --release
fi
"$bin" --version

# ---- servers --------------------------------------------------------------------------------
# Every server binds port 0 and the script reads the address it printed: no port is chosen
# ahead of time, so none can be taken by another process in between.
addr_re='127\.0\.0\.1:[0-9]+'
serve_re="serving on http://$addr_re \\(admin http://$addr_re\\)"

# wait_line NAME PID LOG REGEX: prints the first match of the extended REGEX in LOG, polling
# for at most ~15 s; fails at once if the process exits.
wait_line() {
    local name=$1 pid=$2 log=$3 re=$4 i m
    for ((i = 0; i < 150; i++)); do
        if m="$(grep -Eo -m1 "$re" "$log" 2>/dev/null)"; then
            echo "$m"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$name printed no address after 15 s" >&2
    return 1
}

# wait_http NAME PID URL: polls URL until it answers 200, for at most ~15 s; fails at once if
# the process exits.
wait_http() {
    local name=$1 pid=$2 url=$3 i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready" >&2
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name not ready at $url after 15 s" >&2
    return 1
}

# addrs TEXT: the loopback addresses in TEXT, space-separated, in order.
addrs() {
    grep -Eo "$addr_re" <<<"$1" | paste -sd' ' -
}

step "starting servers"
export RUST_LOG="${RUST_LOG:-warn}"
# No provider keys from the caller's environment: the built-in config must be the mock alone.
unset OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY MISTRAL_API_KEY GROQ_API_KEY \
    DEEPSEEK_API_KEY XAI_API_KEY TOGETHER_API_KEY FIREWORKS_API_KEY OPENROUTER_API_KEY \
    SWITCHYARD_CONFIG

"$bin" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 >"$work/builtin.log" 2>&1 &
started+=($!)
pid_builtin=$!

"$bin" mock --port 0 --host 127.0.0.1 >"$work/upstream.log" 2>&1 &
started+=($!)
pid_upstream=$!

# The Gemini mock prints its port alone on its first stdout line; its request log goes to stderr.
"$venv/bin/python" "$here/gemini_mock.py" --api-key test-gemini-key \
    >"$work/gemini.port" 2>"$work/gemini.log" &
started+=($!)
pid_gemini=$!

line="$(wait_line "switchyard serve (built-in mock)" "$pid_builtin" "$work/builtin.log" "$serve_re")"
read -r builtin_addr builtin_admin <<<"$(addrs "$line")"
line="$(wait_line "switchyard mock (upstream)" "$pid_upstream" "$work/upstream.log" "http://$addr_re/v1")"
upstream_addr="$(addrs "$line")"
gemini_port="$(wait_line "gemini_mock.py (Gemini upstream)" "$pid_gemini" "$work/gemini.port" '^[0-9]+$')"
gemini_addr="127.0.0.1:$gemini_port"

cat >"$work/routed.yaml" <<YAML
listen: 127.0.0.1:0
admin: 127.0.0.1:0
providers:
  - name: upstream
    kind: openai_compatible
    base_url: http://$upstream_addr/v1
    api_key: sk-sdk-test
  - name: upstream-anthropic
    kind: anthropic
    base_url: http://$upstream_addr
    api_key: sk-ant-sdk-test
  - name: gemini-up
    kind: gemini
    base_url: http://$gemini_addr/v1beta
    api_key: test-gemini-key
models:
  - name: chat-default
    targets: [upstream/echo]
  - name: chat-lorem
    targets: [upstream/lorem]
  - name: embed-default
    targets: [upstream/embed]
  - name: chat-anthropic
    targets: [upstream-anthropic/echo]
  - name: chat-anthropic-lorem
    targets: [upstream-anthropic/lorem]
  - name: chat-gemini
    targets: [gemini-up/gemini-2.5-flash]
  - name: chat-gemini-lorem
    targets: [gemini-up/gemini-lorem]
  - name: embed-gemini
    targets: [gemini-up/text-embedding-004]
YAML
"$bin" serve --config "$work/routed.yaml" >"$work/routed.log" 2>&1 &
started+=($!)
pid_routed=$!
line="$(wait_line "switchyard serve --config (routed)" "$pid_routed" "$work/routed.log" "$serve_re")"
read -r routed_addr routed_admin <<<"$(addrs "$line")"

wait_http "switchyard serve (built-in mock)" "$pid_builtin" "http://$builtin_admin/readyz"
# The mock upstream's admin plane is on an ephemeral port it does not print: its model list is
# its readiness.
wait_http "switchyard mock (upstream)" "$pid_upstream" "http://$upstream_addr/v1/models"
wait_http "gemini_mock.py (Gemini upstream)" "$pid_gemini" "http://$gemini_addr/healthz"
wait_http "switchyard serve --config (routed)" "$pid_routed" "http://$routed_admin/readyz"
echo "builtin  http://$builtin_addr (admin $builtin_admin)"
echo "upstream http://$upstream_addr"
echo "gemini   http://$gemini_addr/v1beta"
echo "routed   http://$routed_addr (admin $routed_admin)"

export SWITCHYARD_BUILTIN_URL="http://$builtin_addr"
export SWITCHYARD_ROUTED_URL="http://$routed_addr"
export SWITCHYARD_GEMINI_MOCK_URL="http://$gemini_addr"

# Does this build serve the Anthropic caller surface?
anthropic_status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -H 'x-api-key: k' \
    -d '{"model":"mock/echo","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}' \
    "$SWITCHYARD_BUILTIN_URL/v1/messages" || true)"
if [[ "$anthropic_status" == "200" ]]; then
    export SWITCHYARD_ANTHROPIC=1
    echo "Anthropic surface: POST /v1/messages answers; Anthropic SDK tests run"
else
    export SWITCHYARD_ANTHROPIC=0
    echo "Anthropic surface: POST /v1/messages answered $anthropic_status:" \
        "Anthropic SDK tests are SKIPPED (this build has no Anthropic caller surface)"
fi

# ---- tests ----------------------------------------------------------------------------------
failed=0
step "python: pytest tests/sdk"
# shellcheck disable=SC2086
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest "$here" ${SDK_PYTEST_ARGS:-} || failed=1

step "node: node --test tests/sdk/node"
(cd "$node_dir" && node --test --test-reporter=spec ./*.test.mjs) || failed=1

if [[ $failed -ne 0 ]]; then
    echo "sdk: FAILED" >&2
    exit 1
fi
echo "sdk: all SDK tests passed"
