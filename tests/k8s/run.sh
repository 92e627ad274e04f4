#!/usr/bin/env bash
# Renders the Helm chart with real Helm (the Helm v4 SDK from PyPI, offline), lints it, and
# validates every manifest (chart, deploy/, the webhook's golden pods) against the Kubernetes
# OpenAPI schemas with kubernetes-validate --strict. Installs what it needs into a venv.
# Fails on any failure. Usage: tests/k8s/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${SWITCHYARD_K8S_VENV:-${CARGO_TARGET_DIR:-target}/k8s-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  'helm-python-sdk==0.2.2' 'kubernetes-validate==1.37.0' 'PyYAML>=6' 'jsonschema>=4'
"$venv/bin/python" tests/k8s/render.py
