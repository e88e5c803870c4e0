from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sidecar.core.model import Certificate
from sidecar.state.certs import parse_certificate, read_lineages, renewal_server

from .certfactory import CA_NAME, ca_key_identifier, ca_pem, make_cert, write_lineage

NB = datetime(2026, 3, 1, 8, 30, 0)
NA = datetime(2026, 5, 30, 8, 29, 59)


@pytest.mark.parametrize(
    ("key_type", "ocsp"),
    [("ecdsa", False), ("rsa", False), ("ecdsa", True), ("rsa", True)],
    ids=["ecdsa", "rsa", "ecdsa-ocsp", "rsa-ocsp"],
)
def test_parse_certificate_fields(key_type: str, ocsp: bool) -> None:
    pem, _ = make_cert(["a.example.com", "WWW.a.example.com"], NB, NA, key_type=key_type, ocsp=ocsp)
    c = parse_certificate(pem, "a.example.com", "/live/a/fullchain.pem", "/live/a/privkey.pem")
    assert c.name == "a.example.com"
    assert c.names == frozenset({"a.example.com", "www.a.example.com"})
    assert c.not_before == NB.replace(tzinfo=timezone.utc)
    assert c.not_after == NA.replace(tzinfo=timezone.utc)
    assert c.not_before.utcoffset() == timedelta(0) and c.not_after.utcoffset() == timedelta(0)
    assert c.key_type == key_type
    assert c.issuer == CA_NAME
    assert c.has_ocsp_url is ocsp
    assert c.authority_key_id == ca_key_identifier()
    assert c.serial > 0
    assert (c.fullchain_path, c.privkey_path) == ("/live/a/fullchain.pem", "/live/a/privkey.pem")
    assert c.lifetime_seconds == (NA - NB).total_seconds()
    assert c.matches(("www.a.example.com", "a.example.com"))
    assert c.covers(("a.example.com",)) and not c.covers(("a.example.com", "b.example.com"))


def test_parse_certificate_reads_the_leaf_of_a_full_chain() -> None:
    pem, _ = make_cert(["leaf.example.com"], NB, NA)
    assert parse_certificate(pem + ca_pem(), "leaf").names == {"leaf.example.com"}


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
    ids=["empty", "garbage", "bad-base64-body"],
)
def test_parse_certificate_raises_value_error_on_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_certificate(data, "x")


def test_read_lineages(certs_dir: Path) -> None:
    write_lineage(certs_dir, "a.example.com", ["a.example.com", "www.a.example.com"], NB, NA,
                  server="https://acme.test/dir")
    write_lineage(certs_dir, "b.example.com", key_type="rsa", ocsp=True, server=None)
    (certs_dir / "live" / "README").write_text("certbot's readme, not a lineage")
    found, problems = read_lineages(certs_dir)
    assert problems == []
    assert sorted(found) == ["a.example.com", "b.example.com"]
    a, b = found["a.example.com"], found["b.example.com"]
    assert a.names == {"a.example.com", "www.a.example.com"}
    assert a.fullchain_path == str(certs_dir / "live" / "a.example.com" / "fullchain.pem")
    assert a.privkey_path == str(certs_dir / "live" / "a.example.com" / "privkey.pem")
    assert a.acme_server == "https://acme.test/dir"
    assert (b.key_type, b.has_ocsp_url, b.acme_server) == ("rsa", True, "")


def test_read_lineages_without_live_dir(tmp_path: Path) -> None:
    assert read_lineages(tmp_path / "nothing-here") == ({}, [])


@pytest.mark.parametrize("missing", ["cert.pem", "fullchain.pem", "privkey.pem"])
def test_incomplete_lineage_is_skipped_with_a_problem(certs_dir: Path, missing: str) -> None:
    write_lineage(certs_dir, "good.example.com")
    live = write_lineage(certs_dir, "half.example.com")
    (live / missing).unlink()
    found, problems = read_lineages(certs_dir)
    assert list(found) == ["good.example.com"]
    assert len(problems) == 1
    assert problems[0].source == f"certificate {live}"
    assert "incomplete" in problems[0].message


