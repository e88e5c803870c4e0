#!/usr/bin/env bash
# Build every image the tests and the local demo need, FROM a locally imported Debian base
# (no registry is reachable). Fast when cached. Usage:
#   tests/build-images.sh [nginx|certbot|certbot5|app|pebble|bind|sidecar|acmeproxy ...]   (default: all)
# certbot5 installs PyPI wheels that its fetch-wheels.sh downloads here first (cached), since a
# build cannot reach the index; every other image installs from Debian's packages.
# Env: BASE_IMAGE (default local/debian:trixie-slim, made by .ci/setup-docker.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-local/debian:trixie-slim}"
# Engine 20.10 without the buildx plugin: use the classic builder explicitly
# (with BuildKit requested the CLI fails, "buildx component is missing").
export DOCKER_BUILDKIT=0

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { printf '[build-images] FATAL: %s\n' "$*" >&2; exit 1; }

# name -> "tag|context dir|dockerfile"
declare -A IMAGES=(
  [nginx]="local/nginx:stable|tests/images/nginx|Dockerfile"
  [certbot]="local/certbot:v4.0.0|tests/images/certbot|Dockerfile"
  [certbot5]="local/certbot:v5|tests/images/certbot5|Dockerfile"
  [app]="local/app:test|tests/images/app|Dockerfile"
  [testssl]="local/testssl:test|tests/images/testssl|Dockerfile"
  [pebble]="local/pebble:test|examples/local-demo/pebble|Dockerfile"
  [sidecar]="local/nginx-acme-sidecar:test|.|Dockerfile"
  [caddy]="local/caddy:test|tests/images/caddy|Dockerfile"
  [receiver]="local/receiver:test|tests/images/receiver|Dockerfile"
  [dockerproxy]="local/dockerproxy:test|tests/images/dockerproxy|Dockerfile"
  [wrk]="local/wrk:test|tests/images/wrk|Dockerfile"
  [acmeproxy]="local/acmeproxy:test|tests/images/acmeproxy|Dockerfile"
  [tlsserver]="local/tlsserver:test|tests/images/tlsserver|Dockerfile"
  [bind]="local/bind:test|examples/local-demo/bind|Dockerfile"
)
ORDER=(nginx certbot certbot5 app pebble bind sidecar caddy testssl receiver acmeproxy dockerproxy wrk tlsserver)

docker info >/dev/null 2>&1 || die "Docker engine not reachable (run: bash .ci/setup-docker.sh)"
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 \
  || die "base image $BASE_IMAGE not found (run: bash .ci/setup-docker.sh)"

names=("$@"); ((${#names[@]})) || names=("${ORDER[@]}")
buildlog="$(mktemp)"; trap 'rm -f "$buildlog"' EXIT

for name in "${names[@]}"; do
  [ -n "${IMAGES[$name]:-}" ] || die "unknown image '$name' (known: ${ORDER[*]})"
  IFS='|' read -r tag ctx file <<<"${IMAGES[$name]}"
  if [ ! -f "$ROOT/$ctx/$file" ]; then
    # The sidecar's own Dockerfile is optional here; everything else must exist.
    [ "$name" = sidecar ] && { log "skip $tag: no $ctx/$file"; continue; }
    die "missing $ctx/$file"
  fi
  start=$SECONDS
  if [ -f "$ROOT/$ctx/fetch-wheels.sh" ]; then
    bash "$ROOT/$ctx/fetch-wheels.sh" || die "fetching the wheels of $tag failed (see $ctx/fetch-wheels.sh)"
  fi
  # --force-rm: no stopped intermediate container is left behind when a step fails.
  if ! docker build --force-rm --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" -f "$ROOT/$ctx/$file" "$ROOT/$ctx" \
      >"$buildlog" 2>&1; then
    tail -n 40 "$buildlog" >&2
    die "docker build of $tag failed (context $ctx)"
  fi
  log "built $tag in $((SECONDS - start))s"
done
