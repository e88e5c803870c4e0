"""Two decisions inside the loop, tested without Docker (the adapter is never called)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sidecar.core.planner import Action, Decision
from sidecar.engine.reconciler import Reconciler
from sidecar.core.settings import Settings

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


def test_reload_batching_during_a_burst() -> None:
    from sidecar.engine.reconciler import reload_due

    inf = float("inf")
    assert reload_due(inf, 10, running=True, queued=True)          # the first certificate: at once
    assert not reload_due(4, 10, running=True, queued=True)        # then at most every interval
    assert reload_due(10.5, 10, running=True, queued=True)
    assert reload_due(2, 10, running=False, queued=False)          # the burst is over: at once
    # Everything left is running, for a few seconds so far: its end is one certbot run away...
    assert not reload_due(12, 10, running=True, queued=False, oldest_run=4)
    # ...but a slow or hung run is not waited for (found by the e2e test of an unanswered order)
    assert reload_due(12, 10, running=True, queued=False, oldest_run=10.5)
    assert reload_due(30, 10, running=True, queued=False)
    assert reload_due(0.1, 0, running=True, queued=True)           # RELOAD_INTERVAL=0: every certificate


def test_a_burst_of_100_even_completions_takes_at_most_five_reloads() -> None:
    """Simulated: 100 certificates, 8 at a time, one every 0.42 s from t=3 s (about 45 s in all)."""
    from sidecar.engine.reconciler import reload_due

    done_at = [3 + 0.42 * i for i in range(100)]
    last, pending, reloads, t = float("-inf"), False, 0, 0.0
    while t < done_at[-1] + 1:
        t = round(t + 0.25, 2)
        finished = sum(1 for d in done_at if d <= t)
        pending = pending or any(t - 0.25 < d <= t for d in done_at)
        running, queued = finished < 100, finished < 100 - 8
        if pending and reload_due(t - last, 10, running, queued):
            last, pending, reloads = t, False, reloads + 1
    assert reloads <= 5


def test_ari_questions_beyond_the_time_budget_wait_for_the_next_pass(tmp_path: Path, monkeypatch: Any) -> None:
    """A thousand certificates must not hold up planning: each pass asks the CA for a second at most."""
    import time as time_mod

    from sidecar.adapters import ari

    from sidecar.engine import reconciler as reconciler_mod

    from .builders import cert

    class SlowCA:
        asked: list[str] = []

        def window(self, c: Any, now: datetime) -> ari.Window:
            self.asked.append(c.name)
            time_mod.sleep(0.02)
            return ari.Window(NOW + timedelta(days=50), NOW + timedelta(days=51), NOW + timedelta(hours=6))

    monkeypatch.setattr(reconciler_mod, "ARI_SECONDS_PER_PASS", 0.05)
    r = reconciler(tmp_path)
    r.ari = SlowCA()  # type: ignore[assignment]
    lineages = {f"s{i}.example": cert(f"s{i}.example") for i in range(10)}
    first = r._ari_windows(lineages)
    assert 1 <= len(first) < 10 and r._ari_backlog
    for _ in range(10):
        if not r._ari_backlog:
            break
        windows = r._ari_windows(lineages)
    assert not r._ari_backlog and len(windows) == 10
    assert sorted(SlowCA.asked) == sorted(lineages)  # each asked once: answers are kept


def test_after_a_big_reload_a_sample_of_sites_is_checked_over_tls(tmp_path: Path, monkeypatch: Any) -> None:
    """1,000 vhosts written at once: a handful of handshakes, not a thousand (which outlasted the
    deadline and rolled the whole start-up back, found by bench/startup.py)."""
    from types import SimpleNamespace

    from sidecar.engine import reconciler as reconciler_mod

    names = [f"s{i}.example" for i in range(1000)]
    lineages = {n: SimpleNamespace(serial=i) for i, n in enumerate(names)}
    asked: list[str] = []

    def served(host: str, sni: str, timeout: float = 2.0) -> int:
        asked.append(sni)
        return int(sni.split(".")[0][1:]) if sni != "s550.example" else -1  # not in the sample

    monkeypatch.setattr(reconciler_mod, "_served_serial", served)
    r = reconciler(tmp_path)
    r._nginx_addr = ("10.0.0.2", 80)
    written = [f"sidecar-site-{n}.conf" for n in names] + ["sidecar-global.conf"]
    assert r._verify_served(written, lineages) == ""  # type: ignore[arg-type]
    assert len(asked) == reconciler_mod.VERIFY_SAMPLE and asked[0] == "s0.example" and asked[-1] == "s900.example"
    # a sampled site served with the wrong certificate is reported
    lineages["s0.example"] = SimpleNamespace(serial=12345)
    monkeypatch.setattr(reconciler_mod.time, "sleep", lambda s: None)
    monkeypatch.setattr(reconciler_mod, "VERIFY_SAMPLE", 10)
    r2 = reconciler(tmp_path)
    r2._nginx_addr = ("10.0.0.2", 80)
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(reconciler_mod.time, "monotonic", lambda: float(next(clock)))
    assert r2._verify_served(written, lineages) == "wrong or no certificate for s0.example"  # type: ignore[arg-type]


def test_a_restart_with_nothing_changed_does_not_reload_nginx(tmp_path: Path) -> None:
    from sidecar.adapters import nginx

    class Control:
        reloads = 0

        def test(self) -> tuple[bool, str]:
            return True, ""

        def reload(self) -> tuple[bool, str]:
            Control.reloads += 1
            return True, ""

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "sidecar-site-a.example.conf").write_text("server {}\n")
    fingerprint: tuple[object, ...] = ((("/etc/nginx/conf.d/mine.conf", 1, 2),), ())

    def start(nginx_id: str = "nginx1", fp: tuple[object, ...] = fingerprint) -> bool:
        r = reconciler(tmp_path, conf_dir=conf)  # a fresh process: nothing in memory
        owned = nginx.owned_files(conf)  # what _apply passes: the sidecar's files as they are now
        return r._reload_for_outside_changes(Control(), fp, nginx_id, owned)  # type: ignore[arg-type]

    assert start() and Control.reloads == 1        # first start ever: reload once
    assert not start() and Control.reloads == 1    # restart, all as nginx loaded it: no reload
    assert start("nginx2") and Control.reloads == 2  # another nginx container
    (conf / "sidecar-site-a.example.conf").write_text("server { listen 443; }\n")  # written, never loaded
    assert start("nginx2") and Control.reloads == 3
    assert start("nginx2", ((("/etc/nginx/conf.d/mine.conf", 5, 2),), ())) and Control.reloads == 4  # edited
    assert not start("nginx2", ((("/etc/nginx/conf.d/mine.conf", 5, 2),), ()))


def test_a_lineage_read_that_overlaps_a_certbot_run_is_not_kept(tmp_path: Path, monkeypatch: Any) -> None:
    """Found by the 100-site bench: the loop read the lineages while a certbot thread moved a new one
    into place; that stale read was kept, so the new certificate went unlogged and was requested again."""
    from sidecar.state import certs

    r = reconciler(tmp_path, certs_dir=tmp_path / "le")
    disk: dict[str, Any] = {}
    real_reads = []

    def read(certs_dir: Path, cache: Any) -> tuple[dict[str, Any], list[Any]]:
        snapshot = dict(disk)
        if not real_reads:  # the first read is overtaken: a certbot run lands meanwhile
            disk["new.example"] = "lineage"
            r._forget_lineages()
        real_reads.append(snapshot)
        return snapshot, []

    monkeypatch.setattr(certs, "read_lineages", read)
    assert r._lineages()[0] == {}             # what that read saw...
    assert r._lineages()[0] == {"new.example": "lineage"}  # ...was not kept: read again
    assert r._lineages()[0] == {"new.example": "lineage"} and len(real_reads) == 2  # now kept


def test_the_status_file_is_rewritten_only_when_it_changes(tmp_path: Path, monkeypatch: Any) -> None:
    """Four calls a second while certbot runs: one write per change (or per half minute), not per call."""
    from types import SimpleNamespace

    from sidecar.state import files
    from sidecar.engine import reconciler as reconciler_mod

    writes: list[str] = []
    monkeypatch.setattr(files, "atomic_write", lambda path, text: writes.append(text))
    clock = [1000.0]
    monkeypatch.setattr(reconciler_mod.time, "monotonic", lambda: clock[0])
    r = reconciler(tmp_path)
    state = SimpleNamespace(problems=[])
    r._write_status(state, SimpleNamespace(decisions=()))  # type: ignore[arg-type]
    r._write_status(state, SimpleNamespace(decisions=()))  # type: ignore[arg-type]
    assert len(writes) == 1
    r._write_status(SimpleNamespace(problems=["sites file: bad"]), SimpleNamespace(decisions=()))  # type: ignore[arg-type]
    assert len(writes) == 2 and "sites file: bad" in writes[-1]
    clock[0] += 31  # unchanged, but the health check wants a fresh time stamp now and then
    r._write_status(SimpleNamespace(problems=["sites file: bad"]), SimpleNamespace(decisions=()))  # type: ignore[arg-type]
    assert len(writes) == 3


def test_warm_up_registers_the_account_once_and_lets_the_loop_go_on(tmp_path: Path, monkeypatch: Any) -> None:
    from sidecar.state import lineage
    from sidecar.core import ratelimits, render
    from sidecar.adapters.docker_api import RunResult

    loaded: list[str] = []
    monkeypatch.setattr(ratelimits, "registered_domain", lambda name: loaded.append("psl") or name)
    monkeypatch.setattr(render, "render_sample", lambda templates: loaded.append("templates") or {})

    class Runner:
        def __init__(self) -> None:
            self.warmed, self.runs = 0, []

        def warm(self) -> None:
            self.warmed += 1

        def run(self, args: list[str], environment: Any, site: str) -> RunResult:
            self.runs.append(args)
            return RunResult(0, "Account registered.")

    certs = tmp_path / "le"
    r = reconciler(tmp_path, certs_dir=certs, acme_server="https://ca.test/dir")
    r.runner = Runner()  # type: ignore[assignment]
    r._registering.set()
    r._warm_up()
    assert r.runner.warmed == 1 and [a[0] for a in r.runner.runs] == ["register"]  # type: ignore[attr-defined]
    assert "--server" in r.runner.runs[0] and "https://ca.test/dir" in r.runner.runs[0]  # type: ignore[attr-defined]
    assert not r._registering.is_set() and r._reasons == ["ACME account ready"]  # the loop is woken
    assert loaded == ["psl", "templates"]  # loaded now, not in the first site's pass

    # An account on disk: nothing to register.
    lineage.account_dir(certs, "https://ca.test/dir").joinpath("abc123").mkdir(parents=True)
    again = reconciler(tmp_path, certs_dir=certs, acme_server="https://ca.test/dir")
    again.runner = Runner()  # type: ignore[assignment]
    again._warm_up()
    assert again.runner.warmed == 1 and again.runner.runs == []  # type: ignore[attr-defined]
