from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from .stack import Stack, new_stack, wait_for


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local demo, up and serving its three sites (two by label, one from YAML)."""
    s = new_stack(Path(tmp_path_factory.mktemp("e2e")))
    try:
        started = time.monotonic()
        s.compose("up", "-d", "--no-build")
        s.fetch_root()
        for host in ("a.demo.test", "b.demo.test", "static.demo.test"):
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=90)
        s.record("demo_up_to_three_sites_https_seconds", round(time.monotonic() - started, 2))
        yield s
    except BaseException:
        print("---- sidecar logs ----\n" + s.logs()[-6000:])
        raise
    finally:
        s.down()
