"""A real HTTP/3 client for the tests (aioquic from PyPI): one GET over QUIC, with the certificate
the server presented."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent
from cryptography import x509


@dataclass(frozen=True)
class H3Response:
    status: int
    headers: dict[str, str]
    body: bytes
    alpn: str | None  # the protocol QUIC's TLS handshake agreed ("h3")
    certificate: x509.Certificate | None


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done: asyncio.Future[None] | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self.h3.handle_event(event):
            self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            self.headers += ev.headers
        elif isinstance(ev, DataReceived):
            self.body += ev.data
        if getattr(ev, "stream_ended", False) and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def get(self, authority: str, path: str) -> None:
        stream = self._quic.get_next_available_stream_id()
        self.h3.send_headers(stream, [
            (b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"user-agent", b"sidecar-tests-h3"),
        ], end_stream=True)
        self.done = asyncio.get_running_loop().create_future()
        self.transmit()
        await self.done


async def _get(port: int, sni: str, path: str, timeout: float, host: str) -> H3Response:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=sni, verify_mode=ssl.CERT_NONE,
                               idle_timeout=timeout)
    async with connect(host, port, configuration=config, create_protocol=_Client, wait_connected=True) as client:
        assert isinstance(client, _Client)
        await asyncio.wait_for(client.get(sni, path), timeout)
        tls = client._quic.tls
        alpn = tls.alpn_negotiated
        cert = getattr(tls, "_peer_certificate", None)
    headers = {k.decode(): v.decode() for k, v in client.headers if not k.startswith(b":")}
    status = int(dict(client.headers)[b":status"])
    return H3Response(status, headers, client.body, alpn, cert)


def h3_get(port: int, sni: str, path: str = "/", timeout: float = 5.0, host: str = "127.0.0.1") -> H3Response:
    """GET ``https://<sni><path>`` over HTTP/3 from ``host:port`` (UDP). Raises on a refused handshake
    or a timeout (``ConnectionError``, ``asyncio.TimeoutError``)."""
    return asyncio.run(asyncio.wait_for(_get(port, sni, path, timeout, host), timeout + 1))
