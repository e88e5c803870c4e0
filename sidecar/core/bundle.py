"""The bundle: what the issuer sends every node's agent (Docker Swarm), and how it is sealed.

    issuer: files of CERTS_DIR (lineages, account, ledger) + sidecar-* files of NGINX_CONF_DIR
            -> Bundle(version, digest, files, sites) -> JSON -> zlib -> AES-256-GCM -> agent (HTTP PUT)
    agent:  open (refused unless sealed with the shared key) -> write -> nginx -t -> reload -> verify
            -> Report (sealed the same way) in the answer

The key is derived (HKDF-SHA256) from a shared secret (a Swarm secret file), so a peer without it
can neither read a bundle (private keys travel in it) nor forge one or a report; ``purpose`` is
bound into each message, so a report cannot be replayed as a bundle. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"NAS1"
BUNDLE, REPORT = b"bundle", b"report"
MAX_SIZE = 64 * 1024 * 1024


class Refused(Exception):
    """A message that is not sealed with our key (or not a message at all)."""


@dataclass(frozen=True)
class File:
    area: str            # "certs" (under CERTS_DIR) or "conf" (under NGINX_CONF_DIR)
    path: str            # relative, "/"-separated, no ".."
    data: bytes = b""
    mode: int = 0o644
    link: str | None = None  # a symbolic link's target (certbot's live/ files)


@dataclass(frozen=True)
class Bundle:
    version: int                     # grows with each new content (milliseconds since the epoch)
    digest: str                      # of the files only: equal digests, equal content
    issuer_node: str                 # the Swarm node the issuer runs on (its agent writes nothing)
    files: tuple[File, ...] = ()
    sites: tuple[tuple[str, str], ...] = ()  # (site name = lineage, a domain to check with SNI)


@dataclass(frozen=True)
class Report:
    node: str
    hostname: str
    version: int
    digest: str
    state: str        # applied | rejected | failed | refused
    detail: str = ""
    verified: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def files_digest(files: tuple[File, ...]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: (f.area, f.path)):
        h.update(f"{f.area}\0{f.path}\0{f.mode}\0{f.link or ''}\0".encode())
        h.update(hashlib.sha256(f.data).digest())
    return h.hexdigest()


def safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def derive_key(secret: bytes) -> bytes:
    if len(secret.strip()) < 16:
        raise ValueError("the shared secret must be at least 16 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"nginx-acme-sidecar bundle v1").derive(secret.strip())


def seal(key: bytes, purpose: bytes, doc: dict[str, Any]) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, zlib.compress(json.dumps(doc).encode()), purpose)


def unseal(key: bytes, purpose: bytes, blob: bytes) -> dict[str, Any]:
    if len(blob) < 4 + 12 + 16 or not blob.startswith(MAGIC):
        raise Refused("not a sealed message")
    try:
        plain = AESGCM(key).decrypt(blob[4:16], blob[16:], purpose)
    except InvalidTag as exc:
        raise Refused("not sealed with the shared key") from exc
    doc = json.loads(zlib.decompress(plain, bufsize=MAX_SIZE))
    if not isinstance(doc, dict):
        raise Refused("not a JSON object")
    return doc


def to_doc(b: Bundle) -> dict[str, Any]:
    return {"format": 1, "version": b.version, "digest": b.digest, "issuer_node": b.issuer_node,
            "sites": [list(s) for s in b.sites],
            "files": [{"area": f.area, "path": f.path, "mode": f.mode, "link": f.link,
                       "data": base64.b64encode(f.data).decode()} for f in b.files]}


def from_doc(doc: dict[str, Any]) -> Bundle:
    files = tuple(File(area=str(f["area"]), path=str(f["path"]), data=base64.b64decode(f["data"]),
                       mode=int(f["mode"]) & 0o777, link=f.get("link")) for f in doc["files"])
    for f in files:
        if f.area not in ("certs", "conf") or not safe_path(f.path) or (f.link is not None and f.link.startswith("/")):
            raise Refused(f"bad file entry {f.area}:{f.path[:80]!r}")
    b = Bundle(version=int(doc["version"]), digest=str(doc["digest"]), issuer_node=str(doc["issuer_node"]),
               files=files, sites=tuple((str(n), str(d)) for n, d in doc.get("sites") or []))
    if files_digest(files) != b.digest:
        raise Refused("digest does not match the files")
    return b


def report_doc(r: Report) -> dict[str, Any]:
    return {"node": r.node, "hostname": r.hostname, "version": r.version, "digest": r.digest, "state": r.state,
            "detail": r.detail, "verified": r.verified, **r.extra}


def report_from(doc: dict[str, Any]) -> Report:
    return Report(node=str(doc["node"]), hostname=str(doc.get("hostname", "")), version=int(doc["version"]),
                  digest=str(doc.get("digest", "")), state=str(doc["state"]), detail=str(doc.get("detail", "")),
                  verified=int(doc.get("verified", 0)))
