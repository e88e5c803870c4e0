"""Bring your own nginx config (issue 7), end to end: hand-written server blocks in the
conf volume, a lineage made by hand with certbot, and a broken edit."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterator

import pytest

from sidecar.core.events import Kind

from .stack import IMAGES, Stack, dns_names, issuer_cn, new_stack, running, wait_for

PLACEHOLDER = "nginx-acme-sidecar placeholder"


def server_blocks(name: str, lineage: str, upstream: str = "http://app-a:5678") -> str:
    return f"""
server {{
    listen 80;
    server_name {name};
    include /etc/nginx/conf.d/sidecar-include/acme-challenge.conf;
    location / {{ return 308 https://$host$request_uri; }}
}}
server {{
    listen 443 ssl;
    server_name {name};
    ssl_certificate     /etc/letsencrypt/live/{lineage}/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/{lineage}/privkey.pem;
    include /etc/nginx/conf.d/sidecar-include/tls-intermediate.conf;
    location / {{ proxy_pass {upstream}; }}
}}
"""


def put_conf(stack: Stack, filename: str, text: str) -> None:
    """Write a hand-written file into the conf volume, atomically, as an editor would."""
    tmp = f"/etc/nginx/conf.d/.{filename}.tmp"
    code, out = stack.exec("sidecar", "sh", "-c",
                           f"printf %s {shlex.quote(text)} > {tmp} && mv {tmp} /etc/nginx/conf.d/{filename}")
    assert code == 0, out


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(Path(tmp_path_factory.mktemp("byo")))
    s.write_sites("sites: []\n")
    with running(s, ["a.demo.test"]):
        yield s


def test_hand_written_config_with_a_missing_certificate_gets_one(byo: Stack) -> None:
    since = byo.cursor()
    put_conf(byo, "byo.conf", server_blocks("byo.demo.test", "byo-cert"))
    r = wait_for("a real certificate for byo.demo.test",
                 lambda: (x := byo.https("byo.demo.test")) and issuer_cn(x.cert).startswith("Pebble") and x,
                 timeout=60, interval=0.3)
    assert r.status == 200 and r.body.strip() == "hello from app-a"
    assert dns_names(r.cert) == {"byo.demo.test"}
    assert r.headers.get("strict-transport-security", "").startswith("max-age=")
    code, live = byo.exec("sidecar", "ls", "/etc/letsencrypt/live")
    assert "byo-cert" in live.split() and not any(n.startswith("byo-cert-") for n in live.split())
    issued = byo.wait_event(Kind.CERT_ISSUED, "byo-cert", since, timeout=10)
    assert issued.details["action"] == "issue"
    assert byo.events(since, Kind.SITE_ADDED, "byo-cert")[0].details["domains"] == ["byo.demo.test"]
    # a placeholder let nginx load the file before the certificate existed
    placeholder = byo.events(since, Kind.PLACEHOLDER_WRITTEN, "byo-cert")
    assert [e.details["domains"] for e in placeholder] == [["byo.demo.test"]] and placeholder[0].seq < issued.seq
    # the generated sites were not disturbed
    assert byo.https("a.demo.test").status == 200


def test_existing_lineage_made_by_hand_is_adopted_not_reissued(byo: Stack) -> None:
    # The classic setup: a lineage created with `docker run certbot certonly --webroot` by hand (RSA).
    project = byo.project
    cmd = ["certonly", "--webroot", "-w", "/var/www/acme", "--cert-name", "legacy", "-d", "legacy.demo.test",
           "--server", "https://pebble:14000/dir", "--non-interactive", "--agree-tos",
           "--register-unsafely-without-email", "--key-type", "rsa"]
    out = byo.client.containers.run(
        IMAGES["CERTBOT_IMAGE"], cmd, remove=True, network=byo.network,
        volumes={f"{project}_certs": {"bind": "/etc/letsencrypt", "mode": "rw"},
                 f"{project}_webroot": {"bind": "/var/www/acme", "mode": "rw"},
                 f"{project}_pebble-ca": {"bind": "/pebble-ca", "mode": "ro"}},
        environment={"REQUESTS_CA_BUNDLE": "/pebble-ca/ca.pem"},
    ).decode()
    assert "Successfully received certificate" in out, out
    by_hand = byo.cert_on_disk("legacy")
    since = byo.cursor()
    put_conf(byo, "legacy.conf", server_blocks("legacy.demo.test", "legacy"))
    r = wait_for("legacy.demo.test served", lambda: byo.https("legacy.demo.test"), timeout=30)
    assert r.cert.serial_number == by_hand.serial_number
    # Adopted as it is: the planner finds it valid, and nothing asks for a new one.
    row = wait_for("legacy in /status", lambda: byo.status()["rows"].get("legacy"), timeout=10)
    assert (row["state"], row["names"], row["not_after"]) == (
        "ok", ["legacy.demo.test"], by_hand.not_valid_after_utc.isoformat()), row
    byo.no_event(Kind.CERT_REQUESTED, "legacy", since, deadline=2)

    # Renewed on request (same path as the schedule): same lineage, same key type, new serial.
    code, out = byo.exec("sidecar", "python3", "-m", "sidecar", "renew", "legacy", "--force")
    assert code == 0, out
    renewed = wait_for("renewed legacy certificate served",
                       lambda: (c := byo.https("legacy.demo.test").cert).serial_number != by_hand.serial_number and c,
                       timeout=60, interval=0.5)
    assert type(renewed.public_key()).__name__.startswith("_RSA") or "RSA" in type(renewed.public_key()).__name__
    code, live = byo.exec("sidecar", "ls", "/etc/letsencrypt/live")
    assert [n for n in live.split() if n.startswith("legacy")] == ["legacy"], live


BROKEN = "server { listen 80; server_name broken.demo.test; bogus_directive on; }\n"
FIXED = "server { listen 80; server_name broken.demo.test; return 204; }\n"


def conf_listing(byo: Stack) -> list[str]:
    code, out = byo.exec("nginx", "ls", "/etc/nginx/conf.d")
    assert code == 0, out
    return out.split()


def test_a_broken_hand_written_file_is_set_aside_and_every_other_site_keeps_being_updated(byo: Stack) -> None:
    """One user's typo must not take every other site hostage (it froze every reload before)."""
    before = byo.https("a.demo.test").cert.serial_number
    since = byo.cursor()
    put_conf(byo, "broken.conf", BROKEN)
    aside = byo.wait_event(Kind.CONF_SET_ASIDE, since=since, timeout=20)
    assert (aside.details["file"], aside.details["aside"]) == ("broken.conf", "broken.conf.sidecar-broken")
    assert "bogus_directive" in aside.details["error"] and "/etc/nginx/conf.d/broken.conf:1" in aside.details["error"]
    files = conf_listing(byo)
    assert "broken.conf.sidecar-broken" in files and "broken.conf" not in files
    assert byo.exec("sidecar", "cat", "/etc/nginx/conf.d/broken.conf.sidecar-broken")[1] == BROKEN  # never edited
    # loud: health degraded with the reason, /status and a metric naming the file
    health = wait_for("degraded health", lambda: (h := byo.api("/healthz"))["status"] == "degraded" and h, timeout=10)
    assert any("broken.conf" in d and "bogus_directive" in d for d in health["degraded"])
    assert "bogus_directive" in byo.status()["set_aside"]["broken.conf"]
    assert byo.metrics()[("nginx_acme_conf_set_aside", (("file", "broken.conf"),))] == 1
    # and every other site keeps being updated: a new labelled container is served meanwhile
    byo.run_app("late", {"acme.domains": "late.demo.test", "acme.port": "5678"}, "late")
    late = wait_for("https://late.demo.test", lambda: byo.https("late.demo.test"), timeout=60)
    assert late.status == 200 and dns_names(late.cert) == {"late.demo.test"}
    assert byo.https("a.demo.test").cert.serial_number == before
    assert byo.https("byo.demo.test").status == 200

    # Fixed where it was set aside: renamed back, tested, accepted; health is ok again.
    since = byo.cursor()
    put_conf(byo, "broken.conf.sidecar-broken", FIXED)
    wait_for("broken.conf back", lambda: "broken.conf" in (f := conf_listing(byo)) and "broken.conf.sidecar-broken"
             not in f, timeout=20)
    wait_for("health ok", lambda: byo.api("/healthz")["status"] == "ok", timeout=20)
    assert byo.status()["set_aside"] == {}
    # nginx serves the fixed file (once the reload's new workers answer: a reload is asynchronous)
    wait_for("the fixed file served", lambda: byo.http("broken.demo.test")[0] == 204, timeout=10)
    byo.no_event(Kind.CONF_SET_ASIDE, since=since, deadline=1)
    code, _ = byo.exec("sidecar", "rm", "/etc/nginx/conf.d/broken.conf")
    assert code == 0


CACHE = "proxy_cache_path /tmp/byo-cache levels={} keys_zone=byo_zone:1m;\n"


def test_a_reload_nginx_refuses_is_reported_at_once_and_the_running_config_stays(byo: Stack) -> None:
    """``nginx -t`` passes but the reload does not: the cache zone's levels differ from the running
    one's (only the master, holding the old zone, can tell). nginx keeps its configuration; the
    sidecar used to wait two minutes for new workers, holding up every other change meanwhile."""
    since = byo.cursor()
    put_conf(byo, "cache.conf", CACHE.format("1:2"))
    byo.wait_event(Kind.RELOAD, since=since, timeout=20)
    since = byo.cursor()
    put_conf(byo, "cache.conf", CACHE.format("1"))
    rejected = byo.wait_event(Kind.NGINX_REJECTED, since=since, timeout=15)
    assert 'cache "byo_zone" had previously different levels' in rejected.details["error"], rejected
    assert byo.events(since, Kind.RELOAD) == []
    assert byo.https("a.demo.test").status == 200 and byo.https("byo.demo.test").status == 200

    # Put back as it was: loaded again, and gone.
    since = byo.cursor()
    put_conf(byo, "cache.conf", CACHE.format("1:2"))
    byo.wait_event(Kind.RELOAD, since=since, timeout=20)
    since = byo.cursor()
    assert byo.exec("sidecar", "rm", "/etc/nginx/conf.d/cache.conf")[0] == 0
    byo.wait_event(Kind.RELOAD, since=since, timeout=20)
    assert byo.events(since, Kind.NGINX_REJECTED) == []
