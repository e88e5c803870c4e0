"""Certificates adopted from another tool (state/adopted, LineageStore.for_sites, the planner)."""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from pathlib import Path

import pytest

from sidecar.core.model import Certificate, SourceKind
from sidecar.core.planner import Action, Policy, decide
from sidecar.state import adopted
from sidecar.state.lineages import LineageStore

from .builders import NOW, cert, site
from .certfactory import ca_pem, make_cert, write_lineage


def companion(directory: Path, name: str, names: list[str], days_left: int = 60, lifetime: int = 90,
              key_type: str = "ecdsa", links: bool = True) -> Path:
    """acme-companion's layout: <name>/{cert,key,chain,fullchain}.pem and a <host>.crt/.key link per host."""
    pem, key = make_cert(names, NOW - timedelta(days=lifetime - days_left), NOW + timedelta(days=days_left),
                         key_type=key_type)
    base = directory / name
    base.mkdir(parents=True)
    for filename, data in (("cert.pem", pem), ("key.pem", key), ("chain.pem", ca_pem()),
                           ("fullchain.pem", pem + ca_pem())):
        (base / filename).write_bytes(data)
    (base / ".companion").touch()
    for host in names if links else []:
        os.symlink(f"./{name}/fullchain.pem", directory / f"{host}.crt")
        os.symlink(f"./{name}/key.pem", directory / f"{host}.key")
        os.symlink(f"./{name}/chain.pem", directory / f"{host}.chain.pem")
    return base


