"""Switching from nginx-proxy + acme-companion, or Traefik labels, in one step (issue 19), end to end.

One stack for the module: the local demo, the request-logging ACME proxy in front of Pebble
(``compose.acmeproxy.yml``: every order the sidecar sends is counted there) and
``compose.migration.yml`` (acme-companion's certificate volume and nginx-proxy's vhost.d, mounted
read-only into nginx and the sidecar; ``COMPAT_NGINX_PROXY``, ``COMPAT_TRAEFIK``, ``ADOPT_CERTS_DIR``).

Before the switch, the test plays acme-companion: nginx serves the challenge path, certbot gets
three certificates (RSA, as acme-companion makes them by default) from Pebble directly, not through
the proxy, and they are laid out as acme-companion lays them out (``<name>/{cert,key,chain,fullchain}.pem``,
``<host>.crt``/``.key``/``.chain.pem`` links). nginx-proxy's ``vhost.d`` gets files for one host. The
app containers carry nothing but nginx-proxy's variables. Then the sidecar starts in their place:

- every host is served with its existing certificate (same serial), and no order reaches the CA;
- a vhost.d file written later is included (the directory is watched);
- a restart orders nothing either;
- a certificate made due (the test replaces one with a certificate of its own, in its renewal window)
  is renewed by certbot into a lineage of the sidecar's own and served; the adopted files stay untouched;
- containers with Traefik router labels are served; the middleware it cannot translate is named;
- bad or conflicting values get the labels' one-line errors, and everything else keeps being served.

About a minute (one stack for the module).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sidecar.core.domains import DomainError, parse_domain_list
from sidecar.core.events import Kind

from .stack import IMAGES, Stack, dns_names, free_port, issuer_cn, new_stack, wait_for
from .test_ratelimits import ACMEPROXY_IMAGE, OVERRIDE as ACMEPROXY, Proxy, restart_sidecar

MIGRATION = Path(__file__).with_name("compose.migration.yml")
# acme-companion's certificates: directory (first host) -> the names it holds
CERTS = {"np1.demo.test": ["np1.demo.test", "www.np1.demo.test"], "np2.demo.test": ["np2.demo.test"],
         "np3.demo.test": ["np3.demo.test"]}
HOSTS = [h for names in CERTS.values() for h in names]
VHOST = {"np2.demo.test": "add_header X-Vhost-D np2 always;\n", "np2.demo.test_location": "expires 1h;\n"}
BEFORE = ("server { listen 80 default_server; "
          "location /.well-known/acme-challenge/ { root /var/www/acme; } }\n")


def acme_companion_script() -> str:
    """Shell for a certbot container: issue each certificate from Pebble and lay it out as acme-companion does."""
    lines = ["set -eu", "export REQUESTS_CA_BUNDLE=/pebble-ca/ca.pem"]
    for name, names in CERTS.items():
        live = f"/tmp/le/live/{name}"
        lines += [
            f"certbot certonly -q --webroot -w /var/www/acme --cert-name {name} "
            + " ".join(f"-d {n}" for n in names)
            + " --server https://pebble:14000/dir --config-dir /tmp/le --work-dir /tmp/work --logs-dir /tmp/logs"
            " --non-interactive --agree-tos --register-unsafely-without-email --key-type rsa --rsa-key-size 2048",
            f"mkdir -p /certs/{name}",
            f"cp -L {live}/cert.pem {live}/chain.pem {live}/fullchain.pem /certs/{name}/",
            f"cp -L {live}/privkey.pem /certs/{name}/key.pem && chmod 600 /certs/{name}/key.pem",
            f"touch /certs/{name}/.companion",
        ]
        lines += [f"ln -s ./{name}/{src} /certs/{host}{ext}" for host in names
                  for src, ext in (("fullchain.pem", ".crt"), ("key.pem", ".key"), ("chain.pem", ".chain.pem"))]
    lines += [f"printf %s '{text}' > /vhost/{name}" for name, text in VHOST.items()]
    lines.append("cp -a /certs /seed/certs")
    return "\n".join(lines)


def helper(s: Stack, script: str, seed: Path) -> str:
    """Run ``script`` in a throw-away certbot container with the stack's volumes mounted read-write."""
    p = s.project
    out: bytes = s.client.containers.run(
        IMAGES["CERTBOT_IMAGE"], [script], entrypoint=["sh", "-c"], remove=True, network=s.network,
        volumes={f"{p}_webroot": {"bind": "/var/www/acme", "mode": "rw"},
                 f"{p}_acme-certs": {"bind": "/certs", "mode": "rw"},
                 f"{p}_vhost": {"bind": "/vhost", "mode": "rw"},
                 f"{p}_pebble-ca": {"bind": "/pebble-ca", "mode": "ro"},
                 str(seed): {"bind": "/seed", "mode": "rw"}})
    return out.decode("utf-8", "replace")


