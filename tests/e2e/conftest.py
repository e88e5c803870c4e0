from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from .stack import Stack, new_stack, running

LOG_TAIL = 12_000  # characters of each stack's sidecar log shown with a failed test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the tail of its stacks' sidecar logs: CI keeps only what
    pytest prints, and the logs saved in .artifacts/ go with the checkout."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Stack):
            try:
                tail = value.logs()[-LOG_TAIL:]
            except Exception as exc:  # noqa: BLE001 - best effort, the failure itself is what matters
                tail = f"(could not read the log: {exc!r})"
            report.sections.append((f"sidecar log of {name} ({value.project}), last {LOG_TAIL} characters", tail))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local demo, up and serving its three sites (two by label, one from YAML)."""
    s = new_stack(Path(tmp_path_factory.mktemp("e2e")))
    started = time.monotonic()
    with running(s, ["a.demo.test", "b.demo.test", "static.demo.test"]):
        s.record("demo_up_to_three_sites_https_seconds", round(time.monotonic() - started, 2))
        yield s
