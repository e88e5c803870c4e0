"""Consumers (``acme.consumer``): labels -> a certificate without a vhost, and the hook that tells the
container after each issue or renewal (restart, a signal, an exec'd command), its failures reported
and retried without holding anything else up.

The pure parts table-driven; the loop with the fakes of ``test_loop`` and a fake for the consumer side
of the Docker adapter.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.docker_api import ExecResult
from sidecar.core import consumers as pure
from sidecar.core.consumers import Consumer, Delivery, Signal, parse_signal
from sidecar.core.errors import DockerUnavailable
from sidecar.core.events import Event, Kind
from sidecar.core.model import ContainerInfo, DesiredState, Problem, SourceKind
from sidecar.core.render import GLOBAL_FILE, POOLS_FILE, NginxTraits, render_all
from sidecar.core.settings import Settings
from sidecar.engine.hooks import Hooks
from sidecar.engine.loop import Reconciler
from sidecar.ops.metrics import Metrics
from sidecar.ops.notify import AlertPolicy
from sidecar.sources.consumers import ConsumerView, attach, consumer_from_container, read_consumers

from .builders import cert, container, site
from .test_loop import NGINX, NOW, FakeCertbot, FakeDocker, Recorder, _no_psl, app, make  # noqa: F401 (autouse)

MIN = timedelta(minutes=1)


# -- the signal label -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("restart", Signal("restart")),
        (" Restart ", Signal("restart")),
        ("none", Signal("none")),
        ("SIGHUP", Signal("signal", name="SIGHUP")),
        ("hup", Signal("signal", name="SIGHUP")),
        ("SIGUSR1", Signal("signal", name="SIGUSR1")),
        ("exec:nginx -s reload", Signal("exec", command=("nginx", "-s", "reload"))),
        ("exec:sh -c 'kill -HUP 1'", Signal("exec", command=("sh", "-c", "kill -HUP 1"))),
    ],
    ids=["restart", "restart-spaced", "none", "sighup", "hup-lower", "usr1", "exec", "exec-quoted"],
)
def test_signal_label_values(raw: str, expected: Signal) -> None:
    assert parse_signal(raw) == expected


@pytest.mark.parametrize(
    ("raw", "words"),
    [("SIGFOO", "is not restart, none, exec:<command> or a signal"), ("exec:", "needs a command"),
     ("exec:sh -c 'unterminated", "does not parse"), ("", "is not restart")],
    ids=["unknown-signal", "exec-empty", "exec-unparsable", "empty"],
)
def test_bad_signal_label_values_say_why(raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_signal(raw)


def test_an_exec_signal_shows_its_program_only() -> None:
    assert str(parse_signal("exec:/usr/bin/mosquitto_ctrl -P secret reload")) == "exec mosquitto_ctrl"
    assert str(parse_signal("SIGHUP")) == "SIGHUP" and str(parse_signal("restart")) == "restart"


# -- labels -> consumers --------------------------------------------------------------------
def consumer_container(name: str = "mail", names: str = "mail.example.com", **more: str) -> ContainerInfo:
    return container(name, {"acme.consumer": names, **more}, networks={"web": "172.18.0.9"})


@pytest.mark.parametrize(
    ("labels", "source", "words"),
    [
        ({"acme.consumer": "under_score!.example.com"}, "container mail label acme.consumer", "not a valid"),
        ({"acme.consumer": "mail.example.com", "acme.consumer.signal": "SIGFOO"},
         "container mail label acme.consumer.signal", "is not restart"),
        ({"acme.consumer": "mail.example.com", "acme.consumer.singal": "SIGHUP"},
         "container mail label acme.consumer.singal", "unknown label"),
        ({"acme.consumer.signal": "SIGHUP"}, "container mail label acme.consumer.signal",
         "needs acme.consumer=<names> as well"),
    ],
    ids=["bad-name", "bad-signal", "typo", "signal-alone"],
)
def test_bad_consumer_labels_are_one_problem_naming_container_and_label(labels: dict[str, str], source: str,
                                                                        words: str) -> None:
    found = consumer_from_container(container("mail", labels), "acme")
    assert isinstance(found, Problem)
    assert found.source == source and words in found.message
    assert "\n" not in str(found)


def test_a_consumer_label_makes_a_site_without_vhost_named_after_its_first_name() -> None:
    found = consumer_from_container(consumer_container(names="smtp.example.com, imap.example.com",
                                                       **{"acme.consumer.signal": "SIGHUP"}), "acme")
    assert isinstance(found, tuple)
    c, s = found
    assert (c.cert_name, c.domains, c.signal) == ("smtp.example.com", ("smtp.example.com", "imap.example.com"),
                                                  Signal("signal", name="SIGHUP"))
    assert (s.source_kind, s.upstreams, s.name, s.source) == (SourceKind.CONSUMER, (), "smtp.example.com",
                                                              "consumer container mail")
    assert consumer_from_container(container("web"), "acme") is None  # acme.domains only: not a consumer


def test_consumers_follow_sites_scope_and_never_count_nginx(tmp_path: Path) -> None:
    inside = consumer_container("inside")
    outside = replace(consumer_container("outside", "other.example.com"), networks={"elsewhere": "10.1.0.2"})
    nginx = replace(NGINX, labels={**NGINX.labels, "acme.consumer": "nginx.example.com"})
    view = read_consumers([inside, outside, nginx], Settings(sites_scope="network"), None, nginx)
    assert [c.container for c in view.consumers] == ["inside"] and view.ids == {inside.id}
    view = read_consumers([inside, outside, nginx], Settings(), None, nginx)
    assert [c.container for c in view.consumers] == ["inside", "outside"]
    restarting = replace(consumer_container("waiting", "w.example.com"), running=False)  # (until its file is there)
    assert [c.container for c in read_consumers([restarting], Settings(), None, None).consumers] == ["waiting"]


def _view(*containers: ContainerInfo) -> ConsumerView:
    return read_consumers(list(containers), Settings(), None, None)


def test_a_consumer_shares_the_certificate_of_a_site_with_exactly_its_names() -> None:
    web = site("mail.example.com", "webmail.example.com")
    state = DesiredState((web,))
    same = consumer_container("mail", "mail.example.com,webmail.example.com")
    merged, accepted = attach(state, _view(same), "acme")
    assert merged.sites == (web,) and [c.container for c in accepted] == ["mail"]
    assert accepted[0].cert_name == "mail.example.com"


@pytest.mark.parametrize(
    "names", ["mail.example.com", "webmail.example.com,mail.example.com", "mail.example.com,x.example.com"],
    ids=["fewer-names", "other-first-name", "more-names"])
def test_a_consumer_overlapping_a_site_differently_is_a_problem_and_the_site_stays(names: str) -> None:
    web = site("mail.example.com", "webmail.example.com", source="container web")
    merged, accepted = attach(DesiredState((web,)), _view(consumer_container("mail", names)), "acme")
    assert merged.sites == (web,) and accepted == ()
    (problem,) = merged.problems
    assert problem.source == "container mail label acme.consumer"
    assert "is in site mail.example.com (mail.example.com, webmail.example.com) from container web" in problem.message


def test_two_consumers_of_the_same_names_share_one_site_and_labels_problems_are_kept() -> None:
    a = consumer_container("mail-a", created="2026-01-01T00:00:01Z")
    b = consumer_container("mail-b", created="2026-01-01T00:00:02Z")
    bad = container("bad", {"acme.consumer": "x", "acme.consumer.signal": "SIGHUP"})
    merged, accepted = attach(DesiredState(()), _view(a, b, bad), "acme")
    (s,) = merged.sites
    assert s.source_kind is SourceKind.CONSUMER and [c.container for c in accepted] == ["mail-a", "mail-b"]
    assert len(s.notes) == 2
    assert [p.source for p in merged.problems] == ["container bad label acme.consumer"]


def test_consumer_sites_get_no_vhost_but_their_names_get_challenges() -> None:
    web = site("a.example.com")
    own = replace(site("mail.example.com"), upstreams=(), source_kind=SourceKind.CONSUMER)
    certs = {"a.example.com": cert("a.example.com"), "mail.example.com": cert("mail.example.com")}
    files = render_all([web, own], certs, "/var/www/acme", NginxTraits(), user_defaults=frozenset({80}))
    assert set(files) == {GLOBAL_FILE, POOLS_FILE, "sidecar-site-a.example.com.conf"}
    # (a hand-written default server on port 80: the catch-all answers the sidecar's names by name)
    assert "server_name a.example.com mail.example.com;" in files[GLOBAL_FILE]


# -- deliveries (pure) ----------------------------------------------------------------------
C = Consumer("id-mail", "mail", ("mail.example.com",), "mail.example.com")


@pytest.mark.parametrize(
    ("record", "serial", "now", "told"),
    [
        (None, 2, NOW, False),                                           # not seen yet
        (Delivery("mail.example.com", 2), 2, NOW, False),                # has it
        (Delivery("mail.example.com", 1), 2, NOW, True),                 # renewed
        (Delivery("mail.example.com", None), 2, NOW, True),              # first certificate
        (Delivery("mail.example.com", 1), None, NOW, False),             # nothing on disk
        (Delivery("mail.example.com", 1, 1, NOW + MIN), 2, NOW, False),  # failed: waits
        (Delivery("mail.example.com", 1, 1, NOW + MIN), 2, NOW + MIN, True),
    ],
    ids=["unseen", "current", "renewed", "first", "no-cert", "backing-off", "retry-due"],
)
def test_who_is_told(record: Delivery | None, serial: int | None, now: datetime, told: bool) -> None:
    records = {C.container_id: record} if record else {}
    serials = {C.cert_name: serial} if serial else {}
    assert pure.due(records, [C], serials, now) == ([(C, serial)] if told else [])
    assert pure.due(records, [replace(C, signal=Signal("none"))], serials, now) == []


def test_first_sight_takes_what_is_on_disk_and_gone_containers_are_forgotten() -> None:
    other = replace(C, container_id="id-other", cert_name="other.example.com")
    records = pure.seen({"id-gone": Delivery("x", 1), C.container_id: Delivery(C.cert_name, 1)},
                        [C, other], {C.cert_name: 5, "other.example.com": 7})
    assert records == {C.container_id: Delivery(C.cert_name, 1), "id-other": Delivery("other.example.com", 7)}
    # asking for another certificate: seen afresh
    moved = replace(C, cert_name="smtp.example.com")
    assert pure.seen(records, [moved], {"smtp.example.com": 9})[C.container_id] == Delivery("smtp.example.com", 9)


def test_failures_back_off_on_the_schedule_and_a_delivery_clears_them() -> None:
    schedule = (MIN, 10 * MIN)
    r = pure.failed(Delivery(C.cert_name, 1), "boom", NOW, schedule)
    assert (r.failures, r.retry_at, r.last_error) == (1, NOW + MIN, "boom")
    r = pure.failed(r, "boom", NOW, schedule)
    r = pure.failed(r, "boom", NOW, schedule)
    assert (r.failures, r.retry_at) == (3, NOW + 10 * MIN)
    assert pure.delivered(r, 2) == Delivery(C.cert_name, 2)
    assert Delivery.from_json(r.to_json()) == r
    assert Delivery.from_json({"cert": 3}) is None and Delivery.from_json("x") is None


# -- the loop with hooks -------------------------------------------------------------------
class ConsumerSide:
    """The consumer side of the Docker adapter: records restarts, signals and execs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail: str = ""        # an error for every call (a container that cannot be reached)
        self.exit_code = 0         # of exec'd commands

    def restart(self, container_id: str, timeout: int = 10) -> None:
        self._call("restart", container_id)

    def kill(self, container_id: str, signal: str) -> None:
        self._call("kill", container_id, signal)

    def exec(self, container_id: str, cmd: list[str], **_: Any) -> ExecResult:
        self._call("exec", container_id, *cmd)
        return ExecResult(self.exit_code, "reloading...\nerror: no such file\n" if self.exit_code else "ok\n")

    def _call(self, *call: str) -> None:
        self.calls.append(call)
        if self.fail:
            raise DockerUnavailable(self.fail)


