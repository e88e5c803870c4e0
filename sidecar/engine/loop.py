"""The level-triggered loop: triggers poke it, every pass works from a full snapshot.

    triggers (Docker events, file watches, timer, operator) ──> poke ──> debounce
    pass:  World.read() ──> Snapshot ──> schedule() ──> Work ──> Issuer (certbot runs, in a Burst)
                                                          └───> Publisher (nginx: write, test, reload)
                                                          └───> Reporter (events, status, log)
                                                          └───> Hooks (consumer containers: restart, signal, exec)

One worker runs passes, so certbot runs and nginx reloads never race; certificates of
one pass run in parallel (``CERTBOT_CONCURRENCY``), and while they run new triggers
take a fresh snapshot and add work.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from sidecar.adapters.ari import AriClient, AriWindows
from sidecar.adapters.docker_api import Docker
from sidecar.adapters.nginx import DockerNginx
from sidecar.core import ratelimits, render
from sidecar.core.errors import DockerUnavailable, SidecarError
from sidecar.core.events import Kind
from sidecar.core.model import Certificate, Site
from sidecar.core.names import site_filename, utcnow
from sidecar.core.planner import Policy
from sidecar.core.schedule import Work, schedule
from sidecar.core.settings import Settings
from sidecar.engine import startup
from sidecar.engine.burst import Burst
from sidecar.engine.distributor import Distributor
from sidecar.engine.hooks import Hooks
from sidecar.engine.issuer import Issuer
from sidecar.engine.publisher import Publisher
from sidecar.engine.reporter import Reporter
from sidecar.engine.world import Snapshot, World
from sidecar.sources.labels import COMPOSE_PROJECT
from sidecar.sources.swarm import SwarmPoller
from sidecar.sources.triggers import MAX_SLEEP, DockerEventWatcher, Triggers, watch_files
from sidecar.state import lineage
from sidecar.state.ledger import Ledger
from sidecar.state.lineages import LineageStore

log = logging.getLogger("sidecar")

ARI_SECONDS_PER_PASS = 1.0
NO_NGINX = "nginx container not found"
LINEAGE_CACHE = "lineages.cache"  # in STATE_DIR: what the certificates said (state.certs.save_cache)
OLD_LINEAGE_CACHE = "lineages-cache.json"  # (its JSON form, before: removed at start)


def trim_heap() -> None:
    """Give the memory freed by a pass back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). A pass over ten thousand sites allocates tens of MB that are free again at its end,
    which glibc otherwise keeps: 45 MB of resident memory at that size."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


