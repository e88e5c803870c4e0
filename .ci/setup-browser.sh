#!/usr/bin/env bash
# Debian's Chromium (and a font) for the status page's end-to-end test (tests/e2e/test_status_page.py),
# which drives it headless over the DevTools protocol. Idempotent; fails loudly (the test never skips).
set -euo pipefail
log() { printf '[setup-browser] %s\n' "$*" >&2; }
die() { printf '[setup-browser] FATAL: %s\n' "$*" >&2; exit 1; }

missing=()
for p in chromium fonts-dejavu-core; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -qq || die "apt-get update failed"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
command -v chromium >/dev/null || die "chromium is not on PATH after installing it"
log "$(chromium --version 2>/dev/null | head -n1)"