def consumer_app(name: str, names: str, signal: str | None = None) -> ContainerInfo:
    labels = {"acme.consumer": names, **({"acme.consumer.signal": signal} if signal else {})}
    return ContainerInfo(id=name * 8, name=name, labels=labels, networks={"web": "10.0.0.7"})


def with_hooks(tmp_path: Path, containers: list[ContainerInfo], **overrides: Any
               ) -> tuple[Reconciler, FakeDocker, FakeCertbot, Recorder, ConsumerSide, list[datetime]]:
    r, docker, certbot, seen = make(tmp_path, containers, **overrides)
    clock = [NOW]
    r.reporter.clock = lambda: clock[0]
    side = ConsumerSide()
    r.hooks = Hooks(r.settings, side, r.reporter, submit=lambda job: job())
    return r, docker, certbot, seen, side, clock


def test_a_consumer_gets_its_certificate_without_a_vhost_and_is_restarted_once(tmp_path: Path) -> None:
    r, docker, certbot, seen, side, _ = with_hooks(tmp_path, [consumer_app("m", "mail.example.com"),
                                                              app("a", "a.example.com")])
    r.run_pass()
    assert sorted(certbot.runs) == ["a.example.com", "mail.example.com"]
    assert not (r.settings.conf_dir / "sidecar-site-mail.example.com.conf").exists()
    assert (r.settings.conf_dir / "sidecar-site-a.example.com.conf").is_file()
    assert side.calls == [("restart", "m" * 8)]
    (told,) = [e for e in seen.events if e.kind == Kind.CONSUMER_SIGNALLED]
    assert (told.site, told.details["container"], told.details["signal"]) == ("mail.example.com", "m", "restart")
    assert Kind.SITE_LIVE not in seen.kinds("mail.example.com")
    # nothing changed: nobody is told again, not even by a new sidecar process
    r.run_pass()
    assert side.calls == [("restart", "m" * 8)]
    r3 = Reconciler(r.settings, docker, clock=lambda: NOW)  # type: ignore[arg-type]
    r3.issuer.runner = certbot
    r3.hooks = Hooks(r.settings, side, r3.reporter, submit=lambda job: job())
    r3.run_pass()
    assert side.calls == [("restart", "m" * 8)] and sorted(certbot.runs) == ["a.example.com", "mail.example.com"]


