"""Two decisions inside the loop, tested without Docker (the adapter is never called)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sidecar.planner import Action, Decision
from sidecar.reconciler import Reconciler
from sidecar.settings import Settings

from .builders import site

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def reconciler(tmp_path: Path, **settings: Any) -> Reconciler:
    s = Settings(state_dir=tmp_path, ari=False, **settings)
    return Reconciler(s, docker=None, clock=lambda: NOW)  # type: ignore[arg-type]


def test_only_events_that_can_change_the_desired_state_wake_the_loop(tmp_path: Path) -> None:
    r = reconciler(tmp_path)
    r._relevant_ids = frozenset({"known"})
    labelled = {"Type": "container", "Actor": {"ID": "new"}}
    assert r._relevant(labelled, {"acme.domains": "a.example.com"})
    assert r._relevant({"Type": "container", "Actor": {"ID": "n"}}, {"acme.nginx": "true"})
    assert r._relevant({"Type": "container", "Actor": {"ID": "known"}}, {})
    assert not r._relevant({"Type": "container", "Actor": {"ID": "stranger"}}, {"name": "db"})
    assert r._relevant({"Type": "network"}, {"container": "known"})
    assert not r._relevant({"Type": "network"}, {"container": "stranger"})


def test_named_nginx_container_events_count(tmp_path: Path) -> None:
    r = reconciler(tmp_path, nginx_container="web-nginx")
    assert r._relevant({"Type": "container", "Actor": {"ID": "x"}}, {"name": "web-nginx"})


def test_an_account_wide_rate_limit_pauses_new_orders_for_every_site_but_not_renewals(tmp_path: Path) -> None:
    r = reconciler(tmp_path, rate_limits="off")
    other = site("b.example.com")
    assert r._within_budget(Decision(other, Action.ISSUE, "no certificate yet"))
    r._account_paused_until = NOW + timedelta(minutes=30)
    assert not r._within_budget(Decision(other, Action.ISSUE, "no certificate yet"))
    assert r._postponed["b.example.com"] == NOW + timedelta(minutes=30)
    assert r._within_budget(Decision(other, Action.RENEW, "due"))
    r._account_paused_until = NOW - timedelta(seconds=1)
    assert r._within_budget(Decision(other, Action.ISSUE, "no certificate yet"))
