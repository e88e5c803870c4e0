#!/usr/bin/env bash
# Download the wheels of requirements.txt into wheels/ next to this file, ON THE HOST: a pip inside
# a docker build cannot reach the package index here. Wheels for the image's Python (CPython 3.13,
# x86_64 glibc: Debian trixie), whatever Python runs this. Every file is checked against its pinned
# hash. Cached: nothing is downloaded while wheels/ holds what this requirements.txt names.
# Env: PYTHON (a Python with pip; default the project's .venv, else python3).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
WHEELS="$HERE/wheels"
STAMP="$WHEELS/.requirements.sha256"

want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
# --no-deps: requirements.txt is the whole closure, each with its hash (--require-hashes).
# manylinux2014 and the newer manylinux_2_28 tags both run on trixie's glibc 2.41.
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --implementation cp --python-version 3.13 \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -r "$HERE/requirements.txt" -d "$WHEELS" 2>&1 | grep -v '^WARNING: Location' >&2 || true
# pip's own status is lost in the pipe: check that every pinned wheel is there.
missing=0
while read -r pin; do
  name="${pin%%==*}"; version="${pin#*==}"
  norm="$(printf '%s' "$name" | tr 'A-Z-' 'a-z_')"
  compgen -G "$WHEELS/${norm}-${version}-*.whl" >/dev/null \
    || { printf '[fetch-wheels] FATAL: no wheel for %s==%s in %s\n' "$name" "$version" "$WHEELS" >&2; missing=1; }
done < <(grep -oE '^[A-Za-z0-9_.-]+==[^ ]+' "$HERE/requirements.txt")
[ "$missing" -eq 0 ] || exit 1
printf '%s\n' "$want" >"$STAMP"
