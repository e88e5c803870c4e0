#!/usr/bin/env bash
# Benchmark wrapper: makes sure matplotlib and the images are there, then runs bench/run.py.
#   bench/run.sh                      # N = 1 10 100, one run each, all three tools
#   bench/run.sh --sizes 1 10         # smoke check
#   bench/run.sh --runs 3 --tools sidecar
# Env: NGINX_IMAGE CERTBOT_IMAGE APP_IMAGE PEBBLE_IMAGE SIDECAR_IMAGE CADDY_IMAGE (local/* test images by default).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || { echo "bench: no $PY (make the venv first: python3 -m venv .venv && .venv/bin/pip install -e '.[dev,bench]')" >&2; exit 2; }
"$PY" -c 'import docker, matplotlib' 2>/dev/null || "$PY" -m pip install -q -e "$ROOT[bench]"
# Build only the images that are missing (the sidecar image is used as it is: rebuild it to measure new code).
missing=()
for pair in nginx:"${NGINX_IMAGE:-local/nginx:stable}" certbot:"${CERTBOT_IMAGE:-local/certbot:v4.0.0}" \
            app:"${APP_IMAGE:-local/app:test}" pebble:"${PEBBLE_IMAGE:-local/pebble:test}" \
            caddy:"${CADDY_IMAGE:-local/caddy:test}"; do
  docker image inspect "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
((${#missing[@]} == 0)) || bash "$ROOT/tests/build-images.sh" "${missing[@]}"
exec "$PY" "$ROOT/bench/run.py" "$@"
