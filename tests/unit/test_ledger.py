from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from sidecar.state.ledger import HISTORY_KEEP, Ledger
from sidecar.core.planner import Attempt

from .builders import NOW

DOMAINS = ("a.example.com", "www.a.example.com")


def test_missing_file_is_a_fresh_ledger(tmp_path: Path) -> None:
    ledger = Ledger.load(tmp_path / "state.json")
    assert ledger.attempts == {} and ledger.issued == []
    assert not (tmp_path / "state.json").exists()


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.json"
    ledger = Ledger.load(path)
    ledger.record_failure("a.example.com", DOMAINS, NOW, "rate limited", NOW + timedelta(hours=3))
    ledger.record_failure("a.example.com", DOMAINS, NOW + timedelta(minutes=2), "again", None)
    ledger.record_failure("b.example.com", ("b.example.com",), NOW, "dns", None)
    ledger.record_success("c.example.com", ("c.example.com",), NOW - timedelta(hours=1), issued=True)
    ledger.save()
    assert not list(path.parent.glob(".sidecar-tmp-*"))

    again = Ledger.load(path)
    assert again.attempts == ledger.attempts
    assert again.issued == ledger.issued == [(NOW - timedelta(hours=1), "c.example.com", ("c.example.com",))]
    a = again.attempts["a.example.com"]
    assert a == Attempt(failures=2, last_failure=NOW + timedelta(minutes=2), last_error="again",
                        domains=DOMAINS, not_before=None)
    assert a.last_failure is not None and a.last_failure.tzinfo is not None
    data = json.loads(path.read_text())
    assert data["version"] == 1 and sorted(data["attempts"]) == ["a.example.com", "b.example.com"]


def test_round_trip_keeps_ca_retry_time(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.record_failure("a.example.com", DOMAINS, NOW, "rate limited", NOW + timedelta(hours=3))
    ledger.save()
    assert Ledger.load(path).attempts["a.example.com"].not_before == NOW + timedelta(hours=3)


@pytest.mark.parametrize(
    ("history", "expected_failures"),
    [
        ([DOMAINS], [1]),
        ([DOMAINS, DOMAINS, DOMAINS], [1, 2, 3]),
        ([DOMAINS, DOMAINS, ("a.example.com",), ("a.example.com",)], [1, 2, 1, 2]),
        ([DOMAINS, ("a.example.com",), DOMAINS], [1, 1, 1]),
    ],
    ids=["first", "counts-up", "reset-when-domains-change", "reset-each-change"],
)
def test_record_failure_counts(history: list[tuple[str, ...]], expected_failures: list[int]) -> None:
    ledger = Ledger(Path("/nonexistent/ledger.json"))
    got = []
    for i, domains in enumerate(history):
        attempt = ledger.record_failure("a.example.com", domains, NOW + timedelta(minutes=i), f"err {i}", None)
        got.append(attempt.failures)
        assert ledger.attempts["a.example.com"] is attempt
        assert attempt.domains == domains and attempt.last_error == f"err {i}"
        assert attempt.last_failure == NOW + timedelta(minutes=i)
    assert got == expected_failures


def test_failures_are_per_lineage() -> None:
    ledger = Ledger(Path("/nonexistent/ledger.json"))
    ledger.record_failure("a.example.com", DOMAINS, NOW, "x", None)
    assert ledger.record_failure("b.example.com", ("b.example.com",), NOW, "x", None).failures == 1


@pytest.mark.parametrize("issued", [True, False], ids=["issued", "kept"])
def test_record_success_clears_attempts(issued: bool) -> None:
    ledger = Ledger(Path("/nonexistent/ledger.json"))
    ledger.record_failure("a.example.com", DOMAINS, NOW, "x", NOW + timedelta(hours=1))
    ledger.record_failure("b.example.com", ("b.example.com",), NOW, "x", None)
    ledger.record_success("a.example.com", DOMAINS, NOW + timedelta(hours=2), issued=issued)
    assert list(ledger.attempts) == ["b.example.com"]
    assert ledger.issued == ([(NOW + timedelta(hours=2), "a.example.com", DOMAINS)] if issued else [])


def test_issued_history_is_pruned() -> None:
    ledger = Ledger(Path("/nonexistent/ledger.json"))
    ledger.record_success("old.example.com", ("old.example.com",), NOW, issued=True)
    ledger.record_success("new.example.com", ("new.example.com",), NOW + HISTORY_KEEP, issued=True)
    assert [name for _, name, _ in ledger.issued] == ["new.example.com"]


def test_forget_drops_unwanted_lineages() -> None:
    ledger = Ledger(Path("/nonexistent/ledger.json"))
    for name in ("a", "b", "c"):
        ledger.record_failure(name, (name,), NOW, "x", None)
    ledger.forget({"b", "zzz"})
    assert list(ledger.attempts) == ["b"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"attempts": [1]}',
        '{"attempts": {"a": {"failures": "many"}}}',
        '{"attempts": {"a": {"last_failure": "yesterday"}}}',
        '{"issued": [{"at": "2026-13-45"}]}',
        "\x00\x01binary",
    ],
    ids=["truncated", "list", "attempts-list", "bad-count", "bad-date", "bad-issued-date", "binary"],
)
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(content)
    with caplog.at_level(logging.ERROR, logger="sidecar.state.ledger"):
        ledger = Ledger.load(path)
    assert ledger.attempts == {} and ledger.issued == [] and ledger.path == path
    assert not path.exists()
    assert (tmp_path / "ledger.corrupt").read_text() == content
    assert "moved to" in caplog.text
    # and the fresh ledger can be saved over it
    ledger.record_failure("a", ("a",), NOW, "x", None)
    ledger.save()
    assert Ledger.load(path).attempts["a"].failures == 1