def test_a_renewal_tells_each_consumer_its_way_and_a_consumer_started_later_is_not_told(tmp_path: Path) -> None:
    hup, ex = consumer_app("h", "mail.example.com", "SIGHUP"), consumer_app("x", "mail.example.com", "exec:reload now")
    r, docker, certbot, seen, side, _ = with_hooks(tmp_path, [hup, ex])
    r.run_pass()
    assert certbot.runs == ["mail.example.com"]  # one certificate for both
    assert sorted(side.calls) == [("exec", "x" * 8, "reload", "now"), ("kill", "h" * 8, "SIGHUP")]
    late = consumer_app("l", "mail.example.com")
    docker.containers.append(late)
    r.run_pass()
    assert len(side.calls) == 2  # it read the certificate when it started
    side.calls.clear()
    r.request_renewal("mail.example.com", force=True)
    r.run_pass()
    assert certbot.runs == ["mail.example.com"] * 2
    assert sorted(side.calls) == [("exec", "x" * 8, "reload", "now"), ("kill", "h" * 8, "SIGHUP"),
                                  ("restart", "l" * 8)]



def test_a_consumer_of_a_served_site_s_names_is_told_when_that_certificate_changes(tmp_path: Path) -> None:
    r, docker, certbot, seen, side, _ = with_hooks(tmp_path, [app("a", "a.example.com,www.a.example.com"),
                                                              consumer_app("m", "a.example.com www.a.example.com")])
    r.run_pass()
    assert certbot.runs == ["a.example.com"]  # one certificate, served and used
    assert (r.settings.conf_dir / "sidecar-site-a.example.com.conf").is_file()
    assert side.calls == [("restart", "m" * 8)]
    r.request_renewal("a.example.com", force=True)
    r.run_pass()
    assert side.calls == [("restart", "m" * 8)] * 2