def writer(s: Stack, seed: Path) -> Any:
    """A container that stays up with acme-companion's volumes writable (acme-companion, still running):
    what the tests write through it later is seen by the sidecar's file watch alone (no container starts)."""
    p = s.project
    c = s.client.containers.run(
        IMAGES["CERTBOT_IMAGE"], ["infinity"], entrypoint=["sleep"], name=f"{p}-writer", detach=True,
        network_mode="none", labels={"e2e.project": p},
        volumes={f"{p}_acme-certs": {"bind": "/certs", "mode": "rw"}, f"{p}_vhost": {"bind": "/vhost", "mode": "rw"},
                 str(seed): {"bind": "/seed", "mode": "ro"}})
    s.started.append(c.id)
    return c


def write(s: Stack, script: str) -> None:
    code, out = s.client.containers.get(f"{s.project}-writer").exec_run(["sh", "-c", script])
    assert code == 0, out


def run_app(s: Stack, name: str, env: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Any:
    """An app container as nginx-proxy users run them: configured by its environment (or Traefik labels)."""
    c = s.client.containers.run(
        IMAGES["APP_IMAGE"], ["-listen=:5678", f"-text=hello from {name}"], name=f"{s.project}-{name}",
        environment=env or {}, labels={**(labels or {}), "e2e.project": s.project}, network=s.network,
        detach=True)
    s.started.append(c.id)
    return c


def orders(proxy: Proxy) -> list[tuple[str, ...]]:
    """The identifiers of every new order that reached the CA through the proxy."""
    return [tuple(e["identifiers"]) for e in proxy.log() if e["resource"] == "newOrder"]


def served(s: Stack, host: str, serial: int | None = None, timeout: float = 60) -> Any:
    """https://host answering 200 (with the certificate ``serial``, if given)."""
    return wait_for(f"https://{host}" + (f" with serial {serial:x}" if serial else ""),
                    lambda: (r := s.https(host)).status == 200 and serial in (None, r.cert.serial_number) and r,
                    timeout=timeout, interval=0.25)


@pytest.fixture(scope="module")
def mig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Proxy, Path, dict[str, int]]]:
    s = new_stack(Path(tmp_path_factory.mktemp("e2e-migration")))
    s.extra_files += [ACMEPROXY, MIGRATION]
    proxy = Proxy(free_port())
    s.env.update({"ACMEPROXY_IMAGE": ACMEPROXY_IMAGE, "ACMEPROXY_PORT": str(proxy.port)})
    s.write_sites("sites: []\n")
    seed = s.sites_dir.parent / f"{s.project}-seed"
    seed.mkdir()
    try:
        started = time.monotonic()
        # Before: nginx, Pebble and the proxy; the test is acme-companion.
        s.compose("up", "-d", "--no-build", "nginx", "pebble", "acmeproxy")
        code, out = s.exec("nginx", "sh", "-c", f"printf %s '{BEFORE}' > /etc/nginx/conf.d/00-before.conf"
                                                " && nginx -s reload")
        assert code == 0, out
        helper(s, acme_companion_script(), seed)
        serials = {name: x509.load_pem_x509_certificate((seed / "certs" / name / "cert.pem").read_bytes())
                   .serial_number for name in CERTS}
        code, out = s.exec("nginx", "rm", "/etc/nginx/conf.d/00-before.conf")
        assert code == 0, out
        writer(s, seed)
        for name, names in CERTS.items():  # the apps as they ran behind nginx-proxy
            env = {"VIRTUAL_HOST": ",".join(names), "VIRTUAL_PORT": "5678"}
            env["ACME_HOST" if name == "np2.demo.test" else "LETSENCRYPT_HOST"] = ",".join(names)
            run_app(s, name.split(".")[0], env)
        # The switch.
        switched = time.monotonic()
        s.compose("up", "-d", "--no-build", "sidecar")
        s.fetch_root()
        for name, names in CERTS.items():
            for host in names:
                served(s, host, serials[name], timeout=60)
        # (nginx serves them before the first pass has planned: its plan is in /status once done)
        wait_for("the first pass's plan", lambda: len(s.status()["rows"]) == len(CERTS), timeout=30, interval=0.2)
        s.record("migration_seed_seconds", round(switched - started, 2))
        s.record("migration_switch_to_served_seconds", round(time.monotonic() - switched, 2))
        yield s, proxy, seed, serials
    except BaseException:
        print("---- sidecar logs ----\n" + s.logs()[-8000:])
        raise
    finally:
        try:
            s.record("migration_acme_orders", orders(proxy))
        except Exception as exc:  # noqa: BLE001 - best effort, never hide the real error
            print(f"could not read the proxy's log: {exc}")
        s.down()
        s.client.close()


