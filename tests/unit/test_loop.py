"""The loop, unit-tested with a hand-written fake per adapter: Docker (containers, nginx through
``docker exec``) and the certbot runner (which lays out a real lineage, as certbot would).

Each test runs real passes (``run_pass``) and asserts on events, the fakes' records, the
ledger and the files written, not on log wording.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.adapters.docker_api import ExecResult, RunResult
from sidecar.core import ratelimits
from sidecar.core.events import Event, Kind
from sidecar.core.model import ContainerInfo
from sidecar.core.settings import Settings
from sidecar.engine import reporter
from sidecar.engine.loop import Reconciler
from sidecar.sources.triggers import MAX_SLEEP
from sidecar.state import lineage

from .certfactory import write_lineage

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
CA = "https://ca.test/dir"
NGINX = ContainerInfo(id="n" * 64, name="nginx", labels={"acme.nginx": "true"}, networks={"web": "10.0.0.2"})


def app(name: str, domains: str, port: str = "8080") -> ContainerInfo:
    return ContainerInfo(id=name * 8, name=name, labels={"acme.domains": domains, "acme.port": port},
                         networks={"web": "10.0.0.9"})


class FakeDocker:
    """The Docker adapter's surface the loop uses; nginx answers ``-t``/``-s reload``/``-V``."""

    def __init__(self, containers: list[ContainerInfo]) -> None:
        self.containers = containers
        self.execs: list[list[str]] = []
        self.reject: str | None = None  # a conf file name nginx -t refuses

    def list_containers(self) -> list[ContainerInfo]:
        return list(self.containers)

    def find_container(self, name_or_id: str) -> ContainerInfo | None:
        return next((c for c in self.containers if name_or_id in (c.id, c.name)), None)

    def exec(self, container_id: str, cmd: list[str], **_: Any) -> ExecResult:
        assert container_id == NGINX.id
        self.execs.append(cmd)
        if cmd == ["nginx", "-V"]:
            return ExecResult(0, "nginx version: nginx/1.27.3\nbuilt with OpenSSL 3.5.0\n")
        if cmd[0] == "cat":
            return ExecResult(0, "1\n")
        if cmd == ["nginx", "-t"] and self.reject and (Path(self.conf_dir) / self.reject).exists():
            return ExecResult(1, f'nginx: [emerg] unknown directive "x" in /etc/nginx/conf.d/{self.reject}:3\n')
        if cmd == ["nginx", "-t"]:  # a hand-written file with a typo
            for path in sorted(Path(self.conf_dir).glob("*.conf")):
                if "BROKEN" in path.read_text():
                    return ExecResult(1, f'nginx: [emerg] unknown directive "BROKEN" in /etc/nginx/conf.d/{path.name}:1\n'
                                         "nginx: configuration file /etc/nginx/nginx.conf test failed\n")
        return ExecResult(0, "")

    conf_dir = ""

    @property
    def reloads(self) -> int:
        return self.execs.count(["nginx", "-s", "reload"])

    def events(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def close_events(self) -> None:
        pass

    def remove_labelled(self, label: str) -> int:
        return 0


class FakeCertbot:
    """The runner: registers the account and lays out live/, archive/ and renewal/ like certbot."""

    def __init__(self, certs_dir: Path) -> None:
        self.certs_dir = certs_dir
        self.runs: list[str] = []
        self.fail: dict[str, str] = {}  # cert name -> certbot's output, exit 1

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, args: list[str], environment: Any, site: str) -> RunResult:
        name = args[args.index("--cert-name") + 1]
        self.runs.append(name)
        if name in self.fail:
            return RunResult(1, self.fail[name])
        config = Path(args[args.index("--config-dir") + 1])
        lineage.account_dir(config, CA).joinpath("acct1").mkdir(parents=True, exist_ok=True)
        names = [args[i + 1] for i, a in enumerate(args) if a == "-d"]
        write_lineage(config, name, names, NOW - timedelta(days=1), NOW + timedelta(days=89), server=CA)
        (config / "archive" / name).mkdir(parents=True, exist_ok=True)
        return RunResult(0, "Successfully received certificate.")


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def event(self, event: Event) -> None:
        self.events.append(event)

    def snapshot(self, snap: Any) -> None:
        pass

    def kinds(self, site: str | None = None) -> list[Kind]:
        return [e.kind for e in self.events if site is None or e.site == site]


