"""Certificates for services that are not behind nginx (issue 18), end to end.

Real TLS servers that are not nginx (Debian's stunnel4, tests/images/tlsserver) carry
``acme.consumer=mail.demo.test`` and mount the certificate volume read-only; the sidecar gets that
certificate from Pebble (HTTP-01 through nginx's catch-all port-80 server, no vhost) and tells
each server after the issue and after a forced renewal, its own way: a restart (the default),
SIGHUP, an exec'd command. A consumer whose command fails is reported (event, metric) and holds
nothing up. What the servers present over TLS is the proof, not the sidecar's word.

The sidecar talks to Docker only through the filtering socket proxy that allows exactly the
README's endpoint table, so the table is shown to cover the hooks.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest
from cryptography import x509

from sidecar.core.events import Kind

from .stack import Stack, free_port, wait_for
from .test_faults import DEMO_SITES, proxy_override, readme_endpoints, serving, start_stack

TLS_IMAGE = "local/tlsserver:test"
NAME = "mail.demo.test"
# container (suffix) -> acme.consumer.signal ("" for the default: restart), and how events name it
HOW = {"restarted": "", "hupped": "SIGHUP", "execd": "exec:sh -c 'kill -HUP 1'"}
SHOWN = {"restarted": "restart", "hupped": "SIGHUP", "execd": "exec sh"}


@pytest.fixture(scope="module")
def cs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not docker.from_env().images.list(name=TLS_IMAGE):
        raise RuntimeError(f"image missing: {TLS_IMAGE}: run bash tests/build-images.sh tlsserver")
    s = start_stack(Path(tmp_path_factory.mktemp("consumers")), override=proxy_override(readme_endpoints()))
    try:
        yield s
    finally:
        s.down()


def consumer(s: Stack, name: str, signal: str = "", cert: str = NAME) -> tuple[Any, int]:
    """A stunnel container using ``cert`` from the sidecar's volume; its TLS port on 127.0.0.1."""
    port = free_port()
    labels = {"acme.consumer": cert, "e2e.project": s.project, **({"acme.consumer.signal": signal} if signal else {})}
    c = s.client.containers.run(TLS_IMAGE, name=f"{s.project}-{name}", environment={"CERT_NAME": cert},
                                labels=labels, network=s.network, detach=True, ports={"4443/tcp": ("127.0.0.1", port)},
                                volumes={f"{s.project}_certs": {"bind": "/etc/letsencrypt", "mode": "ro"}})
    s.started.append(c.id)
    return c, port


def presented(s: Stack, port: int) -> tuple[int, str]:
    """(serial of the certificate the server presents for NAME, verified against Pebble's root; what it says)."""
    ctx = ssl.create_default_context(cadata=s.root_pem)
    with socket.create_connection(("127.0.0.1", port), 3) as raw, ctx.wrap_socket(raw, server_hostname=NAME) as tls:
        der = tls.getpeercert(binary_form=True)
        said = tls.recv(100).decode()
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number, said


def serves(s: Stack, port: int, serial: int) -> bool:
    try:
        return presented(s, port) == (serial, "hello from stunnel\n")
    except (OSError, ssl.SSLError):
        return False  # (restarting, or not listening yet)


def told(s: Stack, container: str, since: int, kind: str = Kind.CONSUMER_SIGNALLED) -> Any:
    return s.wait_event(kind, NAME, since, timeout=60, where=lambda e: e.details.get("container") == container)


def test_consumers_get_the_certificate_without_a_vhost_and_serve_each_renewal_after_their_hook(cs: Stack) -> None:
    since = cs.cursor()
    ports = {name: consumer(cs, name, how)[1] for name, how in HOW.items()}
    consumer(cs, "broken", "exec:false")
    cs.wait_event(Kind.CERT_ISSUED, NAME, since, timeout=90)
    for name in HOW:
        assert told(cs, f"{cs.project}-{name}", since).details["signal"] == SHOWN[name]
    failed = told(cs, f"{cs.project}-broken", since, Kind.CONSUMER_FAILED)
    assert failed.details["error"] == "exec false exited 1: no output" and failed.details["next_attempt"]
    first = cs.cert_on_disk(NAME).serial_number
    for name, port in ports.items():
        wait_for(f"{name} presenting the issued certificate", lambda p=port: serves(cs, p, first), timeout=30)

    # A site without a vhost: the status says so, and nginx does not answer for the name.
    row = cs.status()["rows"][NAME]
    assert (row["state"], row["live"]) == ("ok", False)
    assert row["source"] in {f"consumer container {cs.project}-{n}" for n in [*HOW, "broken"]}  # (the oldest)
    with pytest.raises(ssl.SSLError):
        cs.https(NAME)

    since = cs.cursor()
    code, out = cs.exec("sidecar", "python3", "-m", "sidecar", "renew", NAME, "--force")
    assert code == 0, out
    cs.wait_event(Kind.CERT_RENEWED, NAME, since, timeout=60)
    renewed = cs.cert_on_disk(NAME).serial_number
    assert renewed != first
    for name, port in ports.items():
        told(cs, f"{cs.project}-{name}", since)
        wait_for(f"{name} presenting the renewed certificate", lambda p=port: serves(cs, p, renewed), timeout=30)

    # The broken hook is counted and blocked nothing: every other site is served as before.
    failures = cs.metrics()[("nginx_acme_consumer_hook_failures_total",
                             (("container", f"{cs.project}-broken"), ("site", NAME)))]
    assert failures >= 1
    assert all(serving(cs, host) for host in DEMO_SITES)
    # Only what README.md's Docker API table allows was asked for, restart and kill among it.
    proxy_log = cs.container("dockerproxy").logs().decode("utf-8", "replace").splitlines()
    assert [ln for ln in proxy_log if ln.startswith("DENY")] == []
    for endpoint in ("restart", "kill", "exec"):
        assert any(ln.startswith("ALLOW POST /containers/") and ln.endswith(f"/{endpoint}") for ln in proxy_log)


def test_a_bad_consumer_label_is_one_problem_naming_container_and_label(cs: Stack) -> None:
    since = cs.cursor()
    consumer(cs, "typo", "SIGFOO", cert="typo.demo.test")
    event = cs.wait_event(Kind.INPUT_PROBLEM, "", since, timeout=30,
                          where=lambda e: e.details.get("source", "").startswith(f"container {cs.project}-typo"))
    assert event.details["source"] == f"container {cs.project}-typo label acme.consumer.signal"
    assert "'SIGFOO' is not restart, none, exec:<command> or a signal" in event.details["error"]
    assert "typo.demo.test" not in cs.status()["rows"]
