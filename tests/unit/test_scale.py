"""Ten thousand sites (issue 17): the pieces that keep a large configuration cheap, and the plan
saying when the last certificate can be requested under the CA's limits."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sidecar.adapters import nginx
from sidecar.core import ratelimits, render
from sidecar.core.model import Certificate, Site, SourceKind, Upstream
from sidecar.core.planner import Policy
from sidecar.core.schedule import schedule
from sidecar.ops.cli import format_plan
from sidecar.ops.httpserver import Page, plan_document

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
LE = ratelimits.PROFILES["letsencrypt"]


@pytest.fixture(autouse=True)
def _no_psl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimits, "registered_domain", lambda name: ".".join(name.split(".")[-2:]))


def site(name: str) -> Site:
    return Site((name,), (Upstream("http", "app", 80),), f"sites file entry {name}", SourceKind.FILE)


def test_new_orders_go_out_three_hundred_per_three_hours() -> None:
    wanted = [(f"s{i}.d{i}.test", (f"s{i}.d{i}.test",)) for i in range(1000)]  # a registered domain each
    times = ratelimits.project(LE, wanted, [], [], NOW)
    assert [times[k][0] for k, _ in wanted[:300]] == [NOW] * 300
    assert times["s300.d300.test"] == (NOW + timedelta(hours=3), "new orders per account")
    assert max(t for t, _ in times.values()) == NOW + timedelta(hours=9)  # 300 + 300 + 300 + 100


def test_one_registered_domain_gets_fifty_a_week_and_does_not_hold_back_the_others() -> None:
    wanted = [(f"s{i}.one.test", (f"s{i}.one.test",)) for i in range(120)] + [("other.test", ("other.test",))]
    issued = [(NOW - timedelta(days=1), "x", ("old.one.test",))]  # one of this week's fifty used
    times = ratelimits.project(LE, wanted, issued, [], NOW)
    assert times["s48.one.test"][0] == NOW and times["s49.one.test"][0] == NOW + timedelta(days=6)
    assert times["s49.one.test"][1] == "certificates per registered domain one.test"
    # 49 now; one as the old one leaves (6 days); 49 as the first 49 leave (7 days); one at 13 days; 20 at 14
    assert times["s50.one.test"][0] == NOW + timedelta(days=7) and times["s119.one.test"][0] == NOW + timedelta(days=14)
    assert times["other.test"] == (NOW, "")


def test_schedule_queues_what_the_budgets_allow_only_one_by_one_and_says_when_the_last_goes() -> None:
    sites = tuple(site(f"s{i}.d{i}.test") for i in range(400))
    work = schedule(sites, {}, {}, ratelimits_usage(), Policy(), LE, NOW)
    assert len(work.runnable) == 300 and len(work.queued) == 100 and not work.postponed
    assert work.last_request_at == NOW + timedelta(hours=3)
    assert work.next_wakeup == NOW + timedelta(hours=3)
    doc = plan_document(work.plan, NOW, {}, queued=work.queued, last_request_at=work.last_request_at,
                        page=Page(limit=5))
    assert doc["certificates_to_request"] == 400 and doc["queued_for_rate_limits"] == 100
    assert doc["last_request_at"] == (NOW + timedelta(hours=3)).isoformat() and len(doc["decisions"]) == 5
    text = format_plan(doc)
    assert "400 certificates to request, 100 of them queued for the CA's rate limits" in text
    assert "the last can be requested 2026-11-29 15:00 (in 3h)" in text and "(showing 5 of 400 sites)" in text
    assert schedule(sites, {}, {}, ratelimits_usage(), Policy(), None, NOW).last_request_at == NOW  # no limits


def ratelimits_usage():  # type: ignore[no-untyped-def]
    from sidecar.core.schedule import Usage
    return Usage()


def test_pages_filter_and_bad_numbers() -> None:
    page = Page.parse("q=S1&offset=1&limit=2")
    shown, info = page.select(["s1.a", "s2.a", "s10.a", "s11.a", "s12.a"], lambda x: (x,))
    assert shown == ["s10.a", "s11.a"] and info == {"total": 5, "matched": 4, "offset": 1, "limit": 2, "q": "s1"}
    with pytest.raises(ValueError, match="limit='x'"):
        Page.parse("limit=x")


def test_unchanged_sites_are_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cert = Certificate("a.test", frozenset({"a.test"}), NOW, NOW + timedelta(days=90), "CA", "ecdsa", 1,
                       fullchain_path="/f.pem", privkey_path="/k.pem")
    cache: render.RenderCache = {}
    first = render.render_all([site("a.test")], {"a.test": cert}, "/w", render.NginxTraits(), cache=cache)
    calls: list[str] = []
    real = render.render_site
    monkeypatch.setattr(render, "render_site", lambda s, *a: calls.append(s.name) or real(s, *a))
    assert render.render_all([site("a.test")], {"a.test": cert}, "/w", render.NginxTraits(), cache=cache) == first
    assert calls == []
    renewed = Certificate("a.test", cert.names, NOW, NOW + timedelta(days=91), "CA", "ecdsa", 2,
                          fullchain_path="/f.pem", privkey_path="/k.pem")
    render.render_all([site("a.test")], {"a.test": renewed}, "/w", render.NginxTraits(), cache=cache)
    assert calls == ["a.test"] and len(cache) == 1


class Control:
    def __init__(self, partial_ok: bool = True, reload_ok: bool = True) -> None:
        self.calls: list[str] = []
        self.partial_ok, self.reload_ok = partial_ok, reload_ok

    def test(self) -> tuple[bool, str]:
        self.calls.append("test")
        return True, ""

    def test_config(self, path: str) -> tuple[bool, str]:
        self.calls.append("test_config")
        return self.partial_ok, "" if self.partial_ok else 'nginx: [emerg] unknown "x" variable'

    def reload(self) -> tuple[bool, str]:
        self.calls.append("reload")
        ok, self.reload_ok = self.reload_ok, True  # (fails once)
        return ok, "" if ok else "nginx: [emerg] no new worker processes"


def _large(conf_dir: Path) -> dict[str, str]:
    wanted = {render.GLOBAL_FILE: "# global\n"}
    wanted.update({f"sidecar-site-s{i}.test.conf": f"# s{i}\n" for i in range(nginx.PARTIAL_TEST_MIN)})
    nginx.apply(conf_dir, wanted, Control())
    return wanted


def test_one_changed_file_of_many_is_tested_alone_then_the_reload_is_the_only_full_parse(tmp_path: Path) -> None:
    wanted = _large(tmp_path)
    control = Control()
    result = nginx.apply(tmp_path, {**wanted, "sidecar-site-new.test.conf": "# new\n"}, control, partial_test=True)
    assert control.calls == ["test_config", "reload"] and result.written == ["sidecar-site-new.test.conf"]
    config = (tmp_path / "sidecar-include" / nginx.PARTIAL_TEST_FILE).read_text()
    assert f"include {tmp_path}/sidecar-site-new.test.conf;" in config and "sidecar-site-s1.test" not in config


def test_a_partial_test_that_fails_or_a_reload_that_does_not_load_falls_back_to_the_full_test(tmp_path: Path) -> None:
    wanted = _large(tmp_path)
    control = Control(partial_ok=False)
    nginx.apply(tmp_path, {**wanted, "sidecar-site-new.test.conf": "# new\n"}, control, partial_test=True)
    assert control.calls == ["test_config", "test", "reload"]
    control = Control(reload_ok=False)
    result = nginx.apply(tmp_path, {**wanted, "sidecar-site-b.test.conf": "# b\n"}, control, partial_test=True)
    assert control.calls == ["test_config", "reload", "test", "reload"] and result.reloaded
    control = Control()
    nginx.apply(tmp_path, {**wanted, render.GLOBAL_FILE: "# global 2\n"}, control, partial_test=True)
    assert control.calls == ["test_config", "reload"]  # (the global file is in the small configuration)
    control = Control()
    nginx.apply(tmp_path, {n: f"# {n} again\n" for n in wanted}, control, partial_test=True)
    assert control.calls == ["test", "reload"]  # many files changed: all of it


def test_owned_files_sees_a_rewrite_of_the_same_size(tmp_path: Path) -> None:
    (tmp_path / "sidecar-site-a.conf").write_text("one\n")
    assert nginx.owned_files(tmp_path) == {"sidecar-site-a.conf": "one\n"}
    nginx.write_many(tmp_path, {"sidecar-site-a.conf": "two\n", "sidecar-site-b.conf": "b\n"})
    assert nginx.owned_files(tmp_path) == {"sidecar-site-a.conf": "two\n", "sidecar-site-b.conf": "b\n"}


def test_a_restart_does_not_parse_unchanged_certificates_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar.state import certs
    from sidecar.state.lineages import LineageStore

    from .certfactory import write_lineage
    write_lineage(tmp_path / "le", "a.test", ["a.test", "www.a.test"], NOW, NOW + timedelta(days=90),
                  server="https://ca.test/dir")
    store = LineageStore(tmp_path / "le", cache_file=tmp_path / "cache.json")
    first = store.certificates()
    assert not (tmp_path / "cache.json").exists()  # (kept after the pass, not while it plans)
    store.keep()
    parsed: list[str] = []
    real = certs.parse_certificate
    monkeypatch.setattr(certs, "parse_certificate", lambda pem, name, *a: parsed.append(name) or real(pem, name, *a))
    assert LineageStore(tmp_path / "le", cache_file=tmp_path / "cache.json").certificates() == first
    assert parsed == []
    write_lineage(tmp_path / "le", "a.test", ["a.test"], NOW, NOW + timedelta(days=91), server="https://ca.test/dir")
    store = LineageStore(tmp_path / "le", cache_file=tmp_path / "cache.json")
    again = store.certificates()
    assert parsed == ["a.test"] and again["a.test"].names == {"a.test"}
    store.keep()
    assert LineageStore(tmp_path / "le", cache_file=tmp_path / "cache.json").certificates() == again
    assert parsed == ["a.test"]
    (tmp_path / "cache.json").write_text("{not json")
    assert LineageStore(tmp_path / "le", cache_file=tmp_path / "cache.json").certificates() == again


def test_with_sites_scope_project_other_projects_labelled_containers_wake_nothing() -> None:
    from sidecar.core.settings import Settings
    from sidecar.sources.triggers import relevant_event

    def event(project: str, cid: str = "c1") -> dict[str, object]:
        return {"Type": "container", "Action": "start", "Actor": {"ID": cid, "Attributes": {
            "acme.domains": "x.test", "com.docker.compose.project": project}}}
    scoped, everywhere = Settings(sites_scope="project"), Settings()
    assert relevant_event(event("mine"), scoped, frozenset(), "mine")
    assert not relevant_event(event("theirs"), scoped, frozenset(), "mine")
    assert relevant_event(event("theirs", "known"), scoped, frozenset({"known"}), "mine")  # (one of its sites)
    assert relevant_event(event("theirs"), everywhere, frozenset(), "mine")


def test_a_partial_test_holds_only_the_pools_the_changed_files_need(tmp_path: Path) -> None:
    from .builders import cert, site
    sites = [site(f"s{i}.test", upstream=("http", f"app{i % 5}", 80)) for i in range(nginx.PARTIAL_TEST_MIN)]

    certs: dict[str, Any] = {}

    def files(ss: list[Any]) -> dict[str, str]:
        certs.update({s.name: cert(s.name) for s in ss if s.name not in certs})
        return render.render_all(ss, certs, "/var/www/acme", render.NginxTraits())

    nginx.apply(tmp_path, files(sites), Control())
    config = tmp_path / "sidecar-include" / nginx.PARTIAL_TEST_FILE
    same = site("same.test", upstream=("http", "app3", 80))  # a pool that exists: only its block is in the test
    control = Control()
    nginx.apply(tmp_path, files([*sites, same]), control, partial_test=True)
    assert control.calls == ["test_config", "reload"]
    blocks = re.findall(r"upstream (\S+) \{", config.read_text())
    assert blocks == [render.pool_name(same)] and "include" in config.read_text()
    new = site("new.test", upstream=("http", "fresh", 8080))  # a new pool: its block, not the others
    control = Control()
    nginx.apply(tmp_path, files([*sites, same, new]), control, partial_test=True)
    assert control.calls == ["test_config", "reload"]
    assert re.findall(r"upstream (\S+) \{", config.read_text()) == [render.pool_name(new)]
    assert "server fresh:8080;" in config.read_text() and f"sidecar-site-{new.name}.conf" in config.read_text()
