from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from sidecar.adapters import nginx as nginx_adapter
from sidecar.adapters.docker_api import ExecResult
from sidecar.core.errors import DockerUnavailable, NginxError
from sidecar.adapters.nginx import DockerNginx, apply, first_error_line, owned_files
from sidecar.state.files import atomic_write
from sidecar.core.render import GLOBAL_FILE, POOLS_FILE, pool_blocks, pool_name, render_pools

from .builders import site

G = GLOBAL_FILE
A = "sidecar-site-a.example.com.conf"
B = "sidecar-site-b.example.com.conf"
C = "sidecar-site-c.example.com.conf"
HAND = "default.conf"


class FakeNginx:
    """Stands in for ``nginx -t`` / ``nginx -s reload`` on a real directory.

    A file containing ``BROKEN`` fails the test the way nginx reports it:
    ``nginx: [emerg] ... in /etc/nginx/conf.d/FILE:LINE``.
    """

    def __init__(self, conf_dir: Path, reload_ok: bool = True) -> None:
        self.conf_dir = conf_dir
        self.reload_ok = reload_ok
        self.tests: list[dict[str, bytes]] = []
        self.reloads: list[dict[str, bytes]] = []

    def _snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.conf_dir.iterdir())}

    def test(self) -> tuple[bool, str]:
        self.tests.append(self._snapshot())
        for name, data in self.tests[-1].items():
            if name.endswith(".conf") and b"BROKEN" in data:
                line = data[: data.index(b"BROKEN")].count(b"\n") + 1
                return False, (
                    f'nginx: [emerg] unknown directive "BROKEN" in /etc/nginx/conf.d/{name}:{line}\n'
                    "nginx: configuration file /etc/nginx/nginx.conf test failed\n"
                )
        return True, (
            "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
            "nginx: configuration file /etc/nginx/nginx.conf test is successful\n"
        )

    def reload(self) -> tuple[bool, str]:
        self.reloads.append(self._snapshot())
        if self.reload_ok:
            return True, ""
        return False, "nginx: [alert] kill(1, 1) failed (3: No such process)\n"


def conf(body: str) -> str:
    return f"# managed\nserver {{\n    {body}\n}}\n"


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / HAND).write_text("server { listen 8080; }\n")
    (d / "sidecar-notes.txt").write_text("not a conf file\n")
    (d / "my-sidecar-site.conf").write_text("server { listen 8081; }\n")
    return d


@pytest.fixture(autouse=True)
def no_temp_leftovers(tmp_path: Path):  # type: ignore[no-untyped-def]
    yield
    assert list(tmp_path.rglob(".sidecar-tmp-*")) == []


def _set_up(conf_dir: Path, state: dict[str, str]) -> None:
    fake = FakeNginx(conf_dir)
    apply(conf_dir, state, fake)


def test_first_apply_writes_files_tests_and_reloads_once(conf_dir: Path) -> None:
    fake = FakeNginx(conf_dir)
    foreign = {n: files(conf_dir)[n] for n in (HAND, "sidecar-notes.txt", "my-sidecar-site.conf")}
    result = apply(conf_dir, {G: conf("g"), A: conf("a")}, fake)
    assert result.changed and result.reloaded
    assert result.written == [G, A] and result.removed == [] and result.rejected == {}
    assert len(fake.tests) == 1 and len(fake.reloads) == 1
    # the test saw the new files already in place
    assert fake.tests[0][A] == conf("a").encode()
    assert (conf_dir / A).read_text() == conf("a")
    assert oct((conf_dir / A).stat().st_mode & 0o777) == "0o644"
    assert {n: files(conf_dir)[n] for n in foreign} == foreign


def test_unchanged_means_no_test_and_no_reload(conf_dir: Path) -> None:
    wanted = {G: conf("g"), A: conf("a")}
    _set_up(conf_dir, wanted)
    fake = FakeNginx(conf_dir)
    result = apply(conf_dir, wanted, fake)
    assert not result.changed and not result.reloaded
    assert fake.tests == [] and fake.reloads == []