class Reconciler:
    def __init__(self, settings: Settings, docker: Docker, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.docker = docker
        self.clock = clock
        self.triggers = Triggers(settings.debounce_seconds, clock)
        self.reporter = Reporter(settings, clock)
        self.observers = self.reporter.observers
        self.ledger = Ledger.load(settings.state_dir / "ledger.json")
        try:
            (settings.state_dir / OLD_LINEAGE_CACHE).unlink(missing_ok=True)
        except OSError:
            pass
        self.lineages = LineageStore(settings.certs_dir, settings.adopt_certs_dir,
                                     settings.state_dir / LINEAGE_CACHE, helper=True)
        self.policy = Policy(key_type=settings.key_type, acme_server=settings.acme_server, backoff=settings.backoff)
        self.limits = ratelimits.PROFILES[settings.rate_limits]
        self.ari = AriWindows(AriClient(settings.acme_server, settings.acme_ca_bundle) if settings.ari else None,
                              ARI_SECONDS_PER_PASS)
        self.world = World(settings, docker, self.lineages)
        self.issuer = Issuer(settings, None, self.ledger, self.lineages, self.reporter, self.triggers.stopped)
        self.publisher = Publisher(settings, lambda cid: DockerNginx(docker, cid), self.reporter, self.issuer.idle)
        self.hooks = Hooks(settings, docker, self.reporter, self.triggers.poke)  # consumers told of new certificates
        self.watcher: DockerEventWatcher | None = None
        self.owner = "host"
        self.passes = 0
        self.distributor: Distributor | None = None  # Docker Swarm issuer: bundles to every node

    def distribute(self, key: bytes) -> Distributor:
        """SIDECAR_ROLE=issuer: send every node's agent what this node's nginx runs."""
        self.distributor = Distributor(self.settings, self.docker, key, self.reporter, self.served_sites)
        return self.distributor

    def served_sites(self) -> tuple[tuple[str, str], ...]:
        """(site, a name to ask for with SNI) of each site nginx serves over HTTPS, for the agents' checks."""
        live = self.publisher.live
        return tuple(sorted((name, next((d for d in site.domains if not d.startswith("*.")), site.domains[0]))
                            for name, site in self.reporter.sites.items() if site_filename(name) in live))

    # -- from the operator (status server) ------------------------------------------
    def request_renewal(self, name: str, force: bool = False) -> str:
        """``renew NAME [--force]``: retry now, ignoring our own back-off; with ``force`` renew even
        if not due. A CA's retry-after and rate limits still apply. ``KeyError`` for an unknown site."""
        if name not in self.reporter.sites:
            raise KeyError(name)
        with self.ledger.lock:
            if self.ledger.clear_backoff(name):
                self.ledger.save()
        if force:
            self.issuer.forced.add(name)
        what = "forced renewal" if force else "renewal check"
        log.info("site %s: %s requested by operator", name, what)
        self.triggers.poke(f"operator: renew {name}")
        return f"site {name}: {what} requested; see the logs or status"

    def preview(self) -> Work:
        """What the next pass would decide now, from the last pass's sites (for ``plan``)."""
        return self._work(tuple(self.reporter.sites.values()), ask_ari=False)

    def stop(self) -> None:
        self.triggers.stop()
        self.docker.close_events()

    # -- the loop ----------------------------------------------------------------------
    def run_forever(self) -> None:
        env = startup.prepare(self.settings, self.docker)
        self.world.me, self.owner, self.issuer.runner = env.me, env.owner, env.runner
        observers = watch_files(self.settings, self.triggers.poke)
        self.watcher = DockerEventWatcher(self.docker.events, self.settings, self.triggers,
                                          lambda: self.world.relevant_ids,
                                          project=lambda: self.world.me.labels.get(COMPOSE_PROJECT)
                                          if self.world.me is not None else None)
        self.watcher.start()
        poller = None
        if self.distributor is not None:
            poller = SwarmPoller(lambda: (self.docker.swarm_services(), self.docker.swarm_tasks()),
                                 self.settings.swarm_poll_seconds, self.triggers.poke)
            poller.start()
            self.distributor.networks = frozenset(env.me.networks) if env.me else frozenset()
            self.distributor.start()
        if not lineage.has_account(self.settings.certs_dir, self.settings.acme_server):
            self.issuer.registering.set()
        threading.Thread(target=self._warm_up, name="certbot-warm-up", daemon=True).start()
        self._announce()
        failures = 0
        cleaned = False  # (the certificates' volume: after the first pass that went through)
        try:
            while (reasons := self.triggers.wait()) is not None:
                log.debug("pass triggered by: %s", "; ".join(dict.fromkeys(reasons)))
                try:
                    next_due = self.run_pass()
                    failures = 0
                    self.world.sites_file.keep_parsed()
                    self.lineages.keep()
                    trim_heap()
                    if not cleaned:
                        startup.clean_certs(self.settings.certs_dir)
                        cleaned = True
                except DockerUnavailable as exc:
                    failures += 1
                    delay = min(2 ** failures, 60)
                    log.error("Docker API unavailable (%s); retrying in %ds", exc, delay)
                    self.reporter.emit(Kind.DOCKER_UNAVAILABLE, "", str(exc))
                    next_due = self.clock() + timedelta(seconds=delay)
                except Exception as exc:  # noqa: BLE001 - a pass that fails is retried, it never ends the process
                    failures += 1
                    log.error("pass failed: %s", exc if isinstance(exc, SidecarError) else f"{type(exc).__name__}: {exc}",
                              exc_info=not isinstance(exc, SidecarError))
                    next_due = self.clock() + timedelta(seconds=min(2 ** failures, 300))
                self.triggers.arm_timer(next_due)
        finally:
            for obs in observers:
                obs.stop()
            if poller is not None and self.distributor is not None:
                poller.stopped.set()
                self.distributor.stop()
            self.hooks.close()
            try:
                env.runner.close()
            except DockerUnavailable as exc:
                log.warning("could not remove the certbot container: %s", exc)

    def run_pass(self) -> datetime | None:
        """One full reconcile. Returns when the next pass is due."""
        self.passes += 1
        started = time.monotonic()
        snap = self._read(say_changes=self.passes > 1)  # (a first pass says them once it has planned)
        if snap.nginx is None:
            if self.passes == 1:
                self.reporter.changes(snap.desired)
            how = (f"NGINX_CONTAINER={self.settings.nginx_container}" if self.settings.nginx_container
                   else f"a running container labelled {self.settings.nginx_label}=true")
            self.reporter.problem(NO_NGINX, f"{NO_NGINX}: looking for {how}; waiting for it to start")
            self._status(snap, None, final=True)
            return self.clock() + MAX_SLEEP
        self.reporter.resolved(NO_NGINX)
        first_plan: tuple[float, int] | None = None  # (seconds into the pass, certificates to request)
        if self.passes == 1:
            # At start-up the plan is in /status and /plan before nginx is brought up to date (at ten
            # thousand sites writing, testing and reloading takes far longer than planning).
            read = time.monotonic() - started
            work = self._work(snap.desired.sites, snap.lineages)
            planned = time.monotonic() - started
            self._status(snap, work)
            first_plan = (time.monotonic() - started, len(work.plan.to_run))
            self.reporter.changes(snap.desired)  # (ten thousand sites added: half a second, after the plan)
            log.debug("first pass: read in %.2fs (%s), planned in %.2fs, status in %.2fs", read,
                      ", ".join(f"{k} {v:.2f}" for k, v in self.world.took.items()), planned - read,
                      first_plan[0] - planned)
        self.publisher.publish(snap)
        burst = Burst(self.settings.certbot_concurrency, self.settings.reload_interval)
        ran = quiet = False
        try:
            while True:
                snap = snap.with_lineages(self.lineages)
                work = self._work(snap.desired.sites, snap.lineages)
                quiet = not ran and not work.runnable  # nothing to run: this plan is the pass's last
                self._status(snap, work, final=quiet)
                first_plan = first_plan or (time.monotonic() - started, len(work.plan.to_run))
                self._submit(work, burst)
                if not burst.running:
                    break
                ran = True
                burst.collect()
                if self.triggers.pending and not self.triggers.stopped.is_set():
                    snap, changed = self._reread(snap)  # new triggers while certbot runs: a fresh snapshot now
                    burst.ready = burst.ready or changed
                queued = any(d.site.name not in burst.running for d in work.plan.to_run)
                if burst.reload_due(queued):
                    burst.reloaded(self.publisher.publish(snap.with_lineages(self.lineages)))
                if self.triggers.stopped.is_set() and burst.running:
                    self.docker.remove_labelled(f"{startup.OWNER_LABEL}={self.owner}")
        finally:
            burst.close()
        snap = snap.with_lineages(self.lineages)
        if burst.ready:
            self.publisher.publish(snap)
        self.hooks.deliver(snap.consumers, snap.lineages)
        if not quiet or burst.ready:  # (else the plan above stands: at ten thousand sites, a second costs)
            work = self._work(snap.desired.sites, snap.lineages)
            self._status(snap, work, final=True)
        self.reporter.plan(work)
        if self.passes == 1 and first_plan is not None:
            n = len(snap.desired.sites)
            log.info("first pass done in %.2fs (planned after %.2fs): %d site%s, %d certificate%s on disk, "
                     "%d requested", time.monotonic() - started, first_plan[0], n, "" if n == 1 else "s",
                     len(snap.lineages), "" if len(snap.lineages) == 1 else "s", first_plan[1])
        if self.distributor is not None:
            self.distributor.poke()
        now = self.clock()
        wakeups = [t for t in (work.next_wakeup, self.ari.next_recheck(now), self.publisher.retry_at(now))
                   if t is not None]
        return min(wakeups) if wakeups else None

    # -- the steps of a pass -------------------------------------------------------
    def _read(self, say_changes: bool = True) -> Snapshot:
        self.lineages.forget()
        snap = self.world.read()
        if say_changes:
            self.reporter.changes(snap.desired)
        # Before anything else: nginx cannot even start while a hand-written config names a missing file.
        if self.publisher.placeholders(snap.desired.sites, snap.lineages):
            self.lineages.forget()
            snap = snap.with_lineages(self.lineages)
        self.issuer.nginx_addr = snap.nginx_addr
        self.hooks.seen(snap.consumers, snap.lineages)
        return snap

    def _reread(self, snap: Snapshot) -> tuple[Snapshot, bool]:
        """A fresh snapshot during a burst; True when the sites changed (nginx must load them)."""
        self.triggers.take()
        fresh = self._read()
        if fresh.nginx is None:  # (re-created just now: keep publishing to the one we had)
            fresh = dataclasses.replace(fresh, nginx=snap.nginx, nginx_addr=snap.nginx_addr)
        return fresh, fresh.desired.sites != snap.desired.sites

    def _work(self, sites: tuple[Site, ...], lineages: Mapping[str, Certificate] | None = None,
              ask_ari: bool = True) -> Work:
        """``lineages``: the snapshot's (read for these sites just now); a preview reads them itself."""
        now = self.clock()
        if lineages is None:
            lineages = self.lineages.for_sites(sites)[0]
        attempts = self.ledger.attempts_now({s.name for s in sites}, forget=ask_ari)  # (a preview changes nothing)
        windows = self.ari.windows({s.name: lineages[s.name] for s in sites if s.name in lineages}, now, ask=ask_ari)
        return schedule(sites, lineages, attempts, self.ledger.usage(self.issuer.account_paused_until),
                        self.policy, self.limits, now, windows, forced=frozenset(self.issuer.forced))

    def _submit(self, work: Work, burst: Burst) -> None:
        """Start the runs the budgets allow; without an ACME account the first run registers it, alone."""
        self.reporter.postponements(work)
        account_ready = lineage.has_account(self.settings.certs_dir, self.settings.acme_server)
        for decision in work.runnable:
            if self.triggers.stopped.is_set() or (
                    not account_ready and (burst.running or self.issuer.registering.is_set())):
                break
            if decision.site.name not in burst.running:
                burst.submit(decision, self.issuer.obtain)
                if not account_ready:
                    break

    def _status(self, snap: Snapshot, work: Work | None, final: bool = False) -> None:
        with self.ledger.lock:
            attempts = dict(self.ledger.attempts)
            budgets = ratelimits.remaining(
                self.limits, {ratelimits.registered_domain(d) for s in snap.desired.sites for d in s.domains},
                self.ledger.issued, self.ledger.orders, self.clock())
        self.publisher.pending_pages(work)
        degraded = (*((self.watcher.problem,) if self.watcher is not None and self.watcher.problem else ()),
                    *self.publisher.broken.degraded())
        self.reporter.status(snap.desired, work, snap.lineages, self.publisher.live, attempts, budgets, degraded,
                             self.publisher.broken.files(), final)

    # -- start-up --------------------------------------------------------------------
    def _warm_up(self) -> None:
        """Load the public suffix list and compile the templates now, not in the first site's pass;
        then start certbot and register the ACME account."""
        try:
            ratelimits.registered_domain("example.com")
            render.render_sample(str(self.settings.templates_dir) if self.settings.templates_dir else None)
        except SidecarError as exc:
            log.warning("could not prepare ahead of time: %s", exc)
        self.issuer.warm_up(self.triggers.poke)

    def _announce(self) -> None:
        s, p = self.settings, self.settings.label_prefix
        log.info("ready: ACME server %s, certbot image %s, labels %s.domains / %s.port%s",
                 s.acme_server, s.certbot_image, p, p, f", sites file {s.sites_file}" if s.sites_file else "")
        log.info("add a site: docker run -d --network <a network nginx is on> -l %s.domains=example.com "
                 "-l %s.port=8080 <image>", p, p)
