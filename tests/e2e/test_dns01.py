"""DNS-01 and wildcard certificates (issue 15), end to end and offline.

One stack for the whole module: the local demo with its DNS-01 variant
(examples/local-demo/compose.dns01.yml): BIND 9 from Debian is authoritative for dns.test
(updated by certbot's rfc2136 plugin with a TSIG key) and demo.test (every name -> nginx),
and Pebble resolves every name through it. The bind container writes certbot's credentials
file into a volume that the sidecar mounts read-only and passes on to its certbot container.

Sites (HTTP-01 and DNS-01 side by side):
    a.demo.test, www.a.demo.test   label, HTTP-01 (the demo's app-a)
    dns.test, *.dns.test           label, DNS-01, apex + wildcard (the demo's app-wild)
    *.wild.dns.test                label, DNS-01, wildcard alone, provider named on the site
    *.files.dns.test               sites file, DNS-01
    intranet.dns.test              label, DNS-01; no address record anywhere: HTTP-01 could not work

Certificates live LIFETIME seconds, so every lineage renews during the module (at half of it;
renewals run one at a time, so five lineages need a lifetime of this order on a busy machine).
The failure cases use credentials files of their own (``acme.dns_provider=rfc2136:SET`` reads
``rfc2136-SET.ini``), so they break nothing else while the others keep renewing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509

from sidecar.core.events import Kind

from .stack import DEMO, Stack, dns_names, new_stack, wait_for

LIFETIME = 90
BIND_IMAGE = os.environ.get("E2E_BIND_IMAGE") or "local/bind:test"
RECEIVER_IMAGE = os.environ.get("E2E_RECEIVER_IMAGE") or "local/receiver:test"
CREDS = "/dns-credentials"  # in the bind container (rw); the sidecar has the volume at /run/secrets (ro)
SITES = """sites:
  - domains: ["*.files.dns.test"]
    upstream: http://app-a:5678
    challenge: dns-01
"""
SERVED = {  # SNI -> what answers
    "a.demo.test": "hello from app-a",
    "dns.test": "hello from app-wild",
    "www.dns.test": "hello from app-wild",
    "anything.dns.test": "hello from app-wild",
    "x.wild.dns.test": "hello from wild",
    "y.wild.dns.test": "hello from wild",
    "docs.files.dns.test": "hello from app-a",
    "intranet.dns.test": "hello from intranet",
}
WILD = "wildcard.wild.dns.test"  # the lineage of *.wild.dns.test


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(Path(tmp_path_factory.mktemp("dns01")))
    missing = [i for i in (BIND_IMAGE, RECEIVER_IMAGE) if not s.client.images.list(name=i)]
    if missing:
        raise RuntimeError(f"images missing: {', '.join(missing)}: run bash tests/build-images.sh bind receiver")
    s.extra_files.append(DEMO / "compose.dns01.yml")
    receiver = f"{s.project}-receiver"
    s.env.update(BIND_IMAGE=BIND_IMAGE, PEBBLE_CERT_VALIDITY=str(LIFETIME), RELOAD_INTERVAL="1",
                 ALERT_URLS=f"json://{receiver}:8000/hooks/acme")
    s.write_sites(SITES)
    started = time.monotonic()
    try:
        s.compose("up", "-d", "--no-build", "nginx")
        c = s.client.containers.run(RECEIVER_IMAGE, name=receiver, network=s.network, detach=True,
                                    labels={"e2e.project": s.project})
        s.started.append(c.id)
        s.compose("up", "-d", "--no-build", "--scale", "app-b=0")
        s.fetch_root()
        s.run_app("wild", {"acme.domains": "*.wild.dns.test", "acme.challenge": "dns-01",
                           "acme.dns_provider": "rfc2136", "acme.port": "5678"}, "hello from wild")
        s.run_app("intranet", {"acme.domains": "intranet.dns.test", "acme.challenge": "dns-01",
                               "acme.port": "5678"}, "hello from intranet")
        # By what answers, not by a 200: intranet.dns.test is answered by the *.dns.test site (app-wild)
        # until its own certificate is live.
        for host, text in SERVED.items():
            wait_for(f"https://{host} from its own site", lambda h=host, t=text: (r := s.https(h)).status == 200
                     and r.body.strip() == t, timeout=90)  # type: ignore[misc]
        s.record("dns01_stack_up_to_eight_names_https_seconds", round(time.monotonic() - started, 2))
        yield s
    except BaseException:
        print(f"---- sidecar logs ({s.project}) ----\n" + s.logs()[-8000:])
        raise
    finally:
        s.down()


# -- helpers ---------------------------------------------------------------------------------
def bind_sh(s: Stack, script: str) -> str:
    code, out = s.exec("bind", "sh", "-c", script)
    assert code == 0, out
    return out


def add_credentials(s: Stack, cred_set: str, secret: str | None = None, mode: str = "600") -> str:
    """``rfc2136-<set>.ini``: a copy of the demo's credentials, with another secret if given."""
    path = f"{CREDS}/rfc2136-{cred_set}.ini"
    edit = f"s|^dns_rfc2136_secret = .*|dns_rfc2136_secret = {secret}|" if secret else ""
    bind_sh(s, f"umask 077; sed '{edit}' {CREDS}/rfc2136.ini > {path}.tmp && chmod {mode} {path}.tmp "
               f"&& mv {path}.tmp {path}")
    return f"/run/secrets/rfc2136-{cred_set}.ini"