def test_the_switch_serves_every_host_with_its_existing_certificate_and_orders_nothing(mig: Any) -> None:
    s, proxy, seed, serials = mig
    for name, names in CERTS.items():
        for host in names:
            r = s.https(host)
            assert (r.status, r.body.strip(), r.cert.serial_number) == (200, f"hello from {name.split('.')[0]}",
                                                                        serials[name])
            assert isinstance(r.cert.public_key(), rsa.RSAPublicKey)  # acme-companion's key type, not re-keyed
            assert r.headers["strict-transport-security"] == "max-age=63072000"
    rows = s.status()["rows"]
    for name, names in CERTS.items():
        row = rows[name]
        assert (row["state"], row["names"], row["source"]) == ("ok", names, f"container {s.project}-{name[:3]}")
        assert row["why"].endswith(f"(adopted from /etc/nginx/certs/{name})"), row
    # nginx-proxy's vhost.d: the host's file in its server, its _location file in location /
    r = s.https("np2.demo.test")
    assert (r.headers.get("x-vhost-d"), r.headers.get("cache-control")) == ("np2", "max-age=3600")
    # Nothing was asked of the CA: no certbot run, no order at the CA.
    assert s.events(kind=Kind.CERT_REQUESTED) == []
    s.no_event(Kind.CERT_REQUESTED, deadline=1.0)
    assert orders(proxy) == []
    assert s.status()["problems"] == []


def test_a_vhost_d_file_written_later_is_included(mig: Any) -> None:
    s, proxy, _, serials = mig
    since = s.cursor()
    write(s, "printf %s 'add_header X-Vhost-D np1 always;' > /vhost/.np1 && mv /vhost/.np1 /vhost/np1.demo.test")
    s.wait_event(Kind.RELOAD, since=since, timeout=20)
    r = wait_for("np1's vhost.d file served", lambda: (x := s.https("www.np1.demo.test")).headers.get("x-vhost-d")
                 == "np1" and x, timeout=10, interval=0.2)
    assert r.cert.serial_number == serials["np1.demo.test"] and orders(proxy) == []


