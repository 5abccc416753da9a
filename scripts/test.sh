#!/usr/bin/env bash
# Installs everything the tests need (system servers and the Python environment) and runs them:
# lint, types, then the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers the tests start on loopback: redis-server, nginx, prometheus (promtool).
missing=()
for pair in redis-server:redis-server nginx:nginx promtool:prometheus prometheus:prometheus; do
  bin=${pair%%:*}; pkg=${pair##*:}
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v "^WARNING: Location" || true

.venv/bin/ruff check gateway tests loadtest
.venv/bin/mypy gateway
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
