#!/usr/bin/env bash
# Installs the tools the observability tests need: Prometheus' `promtool` (Debian package
# `prometheus`). Idempotent; run as root (CI and developer machines are).
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's service is not wanted here: only the promtool binary is used.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool
