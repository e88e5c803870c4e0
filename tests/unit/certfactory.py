"""Real X.509 certificates for unit tests, made with ``cryptography``.

Every leaf is signed by a throwaway CA (one per process, created lazily) and
carries a SAN, an Authority Key Identifier and, on request, an AIA OCSP URL,
like certbot's ``make_cert_with_lifetime`` test helper.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

CA_NAME = "Throwaway Test CA"


@lru_cache(maxsize=None)
def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1))
        .not_valid_after(datetime(2040, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@lru_cache(maxsize=None)
def _leaf_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    # One key per type is plenty for tests; RSA generation is the slow part.
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(key_type)


def ca_pem() -> bytes:
    return _ca()[1].public_bytes(serialization.Encoding.PEM)


def ca_key_identifier() -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(_ca()[1].public_key()).digest


def make_cert(
    names: Iterable[str],
    not_before: datetime,
    not_after: datetime,
    key_type: str = "ecdsa",
    ocsp: bool = False,
) -> tuple[bytes, bytes]:
    """A leaf certificate for ``names`` signed by the test CA: ``(cert_pem, key_pem)``."""
    names = list(names)
    ca_key, ca_cert = _ca()
    key = _leaf_key(key_type)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if ocsp:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.test.invalid"),
                    )
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_lineage(
    certs_dir: Path,
    name: str,
    names: Iterable[str] | None = None,
    not_before: datetime = datetime(2026, 1, 1),
    not_after: datetime = datetime(2026, 4, 1),
    key_type: str = "ecdsa",
    ocsp: bool = False,
    server: str | None = "https://acme.test/directory",
) -> Path:
    """Lay out certbot's ``live/NAME/{cert,chain,fullchain,privkey}.pem`` and ``renewal/NAME.conf``."""
    cert_pem, key_pem = make_cert(list(names or [name]), not_before, not_after, key_type, ocsp)
    live = certs_dir / "live" / name
    live.mkdir(parents=True, exist_ok=True)
    (live / "cert.pem").write_bytes(cert_pem)
    (live / "chain.pem").write_bytes(ca_pem())
    (live / "fullchain.pem").write_bytes(cert_pem + ca_pem())
    (live / "privkey.pem").write_bytes(key_pem)
    if server is not None:
        renewal = certs_dir / "renewal"
        renewal.mkdir(parents=True, exist_ok=True)
        (renewal / f"{name}.conf").write_text(
            f"# renewal config\nversion = 4.0.0\narchive_dir = {certs_dir}/archive/{name}\n\n"
            f"[renewalparams]\nauthenticator = webroot\nserver = {server}\nkey_type = {key_type}\n",
            encoding="utf-8",
        )
    return live