def test_a_failing_hook_is_reported_retried_on_the_back_off_and_holds_nothing_up(tmp_path: Path) -> None:
    r, docker, certbot, seen, side, clock = with_hooks(
        tmp_path, [consumer_app("x", "mail.example.com", "exec:reload"), app("a", "a.example.com")])
    side.exit_code = 1
    r.run_pass()
    assert Kind.SITE_LIVE in seen.kinds("a.example.com")
    (failed,) = [e for e in seen.events if e.kind == Kind.CONSUMER_FAILED]
    assert failed.site == "mail.example.com" and failed.details["container"] == "x"
    assert failed.details["error"] == "exec reload exited 1: error: no such file"
    assert failed.details["next_attempt"] == NOW + MIN and failed.details["failures"] == 1
    (timer,) = r.hooks._timers.values()  # the loop is woken when it is due again
    assert timer.interval == pytest.approx(60.05)
    r.run_pass()
    assert len(side.calls) == 1  # not before its time
    clock[0] = NOW + MIN
    side.exit_code = 0
    r.run_pass()
    assert len(side.calls) == 2 and seen.kinds("mail.example.com")[-1] == Kind.CONSUMER_SIGNALLED
    state = json.loads((r.settings.state_dir / "consumers.json").read_text())
    assert state["containers"]["x" * 8]["failures"] == 0