def test_removed_site_file_is_deleted_and_reloaded(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g"), A: conf("a"), B: conf("b")})
    inodes = {n: (conf_dir / n).stat().st_ino for n in (G, A)}
    fake = FakeNginx(conf_dir)
    result = apply(conf_dir, {G: conf("g"), A: conf("a")}, fake)
    assert result.removed == [B] and result.written == [] and result.reloaded
    # unchanged files are left alone, not rewritten
    assert {n: (conf_dir / n).stat().st_ino for n in (G, A)} == inodes
    assert not (conf_dir / B).exists()
    assert len(fake.reloads) == 1


@pytest.mark.parametrize("existed", [False, True], ids=["new-file-removed", "previous-content-restored"])
def test_bad_site_file_alone_is_held_back(conf_dir: Path, existed: bool) -> None:
    before = {G: conf("g"), A: conf("a")} | ({B: conf("b-old")} if existed else {})
    _set_up(conf_dir, before)
    fake = FakeNginx(conf_dir)
    rejected: list[tuple[str, str]] = []
    wanted = {G: conf("g2"), A: conf("a2"), B: conf("BROKEN"), C: conf("c")}
    result = apply(conf_dir, wanted, fake, on_reject=lambda f, r: rejected.append((f, r)))
    assert rejected == [(B, 'unknown directive "BROKEN" in /etc/nginx/conf.d/' + B + ":3")]
    assert result.rejected == dict(rejected)
    assert len(fake.tests) == 2 and len(fake.reloads) == 1
    # the reload saw the good new files and the held-back file's previous state
    seen = fake.reloads[0]
    assert seen[G] == conf("g2").encode() and seen[A] == conf("a2").encode() and seen[C] == conf("c").encode()
    if existed:
        assert (conf_dir / B).read_text() == conf("b-old")
        assert seen[B] == conf("b-old").encode()
    else:
        assert not (conf_dir / B).exists() and B not in seen
    assert result.reloaded and B not in result.written
    assert sorted(result.written) == sorted([G, A, C])


def test_several_bad_site_files_are_isolated_one_by_one(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g")})
    fake = FakeNginx(conf_dir)
    result = apply(conf_dir, {G: conf("g"), A: conf("BROKEN a"), B: conf("BROKEN b"), C: conf("c")}, fake)
    assert sorted(result.rejected) == [A, B]
    assert sorted(n for n in owned_files(conf_dir)) == [G, C]
    assert len(fake.reloads) == 1


def test_nothing_left_after_isolation_means_no_reload(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g")})
    fake = FakeNginx(conf_dir)
    result = apply(conf_dir, {G: conf("g"), A: conf("BROKEN")}, fake)
    assert result.rejected.keys() == {A}
    assert not result.changed and not result.reloaded and fake.reloads == []


@pytest.mark.parametrize(
    "breaker",
    ["global", "hand-written"],
)
def test_other_failures_restore_everything_byte_for_byte(conf_dir: Path, breaker: str) -> None:
    # Someone edited an owned file (CRLF, Latin-1): restoring it must not normalise or re-encode it.
    _set_up(conf_dir, {G: conf("g"), A: conf("a"), B: conf("b")})
    (conf_dir / B).write_bytes(b"# edited caf\xe9\r\nserver {\r\n}\r\n")
    before = files(conf_dir)
    wanted = {G: conf("g2"), A: conf("a2"), C: conf("c")}
    if breaker == "global":
        wanted[G] = conf("BROKEN")
    elif breaker == "hand-written":
        (conf_dir / HAND).write_text("BROKEN\n")
        before = files(conf_dir)
    fake = FakeNginx(conf_dir)
    rejected: list[str] = []
    with pytest.raises(NginxError, match="previous configuration restored") as info:
        apply(conf_dir, wanted, fake, on_reject=lambda f, r: rejected.append(f))
    assert "BROKEN" in info.value.output
    assert files(conf_dir) == before
    assert fake.reloads == [] and rejected == []


def test_an_unchanged_site_file_that_now_fails_is_left_out_and_the_others_go_ahead(conf_dir: Path) -> None:
    # e.g. its upstream's name no longer resolves: it must not block every other site's updates.
    _set_up(conf_dir, {G: conf("g"), A: conf("a BROKEN")})
    fake = FakeNginx(conf_dir)
    rejected: list[str] = []
    result = apply(conf_dir, {G: conf("g"), A: conf("a BROKEN"), C: conf("c")}, fake,
                   on_reject=lambda f, r: rejected.append(f))
    assert rejected == [A] and result.rejected.keys() == {A}
    assert sorted(owned_files(conf_dir)) == [G, C]
    assert len(fake.reloads) == 1


def test_a_reload_failing_twice_restores_the_previous_files_without_reloading_them(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("old")})
    before = files(conf_dir)
    fake = FakeNginx(conf_dir, reload_ok=False)
    # nginx goes on with what it had loaded: after one more try the files are put back to match it.
    with pytest.raises(NginxError, match=r"did not load the new configuration, previous configuration restored: "
                                         r"kill\(1, 1\) failed"):
        apply(conf_dir, {G: conf("g")}, fake)
    assert files(conf_dir) == before
    assert len(fake.reloads) == 2 and len(fake.tests) == 2  # a test and a reload, again; none of the old files
    assert all(r[G] == conf("g").encode() for r in fake.reloads)


class RacingNginx(FakeNginx):
    """A site file is changed between ``nginx -t`` and the reload (another writer, an editor): the
    reload refuses the configuration, and the next test blames the file."""

    def __init__(self, conf_dir: Path, victim: str) -> None:
        super().__init__(conf_dir)
        self.victim = victim

    def reload(self) -> tuple[bool, str]:
        if not self.reloads and self.victim:
            (self.conf_dir / self.victim).write_text(conf("a BROKEN"))
            self.reloads.append(self._snapshot())
            return False, "2026/11/29 18:09:43 [emerg] 1#1: unknown directive \"BROKEN\"\n"
        return super().reload()


def test_a_reload_refused_after_a_passed_test_is_tested_again_and_the_blamed_file_held_back(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g")})
    fake = RacingNginx(conf_dir, A)
    rejected: list[str] = []
    result = apply(conf_dir, {G: conf("g"), A: conf("a"), C: conf("c")}, fake, on_reject=lambda f, r: rejected.append(f))
    assert rejected == [A] and result.reloaded
    assert sorted(owned_files(conf_dir)) == [G, C] and len(fake.reloads) == 2
    assert C in fake.reloads[-1] and A not in fake.reloads[-1]


def test_nginx_error_lines_lose_the_process_numbers() -> None:
    assert first_error_line('2026/11/29 18:15:20 [emerg] 1#1: cache "zz" had previously different levels') == \
        'cache "zz" had previously different levels'


def test_a_write_that_fails_midway_puts_every_previous_file_back(conf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full or a read-only volume after some files were replaced: nothing half-written stays."""
    from sidecar.adapters import nginx as nginx_mod

    _set_up(conf_dir, {G: conf("old g"), A: conf("old a")})
    before = files(conf_dir)
    real, writes = nginx_mod.atomic_write, []

    def full_disk(path: Path, content: str) -> None:
        writes.append(path.name)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        real(path, content)

    monkeypatch.setattr(nginx_mod, "atomic_write", full_disk)
    fake = FakeNginx(conf_dir)
    with pytest.raises(NginxError, match="cannot write the nginx config, previous configuration restored: .*No space"):
        apply(conf_dir, {G: conf("g"), A: conf("a"), C: conf("c")}, fake)
    assert files(conf_dir) == before and fake.reloads == [] and fake.tests == []


def test_failed_verification_after_reload_restores_and_reloads_the_old_files(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g")})
    before = files(conf_dir)
    seen: list[list[str]] = []

    def verify(written: list[str]) -> str:
        seen.append(written)
        return "wrong or no certificate for a.example.com"

    fake = FakeNginx(conf_dir)
    with pytest.raises(NginxError, match="did not serve what was written"):
        apply(conf_dir, {G: conf("g"), "sidecar-site-a.example.com.conf": conf("a")}, fake, verify=verify)
    assert seen == [["sidecar-site-a.example.com.conf"]]
    assert files(conf_dir) == before
    assert len(fake.reloads) == 2


def test_passing_verification_keeps_the_new_files(conf_dir: Path) -> None:
    result = apply(conf_dir, {G: conf("g")}, FakeNginx(conf_dir), verify=lambda written: "")
    assert result.reloaded and (conf_dir / G).read_text() == conf("g")


def test_isolation_is_bounded(conf_dir: Path) -> None:
    _set_up(conf_dir, {G: conf("g")})
    before = files(conf_dir)
    wanted = {G: conf("g")} | {f"sidecar-site-{i}.example.com.conf": conf("BROKEN") for i in range(5)}
    fake = FakeNginx(conf_dir)
    with pytest.raises(NginxError, match="kept failing"):
        apply(conf_dir, wanted, fake, max_isolations=2)
    assert files(conf_dir) == before and fake.reloads == []


def test_missing_conf_dir_is_created(tmp_path: Path) -> None:
    d = tmp_path / "new" / "conf.d"
    result = apply(d, {G: conf("g")}, FakeNginx(d))
    assert result.reloaded and (d / G).read_text() == conf("g")


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "x.conf"
    atomic_write(target, "one\n")
    atomic_write(target, "two\n")
    assert target.read_text() == "two\n"
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing-dir" / "y.conf", "x")


@pytest.mark.parametrize(
    ("output", "line"),
    [
        ('nginx: [warn] the "ssl" directive is deprecated\nnginx: [emerg] cannot load certificate "/x": '
         "BIO_new_file() failed\nnginx: configuration file /etc/nginx/nginx.conf test failed\n",
         'cannot load certificate "/x": BIO_new_file() failed'),
        ("something\nlast words\n\n", "last words"),
        ("", "no output"),
    ],
    ids=["emerg", "last-line", "empty"],
)
def test_first_error_line(output: str, line: str) -> None:
    assert first_error_line(output) == line


class EngineNginx:
    """The Docker adapter's surface ``DockerNginx`` uses, for an nginx that is its container's PID 1.

    SIGHUP starts new workers after ``loads`` looks; ``top`` says whether the engine can list
    processes (``children``); every ``docker exec`` is recorded."""

    def __init__(self, loads: int = 3, top: bool = True, top_fails_from: int | None = None,
                 refuse: str = "", logs: bool = True, test_output: tuple[int, str] = (0, "")) -> None:
        self.loads, self.top, self.top_fails_from = loads, top, top_fails_from
        self.refuse, self.logs, self.test_output = refuse, logs, test_output  # (a SIGHUP nginx refuses: why)
        self.log: list[tuple[float, str]] = [(time.time() - 60, "2026/11/29 17:00:00 [emerg] 1#1: an old failure")]
        self.workers, self.next_pid, self.looks, self.execs, self.kills = {11, 12}, 100, 0, [], []  # type: ignore[var-annotated]
        self.pending = -1  # looks left until the new workers appear (-1: no reload under way)

    def _look(self) -> set[int]:
        if self.pending > 0:
            self.pending -= 1
        elif self.pending == 0:
            self.workers, self.pending = {self.next_pid, self.next_pid + 1}, -1
            self.next_pid += 2
        return set(self.workers)

    def children(self, container_id: str) -> set[int]:
        self.looks += 1
        if not self.top or (self.top_fails_from is not None and self.looks >= self.top_fails_from):
            raise DockerUnavailable(f"container {container_id[:12]}: no process list from the engine")
        return {pid + 10000 for pid in self._look()}  # (the host's numbers)

    def exec(self, container_id: str, cmd: list[str], **_: object) -> ExecResult:
        self.execs.append(cmd)
        if cmd == ["cat", "/proc/1/cmdline"]:
            return ExecResult(0, "nginx: master process nginx -g daemon off;")
        if cmd == ["cat", "/proc/1/task/1/children"]:
            return ExecResult(0, " ".join(map(str, sorted(self._look()))))
        if cmd == ["nginx", "-t"]:
            return ExecResult(*self.test_output)
        return ExecResult(0, "")

    def log_lines(self, container_id: str, since: float, tail: int = 1000) -> list[str]:
        if not self.logs:
            raise DockerUnavailable("reading the log failed: configured logging driver does not support reading")
        return [line for at, line in self.log[-tail:] if at >= since]

    def kill(self, container_id: str, signal: str) -> None:
        self.kills.append(signal)
        if self.refuse:
            self.log += [(time.time(), "2026/11/29 18:00:00 [notice] 1#1: reconfiguring"),
                         (time.time(), "2026/11/29 18:00:00 [emerg] 7#7: a worker's trouble"),
                         (time.time(), f"2026/11/29 18:00:00 [emerg] 1#1: {self.refuse}")]
        else:
            self.pending = self.loads


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    yield
    for cache in (nginx_adapter._SIGNALS, nginx_adapter._NO_TOP, nginx_adapter._NO_LOGS,  # noqa: SLF001
                  nginx_adapter._LONGEST_TEST):  # noqa: SLF001
        cache.clear()


@pytest.mark.usefixtures("fresh_caches")
def test_a_reload_is_sighup_and_new_workers_seen_by_the_engine_without_exec_polling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.0, 0.0))
    engine = EngineNginx(loads=5)
    control = DockerNginx(engine, "c" * 64)  # type: ignore[arg-type]
    assert control.reload() == (True, "")
    assert engine.kills == ["SIGHUP"]
    assert engine.execs == [["cat", "/proc/1/cmdline"]]  # (once per container: is nginx PID 1?)
    assert engine.looks >= 6 and engine.workers == {100, 101}
    assert control.reload() == (True, "") and engine.execs == [["cat", "/proc/1/cmdline"]]


@pytest.mark.usefixtures("fresh_caches")
def test_an_engine_that_cannot_list_processes_is_looked_inside_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.0, 0.0))
    engine = EngineNginx(loads=2, top=False)
    control = DockerNginx(engine, "d" * 64)  # type: ignore[arg-type]
    assert control.reload() == (True, "")
    assert engine.execs.count(["cat", "/proc/1/task/1/children"]) >= 3  # before, and until the new ones
    assert engine.workers == {100, 101}


@pytest.mark.usefixtures("fresh_caches")
def test_an_engine_listing_lost_during_a_reload_is_an_error_not_a_false_success(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.0, 0.0))
    engine = EngineNginx(loads=50, top_fails_from=3)
    control = DockerNginx(engine, "e" * 64)  # type: ignore[arg-type]
    with pytest.raises(DockerUnavailable):
        control.reload()
    assert ["cat", "/proc/1/task/1/children"] not in engine.execs  # (never compares host and container PIDs)


@pytest.mark.usefixtures("fresh_caches")
def test_a_configuration_nginx_does_not_load_is_a_failed_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.0, 0.0))
    monkeypatch.setattr(nginx_adapter, "RELOAD_TIMEOUT", 0.2)
    engine = EngineNginx(loads=10**9)
    ok, output = DockerNginx(engine, "f" * 64).reload()  # type: ignore[arg-type]
    assert not ok and "no new worker processes" in first_error_line(output)


@pytest.mark.usefixtures("fresh_caches")
def test_a_reload_nginx_refuses_is_seen_in_its_log_at_once_not_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed after ``nginx -t``, or what only a reload checks: the master logs [emerg] and
    keeps the old workers. Waiting two minutes for new ones held every pass (and CI) hostage."""
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.0, 0.0))
    monkeypatch.setattr(nginx_adapter, "RELOAD_LOG_AFTER", 0.0)
    engine = EngineNginx(refuse='cache "zz" had previously different levels')
    started = time.monotonic()
    ok, output = DockerNginx(engine, "a" * 64).reload()  # type: ignore[arg-type]
    assert not ok and time.monotonic() - started < 1.0 and engine.looks <= 3  # (is it PID 1, before, after)
    assert first_error_line(output) == 'cache "zz" had previously different levels'
    assert "old failure" not in output and "worker" not in output  # (only since the SIGHUP, only the master)


@pytest.mark.usefixtures("fresh_caches")
def test_without_a_readable_log_a_refused_reload_is_seen_by_nginx_t(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.01, 0.01))
    monkeypatch.setattr(nginx_adapter, "RELOAD_TEST_AFTER", 0.1)
    monkeypatch.setattr(nginx_adapter, "RELOAD_LOG_AFTER", 0.0)
    broken = 'nginx: [emerg] cannot load certificate "/etc/letsencrypt/live/x/fullchain.pem"\n'
    engine = EngineNginx(refuse="x", logs=False, test_output=(1, broken))
    started = time.monotonic()
    ok, output = DockerNginx(engine, "b" * 64).reload()  # type: ignore[arg-type]
    assert not ok and output == broken and time.monotonic() - started < 2.0
    assert engine.execs.count(["nginx", "-t"]) == 1 and "b" * 64 in nginx_adapter._NO_LOGS  # noqa: SLF001


@pytest.mark.usefixtures("fresh_caches")
def test_a_slow_load_that_passes_nginx_t_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.01, 0.01))
    monkeypatch.setattr(nginx_adapter, "RELOAD_TEST_AFTER", 0.05)
    engine = EngineNginx(loads=40, logs=False)
    assert DockerNginx(engine, "c" * 64).reload() == (True, "")  # type: ignore[arg-type]
    assert 1 <= engine.execs.count(["nginx", "-t"]) <= 4  # (asked less and less often)


