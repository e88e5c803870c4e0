"""Probes of what nginx serves: a plain HTTP GET (the challenge pre-flight) and the certificate
presented for a name over TLS (the check after a reload)."""

from __future__ import annotations

import http.client
import socket
import ssl

from cryptography import x509


def http_get(addr: tuple[str, int], host: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, first 4 KiB of the body); (0, "") when nginx does not answer."""
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "nginx-acme-sidecar-preflight"})
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        conn.close()


def served_serial(host: str, sni: str, timeout: float = 2.0, port: int = 443) -> int | None:
    """Serial of the certificate nginx presents for ``sni`` (no verification: we compare serials)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None