def test_an_unreachable_consumer_is_a_failure_too(tmp_path: Path) -> None:
    r, docker, certbot, seen, side, _ = with_hooks(tmp_path, [consumer_app("m", "mail.example.com")])
    side.fail = "container mmmmmmmm is gone: 404 Not Found"
    r.run_pass()
    (failed,) = [e for e in seen.events if e.kind == Kind.CONSUMER_FAILED]
    assert "is gone" in failed.details["error"]


# -- metrics and alerts -----------------------------------------------------------------------
def _hook_event(kind: Kind, container: str = "mail") -> Event:
    return Event(kind, NOW, "mail.example.com", "x", {"container": container, "signal": "restart",
                                                       "error": "container is gone", "next_attempt": NOW + MIN,
                                                       "failures": 1})


def test_hook_failures_are_counted_and_alerted_once_per_container_until_it_works() -> None:
    m = Metrics()
    for kind in (Kind.CONSUMER_FAILED, Kind.CONSUMER_FAILED, Kind.CONSUMER_SIGNALLED):
        m.event(_hook_event(kind))
    text = m.render().decode()
    assert 'nginx_acme_consumer_hook_failures_total{container="mail",site="mail.example.com"} 2.0' in text
    assert 'nginx_acme_consumer_signals_total{container="mail",site="mail.example.com"} 1.0' in text

    p = AlertPolicy()
    (alert,) = p.on_event(_hook_event(Kind.CONSUMER_FAILED))
    assert (alert.kind, alert.level) == ("hook-failed", "failure")
    assert "mail" in alert.title and "container is gone" in alert.body and "not affected" in alert.body
    assert p.on_event(_hook_event(Kind.CONSUMER_FAILED)) == []
    assert len(p.on_event(_hook_event(Kind.CONSUMER_FAILED, "other"))) == 1
    assert p.on_event(_hook_event(Kind.CONSUMER_SIGNALLED)) == []
    assert len(p.on_event(_hook_event(Kind.CONSUMER_FAILED))) == 1  # after it worked, news again
    renewed = p.on_event(Event(Kind.CERT_RENEWED, NOW, "mail.example.com", "", {"not_after": NOW}))
    assert "works again" not in renewed[0].body  # (a hook's failure is not the certificate's)


# -- check ----------------------------------------------------------------------------------------
class CheckDocker:
    """What ``check`` asks of Docker: the containers, the sidecar itself, environments (compat sources)."""

    def __init__(self, timeout: float = 10) -> None:
        self.listed = [NGINX, consumer_app("m", "mail.example.com", "SIGHUP"),
                       ContainerInfo("b" * 8, "bad", {"acme.consumer": "x.example.com", "acme.consumer.signal": "x"},
                                     {"web": "10.0.0.8"})]

    def own_container_id(self, configured: str | None) -> None:
        return None

    def list_containers(self) -> list[ContainerInfo]:
        return self.listed

    def find_container(self, name_or_id: str) -> None:
        return None

    def container_env(self, container_id: str) -> dict[str, str]:
        return {}


def test_check_lists_consumer_sites_and_their_label_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar.adapters import docker_api
    from sidecar.ops import cli

    for key in list(__import__("os").environ):
        if key.startswith(("ACME_", "SITES_", "STATE_", "DOCKER_", "NGINX_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    monkeypatch.setattr(docker_api, "Docker", CheckDocker)
    assert cli.main(["check"]) == 1
    out, err = capsys.readouterr()
    assert "site mail.example.com: mail.example.com -> certificate only (consumer container m)" in out
    assert "error: container bad label acme.consumer.signal: 'x' is not restart" in err
