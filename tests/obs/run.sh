#!/usr/bin/env bash
# The observability tests: installs promtool when missing, then runs the metric, dashboard and
# trace tests. Under CI=true a missing promtool is a failure, not a skip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$ROOT/tests/obs/install.sh"
cd "$ROOT"
cargo test --test obs_metrics --test obs_traces
