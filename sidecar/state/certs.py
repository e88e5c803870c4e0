"""Read certificate lineages (certbot's ``live/NAME/``) with ``cryptography``.

``parse_certificate`` is pure (bytes in, ``Certificate`` out); ``read_lineages``
is the small reader around it. A lineage counts only when its certificate,
full chain and private key all exist: nginx must never be pointed at a missing file.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from sidecar.core.model import Certificate, Problem
from sidecar.state import memo


_KEY_OIDS = {"1.2.840.10045.2.1": "ecdsa", "1.2.840.113549.1.1.1": "rsa"}  # id-ecPublicKey, rsaEncryption


def _key_type(cert: x509.Certificate) -> str:
    # The algorithm's OID when cryptography has it (43 and later): no key object built (10,000 at a first start)
    oid = getattr(cert, "public_key_algorithm_oid", None)
    if oid is not None and oid.dotted_string in _KEY_OIDS:
        return _KEY_OIDS[oid.dotted_string]
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return type(key).__name__


def _issuer(cert: x509.Certificate) -> str:
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = cert.issuer.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return cert.issuer.rfc4514_string()


def parse_certificate(pem: bytes, name: str, fullchain_path: str = "", privkey_path: str = "") -> Certificate:
    """Parse the leaf (first) certificate of ``pem``. Raises ValueError on garbage."""
    cert = x509.load_pem_x509_certificate(pem)
    names: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    aki: bytes | None = None
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        pass
    has_ocsp = False
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        has_ocsp = any(d.access_method == AuthorityInformationAccessOID.OCSP for d in aia)
    except x509.ExtensionNotFound:
        pass
    return Certificate(
        name=name,
        names=frozenset(names),
        not_before=cert.not_valid_before_utc.astimezone(timezone.utc),
        not_after=cert.not_valid_after_utc.astimezone(timezone.utc),
        issuer=_issuer(cert),
        key_type=_key_type(cert),
        serial=cert.serial_number,
        authority_key_id=aki,
        has_ocsp_url=has_ocsp,
        fullchain_path=fullchain_path,
        privkey_path=privkey_path,
    )


def renewal_setting(certs_dir: Path, name: str, wanted: str) -> str:
    """One ``key = value`` line of certbot's ``renewal/NAME.conf`` (``server``, ``account``...), or ""."""
    try:
        with open(os.path.join(str(certs_dir), "renewal", f"{name}.conf"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    # (one search, not a loop over the lines: ten thousand of these at a first start)
    m = re.search(rf"^[ \t]*{re.escape(wanted)}[ \t]*=(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def renewal_server(certs_dir: Path, name: str) -> str:
    """The ACME directory a lineage was issued from, or ""."""
    return renewal_setting(certs_dir, name, "server")


# lineage name -> (what the files looked like, the certificate read from them)
LineageCache = dict[str, tuple[tuple[int, ...], Certificate]]


def _signature(cert_path: str, renewal: str) -> tuple[int, ...]:
    """Changes whenever certbot writes a new certificate (the live symlink points at a new
    archive file) or the renewal settings; a stat is far cheaper than parsing."""
    st = os.stat(cert_path)
    try:
        rt = os.stat(renewal)
        renewal_sig = (rt.st_ino, rt.st_mtime_ns, rt.st_size)
    except OSError:
        renewal_sig = (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size, *renewal_sig)


def read_lineages(
    certs_dir: Path, cache: LineageCache | None = None
) -> tuple[dict[str, Certificate], list[Problem]]:
    """Every usable lineage under ``certs_dir/live``, keyed by lineage name.

    With ``cache``, a lineage whose files did not change since the last call is not parsed again
    (then a lineage costs a few ``stat`` calls: plain strings, not ``Path``, at ten thousand of them).
    """
    live = os.path.join(str(certs_dir), "live")
    renewal = os.path.join(str(certs_dir), "renewal")
    found: dict[str, Certificate] = {}
    problems: list[Problem] = []
    try:
        entries = sorted(os.listdir(live))
    except FileNotFoundError:
        return found, problems
    for name in entries:
        base = os.path.join(live, name)
        if not os.path.isdir(base):
            continue
        cert_path, chain, key = (os.path.join(base, f) for f in ("cert.pem", "fullchain.pem", "privkey.pem"))
        if not (os.path.exists(cert_path) and os.path.exists(chain) and os.path.exists(key)):
            problems.append(Problem(f"certificate {base}", "incomplete lineage (cert, fullchain or privkey missing)"))
            continue
        try:
            signature = _signature(cert_path, os.path.join(renewal, f"{name}.conf"))
            cached = cache.get(name) if cache is not None else None
            if cached is not None and cached[0] == signature:
                found[name] = cached[1]
                continue
            with open(cert_path, "rb") as fh:
                cert = parse_certificate(fh.read(), name, chain, key)
            found[name] = replace(cert, acme_server=renewal_server(certs_dir, name))
            if cache is not None:
                cache[name] = (signature, found[name])
        except (OSError, ValueError) as exc:
            problems.append(Problem(f"certificate {cert_path}", f"unreadable: {exc}"))
    return found, problems


CACHE_KEY = "lineage facts"  # (state.memo's key adds the sidecar's code: a new version parses again)


def save_cache(path: Path, cache: LineageCache) -> None:
    """Keep what the certificates said for the next start (pickled in the state volume, see
    ``state.memo``: ten thousand load in 0.05 s, against 0.23 s as JSON); best effort."""
    memo.save(path, memo.key(CACHE_KEY, str(path)), dict(cache))  # (a copy: certbot threads may add to it)


def load_cache(path: Path) -> LineageCache:
    """What ``save_cache`` kept; empty when missing or not understood (then everything is parsed)."""
    found = memo.load(path, memo.key(CACHE_KEY, str(path)))
    return found if isinstance(found, dict) else {}
