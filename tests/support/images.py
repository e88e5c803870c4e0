"""The images the tests and benchmarks run: built by tests/build-images.sh, all local."""

from __future__ import annotations

import os

# The demo stack's images (examples/local-demo/compose.yml reads these variable names).
STACK_IMAGES = {
    "NGINX_IMAGE": "local/nginx:stable",
    "CERTBOT_IMAGE": "local/certbot:v4.0.0",
    "APP_IMAGE": "local/app:test",
    "PEBBLE_IMAGE": "local/pebble:test",
    "SIDECAR_IMAGE": "local/nginx-acme-sidecar:test",
}


def images(prefix: str = "", **more: str) -> dict[str, str]:
    """The stack's images and ``more`` (name=default), each replaced by the environment variable
    ``<prefix><NAME>`` when that is set and not empty: ``E2E_SIDECAR_IMAGE`` for the tests
    (``prefix="E2E_"``), ``SIDECAR_IMAGE`` for the benchmarks."""
    return {name: os.environ.get(prefix + name) or default for name, default in {**STACK_IMAGES, **more}.items()}