@pytest.fixture(autouse=True)
def _no_psl(monkeypatch: pytest.MonkeyPatch) -> None:
    # (the real public suffix list is read by tldextract, which leaves a file to the garbage collector)
    monkeypatch.setattr(ratelimits, "registered_domain", lambda name: ".".join(name.split(".")[-2:]))


def make(tmp_path: Path, containers: list[ContainerInfo], **overrides: Any) -> tuple[Reconciler, FakeDocker,
                                                                                     FakeCertbot, Recorder]:
    s = Settings(acme_server=CA, certs_dir=tmp_path / "le", webroot_dir=tmp_path / "www", conf_dir=tmp_path / "conf",
                 state_dir=tmp_path / "state", ari=False, **overrides)
    for d in (s.certs_dir, s.webroot_dir, s.conf_dir, s.state_dir):
        d.mkdir(parents=True)
    docker = FakeDocker([NGINX, *containers])
    docker.conf_dir = str(s.conf_dir)
    r = Reconciler(s, docker, clock=lambda: NOW)  # type: ignore[arg-type]
    certbot = FakeCertbot(s.certs_dir)
    r.issuer.runner = certbot
    recorder = Recorder()
    r.observers.add(recorder)
    return r, docker, certbot, recorder


def test_a_labelled_container_gets_a_certificate_and_a_vhost_and_a_second_pass_does_nothing(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com,www.a.example.com")])
    next_due = r.run_pass()
    assert certbot.runs == ["a.example.com"]
    assert seen.kinds("a.example.com") == [Kind.SITE_ADDED, Kind.CERT_REQUESTED, Kind.CERT_ISSUED, Kind.SITE_LIVE]
    assert (r.settings.conf_dir / "sidecar-site-a.example.com.conf").is_file()
    assert docker.reloads == 2  # the global file first (no certificate yet), then the site
    assert ["nginx", "-t"] in docker.execs
    status = (r.settings.state_dir / "status.json").read_text()
    assert '"state": "ok"' in status and '"live": true' in status
    assert next_due is not None and next_due > NOW + timedelta(days=50)  # renewal, two thirds in

    seen.events.clear()
    r.run_pass()
    assert certbot.runs == ["a.example.com"] and docker.reloads == 2 and seen.events == []


def test_a_failed_request_is_recorded_backed_off_and_not_retried_at_once(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com")])
    certbot.fail["b.example.com"] = "Some challenges have failed.\nDetail: Invalid response from http://b.example.com"
    next_due = r.run_pass()
    (failed,) = [e for e in seen.events if e.kind == Kind.CERT_FAILED]
    assert failed.site == "b.example.com" and failed.details["failure"] == "validation"
    assert failed.details["next_attempt"] == NOW + timedelta(minutes=1)
    assert r.ledger.attempts["b.example.com"].failures == 1
    assert next_due == NOW + timedelta(minutes=1)
    assert Kind.SITE_LIVE in seen.kinds("a.example.com")  # the other site is not held back
    r.run_pass()
    assert certbot.runs.count("b.example.com") == 1  # the clock has not moved: it waits


def test_without_nginx_nothing_runs_and_the_loop_looks_again_later(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")])
    docker.containers.remove(NGINX)
    assert r.run_pass() == NOW + MAX_SLEEP
    assert certbot.runs == [] and docker.execs == []
    status = json.loads((r.settings.state_dir / "status.json").read_text())
    assert status["sites"] == [] and any("shares no network with nginx" in p for p in status["problems"])


def test_a_spent_budget_postpones_the_request_and_says_until_when(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")])
    r.ledger.orders = [(NOW - timedelta(minutes=10), f"x{i}") for i in range(300)]
    next_due = r.run_pass()
    assert certbot.runs == []
    (postponed,) = [e for e in seen.events if e.kind == Kind.CERT_POSTPONED]
    assert postponed.details["until"] == NOW + timedelta(hours=3, minutes=-10) == next_due
    assert r.preview().postponed["a.example.com"].frees_at == next_due  # what /plan shows
    r.run_pass()
    assert [e.kind for e in seen.events].count(Kind.CERT_POSTPONED) == 1  # said once


def test_a_site_file_nginx_rejects_is_held_back_and_the_others_go_live(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com")])
    docker.reject = "sidecar-site-b.example.com.conf"
    r.run_pass()
    assert sorted(certbot.runs) == ["a.example.com", "b.example.com"]
    (rejected,) = [e for e in seen.events if e.kind == Kind.NGINX_REJECTED]
    assert rejected.site == "b.example.com" and "unknown directive" in rejected.details["error"]
    assert Kind.SITE_LIVE in seen.kinds("a.example.com") and Kind.SITE_LIVE not in seen.kinds("b.example.com")
    assert not (r.settings.conf_dir / docker.reject).exists()
    docker.reject = None  # fixed (e.g. the upstream resolves again): the next pass puts it live
    r.run_pass()
    assert Kind.SITE_LIVE in seen.kinds("b.example.com")


def test_sites_from_the_file_and_labels_are_one_desired_state(tmp_path: Path) -> None:
    sites = tmp_path / "sites.yml"
    sites.write_text("sites:\n  - domains: [f.example.com]\n    upstream: http://10.0.0.5:8080\n")
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")], sites_file=sites)
    r.run_pass()
    assert sorted(certbot.runs) == ["a.example.com", "f.example.com"]
    assert "proxied to http://10.0.0.5:8080 " in (r.settings.conf_dir / "sidecar-site-f.example.com.conf").read_text()
    assert re.search(r"server 10\.0\.0\.5:8080;", (r.settings.conf_dir / "sidecar-00-upstreams.conf").read_text())
    sites.write_text("sites: [\n")  # broken: the last good version keeps serving, and the problem says so
    r.run_pass()
    assert Kind.SITE_REMOVED not in seen.kinds() and (r.settings.conf_dir / "sidecar-site-f.example.com.conf").exists()
    (problem,) = [e for e in seen.events if e.kind == Kind.INPUT_PROBLEM]
    assert problem.details["source"].startswith(f"sites file {sites}") and "invalid YAML" in problem.details["error"]
    assert problem.details["error"].endswith("keeping the last good version (1 site)")
    assert json.loads((r.settings.state_dir / "status.json").read_text())["problems"] == [problem.message]
    sites.write_text("sites:\n  - domains: [f.example.com]\n    upstream: http://10.0.0.5:8080\n")
    r.run_pass()
    assert json.loads((r.settings.state_dir / "status.json").read_text())["problems"] == []


# -- failure paths ---------------------------------------------------------------------------
def test_an_unexpected_error_in_one_request_is_recorded_backed_off_and_reported(tmp_path: Path) -> None:
    """An OSError (pre-flight write, staging dir, CA bundle copy...) used to escape: no failure was
    recorded, the pass resubmitted at once, forever, each time with one more order in the ledger."""
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com")])
    real = certbot.run

    def broken(args: list[str], environment: Any, site: str) -> RunResult:
        if site == "b.example.com":
            raise OSError(28, "No space left on device")
        return real(args, environment, site)

    certbot.run = broken  # type: ignore[method-assign]
    next_due = r.run_pass()
    (failed,) = [e for e in seen.events if e.kind == Kind.CERT_FAILED]
    assert failed.site == "b.example.com" and failed.details["failure"] == "unknown"
    assert "No space left on device" in failed.details["error"]
    assert r.ledger.attempts["b.example.com"].failures == 1 and next_due == NOW + timedelta(minutes=1)
    orders = [name for _, name in r.ledger.orders]
    r.run_pass()
    assert [name for _, name in r.ledger.orders] == orders  # nothing resubmitted, no phantom orders
    assert Kind.SITE_LIVE in seen.kinds("a.example.com")


def test_no_placeholder_is_written_while_certbot_works_on_that_lineage(tmp_path: Path) -> None:
    """The placeholder of a hand-written config is out of live/ while certbot runs without an account;
    a pass in that window wrote a new one, and certbot's run then failed ("live directory exists")."""
    from sidecar.core.model import Site, SourceKind

    r, docker, certbot, seen = make(tmp_path, [])
    site = Site(domains=("h.example.com",), upstreams=(), source="nginx config h.conf",
                source_kind=SourceKind.NGINX_CONF, cert_name="h.example.com")
    with r.issuer._claim("h.example.com"):
        assert not r.publisher.placeholders((site,), {})
        assert not (r.settings.certs_dir / "live" / "h.example.com").exists()
    assert r.publisher.placeholders((site,), {})
    assert (r.settings.certs_dir / "live" / "h.example.com" / "fullchain.pem").is_file()
    (written,) = [e for e in seen.events if e.kind == Kind.PLACEHOLDER_WRITTEN]
    assert (written.site, written.details["domains"]) == ("h.example.com", ["h.example.com"])


def test_a_failing_pass_is_retried_and_never_ends_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from sidecar.engine import startup

    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")], debounce_seconds=0.01)
    monkeypatch.setattr(startup, "prepare", lambda s, d: startup.Environment(None, "host", certbot))
    real, calls = docker.list_containers, []

    def flaky() -> list[ContainerInfo]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(30, "Read-only file system")  # nothing the loop expects
        if len(calls) >= 2:
            r.stop()
        return real()

    docker.list_containers = flaky  # type: ignore[method-assign]
    lineage.account_dir(r.settings.certs_dir, CA).joinpath("acct1").mkdir(parents=True)
    loop = threading.Thread(target=r.run_forever, daemon=True)
    loop.start()
    loop.join(timeout=20)
    assert not loop.is_alive() and len(calls) >= 2  # the second pass came (2 s back-off), then a clean stop


def test_a_first_pass_has_its_plan_in_the_status_before_it_says_the_sites_added(tmp_path: Path) -> None:
    """At ten thousand sites saying each one added takes half a second: the plan comes first."""
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com")])
    order: list[str] = []

    class Order:
        def event(self, event: Event) -> None:
            order.append(event.kind.value)

        def snapshot(self, snap: Any) -> None:
            order.append("status with %d sites" % len(snap.sites))

    r.observers.add(Order())
    r.run_pass()
    assert order.index("status with 2 sites") < order.index(Kind.SITE_ADDED.value)
    assert seen.kinds().count(Kind.SITE_ADDED) == 2
    r.run_pass()  # (a later pass says a change as it reads it)
    assert seen.kinds().count(Kind.SITE_ADDED) == 2


def test_the_loop_keeps_what_the_certificates_said_once_a_pass_is_done(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The next start reads the certificate issued in this pass from the kept facts, not by parsing it."""
    import threading
    import time

    from sidecar.engine import loop as loop_mod
    from sidecar.engine import startup
    from sidecar.state import certs

    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")], debounce_seconds=0.01)
    monkeypatch.setattr(startup, "prepare", lambda s, d: startup.Environment(None, "host", certbot))
    lineage.account_dir(r.settings.certs_dir, CA).joinpath("acct1").mkdir(parents=True)
    kept = r.settings.state_dir / loop_mod.LINEAGE_CACHE
    loop = threading.Thread(target=r.run_forever, daemon=True)
    loop.start()
    deadline = time.monotonic() + 20
    while "a.example.com" not in certs.load_cache(kept) and time.monotonic() < deadline:
        time.sleep(0.02)
    r.stop()
    loop.join(timeout=20)
    assert not loop.is_alive() and certbot.runs
    facts = certs.load_cache(kept)
    assert facts["a.example.com"][1] == r.lineages.certificates()["a.example.com"]


def test_attempts_that_never_reach_the_ca_cost_no_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the CA's name not resolving, three attempts lowered new_orders from 300 to 297."""
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")])
    certbot.fail["a.example.com"] = (
        "An unexpected error occurred:\nrequests.exceptions.ConnectionError: HTTPSConnectionPool(host='ca.test', "
        "port=443): Max retries exceeded with url: /dir (Caused by NameResolutionError(\"...: Failed to resolve "
        "'ca.test' ([Errno -2] Name or service not known)\"))\n")
    import sidecar.engine.issuer as issuer_mod

    monkeypatch.setattr(issuer_mod, "QUICK_RETRIES", 0)  # (no waiting between quick retries here)
    r.run_pass()
    (failed,) = [e for e in seen.events if e.kind == Kind.CERT_FAILED]
    assert failed.details["failure"] == "ca-unreachable"
    assert failed.message == ("cannot reach the CA at https://ca.test/dir: the name ca.test does not resolve "
                              "(check ACME_SERVER and the DNS the sidecar's network uses)")
    assert r.ledger.orders == [] and r.ledger.usage().orders == ()
    certbot.fail.clear()
    r.clock = lambda: NOW + timedelta(minutes=2)  # (after the back-off)
    r.reporter.clock = r.issuer.clock = r.clock
    r.run_pass()
    assert [name for _, name in r.ledger.orders] == ["a.example.com"]  # the one the CA received


def test_a_site_waiting_for_its_first_certificate_has_a_page_saying_when_the_next_attempt_is(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com"), app("b", "b.example.com,www.b.example.com")])
    certbot.fail["b.example.com"] = "Some challenges have failed.\nDetail: Invalid response from http://b.example.com"
    pages = r.settings.webroot_dir / ".sidecar-pending"
    r.run_pass()
    assert sorted(p.name for p in pages.iterdir()) == ["b.example.com.html", "www.b.example.com.html"]
    page = (pages / "b.example.com.html").read_text()
    assert "Next attempt: 2026-11-27 12:01 UTC." in page and "Invalid response" not in page  # no internals
    certbot.fail.clear()
    r.clock = r.reporter.clock = r.issuer.clock = lambda: NOW + timedelta(minutes=2)
    r.run_pass()
    assert list(pages.iterdir()) == []  # live: HTTP redirects to HTTPS again
    global_conf = (r.settings.conf_dir / "sidecar-00-global.conf").read_text()
    assert f"if (-f {r.settings.webroot_dir}/.sidecar-pending/$host.html)" in global_conf


def test_a_broken_hand_written_file_is_set_aside_loudly_and_taken_back_once_fixed(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")])
    conf = r.settings.conf_dir
    (conf / "mine.conf").write_text("server { BROKEN; }\n")
    r.run_pass()
    (aside,) = [e for e in seen.events if e.kind == Kind.CONF_SET_ASIDE]
    assert (aside.details["file"], aside.details["aside"]) == ("mine.conf", "mine.conf.sidecar-broken")
    assert (conf / "mine.conf.sidecar-broken").read_text() == "server { BROKEN; }\n" and not (conf / "mine.conf").exists()
    assert Kind.SITE_LIVE in seen.kinds("a.example.com")  # the other sites went live all the same
    status = json.loads((r.settings.state_dir / "status.json").read_text())
    assert list(status["set_aside"]) == ["mine.conf"] and "mine.conf" in status["degraded"][0]
    # edited where it lies: renamed back and tried again (still broken: set aside again)
    os.utime(conf / "mine.conf.sidecar-broken", ns=(1, 1))
    r.run_pass()
    assert [e.kind for e in seen.events].count(Kind.CONF_SET_ASIDE) == 2
    # fixed: back under its own name, and nothing is set aside any more
    (conf / "mine.conf.sidecar-broken").write_text("server { }\n")
    os.utime(conf / "mine.conf.sidecar-broken", ns=(2, 2))
    r.run_pass()
    assert (conf / "mine.conf").read_text() == "server { }\n" and not (conf / "mine.conf.sidecar-broken").exists()
    assert json.loads((r.settings.state_dir / "status.json").read_text())["set_aside"] == {}


def test_with_broken_conf_keep_a_broken_file_stays_and_holds_nginx_back(tmp_path: Path) -> None:
    r, docker, certbot, seen = make(tmp_path, [app("a", "a.example.com")], broken_conf="keep")
    (r.settings.conf_dir / "mine.conf").write_text("server { BROKEN; }\n")
    r.run_pass()
    assert (r.settings.conf_dir / "mine.conf").exists() and Kind.CONF_SET_ASIDE not in seen.kinds()
    assert Kind.SITE_LIVE not in seen.kinds("a.example.com") and docker.reloads == 0


@pytest.mark.parametrize("n", [3, 25])
def test_many_sites_at_once_are_one_log_line_each_kind_and_still_one_event_each(
        tmp_path: Path, n: int, caplog: pytest.LogCaptureFixture) -> None:
    """A first start with ten thousand sites must not print thirty thousand lines: past
    LOG_EACH_MAX sites of one kind in a pass, one line says how many (debug keeps each)."""
    sites = tmp_path / "sites.yml"
    sites.write_text("sites:\n" + "".join(f"  - {{domains: [s{i}.example.com], upstream: 'http://10.0.0.5'}}\n"
                                          for i in range(n)))
    r, docker, certbot, seen = make(tmp_path, [], sites_file=sites)
    with caplog.at_level(logging.DEBUG, logger="sidecar"):
        r.run_pass()
    info = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.INFO]
    debug = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.DEBUG]
    assert len([e for e in seen.events if e.kind == Kind.SITE_ADDED]) == n
    assert len([e for e in seen.events if e.kind == Kind.SITE_LIVE]) == n
    each_added = [m for m in info if ": added from " in m]
    each_live = [m for m in info if ": live on " in m]
    if n <= reporter.LOG_EACH_MAX:
        assert len(each_added) == len(each_live) == n
    else:
        assert each_added == [] and len(each_live) < n  # (the first certificate goes live on its own)
        assert len([m for m in debug if ": added from " in m]) == n
        assert len([m for m in debug if ": live on " in m]) == n - len(each_live)
        assert any(m.startswith(f"{n} sites added: s0.example.com, ") and m.endswith(" more (GET /status lists "
                   "them; LOG_LEVEL=debug says each)") for m in info), info
        assert any(re.match(r"\d+ sites live: ", m) for m in info), info
