"""The nginx publisher: what the certificates and sites say nginx must serve, made so.

In the spirit of certbot's Installer contract: render -> write atomically -> ``nginx -t``
-> hold back the one site file nginx rejects (the others still go live) -> reload ->
verify over TLS that the new certificates are served -> roll back if not. Hand-written
files changed (or the certificates they use renewed) are tested and reloaded too, and
what the last reload loaded is remembered across restarts so a restart with nothing
changed does not reload.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import logging
import os
import time
from datetime import datetime, timedelta
from typing import Callable, ContextManager, Mapping

from sidecar.adapters import nginx, probe
from sidecar.adapters.nginx import DockerNginx
from sidecar.core import names, nginxconf, render
from sidecar.core.errors import NginxError
from sidecar.core.events import Kind
from sidecar.core.model import Certificate, Site, SourceKind
from sidecar.core.planner import Action
from sidecar.core.schedule import Work
from sidecar.core.settings import Settings
from sidecar.engine.reporter import Lines, Reporter
from sidecar.engine.setaside import BrokenConfs
from sidecar.engine.world import Snapshot
from sidecar.state import files, placeholder

log = logging.getLogger("sidecar")

VERIFY_SAMPLE = 10  # sites checked over TLS after a reload
MAX_SET_ASIDE = 5  # hand-written files set aside in one go before giving up
PENDING_DIR = ".sidecar-pending"  # in the webroot: <name>.html for names whose certificate is pending
PENDING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: certificate pending</title></head>
<body><h1>{name}</h1>
<p>This site is set up, but its HTTPS certificate has not been issued yet, so it is not served yet.</p>
<p>{when}</p>
<p>(nginx-acme-sidecar; the site's operator sees why in its status.)</p>
</body></html>
"""
LOADED_FILE = "nginx-loaded.sha256"  # what the last reload loaded (see _remember_loaded)
RETRY_SECONDS = (5.0, 300.0)  # after a failed publish: first retry, longest wait (see retry_at)

Fingerprint = tuple[object, ...]