def test_a_restart_orders_nothing(mig: Any) -> None:
    s, proxy, _, serials = mig
    took = restart_sidecar(s)
    since = s.cursor()
    rows = wait_for("the restarted sidecar's first plan", lambda: (r := s.status()["rows"]) and len(r) == 3 and r,
                    timeout=30, interval=0.2)
    assert {name: row["state"] for name, row in rows.items()} == {name: "ok" for name in CERTS}
    s.no_event(Kind.CERT_REQUESTED, since=since, deadline=1.0)
    assert orders(proxy) == []
    for name, names in CERTS.items():
        assert all(s.https(h).cert.serial_number == serials[name] for h in names)
    s.record("migration_restart_seconds", round(took, 2))


def due_certificate(key_pem: bytes, names: list[str]) -> bytes:
    """A certificate for the adopted key, from a CA of the test's own, 80 days into 90: in its renewal window."""
    key = serialization.load_pem_private_key(key_pem, None)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "migration test CA")])
    now = datetime.now(timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=100))
          .not_valid_after(now + timedelta(days=100))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=80))
            .not_valid_after(now + timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_made_due_is_renewed_by_certbot_and_served(mig: Any) -> None:
    s, proxy, seed, serials = mig
    name = "np3.demo.test"
    chain = due_certificate((seed / "certs" / name / "key.pem").read_bytes(), CERTS[name])
    (seed / "due.pem").write_bytes(chain)
    since = s.cursor()
    # As acme-companion would write it: a new file renamed over the old one (the key stays).
    write(s, f"cp /seed/due.pem /certs/{name}/.fullchain.new && mv -f /certs/{name}/.fullchain.new "
             f"/certs/{name}/fullchain.pem")
    renewed = s.wait_event(Kind.CERT_RENEWED, name, since, timeout=60)
    assert renewed.details["action"] == "renew"
    mine = s.cert_on_disk(name)  # the sidecar's own lineage, /etc/letsencrypt/live/np3.demo.test
    r = served(s, name, mine.serial_number, timeout=30)
    assert issuer_cn(r.cert).startswith("Pebble") and dns_names(r.cert) == {name}
    assert isinstance(r.cert.public_key(), ec.EllipticCurvePublicKey)  # the sidecar's key type from now on
    requested = s.events(since, Kind.CERT_REQUESTED)
    assert [(e.site, e.details["action"]) for e in requested] == [(name, "renew")]
    assert "due since" in requested[0].message
    assert orders(proxy) == [(name,)]  # exactly one order, for the due certificate
    # /status is written at the loop's next step after the reload that served it (a quarter second later)
    row = wait_for(f"{name} ok in /status", lambda: (x := s.status()["rows"][name])["state"] == "ok" and x, timeout=10)
    assert "adopted" not in row["why"]
    # The adopted files were never touched: what the test wrote is still there, byte for byte.
    code, out = s.exec("sidecar", "sha256sum", f"/etc/nginx/certs/{name}/fullchain.pem",
                       f"/etc/nginx/certs/{name}/key.pem")
    assert code == 0, out
    assert out.split()[0::2] == [hashlib.sha256(chain).hexdigest(),
                                 hashlib.sha256((seed / "certs" / name / "key.pem").read_bytes()).hexdigest()]
    for other in ("np1.demo.test", "np2.demo.test"):  # the others still serve theirs
        assert s.https(other).cert.serial_number == serials[other]


def test_traefik_labels_are_served_and_an_untranslated_middleware_is_named(mig: Any) -> None:
    s, proxy, _, _ = mig
    since = s.cursor()
    router = "traefik.http.routers"
    run_app(s, "tr", labels={
        "traefik.enable": "true",
        f"{router}.web.rule": "Host(`tr.demo.test`) || Host(`www.tr.demo.test`)",
        f"{router}.web.entrypoints": "websecure",
        f"{router}.web.tls.certresolver": "letsencrypt",
        f"{router}.web.middlewares": "auth,to-https",
        "traefik.http.middlewares.auth.basicauth.users": "admin:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
        "traefik.http.middlewares.to-https.redirectscheme.scheme": "https",
        "traefik.http.services.web.loadbalancer.server.port": "5678",
    })
    run_app(s, "tr2", labels={f"{router}.v2.rule": "Host(`tr2.demo.test`, `www.tr2.demo.test`)",
                              "traefik.http.services.v2.loadbalancer.server.port": "5678"})
    for host, text in (("tr.demo.test", "tr"), ("www.tr.demo.test", "tr"), ("tr2.demo.test", "tr2"),
                       ("www.tr2.demo.test", "tr2")):
        r = served(s, host, timeout=60)
        assert r.body.strip() == f"hello from {text}" and dns_names(r.cert) == {host.removeprefix("www."),
                                                                               "www." + host.removeprefix("www.")}
    warning = (f"container {s.project}-tr: Traefik labels not translated: middleware auth (basicauth) "
               "of router web")
    s.wait_event(Kind.INPUT_PROBLEM, since=since, timeout=10, where=lambda e: e.message == warning)
    assert warning in s.status()["problems"]
    assert "$apr1" not in json.dumps(s.status()["problems"])  # label values are never repeated
    assert [p for p in s.status()["problems"] if "-tr2" in p] == []
    assert sorted(o for o in orders(proxy) if o[0].startswith("tr")) == [
        ("tr.demo.test", "www.tr.demo.test"), ("tr2.demo.test", "www.tr2.demo.test")]


def test_bad_and_conflicting_values_get_the_labels_one_line_errors(mig: Any) -> None:
    s, _, _, serials = mig
    p = s.project
    since = s.cursor()
    regex = r"~^app\..*\.demo\.test$"
    run_app(s, "regex", {"VIRTUAL_HOST": regex, "VIRTUAL_PORT": "5678"})
    run_app(s, "path", {"VIRTUAL_HOST": "path.demo.test", "VIRTUAL_PATH": "/api", "VIRTUAL_PORT": "5678"})
    legacy = {"com.docker.compose.project": "legacy"}
    run_app(s, "dup-a", {"VIRTUAL_HOST": "dup.demo.test", "VIRTUAL_PORT": "5678"},
            {**legacy, "com.docker.compose.service": "dup-a"})
    s.wait_event(Kind.SITE_ADDED, "dup.demo.test", since, timeout=20)
    run_app(s, "dup-b", {"VIRTUAL_HOST": "dup.demo.test", "VIRTUAL_PORT": "5678"},
            {**legacy, "com.docker.compose.service": "dup-b"})
    try:
        parse_domain_list(regex, wildcard=True)
        raise AssertionError("the regex was accepted as a host name")
    except DomainError as exc:
        as_label = str(exc)
    expected = [
        f"container {p}-regex env VIRTUAL_HOST: {as_label}",
        f"container {p}-path env VIRTUAL_PATH: '/api': only / is served (one container answers for the whole "
        "host); give this path its own host name",
        f"container {p}-dup-b: domain dup.demo.test belongs to container {p}-dup-a (Compose service legacy/dup-a); "
        "refused (set the same acme.group label on both to share it)",
    ]
    for line in expected:
        s.wait_event(Kind.INPUT_PROBLEM, since=since, timeout=20, where=lambda e, line=line: e.message == line)
    conflict = s.wait_event(Kind.DOMAIN_CONFLICT, "dup.demo.test", since, timeout=5)
    assert conflict.message == expected[2]
    problems = s.status()["problems"]
    assert all(line in problems for line in expected) and not any("\n" in x for x in problems)
    # The first owner is served, and so is everything else.
    assert served(s, "dup.demo.test").body.strip() == "hello from dup-a"
    assert s.https("np1.demo.test").cert.serial_number == serials["np1.demo.test"]
    assert "path.demo.test" not in s.status()["rows"]
    # `check` reads the containers the same way, and says the same.
    code, raw = s.container("sidecar").exec_run(["python3", "-m", "sidecar", "check", "--json"], stderr=False)
    doc = json.loads(raw)
    assert code == 1 and not doc["ok"] and all(line in doc["problems"] for line in expected)
    assert {"np1.demo.test", "tr.demo.test", "dup.demo.test"} <= {x["site"] for x in doc["sites"]}