@pytest.mark.usefixtures("fresh_caches")
def test_a_slow_load_with_a_readable_log_gets_no_nginx_t_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """At ten thousand sites a full `nginx -t` during the reload took the loading master's CPU (16 -> 26 s)."""
    monkeypatch.setattr(nginx_adapter, "RELOAD_POLL", (0.01, 0.01))
    monkeypatch.setattr(nginx_adapter, "RELOAD_TEST_AFTER", 0.05)
    monkeypatch.setattr(nginx_adapter, "RELOAD_LOG_AFTER", 0.0)
    engine = EngineNginx(loads=40)
    assert DockerNginx(engine, "f" * 64).reload() == (True, "")  # type: ignore[arg-type]
    assert ["nginx", "-t"] not in engine.execs


def test_the_cache_of_written_files_shares_the_rendered_text(conf_dir: Path) -> None:
    """Ten thousand site files are not kept twice in memory (once rendered, once as read back)."""
    wanted = {G: "global\n", A: "site a " * 50 + "\n"}
    apply(conf_dir, wanted, FakeNginx(conf_dir))
    again = {name: "".join(list(text)) for name, text in wanted.items()}  # equal, other objects
    apply(conf_dir, again, FakeNginx(conf_dir))
    assert all(owned_files(conf_dir)[name] is again[name] for name in again)


