"""The shipped compose files and sites files stay valid (documentation that cannot rot)."""

from __future__ import annotations

import os
import subprocess

import pytest

from .stack import IMAGES, ROOT

COMPOSE_FILES = ["docker-compose.yml", "examples/local-demo/compose.yml", "examples/multi-site/compose.yml"]
SITES_FILES = ["config/sites.yml", "examples/local-demo/config/sites.yml", "examples/multi-site/config/sites.yml"]


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_compose_file_is_valid(path: str) -> None:
    proc = subprocess.run(["docker", "compose", "-f", str(ROOT / path), "config", "-q"],
                          capture_output=True, text=True, env={**os.environ, **IMAGES}, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", SITES_FILES)
def test_sites_file_passes_the_sidecars_own_check(path: str) -> None:
    directory = (ROOT / path).parent
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{directory}:/config:ro",
         "-e", f"SITES_FILE=/config/{(ROOT / path).name}", IMAGES["SIDECAR_IMAGE"], "check"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_demos_dns01_variant_is_valid_over_the_demo() -> None:
    demo = ROOT / "examples" / "local-demo"
    proc = subprocess.run(["docker", "compose", "-f", str(demo / "compose.yml"), "-f", str(demo / "compose.dns01.yml"),
                           "config", "-q"], capture_output=True, text=True, env={**os.environ, **IMAGES}, timeout=60)
    assert proc.returncode == 0, proc.stderr
