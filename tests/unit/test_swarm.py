"""Docker Swarm: the bundle (sealed, versioned), tasks read as containers, the agent's apply with a fake nginx."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters.docker_api import ExecResult
from sidecar.core import bundle as b
from sidecar.core import render, settings as settings_mod
from sidecar.core.errors import ConfigError
from sidecar.core.model import ContainerInfo, SwarmService, SwarmTask
from sidecar.core.render import NginxTraits
from sidecar.engine.agent import Agent
from sidecar.sources import swarm
from sidecar.state import bundlefiles

KEY = b.derive_key(b"0123456789abcdef0123456789abcdef")


def _bundle(files: tuple[b.File, ...] = (), version: int = 1, node: str = "issuer-node") -> b.Bundle:
    return b.Bundle(version, b.files_digest(files), node, files, (("a.test", "a.test"),))


def test_a_sealed_bundle_opens_with_the_same_key_only() -> None:
    files = (b.File("certs", "live/a.test/privkey.pem", b"KEY", 0o600),
             b.File("certs", "live/a.test/cert.pem", link="../../archive/a.test/cert1.pem"))
    blob = b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(files)))
    assert b"KEY" not in blob  # private keys never travel in clear
    assert b.from_doc(b.unseal(KEY, b.BUNDLE, blob)) == _bundle(files)
    other = b.derive_key(b"another secret of sixteen bytes+")
    with pytest.raises(b.Refused, match="shared key"):
        b.unseal(other, b.BUNDLE, blob)
    with pytest.raises(b.Refused, match="shared key"):
        b.unseal(KEY, b.REPORT, blob)  # a bundle is not a report
    with pytest.raises(b.Refused, match="not a sealed"):
        b.unseal(KEY, b.BUNDLE, b'{"version": 1}')


@pytest.mark.parametrize("area,path,link", [
    ("certs", "../etc/passwd", None), ("certs", "/etc/passwd", None), ("conf", "a/../../b", None),
    ("state", "ledger.json", None), ("certs", "live/x/cert.pem", "/etc/shadow"),
], ids=["dotdot", "absolute", "nested-dotdot", "unknown-area", "absolute-link"])
def test_a_bundle_naming_a_file_outside_the_volumes_is_refused(area: str, path: str, link: str | None) -> None:
    doc = b.to_doc(_bundle((b.File(area, path, b"x", link=link),)))
    with pytest.raises(b.Refused):
        b.from_doc(doc)


def test_a_bundle_whose_digest_does_not_match_its_files_is_refused() -> None:
    doc = b.to_doc(_bundle((b.File("conf", "sidecar-site-a.conf", b"server {}"),)))
    doc["files"][0]["data"] = "c2VydmVyIHsgZXZpbCB9"
    with pytest.raises(b.Refused, match="digest"):
        b.from_doc(doc)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        b.derive_key(b"short")


def test_running_tasks_of_labelled_services_read_as_containers_of_one_service() -> None:
    services = [SwarmService("s1", "shop_web", {"acme.domains": "a.test", "acme.port": "8080"},
                             "2026-11-29T10:00:00.123456789Z"),
                SwarmService("s2", "shop_db", {})]
    tasks = [SwarmTask("t1", "s1", "n1", 1, True, {"shop_web": "10.0.1.5"}),
             SwarmTask("t2", "s1", "n2", 2, True, {"shop_web": "10.0.1.6"}),
             SwarmTask("t3", "s1", "n2", 3, False, {"shop_web": "10.0.1.7"}),   # shutting down
             SwarmTask("t4", "s2", "n1", 1, True, {"shop_web": "10.0.1.8"})]    # no labels
    got = swarm.tasks_as_containers(services, tasks, "acme")
    assert [c.name for c in got] == ["shop_web.1", "shop_web.2"]
    assert all(c.labels["com.docker.swarm.service.name"] == "shop_web" for c in got)
    assert got[0].networks == {"shop_web": "10.0.1.5"} and got[0].created == f"{1795946400:012d}"
    assert swarm.digest(services, tasks) != swarm.digest(services, tasks[:2])


@pytest.mark.parametrize("env,error", [
    ({"SIDECAR_ROLE": "issuer"}, "SWARM_AGENT_SERVICE"),
    ({"SIDECAR_ROLE": "issuer", "SWARM_AGENT_SERVICE": "acme_agent"}, "STATE_DIR"),
    ({"SIDECAR_ROLE": "boss"}, "SIDECAR_ROLE"),
    ({"CHALLENGE_PROXY": "issuer"}, "CHALLENGE_PROXY"),
], ids=["no-agent-service", "state-outside-certs", "bad-role", "proxy-without-port"])
def test_swarm_settings_are_checked(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        settings_mod.load(env)


def test_an_issuer_keeps_its_state_with_the_certificates() -> None:
    s = settings_mod.load({"SIDECAR_ROLE": "issuer", "SWARM_AGENT_SERVICE": "acme_agent",
                           "STATE_DIR": "/etc/letsencrypt/.sidecar-state", "CHALLENGE_PROXY": "issuer:9090"})
    assert (s.role, s.swarm_agent_service, s.challenge_proxy) == ("issuer", "acme_agent", "issuer:9090")


def test_with_a_challenge_proxy_a_challenge_this_node_lacks_goes_to_the_issuer() -> None:
    plain = render.render_global("/var/www/acme", NginxTraits())
    proxied = render.render_global("/var/www/acme", NginxTraits(), challenge_proxy="issuer:9090")
    assert "@sidecar_issuer" not in plain and "try_files $uri =404;" in plain
    assert "try_files $uri @sidecar_issuer;" in proxied
    assert "set $sidecar_issuer issuer:9090;" in proxied and "resolver 127.0.0.11" in proxied


def _tree(root: Path) -> tuple[Path, Path, Path]:
    certs, conf = root / "certs", root / "conf"
    (certs / "archive" / "a.test").mkdir(parents=True)
    (certs / "live" / "a.test").mkdir(parents=True)
    (certs / "archive" / "a.test" / "cert1.pem").write_bytes(b"CERT")
    os.symlink("../../archive/a.test/cert1.pem", certs / "live" / "a.test" / "cert.pem")
    (certs / ".sidecar-state").mkdir()
    (certs / ".sidecar-state" / "ledger.json").write_text("{}")
    (certs / ".sidecar-state" / "status.json").write_text("{}")
    (certs / ".staging").mkdir()
    conf.mkdir()
    (conf / "sidecar-00-global.conf").write_text("global")
    (conf / "sidecar-site-a.test.conf").write_text("site a")
    (conf / "default.conf").write_text("mine")
    (conf / "sidecar-include").mkdir()
    (conf / "sidecar-include" / "acme-challenge.conf").write_text("snippet")
    return certs, conf, certs / ".sidecar-state"


def test_the_bundle_carries_certificates_ledger_and_the_sidecars_conf_files_only(tmp_path: Path) -> None:
    certs, conf, state = _tree(tmp_path)
    files = bundlefiles.collect(certs, conf, state)
    assert sorted(f"{f.area}:{f.path}" for f in files) == [
        "certs:.sidecar-state/ledger.json", "certs:archive/a.test/cert1.pem", "certs:live/a.test/cert.pem",
        "conf:sidecar-00-global.conf", "conf:sidecar-include/acme-challenge.conf", "conf:sidecar-site-a.test.conf"]
    other = tmp_path / "node2"
    roots = {"certs": other / "certs", "conf": other / "conf"}
    written = bundlefiles.write(files, roots)
    assert len(written) == len(files) and bundlefiles.write(files, roots) == []  # nothing twice
    assert os.readlink(other / "certs/live/a.test/cert.pem") == "../../archive/a.test/cert1.pem"
    assert (other / "certs/live/a.test/cert.pem").read_bytes() == b"CERT"


class FakeDocker:
    def __init__(self, test_ok: bool = True) -> None:
        self.test_ok = test_ok
        self.commands: list[list[str]] = []

    def swarm_node_id(self) -> str:
        return "node-2"

    def list_containers(self) -> list[ContainerInfo]:
        return [ContainerInfo("nginx1", "acme_nginx.x", {"acme.nginx": "true"}, {"acme_web": "10.0.1.2"})]

    def exec(self, container_id: str, cmd: list[str], **_: Any) -> ExecResult:
        self.commands.append(cmd)
        if cmd[:2] == ["nginx", "-t"]:
            return ExecResult(0 if self.test_ok else 1, "nginx: [emerg] unknown directive \"bogus\" in zz.conf:1")
        return ExecResult(0, "")


def _agent(tmp_path: Path, docker: FakeDocker) -> Agent:
    s = settings_mod.load({"CERTS_DIR": str(tmp_path / "certs"), "NGINX_CONF_DIR": str(tmp_path / "conf"),
                           "STATE_DIR": str(tmp_path / "state")})
    (tmp_path / "conf").mkdir(exist_ok=True)
    return Agent(s, docker, KEY, serial_of=lambda addr, sni: None)  # type: ignore[arg-type]


def test_an_agent_applies_a_bundle_and_reloads_once(tmp_path: Path) -> None:
    docker = FakeDocker()
    agent = _agent(tmp_path, docker)
    files = (b.File("conf", "sidecar-00-global.conf", b"global"),)
    code, body = agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(files, 5))), "10.0.1.9")
    report = b.report_from(b.unseal(KEY, b.REPORT, body))
    assert code == 200 and (report.state, report.version) == ("applied", 5)
    assert (tmp_path / "conf" / "sidecar-00-global.conf").read_text() == "global"
    # (the probe whether nginx is its container's PID 1: here it is not, so `nginx -s reload`)
    assert [c for c in docker.commands if c[0] != "cat"] == [["nginx", "-t"], ["nginx", "-s", "reload"]]
    agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(files, 5))), "10.0.1.9")
    assert len([c for c in docker.commands if c[0] != "cat"]) == 2  # the same bundle again: nothing to do


def test_a_bundle_nginx_rejects_leaves_the_previous_configuration_and_is_reported(tmp_path: Path) -> None:
    docker = FakeDocker()
    agent = _agent(tmp_path, docker)
    first = (b.File("conf", "sidecar-site-a.conf", b"a"),)
    agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(first, 5))), "peer")
    docker.test_ok = False
    before = len(docker.commands)  # (the first bundle's: whatever else ran, it reloaded)
    second = (b.File("conf", "sidecar-site-b.conf", b"b"),)
    code, body = agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(second, 6))), "peer")
    report = b.report_from(b.unseal(KEY, b.REPORT, body))
    assert (report.state, report.version) == ("rejected", 5) and "unknown directive" in report.detail
    assert sorted(p.name for p in (tmp_path / "conf").iterdir()) == ["sidecar-site-a.conf"]
    assert ["nginx", "-t"] in docker.commands[before:] and ["nginx", "-s", "reload"] not in docker.commands[before:]


def test_an_agent_refuses_forged_and_older_bundles(tmp_path: Path) -> None:
    agent = _agent(tmp_path, FakeDocker())
    forged = b.seal(b.derive_key(b"not the shared secret at all!!"), b.BUNDLE,
                    b.to_doc(_bundle((b.File("conf", "sidecar-evil.conf", b"x"),), 9)))
    assert agent.receive(forged, "peer")[0] == 403
    assert not (tmp_path / "conf" / "sidecar-evil.conf").exists()
    agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle((), 7))), "peer")
    older = b.seal(KEY, b.BUNDLE, b.to_doc(_bundle((b.File("conf", "sidecar-old.conf", b"x"),), 3)))
    assert agent.receive(older, "peer") == (409, b"refused: older than the bundle applied: 7\n")
    assert agent.status()["refused"] == 2 and agent.status()["version"] == 7


def test_on_the_issuers_own_node_the_agent_writes_nothing(tmp_path: Path) -> None:
    docker = FakeDocker()
    agent = _agent(tmp_path, docker)
    files = (b.File("conf", "sidecar-site-a.conf", b"a"),)
    code, _ = agent.receive(b.seal(KEY, b.BUNDLE, b.to_doc(_bundle(files, 5, node="node-2"))), "peer")
    assert code == 200 and not (tmp_path / "conf" / "sidecar-site-a.conf").exists() and docker.commands == []


# -- the issuer's distributor, with a fake Swarm API and fake agents ----------------------
class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def event(self, event: Any) -> None:
        self.events.append(event)

    def snapshot(self, snap: Any) -> None:
        pass


class FakeSwarm:
    def __init__(self, tasks: list[SwarmTask]) -> None:
        self.tasks = tasks

    def swarm_node_id(self) -> str:
        return "n1"

    def swarm_nodes(self) -> list[Any]:
        from sidecar.core.model import SwarmNode
        return [SwarmNode(f"n{i}", f"host{i}", "manager", True) for i in (1, 2, 3)]

    def swarm_tasks(self, service: str | None = None) -> list[SwarmTask]:
        assert service == "acme_agent"
        return self.tasks


def _distributor(tmp_path: Path, tasks: list[SwarmTask], answers: dict[str, str]) -> tuple[Any, Collect, list[str]]:
    from sidecar.core.events import Observers
    from sidecar.engine.distributor import Distributor
    from sidecar.engine.reporter import Reporter

    certs, conf, _ = _tree(tmp_path)
    s = settings_mod.load({"SIDECAR_ROLE": "issuer", "SWARM_AGENT_SERVICE": "acme_agent",
                           "CERTS_DIR": str(certs), "NGINX_CONF_DIR": str(conf),
                           "STATE_DIR": str(certs / ".sidecar-state")})
    seen, sent = Collect(), []

    def send(url: str, blob: bytes) -> tuple[int, bytes]:
        sent.append(url)
        doc = b.unseal(KEY, b.BUNDLE, blob)
        addr = url.split("//")[1].split(":")[0]
        state = answers[addr]
        if state == "down":
            raise OSError("connection refused")
        version = doc["version"] if state == "applied" else 1
        return 200, b.seal(KEY, b.REPORT, {"node": addr, "version": version, "digest": doc["digest"],
                                           "state": state, "detail": "" if state == "applied" else "nginx: [emerg]"})
    d = Distributor(s, FakeSwarm(tasks), KEY, Reporter(s, lambda: None, Observers([seen])),  # type: ignore[arg-type]
                    lambda: (("a.test", "a.test"), ("gone.test", "gone.test")), send)
    return d, seen, sent


def test_one_bundle_goes_to_every_agent_and_a_rejecting_node_holds_back_no_other(tmp_path: Path) -> None:
    tasks = [SwarmTask(f"t{i}", "agents", f"n{i}", 0, True, {"acme_web": f"10.0.1.{i}"}) for i in (1, 2, 3)]
    d, seen, sent = _distributor(tmp_path, tasks, {"10.0.1.1": "applied", "10.0.1.2": "rejected",
                                                   "10.0.1.3": "down"})
    d.step()
    rows = {r["hostname"]: r for r in d.rows()}
    assert {h: r["state"] for h, r in rows.items()} == {"host1": "applied", "host2": "rejected",
                                                         "host3": "unreachable"}
    assert rows["host1"]["version"] == d.version and rows["host2"]["offered"] == d.version
    assert d.current is not None and d.current.sites == (("a.test", "a.test"),)  # only what the bundle serves
    assert [e.details["state"] for e in seen.events] == ["applied", "rejected", "unreachable"]
    d.step()  # nothing new: no one is asked again before the retry time
    assert len(sent) == 3
    d.sites = lambda: (("a.test", "a.test"), ("b.test", "b.test"))  # b.test is live now
    (tmp_path / "conf" / "sidecar-site-b.test.conf").write_text("site b")
    d.step()
    first = d.version
    d.sites = lambda: (("a.test", "a.test"),)  # the same files, fewer sites to check: a new bundle all the same
    d.step()
    assert d.version > first and {r["hostname"]: r["version"] for r in d.rows()}["host1"] == d.version
    tasks.pop()
    d.step()
    assert {r["hostname"]: r["state"] for r in d.rows()}["host3"] == "no agent"


def test_node_bundle_events_feed_the_metrics_and_status_lists_the_nodes() -> None:
    from datetime import datetime, timezone

    from sidecar.core.events import Event, Kind
    from sidecar.ops import cli
    from sidecar.ops.metrics import Metrics

    m = Metrics()
    at = datetime(2026, 11, 29, tzinfo=timezone.utc)
    m.event(Event(Kind.NODE_BUNDLE, at, "", "", {"node": "n1", "hostname": "host1", "version": 7, "state": "applied"}))
    m.event(Event(Kind.NODE_BUNDLE, at, "", "", {"node": "n2", "hostname": "host2", "version": 5, "state": "rejected"}))
    text = m.render().decode()
    assert 'nginx_acme_node_bundle_version{node="host1"} 7.0' in text
    assert 'nginx_acme_node_bundle_ok{node="host2"} 0.0' in text
    out = cli.format_status({"now": at.isoformat(), "sites": [], "nodes": [
        {"node": "n2", "hostname": "host2", "version": 5, "state": "rejected", "verified": 0,
         "detail": "nginx: [emerg] unknown directive"}]})
    assert "Swarm nodes" in out and "host2" in out and "rejected" in out and "unknown directive" in out


def test_an_issuer_behind_an_agents_clock_numbers_its_bundles_after_the_agents(tmp_path: Path) -> None:
    tasks = [SwarmTask("t2", "agents", "n2", 0, True, {"acme_web": "10.0.1.2"})]
    d, _, sent = _distributor(tmp_path, tasks, {})
    ahead = 10 ** 15
    agent_key_answers = iter([(409, f"refused: older than the bundle applied: {ahead}\n".encode())])

    def send(url: str, blob: bytes) -> tuple[int, bytes]:
        sent.append(url)
        doc = b.unseal(KEY, b.BUNDLE, blob)
        return next(agent_key_answers, None) or (200, b.seal(KEY, b.REPORT, {
            "node": "n2", "version": doc["version"], "digest": doc["digest"], "state": "applied"}))
    d.send = send
    d.step()
    d.step()
    assert d.version == ahead + 1 and [r["state"] for r in d.rows()] == ["applied"] and len(sent) == 2
