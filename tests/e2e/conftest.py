from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from .stack import Stack, new_stack, running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local demo, up and serving its three sites (two by label, one from YAML)."""
    s = new_stack(Path(tmp_path_factory.mktemp("e2e")))
    started = time.monotonic()
    with running(s, ["a.demo.test", "b.demo.test", "static.demo.test"]):
        s.record("demo_up_to_three_sites_https_seconds", round(time.monotonic() - started, 2))
        yield s
