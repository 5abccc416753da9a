#!/usr/bin/env bash
# Starts the gateway with embedded defaults: in-process store, the built-in simulated upstream
# and a demo tenant whose key is printed with a copy-paste quick start. Extra arguments go to
# `realtime-gateway serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/realtime-gateway ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 \
    | grep -v "^WARNING: Location" || true
fi
GATEWAY_DEMO=${GATEWAY_DEMO:-true} exec .venv/bin/realtime-gateway serve "$@"
