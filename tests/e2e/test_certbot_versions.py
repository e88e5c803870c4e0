"""The certbot releases the sidecar supports, end to end: each test runs once per certbot.

    debian-4.0.0   local/certbot:v4.0.0, Debian trixie's certbot package (tests/images/certbot)
    5.x.y          local/certbot:v5, the newest 5.x release from PyPI wheels (tests/images/certbot5,
                   pinned in its requirements.txt; the id is that pin)

A change in certbot's flags or output (the sidecar builds certbot's command line and reads what it
prints) fails here before it reaches a user. For each certbot, one stack of its own: the local demo
with its DNS-01 variant (BIND, examples/local-demo/compose.dns01.yml) and the fault-injecting ACME
proxy between certbot and Pebble (tests/e2e/compose.acmeproxy.yml). Shown for each:
- the certbot the sidecar runs is that release (its container's image and ``certbot --version``,
  and the version certbot wrote into each lineage's renewal configuration);
- an HTTP-01 site from labels is issued by Pebble and served over HTTPS;
- an apex + wildcard DNS-01 certificate through the rfc2136 plugin is issued and served;
- a forced renewal of both issues new certificates, which are then served;
- a rate-limited order and a DNS update refused by BIND are classified as with the other certbot;
- the sidecar's command line for a certificate not yet due is accepted, and the answer read as "kept".

Run alone: ``python -m pytest tests/e2e/test_certbot_versions.py -q`` (1.5 to 3 minutes: two stacks, one
after the other).
"""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from sidecar.core import certbot as certbot_cli
from sidecar.core import settings as settings_mod
from sidecar.core.events import Kind
from sidecar.core.planner import Action
from sidecar.engine.issuer import CA_BUNDLE_NAME

from ..support.images import images
from .stack import DEMO, ROOT, Stack, dns_names, free_port, issuer_cn, new_stack, wait_for

MORE = images("E2E_", CERTBOT5_IMAGE="local/certbot:v5", BIND_IMAGE="local/bind:test",
              ACMEPROXY_IMAGE="local/acmeproxy:test")
PROXY = Path(__file__).with_name("compose.acmeproxy.yml")
OWNER_LABEL = "nginx-acme-sidecar.owner"  # on the certbot container the sidecar starts
CREDS = "/dns-credentials"  # in the bind container; the sidecar has the volume at /run/secrets


def _pinned_certbot() -> str:
    text = (ROOT / "tests" / "images" / "certbot5" / "requirements.txt").read_text()
    found = re.search(r"^certbot==(\S+)", text, re.M)
    assert found, "tests/images/certbot5/requirements.txt pins no certbot"
    return found.group(1)


@dataclass(frozen=True)
class Certbot:
    image: str
    version: str  # what `certbot --version` prints after "certbot "


DEBIAN = Certbot(MORE["CERTBOT_IMAGE"], "4.0.0")
PYPI = Certbot(MORE["CERTBOT5_IMAGE"], _pinned_certbot())
HTTP01 = "a.demo.test"       # the demo's app-a (with www.a.demo.test)
DNS01 = "dns.test"           # the DNS-01 variant's app-wild: dns.test and *.dns.test
SERVED = {"a.demo.test": "hello from app-a", "www.a.demo.test": "hello from app-a",
          "dns.test": "hello from app-wild", "anything.dns.test": "hello from app-wild"}


@dataclass
class Versioned:
    stack: Stack
    certbot: Certbot
    proxy_port: int


@pytest.fixture(scope="module", params=[DEBIAN, PYPI], ids=["debian-4.0.0", PYPI.version])
def cb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versioned]:
    certbot: Certbot = request.param
    s = new_stack(Path(tmp_path_factory.mktemp("certbot-versions")))
    missing = [i for i in (certbot.image, MORE["BIND_IMAGE"], MORE["ACMEPROXY_IMAGE"])
               if not s.client.images.list(name=i)]
    if missing:
        raise RuntimeError(f"images missing: {', '.join(missing)}: run bash tests/build-images.sh")
    s.extra_files += [DEMO / "compose.dns01.yml", PROXY]
    port = free_port()
    s.env.update(CERTBOT_IMAGE=certbot.image, BIND_IMAGE=MORE["BIND_IMAGE"], ACMEPROXY_IMAGE=MORE["ACMEPROXY_IMAGE"],
                 ACMEPROXY_PORT=str(port), RATE_LIMITS="off")  # (the CA's answers are what is classified)
    s.write_sites("sites: []\n")
    started = datetime.now()
    try:
        s.compose("up", "-d", "--no-build", "--scale", "app-b=0")
        s.fetch_root()
        for host in SERVED:
            wait_for(f"https://{host}", lambda h=host: s.https(h).status == 200, timeout=120)  # type: ignore[misc]
        s.record(f"certbot_{certbot.version}_stack_up_http01_and_dns01_https_seconds",
                 round((datetime.now() - started).total_seconds(), 2))
        yield Versioned(s, certbot, port)
    except BaseException:
        print(f"---- sidecar logs ({s.project}, certbot {certbot.version}) ----\n" + s.logs()[-8000:])
        raise
    finally:
        s.down()


