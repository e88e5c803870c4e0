"""The parts of the engine and their sources, each on its own (no Docker: the adapter is never called)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sidecar.core import ratelimits
from sidecar.core.planner import Action, Decision, Policy
from sidecar.core.schedule import Usage, admit, schedule
from sidecar.core.settings import Settings
from sidecar.engine.burst import reload_due
from sidecar.engine.loop import Reconciler
from sidecar.sources.triggers import relevant_event

from .builders import site

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def reconciler(tmp_path: Path, **settings: Any) -> Reconciler:
    s = Settings(state_dir=tmp_path, ari=False, **settings)
    return Reconciler(s, docker=None, clock=lambda: NOW)  # type: ignore[arg-type]


def test_only_events_that_can_change_the_desired_state_wake_the_loop() -> None:
    s, known = Settings(), frozenset({"known"})

    def relevant(event: dict[str, Any], attributes: dict[str, Any], settings: Settings = s) -> bool:
        event = {"Action": "start", **event, "Actor": {**event.get("Actor", {}), "Attributes": attributes}}
        return relevant_event(event, settings, known)

    assert relevant({"Type": "container", "Actor": {"ID": "new"}}, {"acme.domains": "a.example.com"})
    assert relevant({"Type": "container", "Actor": {"ID": "n"}}, {"acme.nginx": "true"})
    assert relevant({"Type": "container", "Actor": {"ID": "known"}}, {})
    assert not relevant({"Type": "container", "Actor": {"ID": "stranger"}}, {"name": "db"})
    assert relevant({"Type": "network"}, {"container": "known"})
    assert not relevant({"Type": "network"}, {"container": "stranger"})
    # our own certbot containers and uninteresting actions never wake it
    assert not relevant({"Type": "container", "Actor": {"ID": "known"}}, {s.managed_label: "certbot"})
    assert not relevant_event({"Type": "container", "Action": "exec_start: nginx -t", "Actor": {"ID": "known"}},
                              s, known)
    # the named nginx container counts by name
    assert relevant({"Type": "container", "Actor": {"ID": "x"}}, {"name": "web-nginx"},
                    Settings(nginx_container="web-nginx"))


def test_an_account_wide_rate_limit_pauses_new_orders_for_every_site_but_not_renewals() -> None:
    other = site("b.example.com")
    issue, renew = Decision(other, Action.ISSUE, "no certificate yet"), Decision(other, Action.RENEW, "due")
    assert admit(issue, None, Usage(), NOW).allowed
    paused = Usage(account_paused_until=NOW + timedelta(minutes=30))
    assert admit(issue, None, paused, NOW).frees_at == NOW + timedelta(minutes=30)
    assert admit(renew, None, paused, NOW).allowed
    assert admit(issue, None, Usage(account_paused_until=NOW - timedelta(seconds=1)), NOW).allowed


def test_the_planning_step_postpones_what_the_budgets_do_not_allow(monkeypatch: Any) -> None:
    """schedule(): snapshot + ledger + clock -> what runs and what waits, and until when."""
    # (the real public suffix list is read by tldextract, which leaves a file to the garbage collector)
    monkeypatch.setattr(ratelimits, "registered_domain", lambda name: ".".join(name.split(".")[-2:]))
    limits = ratelimits.PROFILES["letsencrypt"]
    assert limits is not None
    a, b = site("a.example.com"), site("b.example.com")
    orders = tuple((NOW - timedelta(minutes=1), f"x{i}") for i in range(limits.new_orders[0]))
    work = schedule((a, b), {}, {}, Usage(orders=orders), Policy(), limits, NOW)
    assert work.runnable == () and set(work.postponed) == {"a.example.com", "b.example.com"}
    frees = work.postponed["a.example.com"].frees_at
    assert frees is not None and frees > NOW and work.next_wakeup == frees
    work = schedule((a, b), {}, {}, Usage(), Policy(), limits, NOW, forced=frozenset({"b.example.com"}))
    assert [d.site.name for d in work.runnable] == ["a.example.com", "b.example.com"] and not work.postponed
    assert work.forced == frozenset({"b.example.com"})


def test_reload_batching_during_a_burst() -> None:
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


def test_ari_questions_beyond_the_time_budget_wait_for_the_next_pass() -> None:
    """A thousand certificates must not hold up planning: each pass asks the CA for a second at most."""
    import time as time_mod

    from sidecar.adapters import ari

    from .builders import cert

    class SlowCA:
        asked: list[str] = []

        def window(self, c: Any, now: datetime) -> ari.Window:
            self.asked.append(c.name)
            time_mod.sleep(0.02)
            return ari.Window(NOW + timedelta(days=50), NOW + timedelta(days=51), NOW + timedelta(hours=6))

    windows_of = ari.AriWindows(SlowCA(), seconds_per_pass=0.05)  # type: ignore[arg-type]
    lineages = {f"s{i}.example": cert(f"s{i}.example") for i in range(10)}
    first = windows_of.windows(lineages, NOW)
    assert 1 <= len(first) < 10 and windows_of.backlog
    assert windows_of.next_recheck(NOW) == NOW + timedelta(seconds=1)  # the next pass comes soon
    for _ in range(10):
        if not windows_of.backlog:
            break
        windows = windows_of.windows(lineages, NOW)
    assert not windows_of.backlog and len(windows) == 10
    assert sorted(SlowCA.asked) == sorted(lineages)  # each asked once: answers are kept
    assert windows_of.next_recheck(NOW) == NOW + timedelta(hours=6)
    # a preview (the HTTP thread) never asks, it reads what is known
    SlowCA.asked.clear()
    assert len(windows_of.windows(lineages, NOW + timedelta(hours=7), ask=False)) == 10 and SlowCA.asked == []


def test_one_certificate_without_an_aki_does_not_turn_ari_off_for_the_others() -> None:
    from dataclasses import replace

    from sidecar.adapters import ari

    from .builders import cert

    class CA(ari.AriClient):
        def window(self, c: Any, now: datetime) -> ari.Window | None:
            if c.authority_key_id is None:
                return None
            return ari.Window(NOW + timedelta(days=50), NOW + timedelta(days=51), NOW + timedelta(hours=6))

    lineages = {"a.example": replace(cert("a.example"), authority_key_id=None), "b.example": cert("b.example")}
    assert set(ari.AriWindows(CA("https://ca.test/dir")).windows(lineages, NOW)) == {"b.example"}


def _snapshot(lineages: dict[str, Any], addr: tuple[str, int] | None = ("10.0.0.2", 80)) -> Any:
    from sidecar.core.model import DesiredState
    from sidecar.engine.world import Snapshot

    return Snapshot(DesiredState(()), None, lineages, nginx_addr=addr)


def _publisher(tmp_path: Path, **settings: Any) -> Any:
    from sidecar.engine.publisher import Publisher
    from sidecar.engine.reporter import Reporter

    s = Settings(state_dir=tmp_path, **settings)
    return Publisher(s, lambda cid: None, Reporter(s, lambda: NOW))  # type: ignore[arg-type,return-value]


def test_after_a_big_reload_a_sample_of_sites_is_checked_over_tls(tmp_path: Path, monkeypatch: Any) -> None:
    """1,000 vhosts written at once: a handful of handshakes, not a thousand (which outlasted the
    deadline and rolled the whole start-up back, found by bench/startup.py)."""
    from types import SimpleNamespace

    from sidecar.adapters import probe
    from sidecar.engine import publisher as publisher_mod

    names = [f"s{i}.example" for i in range(1000)]
    lineages = {n: SimpleNamespace(serial=i) for i, n in enumerate(names)}
    asked: list[str] = []

    def served(host: str, sni: str, timeout: float = 2.0) -> int:
        asked.append(sni)
        return int(sni.split(".")[0][1:]) if sni != "s550.example" else -1  # not in the sample

    monkeypatch.setattr(probe, "served_serial", served)
    written = [f"sidecar-site-{n}.conf" for n in names] + ["sidecar-global.conf"]
    assert _publisher(tmp_path)._verify_served(_snapshot(lineages), written) == ""
    assert len(asked) == publisher_mod.VERIFY_SAMPLE and asked[0] == "s0.example" and asked[-1] == "s900.example"
    # a sampled site served with the wrong certificate is reported
    lineages["s0.example"] = SimpleNamespace(serial=12345)
    monkeypatch.setattr(publisher_mod.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(publisher_mod.time, "monotonic", lambda: float(next(clock)))
    assert (_publisher(tmp_path)._verify_served(_snapshot(lineages), written)
            == "wrong or no certificate for s0.example")


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
        p = _publisher(tmp_path, conf_dir=conf)  # a fresh process: nothing in memory
        owned = nginx.owned_files(conf)  # what publish passes: the sidecar's files as they are now
        return bool(p._reload_for_outside_changes(Control(), fp, nginx_id, owned))

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
    from sidecar.state.lineages import LineageStore

    store = LineageStore(tmp_path / "le")
    disk: dict[str, Any] = {}
    real_reads = []

    def read(certs_dir: Path, cache: Any, *_: Any) -> tuple[dict[str, Any], list[Any]]:
        snapshot = dict(disk)
        if not real_reads:  # the first read is overtaken: a certbot run lands meanwhile
            disk["new.example"] = "lineage"
            store.forget()
        real_reads.append(snapshot)
        return snapshot, []

    monkeypatch.setattr(certs, "read_lineages", read)
    assert store.certificates() == {}             # what that read saw...
    assert store.certificates() == {"new.example": "lineage"}  # ...was not kept: read again
    assert store.certificates() == {"new.example": "lineage"} and len(real_reads) == 2  # now kept


def test_the_status_file_is_rewritten_only_when_it_changes(tmp_path: Path, monkeypatch: Any) -> None:
    """Four calls a second while certbot runs: one write per change (or per half minute), not per call."""
    from sidecar.core.model import DesiredState, Problem
    from sidecar.engine import reporter as reporter_mod
    from sidecar.state import files

    writes: list[str] = []
    monkeypatch.setattr(files, "atomic_write", lambda path, text: writes.append(text))
    clock = [1000.0]
    monkeypatch.setattr(reporter_mod.time, "monotonic", lambda: clock[0])
    r = reporter_mod.Reporter(Settings(state_dir=tmp_path), lambda: NOW)
    quiet, broken = DesiredState(()), DesiredState((), (Problem("sites file", "bad"),))
    r.status(quiet, None, {}, set(), {}, {})
    r.status(quiet, None, {}, set(), {}, {})
    assert len(writes) == 1
    r.status(broken, None, {}, set(), {}, {})
    assert len(writes) == 2 and "sites file: bad" in writes[-1]
    clock[0] += reporter_mod.STATUS_REFRESH + 1
    r.status(broken, None, {}, set(), {}, {})
    assert len(writes) == 3  # fresh for the health check


def test_warm_up_registers_the_account_once_and_lets_the_loop_go_on(tmp_path: Path, monkeypatch: Any) -> None:
    from sidecar.adapters.docker_api import RunResult
    from sidecar.core import render
    from sidecar.state import lineage

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
    runner = r.issuer.runner = Runner()  # type: ignore[assignment]
    r.issuer.registering.set()
    r._warm_up()
    assert runner.warmed == 1 and [a[0] for a in runner.runs] == ["register"]
    assert "--server" in runner.runs[0] and "https://ca.test/dir" in runner.runs[0]
    assert not r.issuer.registering.is_set() and r.triggers.take() == ["ACME account ready"]  # the loop is woken
    assert loaded == ["psl", "templates"]  # loaded now, not in the first site's pass

    # An account on disk: nothing to register.
    lineage.account_dir(certs, "https://ca.test/dir").joinpath("abc123").mkdir(parents=True)
    again = reconciler(tmp_path, certs_dir=certs, acme_server="https://ca.test/dir")
    runner = again.issuer.runner = Runner()  # type: ignore[assignment]
    again._warm_up()
    assert runner.warmed == 1 and runner.runs == []


def test_the_event_watcher_survives_an_unexpected_error_and_says_so_meanwhile() -> None:
    """It used to die for good on anything but a Docker error, and health never showed it."""
    import threading

    from sidecar.sources.triggers import DockerEventWatcher, Triggers

    triggers = Triggers(0.01, lambda: NOW)
    problems: list[str] = []
    calls = 0

    def events() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("unexpected JSON from the engine")
        problems.append(watcher.problem)
        triggers.stop()  # (the loop stopping ends the stream)
        return iter([{"Type": "container", "Action": "start", "Actor": {"ID": "x", "Attributes": {"acme.domains": "a"}}}])

    watcher = DockerEventWatcher(events, Settings(), triggers, lambda: frozenset())
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive() and calls == 2  # restarted after the error, then stopped cleanly
    assert problems == ["Docker event watcher failed (ValueError: unexpected JSON from the engine); restarting it"]
    assert watcher.problem == ""  # following again
    assert "event watcher lost" in triggers.take()


def test_a_steady_trickle_of_events_cannot_postpone_every_pass(monkeypatch: Any) -> None:
    import threading
    import time as time_mod

    from sidecar.sources import triggers as triggers_mod

    monkeypatch.setattr(triggers_mod, "MAX_DEBOUNCE", 0.3)
    t = triggers_mod.Triggers(0.1, lambda: NOW)
    done = threading.Event()

    def trickle() -> None:
        while not done.is_set():
            t.poke("docker container start")
            time_mod.sleep(0.03)  # always within the debounce

    threading.Thread(target=trickle, daemon=True).start()
    started = time_mod.monotonic()
    reasons = t.wait()
    done.set()
    assert reasons and time_mod.monotonic() - started < 1.0


def test_a_change_that_is_whole_starts_a_pass_at_once_a_partial_one_waits_for_the_debounce() -> None:
    import time as time_mod

    from sidecar.sources.triggers import Triggers

    t = Triggers(0.5, lambda: NOW)
    started = time_mod.monotonic()
    t.poke("sites file changed", True)
    assert t.wait() == ["sites file changed"] and time_mod.monotonic() - started < 0.2
    t.poke("sites file changed")  # written in place: more may come
    t.poke("sites file changed", True)
    started = time_mod.monotonic()
    assert t.wait() == ["sites file changed"] * 2 and time_mod.monotonic() - started >= 0.5


def test_the_sites_file_renamed_into_place_is_whole_renamed_away_is_not(tmp_path: Path) -> None:
    """An editor's backup rename (sites.yml -> sites.yml~) must not start a pass that finds no file."""
    import os
    import time as time_mod

    from sidecar.core.settings import Settings
    from sidecar.sources.triggers import watch_files

    sites = tmp_path / "config" / "sites.yml"
    sites.parent.mkdir()
    sites.write_text("sites: []\n")
    pokes: list[tuple[str, bool]] = []
    conf = tmp_path / "conf.d"
    conf.mkdir()
    observers = watch_files(Settings(sites_file=sites, conf_dir=conf), lambda r, whole: pokes.append((r, whole)))
    try:
        def settle(count: int) -> list[tuple[str, bool]]:
            deadline = time_mod.monotonic() + 5
            while len(pokes) < count and time_mod.monotonic() < deadline:
                time_mod.sleep(0.01)
            time_mod.sleep(0.1)
            seen = list(pokes)
            pokes.clear()
            return seen

        time_mod.sleep(0.2)
        os.replace(sites, sites.with_name("sites.yml~"))
        assert settle(1) == [("sites file changed", False)]
        tmp = sites.with_name(".sites.yml.tmp")
        tmp.write_text("sites: []\n")
        os.replace(tmp, sites)
        assert settle(1) == [("sites file changed", True)]
        with open(sites, "a") as fh:  # in place: modified (partial), then closed (whole)
            fh.write("# more\n")
        assert ("sites file changed", True) in settle(2)
    finally:
        for o in observers:
            o.stop()