def test_dangling_symlink_counts_as_missing(certs_dir: Path) -> None:
    live = write_lineage(certs_dir, "link.example.com")
    (live / "privkey.pem").unlink()
    os.symlink("../../archive/link.example.com/privkey1.pem", live / "privkey.pem")
    found, problems = read_lineages(certs_dir)
    assert found == {} and "incomplete" in problems[0].message


def test_garbage_certificate_is_skipped_with_a_problem(certs_dir: Path) -> None:
    write_lineage(certs_dir, "good.example.com")
    live = write_lineage(certs_dir, "bad.example.com")
    (live / "cert.pem").write_bytes(b"not a certificate")
    found, problems = read_lineages(certs_dir)
    assert list(found) == ["good.example.com"]
    assert [p.source for p in problems] == [f"certificate {live / 'cert.pem'}"]
    assert problems[0].message.startswith("unreadable")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[renewalparams]\nserver = https://acme.test/directory\n", "https://acme.test/directory"),
        ("server=https://x.test/dir\n", "https://x.test/dir"),
        ("  server   =   https://x.test/dir  \n", "https://x.test/dir"),
        ("account = abc\nserver_name = nope\n", ""),
        ("# server = https://commented.test\n", ""),
        ("", ""),
    ],
    ids=["certbot-style", "no-spaces", "padded", "similar-key", "commented", "empty"],
)
def test_renewal_server(certs_dir: Path, text: str, expected: str) -> None:
    (certs_dir / "renewal").mkdir()
    (certs_dir / "renewal" / "x.conf").write_text(text)
    assert renewal_server(certs_dir, "x") == expected


def test_renewal_server_missing_file(certs_dir: Path) -> None:
    assert renewal_server(certs_dir, "nope") == ""


def test_cache_skips_unchanged_lineages_and_rereads_changed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sidecar.state.certs as certs_mod

    write_lineage(tmp_path, "a.example.com")
    write_lineage(tmp_path, "b.example.com")
    parsed: list[str] = []
    real = certs_mod.parse_certificate

    def counting(pem: bytes, name: str, *args: str) -> object:
        parsed.append(name)
        return real(pem, name, *args)

    monkeypatch.setattr(certs_mod, "parse_certificate", counting)
    cache: certs_mod.LineageCache = {}
    first, _ = read_lineages(tmp_path, cache)
    assert sorted(parsed) == ["a.example.com", "b.example.com"]
    again, _ = read_lineages(tmp_path, cache)
    assert again == first and len(parsed) == 2  # nothing parsed twice

    write_lineage(tmp_path, "b.example.com", names=["b.example.com", "www.b.example.com"])
    os.utime(tmp_path / "live" / "b.example.com" / "cert.pem", ns=(1, 1))  # a new file, whatever the clock
    changed, _ = read_lineages(tmp_path, cache)
    assert parsed[2:] == ["b.example.com"]
    assert changed["b.example.com"].names == {"b.example.com", "www.b.example.com"}
    assert changed["a.example.com"] is first["a.example.com"]


def _mixed_lineages(certs_dir: Path) -> None:
    """Good lineages, one with garbage for a certificate, one without its key."""
    for i in range(6):
        write_lineage(certs_dir, f"s{i}.example.com", [f"s{i}.example.com", f"www.s{i}.example.com"], NB, NA,
                      server=f"https://acme.test/dir{i}")
    (certs_dir / "live" / "s4.example.com" / "cert.pem").write_bytes(b"not a certificate")
    (certs_dir / "live" / "s5.example.com" / "privkey.pem").unlink()


def _helper_answers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Certificate | str] | None]:
    """What each helper process answered (None: it failed), in order."""
    from sidecar.state import certs

    answers: list[dict[str, Certificate | str] | None] = []
    real = certs._Helper.results

    def results(self: certs._Helper) -> dict[str, Certificate | str] | None:
        answers.append(real(self))
        return answers[-1]

    monkeypatch.setattr(certs._Helper, "results", results)
    return answers