def test_the_acme_companion_layout_is_read(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    a = companion(d, "a.example.com", ["a.example.com", "www.a.example.com"], key_type="rsa")
    companion(d, "_test_t.example.com", ["t.example.com"])  # staging (its t.example.com.crt too): never adopted
    pem, key = make_cert(["manual.example.com"], NOW - timedelta(days=1), NOW + timedelta(days=89))
    (d / "manual.example.com.crt").write_bytes(pem)                            # put there by hand for nginx-proxy
    (d / "manual.example.com.key").write_bytes(key)
    (d / "lonely.example.com.crt").write_bytes(pem)                            # no key: not served by nginx-proxy
    (d / "broken.example.com").mkdir()
    (d / "broken.example.com" / "fullchain.pem").write_text("garbage")
    (d / "broken.example.com" / "key.pem").write_text("garbage")
    found, problems = adopted.read_adopted(d)
    assert sorted(found) == ["a.example.com", "manual.example.com", "www.a.example.com"]
    c = found["a.example.com"]
    assert (c.names, c.key_type, c.fullchain_path, c.privkey_path, c.adopted_from) == (
        frozenset({"a.example.com", "www.a.example.com"}), "rsa", f"{a}/fullchain.pem", f"{a}/key.pem", str(a))
    assert found["www.a.example.com"] == c  # the link names the same certificate, with the directory's paths
    m = found["manual.example.com"]
    assert (m.fullchain_path, m.privkey_path) == (f"{d}/manual.example.com.crt", f"{d}/manual.example.com.key")
    assert [p.source for p in problems] == [f"adopted certificate {d}/broken.example.com"]
    assert problems[0].message.startswith("unreadable: ")
    assert adopted.read_adopted(tmp_path / "missing") == ({}, [])


def test_files_are_parsed_once_until_they_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "certs"
    base = companion(d, "a.example.com", ["a.example.com"])
    parsed: list[str] = []
    real = adopted.parse_certificate
    monkeypatch.setattr(adopted, "parse_certificate", lambda pem, *a: parsed.append(a[0]) or real(pem, *a))
    cache: adopted.AdoptedCache = {}
    first = adopted.read_adopted(d, cache)[0]["a.example.com"]
    assert adopted.read_adopted(d, cache)[0]["a.example.com"] == first and len(parsed) == 1
    pem, _ = make_cert(["a.example.com"], NOW, NOW + timedelta(days=90))
    (base / "fullchain.pem").write_bytes(pem + ca_pem())  # acme-companion renewed it meanwhile
    assert adopted.read_adopted(d, cache)[0]["a.example.com"].serial != first.serial and len(parsed) == 2


def _adopted(*names: str, lineage: str | None = None, days_left: int = 60) -> Certificate:
    c = cert(*names, lifetime=timedelta(days=90), not_before=NOW - timedelta(days=90 - days_left), lineage=lineage)
    return dataclasses.replace(c, adopted_from=f"/etc/nginx/certs/{c.name}")


A = _adopted("a.example.com", "www.a.example.com")
SHARED = _adopted("a.example.com", "b.example.com", "c.example.com", lineage="shared")
WILD = _adopted("*.example.com", "example.com", lineage="wildcard")
OWN = cert("a.example.com", "www.a.example.com")


@pytest.mark.parametrize(
    ("domains", "kind", "lineages", "available", "chosen", "names"),
    [
        (("a.example.com", "www.a.example.com"), SourceKind.CONTAINER, {}, {"a.example.com": A}, A,
         {"a.example.com", "www.a.example.com"}),
        (("www.a.example.com", "a.example.com"), SourceKind.CONTAINER, {}, {"a.example.com": A,
                                                                             "www.a.example.com": A}, A,
         {"a.example.com", "www.a.example.com"}),
        (("a.example.com", "www.a.example.com"), SourceKind.CONTAINER, {"a.example.com": OWN},
         {"a.example.com": A}, OWN, {"a.example.com", "www.a.example.com"}),
        (("b.example.com",), SourceKind.FILE, {}, {"shared": SHARED}, SHARED, {"b.example.com"}),
        (("x.example.com", "example.com"), SourceKind.CONTAINER, {}, {"wildcard": WILD, "shared": SHARED}, WILD,
         {"x.example.com", "example.com"}),
        (("a.example.com", "new.example.com"), SourceKind.CONTAINER, {}, {"a.example.com": A}, A,
         {"a.example.com"}),
        (("deep.x.example.com",), SourceKind.CONTAINER, {}, {"wildcard": WILD}, None, None),
        (("a.example.com", "www.a.example.com"), SourceKind.NGINX_CONF, {}, {"a.example.com": A}, None, None),
        (("a.example.com", "www.a.example.com"), SourceKind.CONSUMER, {}, {"a.example.com": A}, None, None),
    ],
    ids=["own-directory", "found-by-the-other-name", "a-lineage-wins", "shared-certificate-names-narrowed",
         "wildcard", "partly-covered-then-expanded", "one-wildcard-level-only", "hand-written-configs-keep-theirs",
         "consumers-keep-theirs"],
)
def test_which_certificate_a_site_is_served_with(
        domains: tuple[str, ...], kind: SourceKind, lineages: dict[str, Certificate],
        available: dict[str, Certificate], chosen: Certificate | None, names: set[str] | None) -> None:
    s = site(*domains, kind=kind)
    got = adopted.adopt([s], lineages, available).get(s.name)
    if chosen is None:
        assert got is None
        return
    assert got is not None and got.serial == chosen.serial and got.names == frozenset(names or ())
    assert got.name == s.name and got.fullchain_path == chosen.fullchain_path


def test_the_longest_lasting_covering_certificate_is_chosen() -> None:
    short, long = _adopted("b.example.com", lineage="old", days_left=5), _adopted("b.example.com", lineage="new")
    got = adopted.adopt([site("b.example.com")], {}, {"old": short, "new": long})["b.example.com"]
    assert got.serial == long.serial


@pytest.mark.parametrize(
    ("certificate", "action", "says"),
    [
        (dataclasses.replace(A, key_type="rsa"), Action.OK, "(adopted from /etc/nginx/certs/a.example.com)"),
        (dataclasses.replace(_adopted("a.example.com", "www.a.example.com", days_left=10), key_type="rsa"),
         Action.RENEW, "due since"),
        (dataclasses.replace(OWN, key_type="rsa"), Action.REKEY, "key type rsa -> ecdsa"),
    ],
    ids=["adopted-rsa-served-as-it-is", "adopted-due-renewed", "own-lineage-rekeyed"],
)
def test_the_planner_serves_an_adopted_certificate_until_due(certificate: Certificate, action: Action,
                                                            says: str) -> None:
    d = decide(site("a.example.com", "www.a.example.com"), certificate, None, Policy(key_type="ecdsa"), NOW)
    assert d.action is action and says in d.reason


def test_the_store_adds_adopted_certificates_and_its_own_lineage_wins(tmp_path: Path) -> None:
    d = tmp_path / "nginx-certs"
    base = companion(d, "a.example.com", ["a.example.com"])
    store = LineageStore(tmp_path / "le", d)
    sites = [site("a.example.com"), site("b.example.com")]
    found, problems = store.for_sites(sites)
    assert list(found) == ["a.example.com"] and problems == []
    assert found["a.example.com"].privkey_path == f"{base}/key.pem"
    assert store.certificates() == {}  # (the real lineages alone: what certbot made)
    write_lineage(tmp_path / "le", "a.example.com", not_before=NOW, not_after=NOW + timedelta(days=90))
    store.forget()
    mine = store.for_sites(sites)[0]["a.example.com"]
    assert mine.adopted_from == "" and mine.privkey_path == str(tmp_path / "le/live/a.example.com/privkey.pem")
    assert LineageStore(tmp_path / "le").for_sites(sites)[0].keys() == {"a.example.com"}
    assert sorted(os.listdir(base)) == [".companion", "cert.pem", "chain.pem", "fullchain.pem", "key.pem"]
