# nginx-acme-sidecar: watches Docker labels and a YAML sites file, obtains certificates
# with certbot (run in sibling containers through the Docker socket), renders nginx
# configuration into a shared conf.d volume and reloads nginx with `docker exec`.
#
# Dependencies come from Debian packages only (no pip, no build tools), so the image
# builds from any Debian trixie base: `--build-arg BASE_IMAGE=<local base>` offline.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="nginx-acme-sidecar" \
      org.opencontainers.image.description="Sidecar for a stock nginx container: certificates from an ACME CA (certbot) for sites declared by Docker labels or a YAML file" \
      org.opencontainers.image.version="0.1.0"

# apt-get clean: a debootstrapped base, unlike debian:*-slim, keeps downloaded .debs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 \
      python3-docker \
      python3-watchdog \
      python3-cryptography \
      python3-tenacity \
      python3-yaml \
      python3-jinja2 \
      python3-prometheus-client \
      python3-idna \
      python3-tldextract \
      publicsuffix \
      apprise \
      ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# Fail the build early if a dependency is missing from the Debian packages.
RUN python3 -c "import docker, watchdog, cryptography, tenacity, yaml, jinja2, prometheus_client, idna, tldextract, apprise"

ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
COPY sidecar/ /app/sidecar/
# Byte-compile once at build time: the container runs with a read-only root filesystem
# and PYTHONDONTWRITEBYTECODE, so nothing would be cached at run time.
RUN python3 -m compileall -q /app/sidecar

# Runs as root on purpose: it talks to the Docker engine through the mounted socket
# (/var/run/docker.sock, owned by root), which is root-equivalent on the host anyway,
# and it shares the certificate/webroot/conf volumes with certbot containers that
# write as root. Harden at run time instead (see docker-compose.yml: read_only,
# cap_drop, no-new-privileges).
USER root

# Status server (healthz, metrics, status, plan): STATUS_PORT. Not for nginx to publish.
EXPOSE 9090

# Healthy when the last reconcile pass finished recently and reached the Docker API
# (asks GET /healthz on the status port; falls back to STATE_DIR/status.json when it is off).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-m", "sidecar", "health"]

ENTRYPOINT ["python3", "-m", "sidecar"]
CMD ["run"]