class Publisher:
    def __init__(self, settings: Settings, control_for: Callable[[str], DockerNginx], reporter: Reporter,
                 idle: Callable[[str], ContextManager[bool]] = lambda name: contextlib.nullcontext(True)) -> None:
        self.settings = settings
        self.idle = idle  # (the issuer's: no placeholder is written while certbot works on that lineage)
        self.control_for = control_for
        self.reporter = reporter
        self._traits: tuple[str, render.NginxTraits] | None = None
        self.rejected: dict[str, str] = {}  # file -> nginx's error, said once
        self.live: set[str] = set()          # the sidecar's site files nginx runs
        self._outside: Fingerprint | None = None  # hand-written files and their certificates, as last loaded
        self._pages: dict[str, str] | None = None  # pending pages written: name -> content
        self.broken = BrokenConfs(settings.conf_dir, settings.broken_conf == "set-aside", reporter)
        self.failures = 0  # publishes in a row that changed nothing because of an error (see retry_at)
        self._rendered: render.RenderCache = {}  # sites not rendered again while nothing of theirs changed

    def traits(self, nginx_id: str) -> render.NginxTraits:
        if self._traits is not None and self._traits[0] == nginx_id:
            return self._traits[1]
        traits, version = self.control_for(nginx_id).traits()
        self._traits = (nginx_id, traits)
        log.info("nginx container %s: %s; IPv6 listeners %s; post-quantum key exchange %s", nginx_id[:12], version,
                 "on" if traits.ipv6 else "off", "on" if traits.post_quantum else "off")
        return traits

    def placeholders(self, sites: tuple[Site, ...], lineages: Mapping[str, Certificate]) -> bool:
        """Hand-written configs naming a certificate not issued yet get a placeholder, so nginx
        starts and reloads meanwhile. True when one was written (the lineages changed)."""
        wrote = False
        for site in sites:
            if site.source_kind != SourceKind.NGINX_CONF or site.name in lineages:
                continue
            try:
                with self.idle(site.name) as idle:
                    written = idle and placeholder.write_placeholder(self.settings.certs_dir, site.name, site.domains)
                if written:
                    wrote = True
                    self.reporter.emit(Kind.PLACEHOLDER_WRITTEN, site.name, "placeholder certificate written",
                                       domains=list(site.domains), source=site.source)
                    log.info("site %s: placeholder certificate written so nginx accepts %s until the real one "
                             "is issued", site.name, site.source.removeprefix("nginx config "))
            except (OSError, ValueError) as exc:
                log.error("site %s: cannot write a placeholder certificate: %s", site.name, exc)
        return wrote

    def pending_pages(self, work: Work | None) -> None:
        """Over plain HTTP, a name whose certificate is not live yet answers 503 with a page saying when
        the next attempt is (see global.conf.j2). Written only when it changes; no reload needed."""
        wanted: dict[str, str] = {}
        for d in work.plan.decisions if work is not None else ():
            first = d.action == Action.ISSUE or (d.action == Action.WAIT and d.pending == Action.ISSUE)
            if not first or d.site.source_kind in (SourceKind.NGINX_CONF, SourceKind.CONSUMER) \
                    or names.site_filename(d.site.name) in self.live:
                continue  # (only sites that never had a certificate: the others are served or held back)
            if d.action == Action.WAIT and d.at is not None:
                when = f"Next attempt: {d.at:%Y-%m-%d %H:%M} UTC."
            else:
                when = "It is being requested now; this page is replaced by the site within a minute."
            for name in d.site.domains:
                wanted[name] = PENDING_PAGE.format(name=html.escape(name), when=when)
        if wanted == self._pages:
            return
        directory = self.settings.webroot_dir / PENDING_DIR
        try:
            directory.mkdir(parents=True, exist_ok=True)
            current = self._pages if self._pages is not None else {p.stem: "" for p in directory.glob("*.html")}
            for name, page in wanted.items():
                if current.get(name) != page:
                    files.atomic_write(directory / f"{name}.html", page)
            for name in set(current) - set(wanted):
                (directory / f"{name}.html").unlink(missing_ok=True)
            self._pages = wanted
        except OSError as exc:
            log.warning("cannot write the pending-certificate pages in %s: %s", directory, exc)

    def publish(self, snap: Snapshot) -> bool:
        """Render, test and reload; True when nginx was reloaded."""
        assert snap.nginx is not None
        s = self.settings
        lineages = snap.lineages
        for p in snap.cert_problems:
            log.warning("%s", p)
        traits = self.traits(snap.nginx.id)
        started = time.monotonic()
        try:  # put the include snippets back if the conf volume was emptied (writes only on change)
            nginx.install_snippets(s.conf_dir, str(s.webroot_dir))
        except OSError as exc:
            log.warning("cannot write the include snippets: %s", exc)
        wanted = render.render_all(
            [x for x in snap.desired.sites if x.source_kind != SourceKind.NGINX_CONF],
            dict(lineages), str(s.webroot_dir), traits, s.tls_profile,
            str(s.snippets_dir) if s.snippets_dir else None, str(s.templates_dir) if s.templates_dir else None,
            snap.user_defaults, render.Http3(s.http3, s.http3_port), s.challenge_proxy, self._rendered,
        )
        log.debug("publish: %d site files rendered in %.2fs", len(wanted), time.monotonic() - started)
        control = self.control_for(snap.nginx.id)
        self.broken.review()
        for _ in range(MAX_SET_ASIDE):
            try:
                result = nginx.apply(s.conf_dir, wanted, control, on_reject=self._rejected,
                                     verify=lambda written: self._verify_served(snap, written),
                                     # (hand-written files unchanged since nginx last loaded them)
                                     partial_test=self._outside == self._outside_fingerprint(snap))
                break
            except NginxError as exc:
                if self.broken.set_aside(exc.output):
                    continue  # a hand-written file held everything back: try again without it
                log.error("%s", exc)
                self.reporter.emit(Kind.NGINX_REJECTED, "", str(exc), file="", error=str(exc))
                self.failures += 1
                return False
        else:
            self.failures += 1
            return False
        self.failures = 0
        fingerprint = self._outside_fingerprint(snap)
        owned = nginx.owned_files(s.conf_dir)
        outside_reload = False
        if result.reloaded:
            self._outside = fingerprint  # that reload picked up everything
            self._remember_loaded(snap.nginx.id, fingerprint, owned)
        else:
            result.reloaded = outside_reload = self._reload_for_outside_changes(control, fingerprint,
                                                                                snap.nginx.id, owned)
        self._went_live(snap, {n for n in owned if n not in render.SHARED_FILES})
        if result.reloaded and not outside_reload:  # (that one said why already)
            log.info("nginx reloaded (%d file%s written, %d removed)", len(result.written),
                     "" if len(result.written) == 1 else "s", len(result.removed))
            self.reporter.emit(Kind.RELOAD, "", "nginx reloaded", written=result.written, removed=result.removed)
        return result.reloaded

    def retry_at(self, now: datetime) -> datetime | None:
        """After a publish that failed as a whole (the conf volume full or read-only, nginx -t or the
        reload refused): when to try again, from 5 s backing off to 5 min. Nothing else may wake the
        loop: freeing disk space is no event, and the certificates are there already."""
        if not self.failures:
            return None
        first, longest = RETRY_SECONDS
        return now + timedelta(seconds=min(first * 2 ** min(self.failures - 1, 16), longest))

    def _rejected(self, filename: str, reason: str) -> None:
        if self.rejected.get(filename) == reason:
            return  # said already; it is retried on every change and reported again if the error changes
        self.rejected[filename] = reason
        log.error("nginx rejected %s, that site is held back (other sites unaffected): %s", filename, reason)
        self.reporter.emit(Kind.NGINX_REJECTED, names.site_of_file(filename) or filename, reason,
                           file=filename, error=reason)

    def _went_live(self, snap: Snapshot, live: set[str]) -> None:
        for filename in list(self.rejected):
            if filename in live:
                log.info("%s accepted by nginx again", filename)
                del self.rejected[filename]
        by_file = {names.site_filename(s.name): s for s in snap.desired.sites}
        said = Lines("live")
        for filename in sorted(live - self.live):
            site = by_file.get(filename)
            if site is not None and site.name in snap.lineages:
                served = [d for d in site.domains if d in snap.lineages[site.name].names]
                said.add(site.name, "site %s: live on %s", site.name, ", ".join(f"https://{d}" for d in served))
                self.reporter.emit(Kind.SITE_LIVE, site.name, "live", domains=served)
        said.say()
        self.live = live

    @staticmethod
    def _loaded_digest(nginx_id: str, fingerprint: Fingerprint, owned: Mapping[str, str]) -> str:
        """What nginx has loaded after a reload: its container, the sidecar's files, the outside ones."""
        return hashlib.sha256(repr((nginx_id, sorted(owned.items()), fingerprint)).encode()).hexdigest()

    def _remember_loaded(self, nginx_id: str, fingerprint: Fingerprint, owned: Mapping[str, str]) -> None:
        """Kept across restarts, so a restart with nothing changed does not reload nginx."""
        path = self.settings.state_dir / LOADED_FILE
        try:
            files.atomic_write(path, self._loaded_digest(nginx_id, fingerprint, owned) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    def _reload_for_outside_changes(self, control: nginx.NginxControl, fingerprint: Fingerprint,
                                    nginx_id: str, owned: Mapping[str, str]) -> bool:
        """Hand-written files edited, or a certificate they use replaced: test, then reload.

        A failing ``nginx -t`` keeps the running config and is reported with nginx's
        own error; the same fingerprint is not retried until something changes again.
        """
        if fingerprint == self._outside:
            return False
        # First sight after a start: files may have been edited (or written without a reload)
        # while we were down, unless the last reload saw exactly what is there now.
        first = self._outside is None
        self._outside = fingerprint
        if first:
            try:
                stored = (self.settings.state_dir / LOADED_FILE).read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                stored = ""
            if stored and stored == self._loaded_digest(nginx_id, fingerprint, owned):
                return False
        ok, output = control.test()
        for _ in range(MAX_SET_ASIDE):
            if ok or not self.broken.set_aside(output):
                break
            ok, output = control.test()
        if not ok:
            reason = nginx.first_error_line(output)
            log.error("nginx rejected a change to the hand-written config; the running config stays: %s", reason)
            self.reporter.emit(Kind.NGINX_REJECTED, "", reason, file="hand-written config", error=reason)
            return False
        ok, output = control.reload()
        if not ok:  # (e.g. a shared zone declared otherwise than the running one: only a reload sees it)
            reason = nginx.first_error_line(output)
            log.error("nginx did not load the changed hand-written config; the running config stays: %s", reason)
            self.reporter.emit(Kind.NGINX_REJECTED, "", reason, file="hand-written config", error=reason)
            return False
        log.info("nginx reloaded (%s)", "first pass since start: picks up what changed meanwhile" if first
                 else "hand-written config or its certificates changed")
        self._remember_loaded(nginx_id, fingerprint, owned)
        self.reporter.emit(Kind.RELOAD, "", "nginx reloaded", written=[], removed=[])
        return True

    def _outside_fingerprint(self, snap: Snapshot) -> Fingerprint:
        found = []
        for path in sorted({*map(str, nginxconf.conf_d_roots(self.settings.conf_dir)), *snap.user_conf_files}):
            try:
                st = os.stat(path)
                found.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                found.append((path, 0, -1))
        serials = sorted((x.name, snap.lineages[x.name].serial if x.name in snap.lineages else 0)
                         for x in snap.desired.sites if x.source_kind == SourceKind.NGINX_CONF)
        return (tuple(found), tuple(serials))

    def _verify_served(self, snap: Snapshot, written: list[str]) -> str:
        """After a reload: does nginx present the changed sites' current certificates (TLS, SNI)?

        Checks up to ``VERIFY_SAMPLE`` of them, spread over the list: that catches an nginx that
        did not load what was written (another conf volume, certificates it cannot see) without a
        thousand handshakes. nginx loads a big configuration in the background: the time allowed
        grows with it."""
        if snap.nginx_addr is None:
            return ""
        host = snap.nginx_addr[0]
        started = time.monotonic()
        lineages = snap.lineages
        changed = [n for f in written if (n := names.site_of_file(f)) is not None and n in lineages]
        step = max(1, -(-len(changed) // VERIFY_SAMPLE))
        expected = {n: lineages[n].serial for n in changed[::step]}
        deadline = time.monotonic() + 5.0 + 0.01 * len(written)
        while expected:
            for name, serial in list(expected.items()):
                if probe.served_serial(host, name) == serial:
                    del expected[name]
            if not expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        log.debug("verify: %d of %d changed sites checked over TLS in %.2fs", len(changed[::step]), len(changed),
                  time.monotonic() - started)
        if expected:
            return "wrong or no certificate for " + ", ".join(sorted(expected))
        return ""