def _pooled(*specs: tuple[str, str, str]) -> dict[str, str]:
    """(site name, upstream host, body) -> the global file, the pools file and the site files as render_all writes them."""
    sites = {n: site(n, upstream=("http", host, 80)) for n, host, _ in specs}
    out = {G: conf("g"), POOLS_FILE: render_pools(list(sites.values()))}
    for n, _, body in specs:
        out[f"sidecar-site-{n}.conf"] = conf(f"proxy_pass http://{pool_name(sites[n])}; {body}")
    return out


def test_a_pool_nginx_refuses_holds_back_the_sites_that_use_it_and_no_other(conf_dir: Path) -> None:
    # e.g. the one backend host of two sites no longer resolves ("host not found in upstream")
    _set_up(conf_dir, _pooled(("a.example.com", "app", ""), ("c.example.com", "other", "")))
    wanted = _pooled(("a.example.com", "BROKEN", ""), ("b.example.com", "BROKEN", ""), ("c.example.com", "other", "c2"))
    fake = FakeNginx(conf_dir)
    rejected: list[str] = []
    result = apply(conf_dir, wanted, fake, on_reject=lambda f, r: rejected.append(f))
    assert sorted(rejected) == [A, B] and "in /etc/nginx/conf.d/" + POOLS_FILE in result.rejected[A]
    now = owned_files(conf_dir)
    assert "BROKEN" not in now[POOLS_FILE] and now[C] == wanted[C]  # the other site went ahead
    assert B not in now
    # a's previous version is back, with the pool it proxies to
    before = _pooled(("a.example.com", "app", ""))
    assert now[A] == before[A] and pool_blocks(before[POOLS_FILE]).keys() <= pool_blocks(now[POOLS_FILE]).keys()
    assert len(fake.reloads) == 1
