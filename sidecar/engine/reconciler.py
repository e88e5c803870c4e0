"""The level-triggered loop: triggers poke it, every pass works from full snapshots.

    Docker events ─┐
    sites file  ───┼─> poke() ─> debounce ─> pass: snapshot -> desired -> plan -> act
    timer       ───┘

One worker thread runs passes, so certbot runs and nginx reloads never race.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import secrets
import shutil
import ssl
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from tenacity import (Retrying, retry_if_exception_type, retry_if_result, stop_after_attempt, stop_never,
                      wait_exponential, wait_random_exponential)
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from sidecar.adapters import ari, nginx, runner

from sidecar.core import certbot, desired, names, nginxconf, ratelimits, render

from sidecar.state import certs, files, lineage, placeholder, runlogs

from sidecar.sources import labels, sitesfile
from sidecar.adapters.docker_api import Docker
from sidecar.core.errors import ConfigError, DockerUnavailable, InputError, NginxError, SidecarError
from sidecar.core.events import Event, Kind, Observers, PassSnapshot, SiteStatus
from sidecar.state.ledger import Ledger
from sidecar.core.model import Certificate, ContainerInfo, DesiredState, Problem, Site, SiteOptions, SourceKind
from sidecar.core.planner import Action, Decision, Plan, Policy, ari_plausible, backoff_delay, plan, renewal_time
from sidecar.core.settings import Settings

log = logging.getLogger("sidecar")

MAX_SLEEP = timedelta(minutes=5)
CA_BUNDLE_NAME = "sidecar-ca-bundle.pem"
STATUS_FILE = "status.json"
OWNER_LABEL = "nginx-acme-sidecar.owner"
ARI_SECONDS_PER_PASS = 1.0
VERIFY_SAMPLE = 10  # sites checked over TLS after a reload
LOADED_FILE = "nginx-loaded.sha256"  # what the last reload loaded (see _remember_loaded)
QUICK_RETRIES = 2
COMPOSE_PROJECT = "com.docker.compose.project"
LAST_GOOD_SITES = "sites-last-good.yml"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DockerNginx:
    """``nginx -t`` / ``nginx -s reload`` through ``docker exec``."""

    def __init__(self, docker: Docker, container_id: str) -> None:
        self.docker = docker
        self.container_id = container_id

    def test(self) -> tuple[bool, str]:
        r = self.docker.exec(self.container_id, ["nginx", "-t"])
        return r.exit_code == 0, r.output

    def reload(self) -> tuple[bool, str]:
        r = self.docker.exec(self.container_id, ["nginx", "-s", "reload"])
        return r.exit_code == 0, r.output


class _SitesFileHandler(FileSystemEventHandler):
    def __init__(self, path: Path, poke: Callable[[str], None]) -> None:
        self.path = str(path)
        self.poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Only changes: our own reads produce "opened"/"closed_no_write" events.
        if event.event_type not in ("created", "modified", "moved", "deleted", "closed"):
            return
        paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
        if self.path in paths:
            self.poke("sites file changed")


class _ConfDirHandler(FileSystemEventHandler):
    def __init__(self, poke: Callable[[str], None]) -> None:
        self.poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "moved", "deleted", "closed"):
            return
        if event.is_directory and event.event_type == "modified":
            return  # conf.d itself on every write in it, ours too: the files' own events say what changed
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        if any(p and nginxconf.relevant_change(p) for p in paths):
            self.poke("nginx config changed")


@dataclass
class _Memory:
    """What the previous passes saw, to log changes once instead of every pass."""

    problems: set[str] = field(default_factory=set)
    sites: dict[str, Site] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    file_sites: list[Site] | None = None
    file_problems: list[Problem] = field(default_factory=list)
    file_text: str | None = None
    file_error: str = ""
    nginx_traits: render.NginxTraits | None = None
    outside_fingerprint: tuple[object, ...] | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    nginx_id: str = ""


class Reconciler:
    def __init__(self, settings: Settings, docker: Docker, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.docker = docker
        self.clock = clock
        self.ledger = Ledger.load(settings.state_dir / "ledger.json")
        self.policy = Policy(key_type=settings.key_type, acme_server=settings.acme_server,
                             backoff=settings.backoff)
        self.memory = _Memory()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reasons: list[str] = []
        self._lock = threading.Lock()
        self.own_id: str | None = None
        self.certbot_volumes: dict[str, dict[str, str]] = {}
        self.runner: runner.Runner | None = None
        self.passes = 0
        self._timer: threading.Timer | None = None
        self.observers = Observers()
        self._main_dir_lock = threading.Lock()
        self._ledger_lock = threading.Lock()
        self._nginx_addr: tuple[str, int] | None = None
        self.limits = ratelimits.PROFILES[settings.rate_limits]
        self.me: ContainerInfo | None = None
        self.ari = ari.AriClient(settings.acme_server, settings.acme_ca_bundle) if settings.ari else None
        # lineage -> (serial, window or None, when to ask again)
        self._ari_cache: dict[str, tuple[int, tuple[datetime, datetime] | None, datetime]] = {}
        self._ari_down_until = datetime.min.replace(tzinfo=timezone.utc)
        self._ari_backlog = False  # some certificates were not asked about yet (time budget)
        self.owner = "host"
        self._ambiguous_nginx = ""
        self._user_defaults: frozenset[int] = frozenset()
        self._user_conf_files: tuple[str, ...] = ()
        # site name -> when a rate-limit budget frees up for it
        self._postponed: dict[str, datetime | None] = {}
        self._account_paused_until: datetime | None = None
        self._relevant_ids: frozenset[str] = frozenset()
        # Each pass reads the lineages several times (plan, render, status): parse each file once.
        self._lineage_cache: certs.LineageCache = {}
        self._lineages_memo: tuple[dict[str, Certificate], list[Problem]] | None = None
        self._lineages_generation = 0
        self._memo_lock = threading.Lock()
        self._status_content: dict[str, Any] = {}  # the status file as last written, without its time
        self._status_written = 0.0
        self._plan_logged: dict[str, tuple[tuple[str, datetime | None], datetime]] = {}
        # site name -> (exit code, output) of its latest certbot run
        self.last_certbot_output: dict[str, tuple[int | None, str]] = {}
        # sites an operator asked to renew now even if not due (``renew NAME --force``)
        self.forced: set[str] = set()
        # set while the ACME account is being registered ahead of the first certificate
        self._registering = threading.Event()

    def emit(self, kind: Kind, site: str = "", message: str = "", **details: object) -> None:
        self.observers.event(Event(kind, self.clock(), site, message, dict(details)))

    # -- triggers --------------------------------------------------------------
    def request_renewal(self, name: str, force: bool = False) -> str:
        """From the operator (``renew NAME [--force]``): retry now, ignoring our own back-off;
        with ``force`` renew even if not due. A CA's retry-after and rate limits still apply.
        Raises ``KeyError`` for an unknown site."""
        if name not in self.memory.sites:
            raise KeyError(name)
        with self._ledger_lock:
            attempt = self.ledger.attempts.get(name)
            if attempt is not None and attempt.last_failure is not None:
                self.ledger.attempts[name] = replace(attempt, last_failure=None)
                self.ledger.save()
        if force:
            self.forced.add(name)
        log.info("site %s: %s requested by operator", name, "forced renewal" if force else "renewal check")
        self.poke(f"operator: renew {name}")
        return f"site {name}: {'forced renewal' if force else 'renewal check'} requested; see the logs or status"

    def preview(self) -> Plan:
        """What the next pass would decide now, from the last pass's sites (for ``plan``)."""
        return self._plan(DesiredState(tuple(self.memory.sites.values())))

    def poke(self, reason: str) -> None:
        with self._lock:
            self._reasons.append(reason)
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.docker.close_events()

    def _watch_events(self) -> None:
        interesting = {"start", "die", "stop", "destroy", "rename", "update", "pause", "unpause", "connect", "disconnect"}
        retry = Retrying(
            wait=wait_exponential(multiplier=1, min=1, max=30),
            retry=retry_if_exception_type(DockerUnavailable),
            stop=stop_never,
            before_sleep=lambda rs: log.warning("Docker event stream lost (%s); reconnecting",
                                                rs.outcome.exception() if rs.outcome else "?"),
            reraise=True,
        )

        def follow() -> None:
            self.poke("event stream (re)connected")
            for event in self.docker.events():
                if self._stop.is_set():
                    return
                action = str(event.get("Action") or event.get("status") or "").split(":")[0]
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if self.settings.managed_label in attributes:
                    continue  # our own certbot containers coming and going
                if action in interesting and self._relevant(event, attributes):
                    self.poke(f"docker {event.get('Type')} {action}")
            if not self._stop.is_set():
                raise DockerUnavailable("event stream ended")

        try:
            retry(follow)
        except Exception as exc:  # noqa: BLE001 - the watcher thread must never die silently
            if not self._stop.is_set():
                log.error("Docker event watcher stopped: %s", exc)

    def _relevant(self, event: dict[str, Any], attributes: dict[str, Any]) -> bool:
        """Only events that can change the desired state wake the loop (a busy engine is full of others)."""
        s = self.settings
        if event.get("Type") == "network":
            return str(attributes.get("container", "")) in self._relevant_ids
        if f"{s.label_prefix}.domains" in attributes or s.nginx_label in attributes:
            return True
        actor = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
        return actor in self._relevant_ids or (s.nginx_container is not None
                                               and attributes.get("name") == s.nginx_container)

    def _watch_conf_dir(self) -> BaseObserver | None:
        """Hand-written nginx files: any change other than the sidecar's own writes pokes the loop."""
        conf_dir = self.settings.conf_dir
        if not conf_dir.is_dir():
            return None
        observer = Observer()
        observer.schedule(_ConfDirHandler(self.poke), str(conf_dir), recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    def _watch_sites_file(self) -> BaseObserver | None:
        path = self.settings.sites_file
        if path is None:
            return None
        parent = path.parent
        if not parent.is_dir():
            log.error("SITES_FILE=%s: directory %s does not exist; the sites file is not watched", path, parent)
            return None
        observer = Observer()
        observer.schedule(_SitesFileHandler(path, self.poke), str(parent), recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    # -- start-up --------------------------------------------------------------
    def prepare(self) -> None:
        s = self.settings
        for d in (s.certs_dir, s.webroot_dir, s.conf_dir, s.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        (s.webroot_dir / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
        self.own_id = self.docker.own_container_id(s.sidecar_container)
        if self.own_id:
            self.certbot_volumes = self.docker.mounts_for(self.own_id, [str(s.certs_dir), str(s.webroot_dir)])
        else:
            log.warning("not running in a container (or it could not be found): certbot gets host paths %s and %s",
                        s.certs_dir, s.webroot_dir)
            self.certbot_volumes = {str(s.certs_dir): {"bind": str(s.certs_dir), "mode": "rw"},
                                    str(s.webroot_dir): {"bind": str(s.webroot_dir), "mode": "rw"}}
        me = self.docker.find_container(self.own_id) if self.own_id else None
        self.me = me
        # certbot containers carry their owner, so several stacks on one engine never touch each other's.
        self.owner = me.name if me else "host"
        # First stop a certbot a killed predecessor left running: it may still write into .staging.
        removed = self.docker.remove_labelled(f"{OWNER_LABEL}={self.owner}")
        if removed:
            log.info("removed %d leftover certbot container(s) from an earlier run", removed)
        probes = (s.webroot_dir / ".well-known" / "acme-challenge").glob("sidecar-probe-*")
        temp_files = files.remove_temp_files([s.conf_dir, s.state_dir, s.certs_dir])
        for leftover in [*lineage.recover(s.certs_dir), *temp_files]:
            log.warning("cleaned up after an interrupted run: removed %s", leftover)
        for probe in probes:
            probe.unlink(missing_ok=True)
        for name in nginx.install_snippets(s.conf_dir, str(s.webroot_dir)):
            log.info("include snippet for hand-written configs: %s", s.conf_dir / nginxconf.SNIPPETS_DIRNAME / name)
        self.docker.ensure_image(s.certbot_image)
        sandbox = runner.Sandbox(
            image=s.certbot_image, volumes=self.certbot_volumes,
            network_mode=f"container:{self.own_id}" if self.own_id else None,
            labels={s.managed_label: "certbot", OWNER_LABEL: self.owner}, timeout=s.certbot_timeout_seconds)
        self.runner = (runner.ExecRunner(self.docker, sandbox, f"{self.owner}-certbot", s.certbot_concurrency)
                       if s.certbot_runner == "exec" else runner.ContainerRunner(self.docker, sandbox))

    def find_nginx(self, containers: list[ContainerInfo]) -> ContainerInfo | None:
        """The nginx to manage: by name, else the one labelled ``<prefix>.nginx=true``.

        With several labelled containers on the engine (several stacks), the one in
        the sidecar's own Compose project wins, then one sharing a network with it;
        another stack's nginx never does (while ours is re-created, we wait for it).
        """
        s = self.settings
        if s.nginx_container:
            want = s.nginx_container
            return next((c for c in containers if c.name == want or c.id.startswith(want)), None)
        marked = [c for c in containers if c.labels.get(s.nginx_label, "").lower() in ("true", "1", "yes")]
        me = self.me
        if marked and me is not None:
            project = me.labels.get(COMPOSE_PROJECT)
            same_project = [c for c in marked if project and c.labels.get(COMPOSE_PROJECT) == project]
            same_network = [c for c in marked if set(c.networks) & set(me.networks)]
            ours = same_project or same_network
            if not ours and len(marked) == 1 and not (project and marked[0].labels.get(COMPOSE_PROJECT)):
                ours = marked  # a lone nginx, and one of the two outside Compose: take it
            if not ours:
                # Never another stack's nginx (ours may be being re-created): wait for ours.
                names = ", ".join(c.name for c in marked)
                if names != self._ambiguous_nginx:
                    log.warning("ignoring %s (labelled %s=true but neither in this Compose project nor on a "
                                "network shared with the sidecar)", names, s.nginx_label)
                    self._ambiguous_nginx = names
            marked = ours
        if len(marked) > 1:
            names = ", ".join(c.name for c in marked)
            if names != self._ambiguous_nginx:
                log.warning("several containers carry %s=true (%s); using %s (set NGINX_CONTAINER to choose)",
                            s.nginx_label, names, marked[0].name)
                self._ambiguous_nginx = names
        return marked[0] if marked else None

    def probe_nginx(self, nginx_id: str) -> render.NginxTraits:
        if self.memory.nginx_id == nginx_id and self.memory.nginx_traits is not None:
            return self.memory.nginx_traits
        version = self.docker.exec(nginx_id, ["nginx", "-V"]).output
        v6 = self.docker.exec(nginx_id, ["cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"])
        traits = render.traits_from(version, v6.output if v6.exit_code == 0 else "")
        self.memory.nginx_id, self.memory.nginx_traits = nginx_id, traits
        log.info("nginx container %s: %s; IPv6 listeners %s; post-quantum key exchange %s",
                 nginx_id[:12], (version.splitlines() or ["?"])[0].strip(),
                 "on" if traits.ipv6 else "off", "on" if traits.post_quantum else "off")
        return traits

    # -- one pass --------------------------------------------------------------
    def _file_sites(self) -> tuple[list[Site], list[Problem]]:
        path = self.settings.sites_file
        if path is None:
            return [], []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as exc:
            return self._keep_last_good(f"sites file {path}: unreadable: {exc}")
        if text == self.memory.file_text and self.memory.file_sites is not None:
            return self.memory.file_sites, self.memory.file_problems
        try:
            sites, problems = sitesfile.parse_sites_file(text, str(path))
        except InputError as exc:
            return self._keep_last_good(str(exc))
        if self.memory.file_error:
            log.info("sites file %s is valid again", path)
        self.memory.file_text, self.memory.file_sites, self.memory.file_problems = text, sites, problems
        self.memory.file_error = ""
        last_good = self.settings.state_dir / LAST_GOOD_SITES
        try:
            if not last_good.exists() or last_good.read_text(encoding="utf-8") != text:
                files.atomic_write(last_good, text)
        except OSError as exc:
            log.warning("cannot keep a copy of the sites file in %s: %s", last_good, exc)
        return sites, problems

    def _keep_last_good(self, error: str) -> tuple[list[Site], list[Problem]]:
        if self.memory.file_sites is None:
            # Just started with a broken file: fall back to the copy kept by the previous run.
            try:
                text = (self.settings.state_dir / LAST_GOOD_SITES).read_text(encoding="utf-8")
                sites, problems = sitesfile.parse_sites_file(text, str(self.settings.sites_file))
                self.memory.file_sites, self.memory.file_problems = sites, problems
            except (OSError, InputError):
                pass
        if error != self.memory.file_error:
            kept = self.memory.file_sites or []
            log.error("%s; keeping the last good version (%d site%s)", error, len(kept), "" if len(kept) == 1 else "s")
            self.memory.file_error = error
        return self.memory.file_sites or [], self.memory.file_problems

    def snapshot(self) -> tuple[DesiredState, ContainerInfo | None]:
        containers = self.docker.list_containers()
        nginx_c = self.find_nginx(containers)
        self._relevant_ids = frozenset(
            c.id for c in containers
            if f"{self.settings.label_prefix}.domains" in c.labels or (nginx_c is not None and c.id == nginx_c.id)
        )
        nginx_networks = list(nginx_c.networks) if nginx_c else []
        label_sites, label_problems = labels.sites_from_containers(
            [c for c in containers if (nginx_c is None or c.id != nginx_c.id) and self._in_scope(c, nginx_networks)],
            self.settings.label_prefix, nginx_networks,
        )
        file_sites, file_problems = self._file_sites()
        conf_sites, conf_problems = self._conf_sites()
        file_sites = [*conf_sites, *file_sites]
        file_problems = [*conf_problems, *file_problems]
        return desired.merge(file_sites, label_sites, label_problems + file_problems), nginx_c

    def _in_scope(self, c: ContainerInfo, nginx_networks: list[str]) -> bool:
        """SITES_SCOPE: which containers may declare sites (all, this Compose project, nginx's networks)."""
        scope = self.settings.sites_scope
        if scope == "project":
            project = self.me.labels.get(COMPOSE_PROJECT) if self.me else None
            return bool(project) and c.labels.get(COMPOSE_PROJECT) == project
        if scope == "network":
            return bool(set(c.networks) & set(nginx_networks))
        return True

    def _report(self, state: DesiredState) -> None:
        now_problems = {str(p) for p in state.problems}
        for problem in state.problems:
            if str(problem) not in self.memory.problems:
                log.error("%s", problem)
                self.emit(Kind.INPUT_PROBLEM, "", str(problem), source=problem.source, error=problem.message)
        for p in sorted(self.memory.problems - now_problems):
            log.info("resolved: %s", p)
        self.memory.problems = now_problems
        current = state.by_name()
        for name, site in current.items():
            before = self.memory.sites.get(name)
            if before is None:
                log.info("site %s: added from %s (%s -> %s)", name, site.source, ", ".join(site.domains),
                         ", ".join(u.url for u in site.upstreams))
                self.emit(Kind.SITE_ADDED, name, f"added from {site.source}", domains=list(site.domains))
            elif (before.domains, before.upstreams, before.options) != (site.domains, site.upstreams, site.options):
                log.info("site %s: changed (%s -> %s)", name, ", ".join(site.domains),
                         ", ".join(u.url for u in site.upstreams))
        for name, site in self.memory.sites.items():
            if name not in current:
                log.info("site %s: removed (%s is gone); its certificate stays in %s for reuse",
                         name, site.source, self.settings.certs_dir / "live" / name)
                self.emit(Kind.SITE_REMOVED, name, f"{site.source} is gone")
        self.memory.sites = dict(current)

    def _apply(self, state: DesiredState, nginx_c: ContainerInfo) -> bool:
        """Render, test and reload; True when nginx was reloaded."""
        lineages, cert_problems = self._lineages()
        for p in cert_problems:
            log.warning("%s", p)
        traits = self.probe_nginx(nginx_c.id)
        conf_sites = [x for x in state.sites if x.source_kind == SourceKind.NGINX_CONF]
        try:  # put the include snippets back if the conf volume was emptied (writes only on change)
            nginx.install_snippets(self.settings.conf_dir, str(self.settings.webroot_dir))
        except OSError as exc:
            log.warning("cannot write the include snippets: %s", exc)
        wanted = render.render_all(
            [x for x in state.sites if x.source_kind != SourceKind.NGINX_CONF],
            lineages, str(self.settings.webroot_dir), traits, self.settings.tls_profile,
            str(self.settings.snippets_dir) if self.settings.snippets_dir else None,
            str(self.settings.templates_dir) if self.settings.templates_dir else None,
            self._user_defaults,
        )
        control = DockerNginx(self.docker, nginx_c.id)

        def rejected(filename: str, reason: str) -> None:
            if self.memory.rejected.get(filename) == reason:
                return  # said already; it is retried on every change and reported again if the error changes
            self.memory.rejected[filename] = reason
            log.error("nginx rejected %s, that site is held back (other sites unaffected): %s", filename, reason)
            self.emit(Kind.NGINX_REJECTED, filename.removeprefix("sidecar-site-").removesuffix(".conf"),
                      reason, file=filename, error=reason)

        try:
            result = nginx.apply(self.settings.conf_dir, wanted, control, on_reject=rejected,
                                 verify=lambda written: self._verify_served(written, lineages))
        except NginxError as exc:
            log.error("%s", exc)
            return False
        fingerprint = self._outside_fingerprint(conf_sites, lineages)
        owned = nginx.owned_files(self.settings.conf_dir)
        outside_reload = False
        if result.reloaded:
            self.memory.outside_fingerprint = fingerprint  # that reload picked up everything
            self._remember_loaded(nginx_c.id, fingerprint, owned)
        else:
            result.reloaded = outside_reload = self._reload_for_outside_changes(control, fingerprint, nginx_c.id,
                                                                                owned)
        live = {n for n in owned if n != render.GLOBAL_FILE}
        for filename in list(self.memory.rejected):
            if filename in live:
                log.info("%s accepted by nginx again", filename)
                del self.memory.rejected[filename]
        by_file = {names.site_filename(s.name): s for s in state.sites}
        for filename in sorted(live - self.memory.live):
            site = by_file.get(filename)
            if site is not None:
                names = [d for d in site.domains if d in lineages[site.name].names]
                log.info("site %s: live on %s", site.name, ", ".join(f"https://{d}" for d in names))
                self.emit(Kind.SITE_LIVE, site.name, "live", domains=names)
        if result.reloaded and not outside_reload:  # (that one said why already)
            log.info("nginx reloaded (%d file%s written, %d removed)", len(result.written),
                     "" if len(result.written) == 1 else "s", len(result.removed))
            self.emit(Kind.RELOAD, "", "nginx reloaded", written=result.written, removed=result.removed)
        self.memory.live = live
        return result.reloaded

    def _write_placeholders(self, state: DesiredState) -> None:
        lineages, _ = self._lineages()
        for site in state.sites:
            if site.source_kind != SourceKind.NGINX_CONF or site.name in lineages:
                continue
            try:
                if placeholder.write_placeholder(self.settings.certs_dir, site.name, site.domains):
                    self._forget_lineages()
                    log.info("site %s: placeholder certificate written so nginx accepts %s until the real one "
                             "is issued", site.name, site.source.removeprefix("nginx config "))
            except (OSError, ValueError) as exc:
                log.error("site %s: cannot write a placeholder certificate: %s", site.name, exc)

    @staticmethod
    def _loaded_digest(nginx_id: str, fingerprint: tuple[object, ...], owned: Mapping[str, str]) -> str:
        """What nginx has loaded after a reload: its container, the sidecar's files, the outside ones."""
        return hashlib.sha256(repr((nginx_id, sorted(owned.items()), fingerprint)).encode()).hexdigest()

    def _remember_loaded(self, nginx_id: str, fingerprint: tuple[object, ...], owned: Mapping[str, str]) -> None:
        """Kept across restarts, so a restart with nothing changed does not reload nginx."""
        try:
            files.atomic_write(self.settings.state_dir / LOADED_FILE,
                               self._loaded_digest(nginx_id, fingerprint, owned) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", self.settings.state_dir / LOADED_FILE, exc)

    def _reload_for_outside_changes(self, control: DockerNginx, fingerprint: tuple[object, ...],
                                    nginx_id: str, owned: Mapping[str, str]) -> bool:
        """Hand-written files edited, or a certificate they use replaced: test, then reload.

        A failing ``nginx -t`` keeps the running config and is reported with nginx's
        own error; the same fingerprint is not retried until something changes again.
        """
        if fingerprint == self.memory.outside_fingerprint:
            return False
        # First sight after a start: files may have been edited (or written without a reload)
        # while we were down, unless the last reload saw exactly what is there now.
        first = self.memory.outside_fingerprint is None
        self.memory.outside_fingerprint = fingerprint
        if first:
            try:
                stored = (self.settings.state_dir / LOADED_FILE).read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                stored = ""
            if stored and stored == self._loaded_digest(nginx_id, fingerprint, owned):
                return False
        ok, output = control.test()
        if not ok:
            reason = nginx.first_error_line(output)
            log.error("nginx rejected a change to the hand-written config; the running config stays: %s", reason)
            self.emit(Kind.NGINX_REJECTED, "", reason, file="hand-written config", error=reason)
            return False
        ok, output = control.reload()
        if not ok:
            log.error("nginx -s reload failed: %s", nginx.first_error_line(output))
            return False
        log.info("nginx reloaded (%s)", "first pass since start: picks up what changed meanwhile" if first
                 else "hand-written config or its certificates changed")
        self._remember_loaded(nginx_id, fingerprint, owned)
        self.emit(Kind.RELOAD, "", "nginx reloaded", written=[], removed=[])
        return True

    def _outside_fingerprint(self, conf_sites: list[Site], lineages: dict[str, Certificate]) -> tuple[object, ...]:
        files = []
        for path in sorted({*map(str, nginxconf.conf_d_roots(self.settings.conf_dir)), *self._user_conf_files}):
            try:
                st = os.stat(path)
                files.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                files.append((path, 0, -1))
        serials = sorted((x.name, lineages[x.name].serial if x.name in lineages else 0) for x in conf_sites)
        return (tuple(files), tuple(serials))

    def _verify_served(self, written: list[str], lineages: dict[str, Certificate]) -> str:
        """After a reload: does nginx present the changed sites' current certificates (TLS, SNI)?

        Checks up to ``VERIFY_SAMPLE`` of them, spread over the list: that catches an nginx that
        did not load what was written (another conf volume, certificates it cannot see) without a
        thousand handshakes. nginx loads a big configuration in the background: the time allowed
        grows with it."""
        if self._nginx_addr is None:
            return ""
        host = self._nginx_addr[0]
        changed = [n for f in written if f.startswith("sidecar-site-")
                   and (n := f.removeprefix("sidecar-site-").removesuffix(".conf")) in lineages]
        step = max(1, -(-len(changed) // VERIFY_SAMPLE))
        expected = {n: lineages[n].serial for n in changed[::step]}
        deadline = time.monotonic() + 5.0 + 0.01 * len(written)
        while expected:
            for name, serial in list(expected.items()):
                if _served_serial(host, name) == serial:
                    del expected[name]
            if not expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if expected:
            return "wrong or no certificate for " + ", ".join(sorted(expected))
        return ""

    def _lineages(self) -> tuple[dict[str, Certificate], list[Problem]]:
        """Real lineages on disk: placeholders for hand-written configs do not count.

        Read once and kept until something may have changed them (``_forget_lineages``): a
        pass asks several times, and the loop every quarter second while certbot runs."""
        with self._memo_lock:
            memo, generation = self._lineages_memo, self._lineages_generation
        if memo is None:
            found, problems = certs.read_lineages(self.settings.certs_dir, self._lineage_cache)
            for name in placeholder.placeholder_names(self.settings.certs_dir):
                found.pop(name, None)
            memo = (found, problems)
            with self._memo_lock:
                # A certbot thread may have changed the directory while this read ran: then it
                # is not kept (it may lack the new lineage), the next call reads again.
                if generation == self._lineages_generation:
                    self._lineages_memo = memo
        return dict(memo[0]), list(memo[1])

    def _forget_lineages(self) -> None:
        """The certificate directory may have changed (a certbot run, a placeholder, a new pass)."""
        with self._memo_lock:
            self._lineages_generation += 1
            self._lineages_memo = None

    def _conf_sites(self) -> tuple[list[Site], list[Problem]]:
        """Certificates named by hand-written server blocks in the conf dir (bring your own config)."""
        s = self.settings
        parsed = nginxconf.parse_tree(nginxconf.conf_d_roots(s.conf_dir), "/etc/nginx")
        demands, problems = nginxconf.certificate_demands(parsed.servers, str(s.certs_dir))
        self._user_defaults = frozenset(nginxconf.default_server_ports(parsed.servers))
        self._user_conf_files = parsed.files
        existing, _ = self._lineages()
        sites = []
        for demand in demands:
            current = existing.get(demand.name)
            sites.append(Site(
                domains=demand.domains,
                upstreams=(),
                source=f"nginx config {demand.sources[0]}",
                source_kind=SourceKind.NGINX_CONF,
                cert_name=demand.name,
                # Adopted lineages keep their key type (an RSA lineage made by hand stays RSA).
                options=SiteOptions(key_type=current.key_type if current else None),
            ))
        return sites, [*parsed.problems, *problems]

    def _certbot_env(self) -> dict[str, str]:
        bundle = self.settings.acme_ca_bundle
        if bundle is None:
            return {}
        target = self.settings.certs_dir / CA_BUNDLE_NAME
        try:
            data = bundle.read_bytes()
        except OSError as exc:
            raise ConfigError(f"ACME_CA_BUNDLE={bundle}: cannot read it: {exc}") from exc
        if not target.exists() or target.read_bytes() != data:
            files.atomic_write(target, data.decode("utf-8", "replace"))
        return {"REQUESTS_CA_BUNDLE": str(target)}

    def _drop_account(self, config_dir: Path) -> None:
        path = lineage.account_dir(config_dir, self.settings.acme_server)
        if path.is_dir():
            shutil.rmtree(path)
            log.warning("the ACME server no longer knows the stored account; registering a new one")

    def _run_certbot(self, decision: Decision, config_dir: Path | None) -> certbot.Outcome:
        site = decision.site
        opts = getattr(site, "options", None)
        args = certbot.arguments(
            self.settings, site.name, site.domains, decision.action,
            config_dir=str(config_dir) if config_dir else None,
            key_type=getattr(opts, "key_type", None), profile=getattr(opts, "acme_profile", None),
            account=(lineage.renewal_account(self.settings.certs_dir, site.name, self.settings.acme_server)
                     or lineage.default_account(config_dir or self.settings.certs_dir, self.settings.acme_server)),
        )
        env = self._certbot_env()
        outcome = certbot.Outcome(False, "certbot did not run", certbot.Failure.UNKNOWN)
        for attempt in range(2):
            if self.runner is None:
                raise SidecarError("certbot runner not prepared")
            result = self.runner.run(args, env, site.name)
            self.last_certbot_output[site.name] = (result.exit_code, result.output)
            runlogs.keep(self.settings.state_dir, site.name, result.exit_code, result.output, self.clock())
            outcome = certbot.classify(result.exit_code, result.output, self.clock())
            if outcome.failure == certbot.Failure.ACCOUNT_MISSING and attempt == 0:
                self._drop_account(config_dir or self.settings.certs_dir)
                if config_dir is not None:
                    self._drop_account(self.settings.certs_dir)
                continue
            if not outcome.ok:
                log.debug("certbot output for %s:\n%s", site.name, result.output)
            return outcome
        return outcome

    def _with_quick_retries(self, decision: Decision) -> certbot.Outcome:
        """A CA that is briefly unreachable or answers 5xx gets a few quick retries
        (exponential, with jitter) before the failure counts for the back-off schedule."""
        retrying = Retrying(
            stop=stop_after_attempt(1 + QUICK_RETRIES),
            wait=wait_random_exponential(multiplier=2, max=30),
            retry=retry_if_result(lambda o: o.failure == certbot.Failure.TRANSIENT and not self._stop.is_set()),
            before_sleep=lambda rs: log.warning(
                "site %s: the CA did not answer properly (%s); retrying shortly", decision.site.name,
                rs.outcome.result().summary if rs.outcome else "?"),
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else certbot.Outcome(
                False, "no attempt", certbot.Failure.UNKNOWN),
        )
        outcome: certbot.Outcome = retrying(self._issue_or_renew, decision)
        return outcome

    def _issue_or_renew(self, decision: Decision) -> certbot.Outcome:
        """Run certbot: new lineages side by side in a staging dir, the rest one at a time."""
        s = self.settings
        name = decision.site.name
        with self._ledger_lock:  # every certbot run sends one order: count each for the budget
            self.ledger.record_order(name, decision.site.domains, self.clock())
        has_placeholder = placeholder.is_placeholder_lineage(s.certs_dir, name)
        fresh = (decision.action in (Action.ISSUE, Action.EXPAND)
                 and (has_placeholder or lineage.is_fresh(s.certs_dir, name))
                 and lineage.has_account(s.certs_dir, s.acme_server))
        if not fresh:
            with self._main_dir_lock, placeholder.set_aside(s.certs_dir, name):
                # (a placeholder is out of live/ only while certbot runs; nginx keeps the one it loaded)
                return self._run_certbot(decision, None)
        staging = lineage.prepare_staging(s.certs_dir, name)
        try:
            outcome = self._run_certbot(decision, staging)
            if outcome.ok and not outcome.kept:
                with self._main_dir_lock, placeholder.set_aside(s.certs_dir, name):
                    lineage.adopt_staged(s.certs_dir, staging, name)
            return outcome
        except OSError as exc:
            return certbot.Outcome(False, f"could not move the new lineage into place: {exc}", certbot.Failure.UNKNOWN)
        finally:
            lineage.discard_staging(staging)

    def _obtain(self, decision: Decision) -> bool:
        site = decision.site
        verb = {Action.ISSUE: "requesting", Action.EXPAND: "updating", Action.REKEY: "replacing",
                Action.RENEW: "renewing"}[decision.action]
        log.info("site %s: %s certificate for %s (%s)", site.name, verb, ", ".join(site.domains), decision.reason)
        self.emit(Kind.CERT_REQUESTED, site.name, decision.reason, action=decision.action.value)
        self.forced.discard(site.name)
        started = time.monotonic()
        try:
            problem = self._preflight(site)
            if problem:
                outcome = certbot.Outcome(False, problem, certbot.Failure.PREFLIGHT)
            else:
                outcome = self._with_quick_retries(decision)
        except ConfigError as exc:
            outcome = certbot.Outcome(False, str(exc), certbot.Failure.UNKNOWN)
        except DockerUnavailable as exc:
            outcome = certbot.Outcome(False, str(exc), certbot.Failure.TRANSIENT)
        finally:
            self._forget_lineages()
        if self._stop.is_set() and not outcome.ok:
            log.info("site %s: certificate request abandoned (stopping)", site.name)
            return False
        now = self.clock()
        duration = time.monotonic() - started
        if outcome.ok:
            with self._ledger_lock:
                self.ledger.record_success(site.name, site.domains, now, issued=not outcome.kept)
                self.ledger.save()
            lineages, _ = self._lineages()
            cert = lineages.get(site.name)
            if cert is not None:
                log.info("site %s: certificate %s in %.1fs by %s, valid until %s UTC; renewal planned %s UTC",
                         site.name, "kept" if outcome.kept else "issued", duration,
                         cert.issuer, f"{cert.not_after:%Y-%m-%d %H:%M}", f"{renewal_time(cert):%Y-%m-%d %H:%M}")
                if not outcome.kept:
                    kind = Kind.CERT_RENEWED if decision.action == Action.RENEW else Kind.CERT_ISSUED
                    self.emit(kind, site.name, f"valid until {cert.not_after:%Y-%m-%d %H:%M} UTC",
                              not_after=cert.not_after, next_renewal=renewal_time(cert), duration=duration,
                              action=decision.action.value)
            return True
        with self._ledger_lock:
            attempt = self.ledger.record_failure(site.name, site.domains, now, outcome.summary, outcome.retry_after,
                                                 validation=outcome.failure == certbot.Failure.VALIDATION)
            self.ledger.save()
        retry = max(filter(None, [attempt.not_before, now + backoff_delay(attempt.failures, self.policy.backoff)]))
        low = outcome.summary.lower()
        if outcome.failure == certbot.Failure.RATE_LIMITED and outcome.retry_after and (
                "new orders" in low or "registrations" in low or "account" in low):
            self._account_paused_until = max(outcome.retry_after, self._account_paused_until or outcome.retry_after)
        failure = outcome.failure.value if outcome.failure else "error"
        log.error("site %s: certificate request failed (%s): %s; next attempt %s UTC",
                  site.name, failure, outcome.summary, f"{retry:%Y-%m-%d %H:%M:%S}")
        self.emit(Kind.CERT_FAILED, site.name, outcome.summary, failure=failure, error=outcome.summary,
                  next_attempt=retry, failures=attempt.failures, duration=duration)
        return False

    def _preflight(self, site: Site) -> str:
        """Check through the real nginx that the challenge path serves the webroot for every name.

        Returns "" when fine (or when it cannot be checked), else why the CA should not be asked.
        """
        if not self.settings.preflight or self._nginx_addr is None:
            return ""
        token = "sidecar-probe-" + secrets.token_urlsafe(12)
        path = self.settings.webroot_dir / ".well-known" / "acme-challenge" / token
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token, encoding="ascii")
            path.chmod(0o644)
            for domain in site.domains:
                got = _http_get(self._nginx_addr, domain, f"/.well-known/acme-challenge/{token}")
                if got != (200, token):
                    status = got[0] if got[0] else "no answer"
                    return (f"preflight: nginx answered {status} instead of the probe file for "
                            f"http://{domain}/.well-known/acme-challenge/ (is the webroot volume mounted in nginx "
                            f"at {self.settings.webroot_dir}, and does no other server block take {domain} on port 80?); "
                            "not asking the CA, to spare its failed-validation limit")
            return ""
        finally:
            try:
                path.unlink()
            except OSError:
                pass

    def run_pass(self) -> datetime | None:
        """One full reconcile. Returns when the next pass is due (None: only on events).

        New certificates run in parallel (``CERTBOT_CONCURRENCY``); while they run,
        new triggers take a fresh snapshot and add work, and nginx is reloaded at most
        every ``RELOAD_INTERVAL`` seconds until the burst is over.
        """
        self.passes += 1
        self._forget_lineages()
        started = time.monotonic()
        first_plan: tuple[float, int] | None = None  # (seconds into the pass, certificates to request)
        state, nginx_c = self.snapshot()
        self._report(state)
        # Before anything else: nginx cannot even start while a hand-written config names a missing file.
        self._write_placeholders(state)
        if nginx_c is None:
            key = "nginx container not found"
            if key not in self.memory.problems:
                how = (f"NGINX_CONTAINER={self.settings.nginx_container}" if self.settings.nginx_container
                       else f"a running container labelled {self.settings.nginx_label}=true")
                log.error("%s: looking for %s; waiting for it to start", key, how)
                self.memory.problems.add(key)
            self._write_status(state, None)
            return self.clock() + MAX_SLEEP
        self.memory.problems.discard("nginx container not found")
        self._nginx_addr = self._reachable_address(nginx_c)
        self._apply(state, nginx_c)
        # The first certificate of a burst goes live at once; later ones are batched.
        last_apply = float("-inf")
        pending_apply = False
        in_flight: dict[str, Future[bool]] = {}
        run_started: dict[str, float] = {}  # site -> when its request was submitted
        pool = ThreadPoolExecutor(max_workers=self.settings.certbot_concurrency, thread_name_prefix="certbot")
        try:
            while True:
                the_plan = self._plan(state)
                self._write_status(state, the_plan)
                if first_plan is None:
                    first_plan = (time.monotonic() - started, len(the_plan.to_run))
                account_ready = lineage.has_account(self.settings.certs_dir, self.settings.acme_server)
                for decision in the_plan.to_run:
                    if self._stop.is_set() or (not account_ready and (in_flight or self._registering.is_set())):
                        break  # the first run registers the ACME account; the others wait for it
                    if decision.site.name not in in_flight and self._within_budget(decision):
                        in_flight[decision.site.name] = pool.submit(self._obtain, decision)
                        run_started[decision.site.name] = time.monotonic()
                        if not account_ready:
                            break
                if not in_flight:
                    break
                done, _ = wait(list(in_flight.values()), timeout=0.25, return_when=FIRST_COMPLETED)
                for name in [n for n, f in in_flight.items() if f.done()]:
                    future = in_flight.pop(name)
                    run_started.pop(name, None)
                    if future.exception() is not None:
                        log.error("site %s: certificate work crashed: %r", name, future.exception())
                    elif future.result():
                        pending_apply = True
                if self._wake.is_set() and not self._stop.is_set():
                    # New triggers while certbot runs: take a fresh snapshot now.
                    self._wake.clear()
                    self._forget_lineages()
                    previous = state.sites
                    state, found = self.snapshot()
                    self._report(state)
                    self._write_placeholders(state)
                    nginx_c = found or nginx_c
                    if state.sites != previous:
                        pending_apply = True
                queued = any(d.site.name not in in_flight for d in the_plan.to_run)
                now_m = time.monotonic()
                oldest = max((now_m - run_started[n] for n in in_flight), default=0.0)
                if pending_apply and reload_due(now_m - last_apply, self.settings.reload_interval,
                                                bool(in_flight), queued, oldest):
                    if self._apply(state, nginx_c):
                        last_apply = time.monotonic()
                    pending_apply = False
                if self._stop.is_set() and in_flight:
                    self.docker.remove_labelled(f"{OWNER_LABEL}={self.owner}")
        finally:
            pool.shutdown(wait=True)
        if pending_apply:
            self._apply(state, nginx_c)
        the_plan = self._plan(state)
        self._write_status(state, the_plan)
        self._log_plan(the_plan)
        if self.passes == 1 and first_plan is not None:
            on_disk = len(self._lineages()[0])
            log.info("first pass done in %.2fs (planned after %.2fs): %d site%s, %d certificate%s on disk, "
                     "%d requested", time.monotonic() - started, first_plan[0], len(state.sites),
                     "" if len(state.sites) == 1 else "s", on_disk, "" if on_disk == 1 else "s", first_plan[1])
        ari_rechecks = [c[2] for c in self._ari_cache.values()]
        if self._ari_backlog:
            ari_rechecks.append(self.clock() + timedelta(seconds=1))
        wakeups = [t for t in [the_plan.next_wakeup, *self._postponed.values(), *ari_rechecks] if t is not None]
        return min(wakeups) if wakeups else None

    def _log_plan(self, the_plan: Plan) -> None:
        """Say once why nothing happens for a site (and repeat long waits every 6 hours)."""
        now = self.clock()
        for d in the_plan.decisions:
            key = (d.action.value, d.at)
            seen = self._plan_logged.get(d.site.name)
            if d.action == Action.OK and d.at is not None and (seen is None or seen[0] != key):
                log.info("site %s: certificate %s; renewal planned %s UTC", d.site.name, d.reason,
                         f"{d.at:%Y-%m-%d %H:%M:%S}")
            elif d.action == Action.WAIT and d.at is not None and (
                seen is None or seen[0] != key or now - seen[1] >= timedelta(hours=6)
            ):
                log.info("site %s: waiting until %s UTC before the next attempt (%s)", d.site.name,
                         f"{d.at:%Y-%m-%d %H:%M:%S}", d.reason)
            else:
                continue
            self._plan_logged[d.site.name] = (key, now)

    def _within_budget(self, decision: Decision) -> bool:
        """Check the CA's rate limits before asking; log a postponement once."""
        site = decision.site
        renewal = decision.action in (Action.RENEW, Action.REKEY)
        with self._ledger_lock:
            verdict = ratelimits.check(
                self.limits, site.domains, renewal,
                self.ledger.issued, self.ledger.orders, self.ledger.failed_validations, self.clock(),
            )
        paused = self._account_paused_until
        if verdict.allowed and not renewal and paused is not None and self.clock() < paused:
            # The CA refused new orders for the whole account: asking for another site would only add 429s.
            verdict = ratelimits.Verdict("new orders per account (reported by the CA)", 0, 0, paused)
        if verdict.allowed:
            self._postponed.pop(site.name, None)
            return True
        if self._postponed.get(site.name) != verdict.frees_at:
            log.warning("site %s: %s certificate postponed: %s", site.name, decision.action.value, verdict)
            self.emit(Kind.CERT_POSTPONED, site.name, str(verdict), until=verdict.frees_at, why=verdict.limit)
        self._postponed[site.name] = verdict.frees_at
        return False

    def _plan(self, state: DesiredState) -> Plan:
        lineages, _ = self._lineages()
        with self._ledger_lock:
            self.ledger.forget({s.name for s in state.sites})
            attempts = dict(self.ledger.attempts)
        windows = self._ari_windows({s.name: lineages[s.name] for s in state.sites if s.name in lineages})
        return plan(state.sites, lineages, attempts, self.policy, self.clock(), windows,
                    forced=frozenset(self.forced))

    def _ari_windows(self, lineages: dict[str, Certificate]) -> dict[str, tuple[datetime, datetime]]:
        """Renewal windows from the CA (ARI), re-asked as its Retry-After says."""
        if self.ari is None:
            return {}
        now = self.clock()
        out: dict[str, tuple[datetime, datetime]] = {}
        # Asking takes a round trip per certificate: with a thousand of them, the first passes plan
        # with what is known and the rest is asked in the next passes (one second later each).
        deadline = time.monotonic() + ARI_SECONDS_PER_PASS
        self._ari_backlog = False
        for name, cert in sorted(lineages.items()):
            cached = self._ari_cache.get(name)
            if cached is None or cached[0] != cert.serial or now >= cached[2]:
                if time.monotonic() > deadline:
                    self._ari_backlog = True
                    if cached is not None and cached[1] is not None:
                        out[name] = cached[1]
                    continue
                window = None if now < self._ari_down_until else self.ari.window(cert, now)
                if window is None:
                    self._ari_down_until = now + timedelta(minutes=5)
                    cached = (cert.serial, None, now + timedelta(hours=1))
                else:
                    if cached is None or cached[1] != (window.start, window.end):
                        plausible = ari_plausible(cert, (window.start, window.end))
                        log.info("site %s: the CA suggests renewing between %s and %s UTC (ARI)%s", name,
                                 f"{window.start:%Y-%m-%d %H:%M:%S}", f"{window.end:%Y-%m-%d %H:%M:%S}",
                                 "" if plausible else "; outside the certificate's validity, so ignored")
                    cached = (cert.serial, (window.start, window.end), window.recheck_at)
                self._ari_cache[name] = cached
            if cached[1] is not None:
                out[name] = cached[1]
        return out

    def _reachable_address(self, nginx_c: ContainerInfo) -> tuple[str, int] | None:
        """nginx's address on a network the sidecar shares with it (for the preflight probe)."""
        if not self.own_id:
            return None
        me = self.docker.find_container(self.own_id)
        if me is None:
            return None
        shared = sorted(set(me.networks) & set(nginx_c.networks))
        for net in shared:
            if nginx_c.networks.get(net):
                return nginx_c.networks[net], 80
        return None

    def _write_status(self, state: DesiredState, the_plan: object) -> None:
        decisions = getattr(the_plan, "decisions", ()) or ()
        data: dict[str, Any] = {
            "updated": self.clock().isoformat(),
            "acme_server": self.settings.acme_server,
            "sites": [
                {
                    "name": d.site.name,
                    "domains": list(d.site.domains),
                    "source": d.site.source,
                    "upstreams": [u.url for u in d.site.upstreams],
                    "state": d.action.value,
                    "reason": d.reason,
                    "at": d.at.isoformat() if d.at else None,
                    "live": names.site_filename(d.site.name) in self.memory.live,
                }
                for d in decisions
            ],
            "problems": sorted(str(p) for p in state.problems),
        }
        lineages, _ = self._lineages()
        statuses = []
        for d in decisions:
            cert = lineages.get(d.site.name)
            attempt = self.ledger.attempts.get(d.site.name)
            statuses.append(SiteStatus(
                name=d.site.name, domains=d.site.domains, source=d.site.source, state=d.action.value,
                reason=d.reason, live=names.site_filename(d.site.name) in self.memory.live,
                not_after=cert.not_after if cert else None,
                not_before=cert.not_before if cert else None,
                next_renewal=d.at if d.action == Action.OK else None,
                next_attempt=d.at if d.action == Action.WAIT else None,
                last_error=attempt.last_error if attempt else "",
                failures=attempt.failures if attempt else 0,
            ))
        with self._ledger_lock:
            budgets = ratelimits.remaining(
                self.limits, {ratelimits.registered_domain(d) for st in statuses for d in st.domains},
                self.ledger.issued, self.ledger.orders, self.clock(),
            )
        data["rate_limit_budgets"] = budgets
        self.observers.snapshot(PassSnapshot(self.clock(), statuses, data["problems"], budgets))
        # While certbot runs this is called four times a second: write when something changed
        # (or every half minute, for the health check's freshness), not on every call.
        content = {k: v for k, v in data.items() if k != "updated"}
        now = time.monotonic()
        if content == self._status_content and now - self._status_written < 30:
            return
        try:
            files.atomic_write(self.settings.state_dir / STATUS_FILE, json.dumps(data, indent=1) + "\n")
            self._status_content, self._status_written = content, now
        except OSError as exc:
            log.warning("cannot write status file: %s", exc)

    # -- the loop --------------------------------------------------------------
    def run_forever(self) -> None:
        self.prepare()
        observer = self._watch_sites_file()
        conf_observer = self._watch_conf_dir()
        threading.Thread(target=self._watch_events, name="docker-events", daemon=True).start()
        if not lineage.has_account(self.settings.certs_dir, self.settings.acme_server):
            self._registering.set()
        threading.Thread(target=self._warm_up, name="certbot-warm-up", daemon=True).start()
        self._announce()
        failures = 0
        try:
            while not self._stop.is_set():
                self._wake.wait()
                # Debounce: let a burst of triggers settle, then take one snapshot.
                while not self._stop.is_set():
                    self._wake.clear()
                    if not self._wake.wait(self.settings.debounce_seconds):
                        break
                if self._stop.is_set():
                    break
                with self._lock:
                    reasons, self._reasons = self._reasons, []
                log.debug("pass triggered by: %s", "; ".join(dict.fromkeys(reasons)) or "timer")
                try:
                    next_due = self.run_pass()
                    failures = 0
                except DockerUnavailable as exc:
                    failures += 1
                    delay = min(2 ** failures, 60)
                    log.error("Docker API unavailable (%s); retrying in %ds", exc, delay)
                    self.emit(Kind.DOCKER_UNAVAILABLE, "", str(exc))
                    next_due = self.clock() + timedelta(seconds=delay)
                except SidecarError as exc:
                    failures += 1
                    log.error("pass failed: %s", exc)
                    next_due = self.clock() + timedelta(seconds=min(2 ** failures, 300))
                self._arm_timer(next_due)
        finally:
            for obs in (observer, conf_observer):
                if obs is not None:
                    obs.stop()
            if self.runner is not None:
                try:
                    self.runner.close()
                except DockerUnavailable as exc:
                    log.warning("could not remove the certbot container: %s", exc)

    def _arm_timer(self, next_due: datetime | None) -> None:
        now = self.clock()
        due = min(next_due, now + MAX_SLEEP) if next_due else now + MAX_SLEEP
        delay = max((due - now).total_seconds(), 1.0)

        def fire() -> None:
            self.poke("timer")

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = timer
        timer.start()

    def _warm_up(self) -> None:
        """Ahead of the first new site: start the certbot container and register the ACME
        account if none is stored, so a site's first certificate waits for neither."""
        s = self.settings
        try:
            # Load the public suffix list and compile the templates now, not in the first site's pass.
            ratelimits.registered_domain("example.com")
            render.render_sample(str(s.templates_dir) if s.templates_dir else None)
            if self.runner is None:
                return
            self.runner.warm()
            if lineage.has_account(s.certs_dir, s.acme_server):
                return
            result = self.runner.run(certbot.register_arguments(s), self._certbot_env(), "")
            if result.exit_code == 0:
                log.info("ACME account registered with %s", s.acme_server)
            else:
                outcome = certbot.classify(result.exit_code, result.output, self.clock())
                log.warning("registering an ACME account with %s failed (%s); the first certificate request "
                            "tries again", s.acme_server, outcome.summary)
        except SidecarError as exc:
            log.warning("could not prepare certbot ahead of time: %s", exc)
        finally:
            if self._registering.is_set():
                self._registering.clear()
                self.poke("ACME account ready")

    def _announce(self) -> None:
        s = self.settings
        p = s.label_prefix
        log.info("ready: ACME server %s, certbot image %s, labels %s.domains / %s.port%s",
                 s.acme_server, s.certbot_image, p, p, f", sites file {s.sites_file}" if s.sites_file else "")
        log.info("add a site: docker run -d --network <a network nginx is on> -l %s.domains=example.com "
                 "-l %s.port=8080 <image>", p, p)


def reload_due(since_last: float, interval: float, running: bool, queued: bool, oldest_run: float = 0.0) -> bool:
    """During a burst of certificates, whether the ones ready now go live with a reload now.

    The first one goes at once (``since_last`` is infinite), the last ones when nothing runs
    any more; in between at most every ``interval`` seconds. Once every remaining request is
    already running (none queued) and none of them has run for ``interval`` seconds yet
    (``oldest_run``), the rest of the burst is one certbot run away: wait for it instead of
    reloading twice within seconds. A slow or hung run is not waited for."""
    if not running or since_last >= 3 * interval:
        return True
    return since_last >= interval and (queued or oldest_run >= interval)


def _served_serial(host: str, sni: str, timeout: float = 2.0) -> int | None:
    """Serial of the certificate nginx presents for ``sni`` (no verification: we compare serials)."""
    import socket

    from cryptography import x509

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, 443), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def _http_get(addr: tuple[str, int], host: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "nginx-acme-sidecar-preflight"})
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        conn.close()


def health(settings: Settings, max_age: timedelta = timedelta(minutes=15)) -> tuple[bool, str]:
    path = settings.state_dir / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        updated = datetime.fromisoformat(data["updated"])
    except (OSError, ValueError, KeyError) as exc:
        return False, f"no status yet ({exc})"
    age = utcnow() - updated
    if age > max_age:
        return False, f"last pass {int(age.total_seconds())}s ago"
    return True, f"ok: {len(data.get('sites', []))} sites, last pass {int(age.total_seconds())}s ago"


__all__ = ["Reconciler", "health", "os"]
