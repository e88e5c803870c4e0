"""Docker Swarm on a real three-node swarm on this machine (README "Docker Swarm").

Three Docker engines, each in a container (two managers, one worker), form a swarm; the stack of
examples/swarm/stack.yml runs on it: nginx on every node, the issuer on a manager, an agent on every
node. Pebble, behind an ACME proxy that counts orders, validates over HTTP-01 against the worker's
address (every name resolves to it), whichever node the issuer runs on. Each node's nginx is reached
on its own 127.0.0.1 port.

Run it alone:  python -m pytest tests/e2e/test_swarm.py -q   (about 5 minutes on 2 cores; the node and
payload images are built first, see tests/support/swarm.py). Every node container is removed with its
volumes (docker rm -fv) at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from ..support import swarm as sw
from ..support.net import stays, tls_get
from .stack import ARTIFACTS, ROOT

STACK = "acme"
EXAMPLE = ROOT / "examples" / "swarm" / "stack.yml"
HERE = Path(__file__).parent / "swarm"
NAMES = ["m1", "m2", "w1"]


def record(key: str, value: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "e2e-measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1) + "\n")


class Cluster:
    def __init__(self, s: sw.Swarm) -> None:
        self.swarm = s
        self.env = {**os.environ, "PAYLOAD_IMAGE": sw.PAYLOAD_IMAGE, "WORKER_ADDRESS": self.worker.address}
        self.pebble_root = ""

    @property
    def worker(self) -> sw.Node:
        return self.swarm.nodes[-1]

    def deploy(self, *files: Path) -> None:
        args = [a for f in files for a in ("-c", str(f))]
        sw.sh("docker", "-H", self.swarm.manager.api, "stack", "deploy", *args, STACK, env=self.env)

    def service_nodes(self, service: str) -> list[str]:
        """Node ids of the service's running tasks."""
        out = self.swarm.manager.docker("service", "ps", service, "--filter", "desired-state=running",
                                        "--format", "{{.Node}} {{.CurrentState}}")
        return [line.split()[0] for line in out.splitlines() if " Running " in f" {line} "]

    def issuer_node(self) -> sw.Node:
        hosts = self.service_nodes(f"{STACK}_issuer")
        assert len(hosts) == 1, hosts
        return self.swarm.node(f"{self.swarm.prefix}-{hosts[0]}")

    def api(self, path: str, node: sw.Node | None = None) -> Any:
        node = node or self.issuer_node()
        with urllib.request.urlopen(f"http://127.0.0.1:{node.ports[9090]}{path}", timeout=5) as r:
            return json.loads(r.read())

    def status(self) -> dict[str, Any]:
        return dict(self.api("/status"))

    def nodes_applied(self) -> dict[str, int] | None:
        """hostname -> bundle version, once every node's agent applied the same (latest) bundle."""
        rows = self.status().get("nodes") or []
        if len(rows) == len(NAMES) and all(r["state"] == "applied" for r in rows) \
                and len({r["version"] for r in rows}) == 1:
            return {r["hostname"]: r["version"] for r in rows}
        return None

    def orders(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.worker.ports[8080]}/log", timeout=5) as r:
            log = json.loads(r.read())
        entries = log if isinstance(log, list) else log.get("requests") or log.get("log") or []
        return sum(1 for e in entries if e.get("resource") == "newOrder")

    def served(self, node: sw.Node, host: str) -> x509.Certificate:
        resp = tls_get(node.ports[443], host, ca=self.pebble_root)
        assert resp.status == 200, resp
        return resp.cert

    def serials(self, host: str) -> dict[str, int]:
        return {n.name: self.served(n, host).serial_number for n in self.swarm.nodes}

    def container(self, node: sw.Node, service: str) -> str:
        return node.docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").split()[0]

    def app(self, name: str, domain: str, *extra: str) -> None:
        self.swarm.manager.docker(
            "service", "create", "-d", "--name", name, "--network", f"{STACK}_web", "--endpoint-mode", "dnsrr",
            "--label", f"acme.domains={domain}", "--label", "acme.port=5678", *extra,
            sw.PAYLOAD_IMAGE, "python3", "-u", "/app.py", "-listen=:5678", f"-text=hello from {name}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = time.monotonic()
    sw.build_images()
    s = sw.Swarm(f"swarm-e2e-{uuid.uuid4().hex[:6]}")
    try:
        s.start(NAMES)
        s.load(sw.PAYLOAD_IMAGE)
        s.form(managers=2)
        c = Cluster(s)
        s.manager.docker("secret", "create", "sidecar_bundle_key", "-", input=secrets.token_hex(32).encode())
        c.deploy(HERE / "ca.yml")
        c.pebble_root = sw.wait("Pebble's root", lambda: _fetch_root(c.worker), timeout=180)
        c.deploy(EXAMPLE, HERE / "test.yml", HERE / "ca.yml")
        sw.wait("every node's agent applying the first bundle", c.nodes_applied, timeout=240)
        record("swarm_up_seconds", round(time.monotonic() - started, 1))
        yield c
    finally:
        _save_logs(s)
        s.close()
        record("swarm_module_teardown_done_seconds", round(time.monotonic() - started, 1))


def _fetch_root(node: sw.Node) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{node.ports[15000]}/roots/0", timeout=5, context=ctx) as r:
        return str(r.read().decode())


def _save_logs(s: sw.Swarm) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "swarm-e2e.log", "w") as fh:
        for service in ("issuer", "agent", "nginx", "pebble", "acmeproxy"):
            fh.write(f"===== {service}\n")
            fh.write(s.manager.docker("service", "logs", "--timestamps", "--raw", f"{STACK}_{service}",
                                      check=False, timeout=60))