def secrets_in_use(s: Stack) -> set[str]:
    """Every TSIG secret of the credentials files (and the key name), as the test reads them."""
    text = bind_sh(s, f"cat {CREDS}/*.ini")
    values = set(re.findall(r"^dns_rfc2136_(?:secret|name)\s*=\s*(\S+)", text, re.M))
    assert any(len(v) > 40 for v in values), values
    return values


def metrics(s: Stack) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", int(s.env["STATUS_PORT_HOST"]), timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def sidecar_file(s: Stack, path: str) -> str:
    code, out = s.exec("sidecar", "sh", "-c", f"cat {path}")
    assert code == 0, out
    return out


def received_hooks(s: Stack) -> list[dict[str, Any]]:
    code, out = s.client.containers.get(f"{s.project}-receiver").exec_run(
        ["python3", "/usr/local/bin/receiver.py", "dump"])
    assert code == 0, out
    return list(json.loads(out)["webhook"])


def datetime_of(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


# -- the tests ---------------------------------------------------------------------------------
def test_wildcard_and_apex_sites_are_served_for_any_subdomain_with_sni(dns: Stack) -> None:
    s = dns
    for host, text in SERVED.items():
        r = s.https(host)
        assert (r.status, r.body.strip()) == (200, text), host
    assert dns_names(s.https("anything.dns.test").cert) == {"dns.test", "*.dns.test"}
    assert dns_names(s.https("x.wild.dns.test").cert) == {"*.wild.dns.test"}
    assert dns_names(s.https("docs.files.dns.test").cert) == {"*.files.dns.test"}
    # An exact name of another site wins over the wildcard (its own certificate and app).
    assert dns_names(s.https("intranet.dns.test").cert) == {"intranet.dns.test"}
    # A wildcard covers one label; a deeper name, or one nobody declared, is refused in the handshake.
    for undeclared in ("a.b.dns.test", "x.y.wild.dns.test", "nobody.demo.test"):
        with pytest.raises(ssl.SSLError):
            s.https(undeclared)
    # Lineages are named after the first domain, a wildcard's as wildcard.<rest>.
    code, live = s.exec("sidecar", "ls", "/etc/letsencrypt/live")
    assert code == 0 and {"dns.test", WILD, "wildcard.files.dns.test", "intranet.dns.test"} <= set(live.split())
    rows = s.status()["rows"]
    assert {rows[n]["state"] for n in ("a.demo.test", "dns.test", WILD, "wildcard.files.dns.test",
                                       "intranet.dns.test")} <= {"ok", "renew"}, rows


def test_http01_and_dns01_sites_side_by_side(dns: Stack) -> None:
    """certbot recorded which way each lineage was validated (and renews it the same way)."""
    s = dns
    for name, authenticator in (("a.demo.test", "webroot"), ("dns.test", "dns-rfc2136"), (WILD, "dns-rfc2136"),
                                ("wildcard.files.dns.test", "dns-rfc2136"), ("intranet.dns.test", "dns-rfc2136")):
        conf = sidecar_file(s, f"/etc/letsencrypt/renewal/{name}.conf")
        assert re.search(rf"^authenticator = {authenticator}$", conf, re.M), (name, conf)
    conf = sidecar_file(s, f"/etc/letsencrypt/renewal/{WILD}.conf")
    assert "dns_rfc2136_credentials = /run/secrets/rfc2136.ini" in conf
    assert "dns_rfc2136_propagation_seconds = 1" in conf


def test_a_dns01_site_whose_name_does_not_resolve_at_all(dns: Stack) -> None:
    s = dns
    # Pebble resolves through this BIND: the name has no address, so no HTTP-01 could have worked.
    assert bind_sh(s, "dig +short @127.0.0.1 intranet.dns.test A; dig +short @127.0.0.1 intranet.dns.test AAAA") \
        .strip() == ""
    assert bind_sh(s, "dig +short @127.0.0.1 a.demo.test A").strip()  # (while HTTP-01 names do resolve)
    issued = s.events(kind=Kind.CERT_ISSUED, site="intranet.dns.test")
    assert issued, "intranet.dns.test was never issued"
    assert s.https("intranet.dns.test").body.strip() == "hello from intranet"


def test_a_wrong_tsig_key_is_a_dns_failure_backed_off_and_nothing_else_breaks(dns: Stack) -> None:
    s = dns
    wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy1zZWNyZXQtd3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="
    path = add_credentials(s, "broken", secret=wrong)
    since = s.cursor()
    s.run_app("broken", {"acme.domains": "broken.dns.test", "acme.challenge": "dns-01",
                         "acme.dns_provider": "rfc2136:broken", "acme.port": "5678"}, "broken")
    failed = s.wait_event(Kind.CERT_FAILED, "broken.dns.test", since, timeout=60)
    assert failed.details["failure"] == "dns", failed
    assert "DNS-01 via rfc2136:broken" in failed.message and path in failed.message, failed.message
    assert failed.details["failures"] == 1
    wait = (datetime_of(failed.details["next_attempt"]) - failed.at).total_seconds()
    assert 55 <= wait <= 65, wait  # BACKOFF_SCHEDULE's first step: 1 minute
    # Backed off: not asked again meanwhile, and counted like any failure.
    s.no_event(Kind.CERT_REQUESTED, "broken.dns.test", s.cursor(), deadline=2.0)
    row = s.status()["rows"]["broken.dns.test"]
    assert row["state"] == "wait" and not row["live"], row
    counted = [ln for ln in metrics(s).splitlines() if ln.startswith("nginx_acme_certificate_failures_total{")
               and 'site="broken.dns.test"' in ln and 'kind="dns"' in ln]
    assert counted and counted[0].endswith(" 1.0"), counted
    # Everything else is still served (and kept renewing meanwhile).
    for host, text in SERVED.items():
        assert s.https(host).body.strip() == text, host
    assert not [e for e in s.events(since, Kind.CERT_FAILED) if e.site != "broken.dns.test"]


def test_a_credentials_file_others_can_read_is_refused_with_a_clear_error(dns: Stack) -> None:
    s = dns
    path = add_credentials(s, "open", mode="644")
    since = s.cursor()
    s.run_app("open", {"acme.domains": "open.dns.test", "acme.challenge": "dns-01",
                       "acme.dns_provider": "rfc2136:open", "acme.port": "5678"}, "hello from open")
    failed = s.wait_event(Kind.CERT_FAILED, "open.dns.test", since, timeout=30)
    assert failed.details["failure"] == "preflight", failed
    assert f"credentials file {path} is not private (mode 0644" in failed.message, failed.message
    # The CA was not asked: no certbot run for the site at all.
    code, _ = s.exec("sidecar", "ls", "/var/lib/nginx-acme-sidecar/certbot-logs/open.dns.test")
    assert code != 0
    # Made private, and retried by the operator: issued and served.
    bind_sh(s, f"chmod 600 {CREDS}/rfc2136-open.ini")
    code, out = s.exec("sidecar", "python3", "-m", "sidecar", "renew", "open.dns.test")
    assert code == 0, out
    s.wait_event(Kind.CERT_ISSUED, "open.dns.test", since, timeout=60)
    wait_for("https://open.dns.test", lambda: s.https("open.dns.test").body.strip() == "hello from open", timeout=30)


def test_a_dns01_certificate_is_renewed_on_time_and_served(dns: Stack) -> None:
    """The apex + wildcard lineage (the first DNS-01 one in the renewal queue: renewals run one by one)."""
    s, name = dns, "dns.test"
    first = s.events(kind=Kind.CERT_ISSUED, site=name)[0]
    renewed = s.wait_event(Kind.CERT_RENEWED, name, timeout=LIFETIME)
    assert renewed.details["action"] == "renew" and renewed.at > first.at
    code, archive = s.exec("sidecar", "ls", f"/etc/letsencrypt/archive/{name}")
    assert code == 0 and "cert2.pem" in archive.split(), archive
    code, pem = s.exec("sidecar", "cat", f"/etc/letsencrypt/archive/{name}/cert1.pem")
    assert code == 0, pem
    original = x509.load_pem_x509_certificate(pem.encode()).serial_number
    # The renewed certificate (the newest on disk) is what nginx serves for any name under the wildcard.
    cert = wait_for("the renewed wildcard certificate being served",
                    lambda: (c := s.https("anything.dns.test").cert).serial_number == s.cert_on_disk(name).serial_number
                    and c, timeout=20, interval=0.5)
    assert cert.serial_number != original and dns_names(cert) == {"dns.test", "*.dns.test"}
    # The renewal went through the DNS plugin again (certbot's own output of that run).
    exit_code, output = s.certbot_runs(name)[-1]
    assert exit_code == 0 and "DNS changes to propagate" in output, output[-2000:]


def test_credential_values_never_appear_anywhere(dns: Stack) -> None:
    """After issuing, renewing and failing with them: not in the log, /status, /plan, /events, the
    metrics, the status file, the ledger, the kept certbot output, nor the alerts."""
    s = dns
    secrets = secrets_in_use(s)
    code, kept = s.exec("sidecar", "sh", "-c", "cat /var/lib/nginx-acme-sidecar/certbot-logs/*/*.log")
    assert code == 0 and "DNS changes to propagate" in kept  # (certbot's DNS-01 runs are in there)
    hooks = received_hooks(s)
    assert any("broken.dns.test" in json.dumps(h) for h in hooks), "no alert about the failed site"
    surfaces = {
        "log": s.logs(),
        "/status": json.dumps(s.api("/status")),
        "/plan": json.dumps(s.api("/plan")),
        "/events": json.dumps(s.api("/events?since=0")),
        "/metrics": metrics(s),
        "status file": sidecar_file(s, "/var/lib/nginx-acme-sidecar/status.json"),
        "ledger": sidecar_file(s, "/var/lib/nginx-acme-sidecar/ledger.json"),
        "certbot output": kept,
        "alerts": json.dumps(hooks),
    }
    leaks = [(where, secret[:6] + "...") for where, text in surfaces.items() for secret in secrets if secret in text]
    assert not leaks, leaks