def test_a_helper_process_parses_part_of_many_new_certificates_with_the_same_result(
        certs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.state import certs

    _mixed_lineages(certs_dir)
    alone = read_lineages(certs_dir, {})
    answers = _helper_answers(monkeypatch)
    monkeypatch.setattr(certs, "HELPER_MIN", 2)
    cache: certs.LineageCache = {}
    helped = read_lineages(certs_dir, cache, helper=True)
    (answer,) = answers
    assert isinstance(answer, dict) and len(answer) == 2  # (its share of the five it could parse)
    assert helped == alone and list(helped[0]) == list(alone[0])  # the same lineages, problems, order
    assert [p.message.split(":")[0] for p in helped[1]] == ["unreadable", "incomplete lineage (cert, fullchain or privkey missing)"]
    assert sorted(cache) == ["s0.example.com", "s1.example.com", "s2.example.com", "s3.example.com"]
    assert helped[0]["s3.example.com"].acme_server == "https://acme.test/dir3"


def test_without_its_helper_process_every_certificate_is_still_read(certs_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.state import certs

    _mixed_lineages(certs_dir)
    alone = read_lineages(certs_dir)
    monkeypatch.setattr(certs, "HELPER_MIN", 2)
    for broken in ("/nonexistent/python", "/bin/false"):  # it cannot start; it fails
        monkeypatch.setattr(sys, "executable", broken)
        assert read_lineages(certs_dir, helper=True) == alone


def test_a_read_begun_ahead_uses_its_helper_and_a_later_change_is_seen_by_the_next_read(
        certs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first read: a helper process parses the certificates while the sites file is read; a
    lineage certbot renews in between is the next read's (as with a change during any read)."""
    from sidecar.state import certs
    from sidecar.state.lineages import LineageStore

    _mixed_lineages(certs_dir)
    before = read_lineages(certs_dir)
    monkeypatch.setattr(certs, "HELPER_MIN", 2)
    answers = _helper_answers(monkeypatch)
    store = LineageStore(certs_dir, helper=True)
    store.parse_ahead()
    assert store.read() == before
    # its share of the five to parse (s5 has no key): the first three; this process parsed the rest
    assert answers and isinstance(answers[0], dict) and sorted(answers[0]) == [f"s{i}.example.com" for i in range(3)]
    store.forget()
    store.parse_ahead()  # (nothing new to parse: no helper)
    write_lineage(certs_dir, "s0.example.com", ["s0.example.com"], NB, NA + timedelta(days=1))
    store.read()
    store.forget()
    assert store.read()[0]["s0.example.com"].names == {"s0.example.com"} and len(answers) == 1
    # begun, then the directory changed (a certbot run): that read is dropped, its helper stopped
    write_lineage(certs_dir, "s1.example.com", ["s1.example.com"], NB, NA + timedelta(days=2))
    store.forget()
    store.parse_ahead()
    write_lineage(certs_dir, "s2.example.com", ["s2.example.com"], NB, NA + timedelta(days=3))
    store.forget()
    assert store.read() == read_lineages(certs_dir)


def test_a_restart_starts_no_helper_process_for_certificates_it_knows(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.state import certs
    from sidecar.state.lineages import LineageStore

    _mixed_lineages(tmp_path / "le")
    monkeypatch.setattr(certs, "HELPER_MIN", 3)  # (the five new ones at first, the two it cannot use after)
    first = LineageStore(tmp_path / "le", cache_file=tmp_path / "kept", helper=True)
    first.parse_ahead()
    found = first.read()
    first.keep()
    started: list[list[str]] = []
    monkeypatch.setattr(certs, "_Helper", lambda root, names: started.append(names))
    again = LineageStore(tmp_path / "le", cache_file=tmp_path / "kept", helper=True)
    again.parse_ahead()
    assert again.read() == found and started == []
