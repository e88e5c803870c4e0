"""Placeholder certificates: made, recognised, written atomically, removed only when they are ours."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sidecar.state import certs, lineage
from sidecar.state.placeholder import (
    MARKER,
    PLACEHOLDER_ORG,
    is_placeholder,
    is_placeholder_lineage,
    make_placeholder,
    placeholder_names,
    remove_placeholder,
    set_aside,
    write_placeholder,
)

from .certfactory import make_cert, write_lineage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DOMAINS = ("a.example.com", "www.a.example.com")


def test_make_placeholder() -> None:
    cert_pem, key_pem = make_placeholder(DOMAINS, NOW)
    cert = certs.parse_certificate(cert_pem, "a.example.com")
    assert cert.names == frozenset(DOMAINS)
    assert cert.key_type == "ecdsa"
    assert cert.issuer == PLACEHOLDER_ORG
    assert cert.not_before == NOW - timedelta(hours=1)
    assert cert.not_after == NOW + timedelta(days=90)
    assert b"PRIVATE KEY" in key_pem
    assert is_placeholder(cert_pem)


def test_make_placeholder_takes_long_and_many_names() -> None:
    long_name = ".".join(["a" * 60, "b" * 60, "example.com"])
    cert_pem, _ = make_placeholder([long_name, *(f"n{i}.example.com" for i in range(99))], NOW)
    assert len(certs.parse_certificate(cert_pem, "x").names) == 100


def test_make_placeholder_needs_a_name() -> None:
    with pytest.raises(ValueError):
        make_placeholder([], NOW)


@pytest.mark.parametrize(("pem", "expected"), [
    (make_placeholder(DOMAINS, NOW)[0], True),
    (make_placeholder(DOMAINS, NOW)[0] + make_cert(["x.example.com"], NOW, NOW + timedelta(days=1))[0], True),
    (make_cert(["a.example.com"], NOW, NOW + timedelta(days=90))[0], False),
    (b"", False),
    (b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", False),
], ids=["placeholder", "placeholder first in a chain", "real certificate", "empty", "garbage"])
def test_is_placeholder(pem: bytes, expected: bool) -> None:
    assert is_placeholder(pem) is expected


def test_write_placeholder(certs_dir: Path) -> None:
    assert write_placeholder(certs_dir, "a.example.com", DOMAINS, NOW)
    base = certs_dir / "live" / "a.example.com"
    assert sorted(os.listdir(base)) == sorted([MARKER, "cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"])
    assert stat.S_IMODE((base / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((base / "fullchain.pem").stat().st_mode) == 0o644
    assert is_placeholder((base / "fullchain.pem").read_bytes())
    assert is_placeholder_lineage(certs_dir, "a.example.com")
    assert placeholder_names(certs_dir) == {"a.example.com"}
    # No leftovers next to it, and no certbot state that would make certbot suffix the name.
    assert os.listdir(certs_dir / lineage.STAGING) == []
    assert not (certs_dir / "renewal").exists() and not (certs_dir / "archive").exists()
    # certs.read_lineages does see it: the lead filters placeholder_names() (or issuer == PLACEHOLDER_ORG).
    found, problems = certs.read_lineages(certs_dir)
    assert problems == [] and found["a.example.com"].issuer == PLACEHOLDER_ORG
    # The key belongs to the certificate (nginx -t checks that too).
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((base / "privkey.pem").read_bytes(), None)
    assert x509.load_pem_x509_certificate((base / "cert.pem").read_bytes()).public_key() == key.public_key()


def test_write_placeholder_never_replaces_anything(certs_dir: Path) -> None:
    real = write_lineage(certs_dir, "real.example.com")
    before = (real / "cert.pem").read_bytes()
    assert not write_placeholder(certs_dir, "real.example.com", ["real.example.com"], NOW)
    assert (real / "cert.pem").read_bytes() == before
    assert write_placeholder(certs_dir, "p.example.com", ["p.example.com"], NOW)
    first = (certs_dir / "live/p.example.com/cert.pem").read_bytes()
    assert not write_placeholder(certs_dir, "p.example.com", ["other.example.com"], NOW)
    assert (certs_dir / "live/p.example.com/cert.pem").read_bytes() == first
    (certs_dir / "live/dangling").symlink_to("../archive/nowhere")
    assert not write_placeholder(certs_dir, "dangling", ["d.example.com"], NOW)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "-dash"])
def test_lineage_names_are_checked(certs_dir: Path, name: str) -> None:
    with pytest.raises(ValueError):
        write_placeholder(certs_dir, name, DOMAINS, NOW)
    assert not is_placeholder_lineage(certs_dir, name)
    assert not remove_placeholder(certs_dir, name)


def test_remove_placeholder(certs_dir: Path) -> None:
    write_placeholder(certs_dir, "a.example.com", DOMAINS, NOW)
    assert not lineage.is_fresh(certs_dir, "a.example.com")  # why certbot must not see it
    assert remove_placeholder(certs_dir, "a.example.com")
    assert lineage.is_fresh(certs_dir, "a.example.com")
    assert placeholder_names(certs_dir) == set()
    assert os.listdir(certs_dir / lineage.STAGING) == []
    assert not remove_placeholder(certs_dir, "a.example.com")


def test_remove_placeholder_leaves_real_lineages_alone(certs_dir: Path) -> None:
    real = write_lineage(certs_dir, "real.example.com")
    assert not remove_placeholder(certs_dir, "real.example.com")
    # Even with a stray marker file, a real certificate is never deleted.
    (real / MARKER).write_text("stray", encoding="utf-8")
    assert not is_placeholder_lineage(certs_dir, "real.example.com")
    assert not remove_placeholder(certs_dir, "real.example.com")
    assert (real / "cert.pem").exists()
    # A placeholder certificate without the marker is not ours to delete either.
    write_placeholder(certs_dir, "p.example.com", ["p.example.com"], NOW)
    (certs_dir / "live/p.example.com" / MARKER).unlink()
    assert not remove_placeholder(certs_dir, "p.example.com")


def test_set_aside_gives_way_to_the_real_lineage(certs_dir: Path) -> None:
    write_placeholder(certs_dir, "a.example.com", DOMAINS, NOW)
    with set_aside(certs_dir, "a.example.com") as moved:
        assert moved
        assert lineage.is_fresh(certs_dir, "a.example.com")
        write_lineage(certs_dir, "a.example.com", DOMAINS)  # what certbot / adopt_staged does
    found, _ = certs.read_lineages(certs_dir)
    assert found["a.example.com"].issuer != PLACEHOLDER_ORG
    assert placeholder_names(certs_dir) == set()
    assert os.listdir(certs_dir / lineage.STAGING) == []


def test_set_aside_puts_the_placeholder_back_when_certbot_fails(certs_dir: Path) -> None:
    write_placeholder(certs_dir, "a.example.com", DOMAINS, NOW)
    with pytest.raises(RuntimeError):
        with set_aside(certs_dir, "a.example.com"):
            raise RuntimeError("certbot failed")
    assert is_placeholder_lineage(certs_dir, "a.example.com")
    # A failed run that left an empty live/NAME behind: the placeholder still comes back.
    with set_aside(certs_dir, "a.example.com"):
        (certs_dir / "live/a.example.com").mkdir()
    assert is_placeholder_lineage(certs_dir, "a.example.com")
    assert os.listdir(certs_dir / lineage.STAGING) == []


def test_set_aside_without_a_placeholder_does_nothing(certs_dir: Path) -> None:
    real = write_lineage(certs_dir, "real.example.com")
    with set_aside(certs_dir, "real.example.com") as moved:
        assert not moved
        assert (real / "cert.pem").exists()
    with set_aside(certs_dir, "none.example.com") as moved:
        assert not moved
    assert (real / "cert.pem").exists()


def test_recover_clears_interrupted_placeholder_work(certs_dir: Path) -> None:
    """A crash half-way leaves only a scratch dir in .staging, which lineage.recover removes."""
    write_placeholder(certs_dir, "a.example.com", DOMAINS, NOW)
    (certs_dir / lineage.STAGING / ".placeholder-b-x").mkdir()
    lineage.recover(certs_dir)
    assert os.listdir(certs_dir / lineage.STAGING) == []
    assert is_placeholder_lineage(certs_dir, "a.example.com")