def test_labelled_service_is_served_over_https_by_every_node(cluster: Cluster) -> None:
    t0 = time.monotonic()
    cluster.app("app-a", "a.swarm.test")
    for node in cluster.swarm.nodes:
        cert = sw.wait(f"HTTPS a.swarm.test on {node.name}", lambda n=node: cluster.served(n, "a.swarm.test"),
                       timeout=240)
        assert "Pebble" in cert.issuer.rfc4514_string()
    record("swarm_service_create_to_https_on_all_nodes_seconds", round(time.monotonic() - t0, 1))
    assert len(set(cluster.serials("a.swarm.test").values())) == 1  # one certificate, on every node
    body = tls_get(cluster.worker.ports[443], "a.swarm.test", ca=cluster.pebble_root).body
    assert "hello from app-a" in body
    versions = sw.wait("every node on the same bundle", cluster.nodes_applied)
    metrics = _metrics(cluster)
    for host in NAMES:
        assert metrics[("nginx_acme_node_bundle_ok", host)] == 1.0
        assert metrics[("nginx_acme_node_bundle_version", host)] == float(versions[host])


def _metrics(cluster: Cluster) -> dict[tuple[str, str], float]:
    node = cluster.issuer_node()
    with urllib.request.urlopen(f"http://127.0.0.1:{node.ports[9090]}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, s.labels.get("node", "")): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name.startswith("nginx_acme_node_bundle")}


def test_bundle_from_an_unauthenticated_peer_is_refused(cluster: Cluster) -> None:
    issuer = cluster.issuer_node()
    cid = cluster.container(issuer, f"{STACK}_issuer")
    tasks = cluster.swarm.manager.docker("service", "ps", "-q", "--filter", "desired-state=running",
                                         f"{STACK}_agent").split()
    worker_agent = next(t for t in tasks if cluster.worker.node_id ==
                        cluster.swarm.manager.docker("inspect", "-f", "{{.NodeID}}", t).strip())
    addr = cluster.swarm.manager.docker(
        "inspect", "-f", "{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}",
        worker_agent).split()[0].split("/")[0]
    before = cluster.served(cluster.worker, "a.swarm.test").serial_number
    # A bundle sealed with another key, and plain JSON: both refused, nothing written.
    script = (
        "import json,os,sys,urllib.request,urllib.error\n"
        "from sidecar.core import bundle as b\n"
        "forged=b.Bundle(9999999999999,b.files_digest(()),'x')\n"
        "out=[]\n"
        "for blob in (b.seal(b.derive_key(os.urandom(32).hex().encode()),b.BUNDLE,b.to_doc(forged)),"
        " json.dumps(b.to_doc(forged)).encode()):\n"
        f"  req=urllib.request.Request('http://{addr}:9091/bundle',data=blob,method='PUT')\n"
        "  try: out.append(urllib.request.urlopen(req,timeout=30).status)\n"
        "  except urllib.error.HTTPError as e: out.append(e.code)\n"
        f"st=json.load(urllib.request.urlopen('http://{addr}:9091/status',timeout=10))\n"
        "print(json.dumps({'codes':out,'agent':st}))\n")
    doc = json.loads(issuer.docker("exec", cid, "python3", "-c", script).strip().splitlines()[-1])
    assert doc["codes"] == [403, 403]
    assert doc["agent"]["refused"] >= 2
    assert doc["agent"]["version"] != 9999999999999 and doc["agent"]["state"] == "applied"
    assert cluster.served(cluster.worker, "a.swarm.test").serial_number == before


def test_a_node_whose_nginx_rejects_the_bundle_does_not_hold_back_the_others(cluster: Cluster) -> None:
    w = cluster.worker
    nginx_cid = cluster.container(w, f"{STACK}_nginx")
    w.docker("exec", nginx_cid, "sh", "-c", "echo 'this is not nginx;' > /etc/nginx/conf.d/zz-broken.conf")
    try:
        cluster.app("app-b", "b.swarm.test")
        others = [n for n in cluster.swarm.nodes if n is not w]
        for node in others:
            sw.wait(f"HTTPS b.swarm.test on {node.name}", lambda n=node: cluster.served(n, "b.swarm.test"),
                    timeout=240)

        def rejected() -> dict[str, Any] | None:
            rows = {r["hostname"]: r for r in cluster.status()["nodes"]}
            return rows["w1"] if rows["w1"]["state"] == "rejected" else None
        row = sw.wait("the worker's bundle state 'rejected'", rejected, timeout=120)
        applied = {r["hostname"]: r["version"] for r in cluster.status()["nodes"] if r["state"] == "applied"}
        assert set(applied) == {"m1", "m2"} and row["version"] < max(applied.values())  # the worker is behind
        assert row["offered"] > row["version"] and "zz-broken.conf" in row["detail"]
        assert _metrics(cluster)[("nginx_acme_node_bundle_ok", "w1")] == 0.0
        # the worker keeps serving what it had
        assert "Pebble" in cluster.served(w, "a.swarm.test").issuer.rfc4514_string()
        with pytest.raises(ssl.SSLError):
            tls_get(w.ports[443], "b.swarm.test", ca=cluster.pebble_root)
    finally:
        w.docker("exec", nginx_cid, "rm", "-f", "/etc/nginx/conf.d/zz-broken.conf")
    sw.wait("the worker applying the bundle once fixed", cluster.nodes_applied, timeout=120)
    sw.wait("HTTPS b.swarm.test on the worker", lambda: cluster.served(w, "b.swarm.test"), timeout=60)


def test_scaling_a_rolling_update_and_removing_a_service(cluster: Cluster) -> None:
    cursor = cluster.api("/events?since=0")["next"]
    cluster.swarm.manager.docker("service", "scale", "-d", "app-a=3")

    def three_upstreams() -> bool:
        events = cluster.api(f"/events?since={cursor}")["events"]
        return any(e["kind"] == "site_changed" and e["site"] == "a.swarm.test"
                   and len(e["details"].get("upstreams") or []) == 3 for e in events)
    sw.wait("a.swarm.test with three upstreams", three_upstreams, timeout=120)
    sw.wait("every node on the new bundle", cluster.nodes_applied, timeout=120)
    for node in cluster.swarm.nodes:
        assert "hello from app-a" in tls_get(node.ports[443], "a.swarm.test", ca=cluster.pebble_root).body
    # A rolling update replaces every task (new addresses): every node follows, no request fails after it.
    before = max(sw.wait("every node on the same bundle", cluster.nodes_applied).values())
    cluster.swarm.manager.docker("service", "update", "-d", "--force", "app-a")
    sw.wait("the rolling update done", lambda: cluster.swarm.manager.docker(
        "service", "inspect", "-f", "{{.UpdateStatus.State}}", "app-a").strip() == "completed", timeout=180)
    sw.wait("every node on a bundle with the new tasks",
            lambda: (v := cluster.nodes_applied()) and min(v.values()) > before and v, timeout=120)

    def all_upstreams_answer(n: sw.Node) -> bool:  # every upstream in turn (round robin), none of them gone
        return all("hello from app-a" in tls_get(n.ports[443], "a.swarm.test", ca=cluster.pebble_root).body
                   for _ in range(6))
    for node in cluster.swarm.nodes:
        sw.wait(f"{node.name} proxying to the new tasks only", lambda n=node: all_upstreams_answer(n), timeout=60)
    cluster.swarm.manager.docker("service", "rm", "app-b")
    for node in cluster.swarm.nodes:
        def gone(n: sw.Node = node) -> bool:
            try:
                tls_get(n.ports[443], "b.swarm.test", ca=cluster.pebble_root)
            except ssl.SSLError:
                return True
            return False
        sw.wait(f"b.swarm.test gone from {node.name}", gone, timeout=120)
    assert "hello from app-a" in tls_get(cluster.worker.ports[443], "a.swarm.test", ca=cluster.pebble_root).body


def test_a_renewal_reaches_every_node(cluster: Cluster) -> None:
    serials = cluster.serials("a.swarm.test")
    orders = cluster.orders()
    issuer = cluster.issuer_node()
    t0 = time.monotonic()
    issuer.docker("exec", cluster.container(issuer, f"{STACK}_issuer"),
                  "python3", "-m", "sidecar", "renew", "a.swarm.test", "--force")
    for node in cluster.swarm.nodes:
        sw.wait(f"the renewed certificate on {node.name}",
                lambda n=node: cluster.served(n, "a.swarm.test").serial_number != serials[n.name], timeout=180)
    record("swarm_renewal_to_all_nodes_seconds", round(time.monotonic() - t0, 1))
    assert len(set(cluster.serials("a.swarm.test").values())) == 1
    assert cluster.orders() == orders + 1
    sw.wait("every node on the same bundle", cluster.nodes_applied)


def test_the_issuer_moves_to_another_manager_and_reissues_nothing(cluster: Cluster) -> None:
    orders = cluster.orders()
    serials = cluster.serials("a.swarm.test")
    old = cluster.issuer_node()
    t0 = time.monotonic()
    cluster.swarm.manager.docker("node", "update", "--availability", "drain", old.node_id)
    try:
        new = sw.wait("the issuer running on the other manager",
                      lambda: (n := cluster.issuer_node()) is not old and n, timeout=180)
        sw.wait("the moved issuer's first pass with a.swarm.test ok",
                lambda: any(r["site"] == "a.swarm.test" and r["state"] == "ok" and r["live"]
                            for r in cluster.api("/status", new).get("sites") or []), timeout=180)
        record("swarm_issuer_failover_seconds", round(time.monotonic() - t0, 1))
        # nothing ordered by the new issuer: it found the certificates, the account and the ledger
        stays("an order after the failover", lambda: cluster.orders() != orders and cluster.orders(), deadline=10)
        up = [n for n in cluster.swarm.nodes if n is not old]
        assert {n.name: cluster.served(n, "a.swarm.test").serial_number for n in up} == \
            {n.name: serials[n.name] for n in up}
        record("swarm_orders_across_failover", {"before": orders, "after": cluster.orders()})
        # a renewal by the moved issuer reaches every node that runs nginx
        cid = cluster.container(new, f"{STACK}_issuer")
        t1 = time.monotonic()
        new.docker("exec", cid, "python3", "-m", "sidecar", "renew", "a.swarm.test", "--force")
        for node in up:
            sw.wait(f"the renewed certificate on {node.name}",
                    lambda n=node: cluster.served(n, "a.swarm.test").serial_number != serials[n.name], timeout=180)
        record("swarm_renewal_after_failover_to_running_nodes_seconds", round(time.monotonic() - t1, 1))
        assert cluster.orders() == orders + 1
    finally:
        cluster.swarm.manager.docker("node", "update", "--availability", "active", old.node_id, check=False)
