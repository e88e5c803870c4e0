"""Shared fixtures for the unit tests (no Docker, no network, no sleeping)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from .builders import NOW


@pytest.fixture
def now() -> datetime:
    """A fixed clock: every pure function takes ``now`` as an argument."""
    return NOW


@pytest.fixture
def certs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "letsencrypt"
    d.mkdir()
    return d
