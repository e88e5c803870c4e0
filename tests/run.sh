#!/usr/bin/env bash
# The whole test suite on a fresh machine, as root: Docker engine, Compose, base and
# test images, a Python venv, then unit and end-to-end tests. Fails loudly.
#   bash tests/run.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export VENV="${VENV:-$ROOT/.venv}"
log() { printf '[tests] %s\n' "$*" >&2; }

start=$SECONDS
bash .ci/setup-docker.sh
bash .ci/setup-browser.sh
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c "import sidecar, pytest, docker, jinja2" || { log "FATAL: Python dependencies missing"; exit 1; }
bash tests/build-images.sh
log "set-up took $((SECONDS - start))s"

log "type check: mypy --strict on the package"
"$VENV/bin/python" -m mypy || { log "FATAL: mypy found type errors"; exit 1; }
log "import contracts: lint-imports (the layers in sidecar/ only import downward)"
"$VENV/bin/lint-imports" || { log "FATAL: an import breaks the layer contracts in pyproject.toml"; exit 1; }

rc=0
"$VENV/bin/python" -m pytest tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  log "FATAL: pytest collected no tests"
  exit 1
fi
log "finished in $((SECONDS - start))s (pytest exit $rc)"
exit "$rc"
