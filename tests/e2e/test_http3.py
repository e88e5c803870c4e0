"""HTTP/3 (issue 18), end to end: a site labelled ``acme.http3=on`` answers a real HTTP/3 client
(aioquic) over QUIC on the published UDP port, with its Pebble certificate, and advertises it in
``Alt-Svc``; the demo's sites, without the label, advertise nothing and are refused over QUIC.
Runs on the shared demo stack (HTTP3 off by default there)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.h3 import h3_get

from .stack import Stack, wait_for


def test_labelled_site_is_served_over_http3_with_its_certificate(stack: Stack) -> None:
    app = stack.run_app("h3", {"acme.domains": "h3.demo.test", "acme.port": "5678", "acme.http3": "on"},
                        "hello over h3")
    try:
        wait_for("h3.demo.test over HTTPS", lambda: stack.https("h3.demo.test").status == 200, timeout=120)
        tcp = stack.https("h3.demo.test")
        assert tcp.headers.get("alt-svc") == f'h3=":{stack.https_port}"; ma=86400'

        # nginx reloads asynchronously: the QUIC listener is there once the new workers run.
        r = wait_for("an HTTP/3 answer", lambda: h3_get(stack.https_port, "h3.demo.test"), timeout=30)
        assert r.alpn == "h3" and r.status == 200
        assert r.body.decode().strip() == "hello over h3"
        assert r.certificate is not None
        assert r.certificate == stack.cert_on_disk("h3.demo.test") == tcp.cert
        assert r.headers.get("strict-transport-security", "").startswith("max-age=")

        # While the QUIC listener is open, a site without the label advertises nothing and its name
        # is refused over QUIC (the catch-all rejects the handshake), and so is an unknown name.
        plain = stack.https("a.demo.test")
        assert plain.status == 200 and "alt-svc" not in plain.headers
        for name in ("a.demo.test", "unknown.demo.test"):
            with pytest.raises((ConnectionError, asyncio.TimeoutError, TimeoutError)):
                h3_get(stack.https_port, name, timeout=3)
    finally:
        app.remove(force=True)
