"""Placeholder certificates: let a hand-written config pass ``nginx -t`` until the real one exists.

A user's server block may name ``/etc/letsencrypt/live/NAME/fullchain.pem`` before
that lineage exists; nginx then refuses the whole configuration. A placeholder is a
self-signed ECDSA P-256 certificate for the block's names, laid out like a certbot
lineage (``live/NAME/{cert,chain,fullchain,privkey}.pem``, plain files) and marked twice:
its subject and issuer are ``O=nginx-acme-sidecar placeholder``, and the directory holds
``.sidecar-placeholder``. Both marks must be present before anything here deletes a
directory, so a real lineage is never touched.

certbot and placeholders do not mix: with ``live/NAME`` present and no
``renewal/NAME.conf``, certbot 4.0 first creates ``renewal/NAME.conf``, obtains the
certificate from the CA, and only then fails with "live directory exists for NAME" -
the certificate is wasted and the leftover ``renewal/NAME.conf`` makes the next run
create ``NAME-0001``. So the placeholder must be out of ``live/`` when certbot writes
the lineage: ``set_aside`` (around ``lineage.adopt_staged``, or around a certbot run
in the main directory) or ``remove_placeholder`` right before it. Placeholders must also
never be planned or rendered as certificates: ``placeholder_names`` lists them so that
``certs.read_lineages`` results can be filtered (their ``issuer`` is ``PLACEHOLDER_ORG``).

``make_placeholder`` and ``is_placeholder`` are pure; the rest touch ``certs_dir`` only,
writing atomically (a temporary directory in ``CERTS_DIR/.staging``, renamed into place).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sidecar.core.names import LINEAGE_NAME as _NAME
from sidecar.state.files import fsync_dir
from sidecar.state.lineage import STAGING

PLACEHOLDER_ORG = "nginx-acme-sidecar placeholder"
MARKER = ".sidecar-placeholder"
VALIDITY = timedelta(days=90)


def make_placeholder(domains: Sequence[str], now: datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``domains`` (all in the SAN): ``(cert_pem, key_pem)``.

    Subject and issuer are only ``O=nginx-acme-sidecar placeholder`` (no CN: clients use
    the SAN), so ``certs.parse_certificate`` reports that as the issuer. Valid from an hour
    before ``now`` for 90 days (nginx does not check validity when it loads a certificate,
    so even an expired placeholder passes ``nginx -t``).
    """
    if not domains:
        raise ValueError("a placeholder needs at least one domain")
    now = now or datetime.now(timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLACEHOLDER_ORG)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def is_placeholder(cert_pem: bytes) -> bool:
    """True for a certificate made by ``make_placeholder`` (the first one of ``cert_pem``)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return orgs == [PLACEHOLDER_ORG] and cert.issuer == cert.subject


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a usable lineage name")


def is_placeholder_lineage(certs_dir: Path, name: str) -> bool:
    """``live/NAME`` holds a placeholder: the marker file, and a placeholder ``cert.pem``."""
    base = certs_dir / "live" / name
    if not _NAME.fullmatch(name) or base.is_symlink() or not (base / MARKER).is_file():
        return False
    try:
        return is_placeholder((base / "cert.pem").read_bytes())
    except OSError:
        return False


def placeholder_names(certs_dir: Path) -> set[str]:
    """Lineage names under ``live/`` that are placeholders (to drop from ``certs.read_lineages``)."""
    try:
        entries = os.listdir(certs_dir / "live")
    except OSError:
        return set()
    live = os.path.join(str(certs_dir), "live")  # (a cheap test first: ten thousand lineages have no marker)
    return {name for name in entries if os.path.isfile(os.path.join(live, name, MARKER))
            and is_placeholder_lineage(certs_dir, name)}


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)  # regardless of the umask


def _scratch(certs_dir: Path, what: str, name: str) -> Path:
    """A fresh directory on the certificate volume (``lineage.recover`` clears leftovers at start)."""
    root = certs_dir / STAGING
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{what}-{name}-", dir=root))


def write_placeholder(certs_dir: Path, name: str, domains: Sequence[str], now: datetime | None = None) -> bool:
    """Create ``live/NAME`` as a placeholder for ``domains``, unless ``live/NAME`` exists.

    Returns True when written. Readers see no lineage or a complete one, never part of it.
    """
    _check_name(name)
    live = certs_dir / "live"
    target = live / name
    if os.path.lexists(target):
        return False
    cert_pem, key_pem = make_placeholder(domains, now)
    live.mkdir(mode=0o700, parents=True, exist_ok=True)  # as certbot makes it
    tmp = _scratch(certs_dir, "placeholder", name)
    try:
        _write(tmp / "cert.pem", cert_pem, 0o644)
        _write(tmp / "chain.pem", cert_pem, 0o644)  # its own issuer; for ssl_trusted_certificate
        _write(tmp / "fullchain.pem", cert_pem, 0o644)
        _write(tmp / "privkey.pem", key_pem, 0o600)
        note = (f"Placeholder made by nginx-acme-sidecar for {', '.join(domains)}; "
                "replaced by the real certificate as soon as it is issued.\n")
        _write(tmp / MARKER, note.encode("utf-8"), 0o644)
        os.chmod(tmp, 0o755)
        fsync_dir(tmp)
        if os.path.lexists(target):
            return False
        os.rename(tmp, target)
        fsync_dir(live)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename


def remove_placeholder(certs_dir: Path, name: str) -> bool:
    """Remove ``live/NAME`` if (and only if) it is a placeholder. Returns True when removed.

    Call it right before certbot writes lineage NAME (see the module docstring);
    ``live/NAME`` disappears in one rename.
    """
    if not is_placeholder_lineage(certs_dir, name):
        return False
    aside = _scratch(certs_dir, "placeholder-removed", name)
    os.rename(certs_dir / "live" / name, aside / name)
    fsync_dir(certs_dir / "live")
    shutil.rmtree(aside, ignore_errors=True)
    return True


@contextlib.contextmanager
def set_aside(certs_dir: Path, name: str) -> Iterator[bool]:
    """Move the placeholder of NAME (if any) out of ``live/`` for the length of the block.

    Afterwards it is deleted when a real lineage took its place, else put back (an
    empty ``live/NAME`` left by a failed run is replaced), so nginx keeps passing
    ``nginx -t``. Yields whether a placeholder was set aside.
    """
    if not is_placeholder_lineage(certs_dir, name):
        yield False
        return
    target = certs_dir / "live" / name
    aside = _scratch(certs_dir, "placeholder-aside", name)
    os.rename(target, aside / name)
    try:
        yield True
    finally:
        try:
            if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
                target.rmdir()
            if not os.path.lexists(target):
                os.rename(aside / name, target)
            fsync_dir(certs_dir / "live")
        finally:
            shutil.rmtree(aside, ignore_errors=True)


__all__ = [
    "MARKER", "PLACEHOLDER_ORG", "is_placeholder", "is_placeholder_lineage", "make_placeholder",
    "placeholder_names", "remove_placeholder", "set_aside", "write_placeholder",
]
