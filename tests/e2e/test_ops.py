"""Operating it (issue 6), end to end: metrics, status and plan, renew, alerts by mail and
webhook, and the HEALTHCHECK losing and regaining Docker.

A stack of its own: its sidecar sends alerts (ALERT_URLS) to a receiver container
(an SMTP server and a webhook sink, tests/images/receiver) on the stack's network.
The failing site asks for ``blocked-domain.example``, which the demo's Pebble refuses
by policy (its ``domainBlocklist``): a real CA rejection that touches no other site.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from sidecar.core.events import Kind

from .stack import IMAGES, Stack, new_stack, wait_for

RECEIVER_IMAGE = os.environ.get("E2E_RECEIVER_IMAGE", "local/receiver:test")
BLOCKED = "blocked-domain.example"
DEMO_SITES = ("a.demo.test", "b.demo.test", "static.demo.test")


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(Path(tmp_path_factory.mktemp("ops")))
    if not s.client.images.list(name=RECEIVER_IMAGE):
        raise RuntimeError(f"image missing: {RECEIVER_IMAGE}: run bash tests/build-images.sh receiver")
    receiver = f"{s.project}-receiver"
    s.env["ALERT_URLS"] = (f"mailto://{receiver}:2525?from=sidecar@demo.test&to=ops@demo.test, "
                           f"json://{receiver}:8000/hooks/acme")
    try:
        # The network first (with nginx and Pebble), then the receiver, then the sidecar:
        # so even the first issuance alerts have somewhere to go.
        s.compose("up", "-d", "--no-build", "nginx")
        c = s.client.containers.run(RECEIVER_IMAGE, name=receiver, network=s.network, detach=True,
                                    labels={"e2e.project": s.project})
        s.started.append(c.id)
        s.compose("up", "-d", "--no-build")
        s.fetch_root()
        for host in DEMO_SITES:
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=90)  # type: ignore[misc]
        yield s
    except BaseException:
        print("---- sidecar logs ----\n" + s.logs()[-8000:])
        raise
    finally:
        s.down()


@pytest.fixture(scope="module")
def blocked(ops: Stack) -> str:
    """A labelled site the CA refuses: it fails, backs off, and is alerted once."""
    since = ops.cursor()
    ops.run_app("blocked", {"acme.domains": BLOCKED, "acme.port": "5678"}, "blocked")
    failed = ops.wait_event(Kind.CERT_FAILED, BLOCKED, since, timeout=60)
    assert failed.details["failures"] == 1 and failed.details["next_attempt"], failed
    return BLOCKED


# -- helpers ---------------------------------------------------------------------------
def received(s: Stack) -> dict[str, list[dict[str, Any]]]:
    code, out = s.client.containers.get(f"{s.project}-receiver").exec_run(
        ["python3", "/usr/local/bin/receiver.py", "dump"])
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def mails_about(s: Stack, words: str) -> list[dict[str, Any]]:
    return [m for m in received(s)["mail"] if words in m["subject"] + "\n" + m["body"]]


def hooks_about(s: Stack, words: str) -> list[dict[str, Any]]:
    return [h for h in received(s)["webhook"] if words in h["body"]["title"] + "\n" + h["body"]["message"]]


def sidecar_json(s: Stack, *args: str) -> Any:
    code, out = s.exec("sidecar", "python3", "-m", "sidecar", *args, "--json")
    assert code == 0, out
    return json.loads(out)


def site_gauge(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, site: str) -> float | None:
    return m.get((f"nginx_acme_certificate_{name}_timestamp_seconds", (("site", site),)))


# -- tests -------------------------------------------------------------------------------
def test_metrics_match_the_certificates_on_disk(ops: Stack) -> None:
    m = wait_for("metrics for every site",
                 lambda: (m := ops.metrics()) and all(site_gauge(m, "not_after", h) for h in DEMO_SITES) and m,
                 timeout=30)
    for host in DEMO_SITES:
        cert = ops.cert_on_disk(host)
        assert site_gauge(m, "not_after", host) == cert.not_valid_after_utc.timestamp(), host
        assert site_gauge(m, "not_before", host) == cert.not_valid_before_utc.timestamp(), host
        assert site_gauge(m, "last_success", host) is not None
        renewal = site_gauge(m, "next_renewal", host)
        assert renewal is not None and time.time() < renewal < cert.not_valid_after_utc.timestamp()
    assert m[("nginx_acme_sites", (("state", "ok"),))] >= 3
    assert m[("nginx_acme_docker_up", ())] == 1
    assert m[("nginx_acme_nginx_reloads_total", ())] >= 1
    assert m[("nginx_acme_certbot_duration_seconds_count", (("outcome", "success"),))] >= 3
    assert m[("nginx_acme_certificates_obtained_total", (("action", "issue"),))] >= 3


def test_issuances_were_announced_by_mail_and_webhook(ops: Stack) -> None:
    def announced(host: str) -> bool:
        words = f"Certificate issued: {host}"
        return bool(mails_about(ops, words) and hooks_about(ops, words))

    for host in DEMO_SITES:
        wait_for(f"issued alert for {host}", lambda h=host: announced(h), timeout=30)  # type: ignore[misc]
    mail = received(ops)["mail"][0]
    assert (mail["from"], mail["to"]) == ("sidecar@demo.test", ["ops@demo.test"])
    assert received(ops)["webhook"][0]["path"] == "/hooks/acme"


def test_a_failure_is_alerted_once_by_mail_and_webhook_not_on_every_retry(ops: Stack, blocked: str) -> None:
    title = f"Certificate request failed: {blocked}"
    wait_for("failure mail and webhook", lambda: mails_about(ops, title) and hooks_about(ops, title), timeout=30)
    (mail,) = mails_about(ops, title)
    assert "Next attempt: " in mail["body"]
    assert f"certbot output: /var/lib/nginx-acme-sidecar/certbot-logs/{blocked}/" in mail["body"]
    (hook,) = hooks_about(ops, title)
    assert hook["body"]["type"] == "failure"

    # The operator retries at once (no back-off): it fails the same way, and nobody is mailed again.
    since = ops.cursor()
    code, out = ops.exec("sidecar", "python3", "-m", "sidecar", "renew", blocked)
    assert code == 0, out
    assert "renewal check requested" in out
    retry = ops.wait_event(Kind.CERT_FAILED, blocked, since, timeout=60)
    assert retry.details["failures"] >= 2, retry
    # Alerts go out one after the other: once an alert that came after the retry's failure has
    # been delivered, any alert about that failure would have been delivered before it.
    code, out = ops.exec("sidecar", "python3", "-m", "sidecar", "renew", "static.demo.test", "--force")
    assert code == 0, out
    marker = "Certificate renewed: static.demo.test"
    wait_for("a later alert delivered", lambda: mails_about(ops, marker) and hooks_about(ops, marker), timeout=60)
    assert len(mails_about(ops, title)) == 1
    assert len(hooks_about(ops, title)) == 1
    m = ops.metrics()
    assert sum(v for (name, labels), v in m.items()
               if name == "nginx_acme_certificate_failures_total" and ("site", blocked) in labels) >= 2


def test_status_and_plan_show_the_right_rows(ops: Stack, blocked: str) -> None:
    doc = sidecar_json(ops, "status")
    assert doc["health"]["status"] == "ok"
    rows = {r["site"]: r for r in doc["sites"]}
    assert set(rows) == {*DEMO_SITES, blocked}
    a = rows["a.demo.test"]
    assert a["names"] == ["a.demo.test", "www.a.demo.test"]
    assert a["source"].startswith("container ") and "app-a" in a["source"]
    assert (a["state"], a["live"], a["failures"], a["last_error"]) == ("ok", True, 0, "")
    assert a["not_after"] == ops.cert_on_disk("a.demo.test").not_valid_after_utc.isoformat()
    assert a["next"] and a["why"].startswith("valid until")
    assert a["certbot_log"]["exit_code"] == 0
    static = rows["static.demo.test"]
    assert static["source"].startswith("sites file") and static["state"] == "ok"
    bad = rows[blocked]
    assert bad["state"] == "wait" and not bad["live"] and bad["not_after"] is None
    assert bad["failures"] >= 1 and bad["last_error"]
    assert "back-off" in bad["why"]
    log = bad["certbot_log"]
    assert log["exit_code"] not in (0, None) and log["last_line"]
    code, text = ops.exec("sidecar", "cat", log["path"])
    assert code == 0 and log["last_line"] in text

    table = ops.exec("sidecar", "python3", "-m", "sidecar", "status")[1]
    assert table.splitlines()[0].startswith("sidecar ok: last pass")
    assert any(line.startswith(blocked) and "wait" in line for line in table.splitlines())
    assert f"  {blocked}: exit " in table

    plan = {d["site"]: d for d in sidecar_json(ops, "plan")["decisions"]}
    assert set(plan) == {*DEMO_SITES, blocked}
    assert plan["a.demo.test"]["action"] == "ok" and not plan["a.demo.test"]["runs_certbot"]
    assert (plan[blocked]["action"], plan[blocked]["pending"]) == ("wait", "issue")
    assert "wait, then issue" in ops.exec("sidecar", "python3", "-m", "sidecar", "plan")[1]


def test_a_site_without_its_first_certificate_says_so_over_http_instead_of_a_dead_redirect(
        ops: Stack, blocked: str) -> None:
    """Until a site's first certificate is live, plain HTTP answers 503 with a page naming the next
    attempt (HTTPS has no server for the name yet); a live site still redirects to HTTPS."""
    row = wait_for("the blocked site waiting", lambda: (r := ops.status()["rows"][blocked])["state"] == "wait" and r,
                   timeout=60)
    assert row["next"]
    status, headers, body = wait_for("the pending page", lambda: (got := ops.http(blocked))[0] == 503 and got,
                                     timeout=10)
    assert headers.get("retry-after") == "60" and f"<h1>{blocked}</h1>" in body
    assert "Next attempt: " + row["next"][:16].replace("T", " ") + " UTC." in body
    assert "rejectedIdentifier" not in body and "policy" not in body.lower()  # nothing of the CA's error
    # the challenge path is still served from the webroot, and a live site still redirects
    assert ops.http(blocked, "/.well-known/acme-challenge/nothing-here")[0] == 404
    live_status, live_headers, _ = ops.http("a.demo.test")
    assert live_status == 308 and live_headers["location"] == "https://a.demo.test/"


def test_forced_renewal_renews_now_and_is_announced(ops: Stack) -> None:
    before = ops.cert_on_disk("b.demo.test")
    since = ops.cursor()
    code, out = ops.exec("sidecar", "python3", "-m", "sidecar", "renew", "b.demo.test", "--force")
    assert code == 0 and "forced renewal requested" in out, out
    after = wait_for("a new certificate on disk",
                     lambda: (c := ops.cert_on_disk("b.demo.test")).serial_number != before.serial_number and c,
                     timeout=60, interval=0.5)
    wait_for("renewed alert", lambda: hooks_about(ops, "Certificate renewed: b.demo.test")
             and mails_about(ops, "Certificate renewed: b.demo.test"), timeout=30)
    wait_for("served", lambda: ops.https("b.demo.test").cert.serial_number == after.serial_number, timeout=30)
    m = wait_for("metrics updated", lambda: (m := ops.metrics()) and site_gauge(m, "not_after", "b.demo.test")
                 == after.not_valid_after_utc.timestamp() and m, timeout=10)
    assert m[("nginx_acme_certificates_obtained_total", (("action", "renew"),))] >= 1
    (requested,) = ops.events(since, Kind.CERT_REQUESTED, "b.demo.test")
    assert requested.details["action"] == "renew" and "operator" in requested.message, requested  # the plan's why
    (renewed,) = ops.events(since, Kind.CERT_RENEWED, "b.demo.test")
    assert datetime.fromisoformat(renewed.details["not_after"]) == after.not_valid_after_utc
    # Done once: the next plan does not renew it again.
    plan = {d["site"]: d for d in sidecar_json(ops, "plan")["decisions"]}
    assert plan["b.demo.test"]["action"] == "ok"
    code, out = ops.exec("sidecar", "python3", "-m", "sidecar", "renew", "nope.demo.test")
    assert code == 1 and "no site named" in out


def test_renew_is_refused_from_outside_the_container(ops: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(ops.env["STATUS_PORT_HOST"]), timeout=5)
    try:
        conn.request("POST", "/renew/a.demo.test?force=1")
        resp = conn.getresponse()
        assert resp.status == 403, resp.read()
    finally:
        conn.close()


def test_healthcheck_turns_unhealthy_without_docker_and_recovers(ops: Stack) -> None:
    """A second sidecar reaches Docker only through a read-only proxy container; stopping
    the proxy takes Docker away from it, starting it gives Docker back."""
    s, client = ops, ops.client
    proxy_name, name = f"{s.project}-dockerproxy", f"{s.project}-hc-sidecar"
    volumes = [client.volumes.create(f"{s.project}-hc-{v}", labels={"e2e.project": s.project})
               for v in ("certs", "webroot")]
    proxy = client.containers.run(RECEIVER_IMAGE, ["dockerproxy"], name=proxy_name, network=s.network,
                                  volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
                                  labels={"e2e.project": s.project}, detach=True)
    s.started.append(proxy.id)
    wait_for("proxy up", lambda: "read-only Docker API" in proxy.logs().decode(), timeout=20)
    sidecar = client.containers.run(
        IMAGES["SIDECAR_IMAGE"], name=name, network=s.network, detach=True,
        labels={"e2e.project": s.project},
        environment={
            "DOCKER_HOST": f"tcp://{proxy_name}:2375",
            # No nginx to manage, no labels to read: this one only lives and checks its health.
            "NGINX_CONTAINER": f"{s.project}-no-such-nginx",
            "ACME_LABEL_PREFIX": "opshealth",
            "CERTBOT_IMAGE": IMAGES["CERTBOT_IMAGE"],
            "ACME_SERVER": "https://pebble:14000/dir",
        },
        volumes={volumes[0].name: {"bind": "/etc/letsencrypt", "mode": "rw"},
                 volumes[1].name: {"bind": "/var/www/acme", "mode": "rw"}},
        # The image's HEALTHCHECK, polled every second instead of every 30.
        healthcheck={"test": ["CMD", "python3", "-m", "sidecar", "health"], "interval": 1_000_000_000,
                     "timeout": 5_000_000_000, "retries": 2, "start_period": 0},
    )
    s.started.append(sidecar.id)

    def docker_health() -> str:
        sidecar.reload()
        return str(sidecar.attrs["State"].get("Health", {}).get("Status"))

    def health_cmd() -> tuple[int, str]:
        code, out = sidecar.exec_run(["python3", "-m", "sidecar", "health"])
        return code, out.decode()

    try:
        wait_for("healthy", lambda: docker_health() == "healthy", timeout=60, interval=0.5)
        assert health_cmd()[0] == 0

        started = time.monotonic()
        proxy.stop(timeout=1)
        wait_for("unhealthy", lambda: docker_health() == "unhealthy", timeout=60, interval=0.5)
        code, out = health_cmd()
        assert code == 1 and "Docker API unreachable" in out, out
        s.record("healthcheck_unhealthy_after_docker_loss_seconds", round(time.monotonic() - started, 1))

        started = time.monotonic()
        proxy.start()
        wait_for("healthy again", lambda: docker_health() == "healthy", timeout=120, interval=0.5)
        assert health_cmd()[0] == 0
        s.record("healthcheck_healthy_after_docker_back_seconds", round(time.monotonic() - started, 1))
        code, out = sidecar.exec_run(["python3", "-c", "import sys, urllib.request; sys.stdout.write(urllib.request"
                                      ".urlopen('http://127.0.0.1:9090/events', timeout=5).read().decode())"])
        assert code == 0, out
        kinds = [e["kind"] for e in json.loads(out)["events"]]
        assert Kind.DOCKER_UNAVAILABLE.value in kinds, kinds
    except BaseException:
        print("---- health sidecar logs ----\n" + sidecar.logs().decode()[-4000:])
        raise
    finally:
        for c in (sidecar, proxy):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
        for v in volumes:
            try:
                v.remove(force=True)
            except docker.errors.APIError:
                pass
