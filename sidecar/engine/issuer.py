"""The issuer: one certificate request, from pre-flight to the ledger.

    pre-flight (nginx serves the webroot for every name? DNS-01: is the credentials file there and private?)
    -> certbot in its sandbox (new lineages in a staging dir, the rest in place)
       with quick retries when the CA hiccups (tenacity)
    -> ledger: the order, then success or failure with its back-off
    -> events: requested, issued / renewed / failed

Any failure of one site is recorded, backed off and reported like a CA failure; it
never stops the loop or other sites.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_random_exponential

from sidecar.adapters import probe, runner
from sidecar.core import certbot
from sidecar.core.errors import ConfigError, DockerUnavailable, SidecarError
from sidecar.core.events import Kind
from sidecar.core.model import Site
from sidecar.core.planner import Action, Decision, backoff_delay, renewal_time
from sidecar.core.settings import Settings
from sidecar.engine import credentials
from sidecar.engine.reporter import Reporter
from sidecar.state import files, lineage, placeholder, runlogs
from sidecar.state.ledger import Ledger
from sidecar.state.lineages import LineageStore

log = logging.getLogger("sidecar")

CA_BUNDLE_NAME = "sidecar-ca-bundle.pem"
QUICK_RETRIES = 2
_VERBS = {Action.ISSUE: "requesting", Action.EXPAND: "updating", Action.REKEY: "replacing", Action.RENEW: "renewing"}


class Issuer:
    def __init__(self, settings: Settings, run: runner.Runner | None, ledger: Ledger, lineages: LineageStore,
                 reporter: Reporter, stopped: threading.Event) -> None:
        self.settings = settings
        self.runner = run
        self.ledger = ledger
        self.lineages = lineages
        self.reporter = reporter
        self.clock = reporter.clock
        self.stopped = stopped
        self.nginx_addr: tuple[str, int] | None = None  # for the pre-flight; set by the loop
        self.account_paused_until: datetime | None = None  # set from a CA's account-wide 429
        self.forced: set[str] = set()  # sites an operator asked to renew now (``renew NAME --force``)
        self.registering = threading.Event()  # the ACME account is being registered ahead of the first site
        self._main_dir_lock = threading.RLock()  # (re-entered: dropping the account inside a run in place)
        self._claims: set[str] = set()  # lineages certbot is working on (their placeholder may be set aside)
        self._claims_lock = threading.Lock()

    def runner_ready(self) -> runner.Runner:
        if self.runner is None:
            raise SidecarError("certbot runner not prepared")
        return self.runner

    # -- ahead of the first site -------------------------------------------------
    def warm_up(self, ready: Callable[[str], None]) -> None:
        """Start the certbot container and register the ACME account if none is stored, so a
        site's first certificate waits for neither; ``ready`` wakes the loop when done."""
        s = self.settings
        try:
            self.runner_ready().warm()
            if lineage.has_account(s.certs_dir, s.acme_server):
                return
            result = self.runner_ready().run(certbot.register_arguments(s), self._certbot_env(), "")
            if result.exit_code == 0:
                log.info("ACME account registered with %s", s.acme_server)
            else:
                outcome = certbot.classify(result.exit_code, result.output, self.clock(), s.acme_server)
                log.warning("registering an ACME account with %s failed (%s); the first certificate request "
                            "tries again", s.acme_server, outcome.summary)
        except SidecarError as exc:
            log.warning("could not prepare certbot ahead of time: %s", exc)
        finally:
            if self.registering.is_set():
                self.registering.clear()
                ready("ACME account ready")

    # -- one certificate ------------------------------------------------------------
    def obtain(self, decision: Decision) -> bool:
        """Run the decision; True when a certificate was issued (or kept) and nginx should load it."""
        site = decision.site
        log.info("site %s: %s certificate for %s (%s)", site.name, _VERBS[decision.action], ", ".join(site.domains),
                 decision.reason)
        self.reporter.emit(Kind.CERT_REQUESTED, site.name, decision.reason, action=decision.action.value)
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
        except Exception as exc:  # noqa: BLE001 - one site's failure is recorded and backed off, never a loop
            log.debug("site %s: certificate work failed", site.name, exc_info=True)
            outcome = certbot.Outcome(False, f"internal error: {type(exc).__name__}: {exc}", certbot.Failure.UNKNOWN)
        finally:
            self.lineages.forget()
        if self.stopped.is_set() and not outcome.ok:
            log.info("site %s: certificate request abandoned (stopping)", site.name)
            return False
        if outcome.ok:
            self._succeeded(decision, outcome, time.monotonic() - started)
            return True
        self._failed(decision, outcome, time.monotonic() - started)
        return False

    def _succeeded(self, decision: Decision, outcome: certbot.Outcome, duration: float) -> None:
        site, now = decision.site, self.clock()
        with self.ledger.lock:
            self.ledger.record_success(site.name, site.domains, now, issued=not outcome.kept)
            self.ledger.save()
        cert = self.lineages.certificates().get(site.name)
        if cert is None:
            return
        log.info("site %s: certificate %s in %.1fs by %s, valid until %s UTC; renewal planned %s UTC",
                 site.name, "kept" if outcome.kept else "issued", duration,
                 cert.issuer, f"{cert.not_after:%Y-%m-%d %H:%M}", f"{renewal_time(cert):%Y-%m-%d %H:%M}")
        if not outcome.kept:
            kind = Kind.CERT_RENEWED if decision.action == Action.RENEW else Kind.CERT_ISSUED
            self.reporter.emit(kind, site.name, f"valid until {cert.not_after:%Y-%m-%d %H:%M} UTC",
                               not_after=cert.not_after, next_renewal=renewal_time(cert), duration=duration,
                               action=decision.action.value)

    def _failed(self, decision: Decision, outcome: certbot.Outcome, duration: float) -> None:
        site, now = decision.site, self.clock()
        with self.ledger.lock:
            attempt = self.ledger.record_failure(site.name, site.domains, now, outcome.summary, outcome.retry_after,
                                                 validation=outcome.failed_validation)
            self.ledger.save()
        retry = max(filter(None, [attempt.not_before, now + backoff_delay(attempt.failures, self.settings.backoff)]))
        if outcome.account_wide and outcome.retry_after:
            paused = self.account_paused_until
            self.account_paused_until = max(outcome.retry_after, paused or outcome.retry_after)
        failure = outcome.failure.value if outcome.failure else "error"
        log.error("site %s: certificate request failed (%s): %s; next attempt %s UTC",
                  site.name, failure, outcome.summary, f"{retry:%Y-%m-%d %H:%M:%S}")
        self.reporter.emit(Kind.CERT_FAILED, site.name, outcome.summary, failure=failure, error=outcome.summary,
                           next_attempt=retry, failures=attempt.failures, duration=duration)

    def _preflight(self, site: Site) -> str:
        """Check through the real nginx that the challenge path serves the webroot for every name.

        Returns "" when fine (or when it cannot be checked), else why the CA should not be asked.
        A DNS-01 site is not checked over HTTP: its credentials file is, instead.
        """
        challenge = certbot.dns_challenge(self.settings, site.options)
        if challenge is not None:
            return credentials.check(self.settings.dns_credentials_dir, challenge)
        addr = self.nginx_addr
        if not self.settings.preflight or addr is None:
            return ""
        token = "sidecar-probe-" + secrets.token_urlsafe(12)
        path = self.settings.webroot_dir / ".well-known" / "acme-challenge" / token
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token, encoding="ascii")
            path.chmod(0o644)
            for domain in site.domains:
                got = probe.http_get(addr, domain, f"/.well-known/acme-challenge/{token}")
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

    def _with_quick_retries(self, decision: Decision) -> certbot.Outcome:
        """A CA that is briefly unreachable or answers 5xx gets a few quick retries
        (exponential, with jitter) before the failure counts for the back-off schedule."""
        retrying = Retrying(
            stop=stop_after_attempt(1 + QUICK_RETRIES),
            wait=wait_random_exponential(multiplier=2, max=30),
            retry=retry_if_result(lambda o: o.transient and not self.stopped.is_set()),
            before_sleep=lambda rs: log.warning(
                "site %s: the CA did not answer properly (%s); retrying shortly", decision.site.name,
                rs.outcome.result().summary if rs.outcome else "?"),
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else certbot.Outcome(
                False, "no attempt", certbot.Failure.UNKNOWN),
        )
        outcome: certbot.Outcome = retrying(self._issue_or_renew, decision)
        return outcome

    @contextlib.contextmanager
    def idle(self, name: str) -> Iterator[bool]:
        """True inside when no certbot run works on lineage ``name``; none starts meanwhile."""
        with self._claims_lock:
            yield name not in self._claims

    @contextlib.contextmanager
    def _claim(self, name: str) -> Iterator[None]:
        with self._claims_lock:
            self._claims.add(name)
        try:
            yield
        finally:
            with self._claims_lock:
                self._claims.discard(name)

    def _issue_or_renew(self, decision: Decision) -> certbot.Outcome:
        with self._claim(decision.site.name):
            return self._counted(decision)

    def _counted(self, decision: Decision) -> certbot.Outcome:
        name = decision.site.name
        ordered_at = self.clock()
        with self.ledger.lock:  # every certbot run may send an order: it counts while it runs...
            self.ledger.record_order(name, decision.site.domains, ordered_at)
        reached = False
        try:
            outcome = self._certbot_in_place_or_staged(decision)
            reached = outcome.reached_ca
            return outcome
        finally:
            if not reached:  # ...but one that never reached the CA (or never ran) cost its budgets nothing
                with self.ledger.lock:
                    self.ledger.unrecord_order(name, ordered_at)

    def _certbot_in_place_or_staged(self, decision: Decision) -> certbot.Outcome:
        """Run certbot: new lineages side by side in a staging dir, the rest one at a time."""
        s = self.settings
        name = decision.site.name
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

    def _run_certbot(self, decision: Decision, config_dir: Path | None) -> certbot.Outcome:
        s, site = self.settings, decision.site
        challenge = certbot.dns_challenge(s, site.options)
        args = certbot.arguments(
            s, site.name, site.domains, decision.action,
            config_dir=str(config_dir) if config_dir else None,
            key_type=site.options.key_type, profile=site.options.acme_profile,
            account=(lineage.renewal_account(s.certs_dir, site.name, s.acme_server)
                     or lineage.default_account(config_dir or s.certs_dir, s.acme_server)),
            challenge=challenge,
        )
        env = self._certbot_env()
        run = self.runner_ready()
        if challenge is not None:
            env.update(challenge.environment(str(s.dns_credentials_dir)))
            if isinstance(run, runner.Images):  # CERTBOT_IMAGE_<PROVIDER>
                run = run.for_image(s.image_for(challenge.provider.name))
        outcome = certbot.Outcome(False, "certbot did not run", certbot.Failure.UNKNOWN)
        for attempt in range(2):
            result = run.run(args, env, site.name)
            runlogs.keep(s.state_dir, site.name, result.exit_code, result.output, self.clock())
            outcome = certbot.classify(result.exit_code, result.output, self.clock(), s.acme_server)
            if challenge is not None:
                outcome = certbot.classify_dns(outcome, result.output, challenge, str(s.dns_credentials_dir))
            if outcome.failure == certbot.Failure.ACCOUNT_MISSING and attempt == 0:
                self._drop_account(config_dir or s.certs_dir)
                if config_dir is not None:
                    self._drop_account(s.certs_dir)
                continue
            if not outcome.ok:
                log.debug("certbot output for %s:\n%s", site.name, result.output)
            return outcome
        return outcome

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
            files.atomic_write(target, data)
        return {"REQUESTS_CA_BUNDLE": str(target)}

    def _drop_account(self, config_dir: Path) -> None:
        path = lineage.account_dir(config_dir, self.settings.acme_server)
        # The accounts in CERTS_DIR are shared: runs in place hold this lock, staged runs have copies.
        with self._main_dir_lock if config_dir == self.settings.certs_dir else contextlib.nullcontext():
            if path.is_dir():
                shutil.rmtree(path)
                log.warning("the ACME server no longer knows the stored account; registering a new one")