# -- helpers ---------------------------------------------------------------------------------
def sidecar_file(s: Stack, path: str) -> str:
    code, out = s.exec("sidecar", "cat", path)
    assert code == 0, out
    return out


def serial_served(s: Stack, host: str) -> int:
    return int(s.https(host).cert.serial_number)


def runner(s: Stack) -> Any:
    """The certbot container the sidecar started (CERTBOT_RUNNER=exec: one, long-lived)."""
    owner = s.container("sidecar").name
    found = s.client.containers.list(filters={"label": f"{OWNER_LABEL}={owner}"})
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def proxy_rules(cb: Versioned, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", cb.proxy_port, timeout=10)
    try:
        conn.request("POST", "/rules", body=json.dumps(list(rules)), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, doc
    return list(doc)


# -- the tests ---------------------------------------------------------------------------------
def test_the_sidecar_runs_the_expected_certbot(cb: Versioned) -> None:
    """Not a no-op parametrization: the certbot container the sidecar started is this image, runs this
    release, and this release wrote the lineages (certbot records its version in each renewal file)."""
    s = cb.stack
    container = runner(s)
    assert cb.certbot.image in container.image.tags, container.image.tags
    code, out = container.exec_run(["certbot", "--version"])
    assert (code, out.decode().strip()) == (0, f"certbot {cb.certbot.version}")
    for lineage in (HTTP01, DNS01):
        conf = sidecar_file(s, f"/etc/letsencrypt/renewal/{lineage}.conf")
        assert re.search(rf"^version = {re.escape(cb.certbot.version)}$", conf, re.M), (lineage, conf[:300])


def test_an_http01_site_from_labels_is_issued_by_pebble_and_served(cb: Versioned) -> None:
    s = cb.stack
    for host in ("a.demo.test", "www.a.demo.test"):
        r = s.https(host)
        assert (r.status, r.body.strip()) == (200, "hello from app-a"), host
    cert = s.https(HTTP01).cert
    assert dns_names(cert) == {"a.demo.test", "www.a.demo.test"}
    assert "Pebble" in issuer_cn(cert), issuer_cn(cert)
    assert cert.serial_number == s.cert_on_disk(HTTP01).serial_number
    assert s.events(kind=Kind.CERT_ISSUED, site=HTTP01)
    conf = sidecar_file(s, f"/etc/letsencrypt/renewal/{HTTP01}.conf")
    assert re.search(r"^authenticator = webroot$", conf, re.M), conf
    row = s.status()["rows"][HTTP01]
    assert row["live"] and row["state"] == "ok", row


def test_a_dns01_wildcard_certificate_is_issued_and_served(cb: Versioned) -> None:
    s = cb.stack
    for host in ("dns.test", "anything.dns.test"):
        r = s.https(host)
        assert (r.status, r.body.strip()) == (200, "hello from app-wild"), host
    cert = s.https("anything.dns.test").cert
    assert dns_names(cert) == {"dns.test", "*.dns.test"}
    assert "Pebble" in issuer_cn(cert)
    assert cert.serial_number == s.cert_on_disk(DNS01).serial_number
    conf = sidecar_file(s, f"/etc/letsencrypt/renewal/{DNS01}.conf")
    assert re.search(r"^authenticator = dns-rfc2136$", conf, re.M), conf
    assert "dns_rfc2136_credentials = /run/secrets/rfc2136.ini" in conf


def test_a_forced_renewal_issues_new_certificates_that_are_served(cb: Versioned) -> None:
    s = cb.stack
    before = {name: serial_served(s, host) for name, host in ((HTTP01, HTTP01), (DNS01, "anything.dns.test"))}
    since = s.cursor()
    for name in before:
        code, out = s.exec("sidecar", "python3", "-m", "sidecar", "renew", name, "--force")
        assert code == 0, out
    for name, host in ((HTTP01, HTTP01), (DNS01, "anything.dns.test")):
        renewed = s.wait_event(Kind.CERT_RENEWED, name, since, timeout=120)
        assert renewed.details["action"] == "renew", renewed
        serial = wait_for(f"the renewed certificate of {name} served",
                          lambda h=host, n=name: (x := serial_served(s, h)) != before[n]  # type: ignore[misc]
                          and x == s.cert_on_disk(n).serial_number and x, timeout=60, interval=0.5)
        assert serial != before[name]
        code, archive = s.exec("sidecar", "ls", f"/etc/letsencrypt/archive/{name}")
        assert code == 0 and "cert2.pem" in archive.split(), archive
    assert not s.events(since, Kind.CERT_FAILED)
    s.wait_event(Kind.RELOAD, since=since, timeout=30)


def test_a_rate_limited_order_is_classified_with_the_cas_retry_time(cb: Versioned) -> None:
    s, name = cb.stack, "limited.demo.test"
    rule = proxy_rules(cb, {"resource": "newOrder", "identifier": name, "action": "ratelimit",
                            "limit": "exact_set", "retry_after": 600})[0]  # (not one for the whole account)
    retry_at = datetime.fromisoformat(rule["retry_at"])
    since = s.cursor()
    s.run_app("limited", {"acme.domains": name, "acme.port": "5678"}, "hello limited")
    failed = s.wait_event(Kind.CERT_FAILED, name, since, timeout=90)
    assert failed.details["failure"] == "rate-limited", failed
    assert "too many certificates (5) already issued for this exact set of identifiers" in failed.details["error"]
    # The CA's time, read from what certbot printed, is the next attempt.
    next_attempt = datetime.fromisoformat(failed.details["next_attempt"])
    assert retry_at - timedelta(seconds=2) <= next_attempt <= retry_at, (next_attempt, retry_at)
    row = s.status()["rows"][name]
    assert row["state"] == "wait" and not row["live"], row


def test_a_dns_update_refused_by_bind_is_classified_as_dns(cb: Versioned) -> None:
    """The rfc2136 plugin's own words for a wrong TSIG secret are what the sidecar reads here."""
    s, name = cb.stack, "refused.dns.test"
    wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy1zZWNyZXQtd3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="
    path = f"{CREDS}/rfc2136-refused.ini"
    code, out = s.exec("bind", "sh", "-c", f"umask 077; sed 's|^dns_rfc2136_secret = .*|dns_rfc2136_secret = {wrong}|'"
                                           f" {CREDS}/rfc2136.ini > {path}.tmp && mv {path}.tmp {path}")
    assert code == 0, out
    since = s.cursor()
    s.run_app("refused", {"acme.domains": name, "acme.challenge": "dns-01", "acme.dns_provider": "rfc2136:refused",
                          "acme.port": "5678"}, "hello refused")
    failed = s.wait_event(Kind.CERT_FAILED, name, since, timeout=90)
    assert failed.details["failure"] == "dns", failed
    assert "the DNS server refused the TSIG signature: wrong secret in /run/secrets/rfc2136-refused.ini?" \
        in failed.message, failed.message


def test_a_certificate_not_yet_due_is_read_as_kept(cb: Versioned) -> None:
    """The sidecar's own command line for a site that has its certificate (``--keep-until-expiring``),
    run by this certbot in the sidecar's certbot container: accepted, nothing issued, and what it
    prints is read as "kept" (the sidecar then issues nothing and reloads nothing)."""
    s = cb.stack
    config = settings_mod.load({"ACME_SERVER": "https://acmeproxy:14000/dir"})
    args = certbot_cli.arguments(config, HTTP01, ("a.demo.test", "www.a.demo.test"), Action.ISSUE)
    assert "--keep-until-expiring" in args
    before = s.cert_on_disk(HTTP01).serial_number
    code, out = runner(s).exec_run(["certbot", "--work-dir", "/tmp/kept/work", "--logs-dir", "/tmp/kept/logs", *args],
                                   environment={"REQUESTS_CA_BUNDLE": f"/etc/letsencrypt/{CA_BUNDLE_NAME}"})
    outcome = certbot_cli.classify(code, out.decode(), datetime.now(timezone.utc))
    assert outcome.ok and outcome.kept, (code, out.decode()[-2000:])
    assert s.cert_on_disk(HTTP01).serial_number == before
