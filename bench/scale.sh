#!/usr/bin/env bash
# Ten-thousand-sites benchmark (see bench/README.md): start-up, idle, status endpoints, one site added,
# and what nginx costs at that size.
#   bench/scale.sh [--sites 10000] [--group 1] [--runs 1]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || { echo "bench: no $PY (python3 -m venv .venv && .venv/bin/pip install -e '.[dev,bench]')" >&2; exit 2; }
for pair in nginx:"${NGINX_IMAGE:-local/nginx:stable}" app:"${APP_IMAGE:-local/app:test}" \
            pebble:"${PEBBLE_IMAGE:-local/pebble:test}" sidecar:"${SIDECAR_IMAGE:-local/nginx-acme-sidecar:test}" \
            certbot:"${CERTBOT_IMAGE:-local/certbot:v4.0.0}"; do
  docker image inspect "${pair#*:}" >/dev/null 2>&1 || bash "$ROOT/tests/build-images.sh" "${pair%%:*}"
done
exec "$PY" "$ROOT/bench/scale.py" "$@"
