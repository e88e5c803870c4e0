"""Suite-wide rule: a skipped test is a failure unless ALLOW_SKIPS=1.

An end-to-end test that silently skips because something is missing would
look like a pass; this makes the run fail loudly instead.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and os.environ.get("ALLOW_SKIPS") != "1" and exitstatus == 0:
        print(f"\nFAIL: {len(_skipped)} test(s) skipped (set ALLOW_SKIPS=1 to allow): {', '.join(_skipped)}")
        session.exitstatus = 1
