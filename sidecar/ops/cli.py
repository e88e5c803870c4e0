"""Command line: ``python -m sidecar [COMMAND] [--json]``.

- ``run``             (default) the sidecar: watch, issue, render, reload
- ``status``          sites, certificates, next renewal and why, errors, certbot logs, budgets
- ``plan``            what the next pass would do now, without doing it
- ``renew NAME``      retry a site now, ignoring the back-off; ``--force``: renew even if not due
- ``check``           validate the environment, the sites file and container labels
- ``health``          exit 0 if the sidecar is healthy (Docker HEALTHCHECK)

``status``, ``plan``, ``renew`` and ``health`` ask the running sidecar over its
status port (``STATUS_PORT``, from inside its container:
``docker compose exec sidecar python3 -m sidecar status``); ``status`` and
``health`` fall back to the status file in ``STATE_DIR`` when it does not answer.
Every command prints a table or lines by default and JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import http.client
import json
import logging
import shutil
import signal
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence
from urllib.parse import quote

from sidecar import __version__

from sidecar.core import redact as redaction
from sidecar.core import settings as settings_mod
from sidecar.core.errors import ConfigError, DockerUnavailable, InputError

CLIENT_TIMEOUT = 10.0
HEALTH_TIMEOUT = 4.0


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:  # already formatted (and redacted) by RedactingFilter
            data["exception"] = record.exc_text
        elif record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Secrets out of every record (message, exception, stack) before a formatter sees it."""

    _format = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redaction.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._format.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redaction.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redaction.redact(record.stack_info)
        return True


def register_secrets(cfg: settings_mod.Settings) -> None:
    """What ``redact`` must never let out, from the settings: the EAB HMAC key, the alert URLs."""
    redaction.register(cfg.eab_hmac_key)
    for url in cfg.alert_urls:
        redaction.register_url(url)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")
        formatter.converter = __import__("time").gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "docker", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(cfg: settings_mod.Settings) -> int:
    from sidecar.adapters.docker_api import Docker
    from sidecar.ops.httpserver import OpsApp, StatusBoard, StatusServer
    from sidecar.ops.metrics import Metrics
    from sidecar.ops.notify import Alerter
    from sidecar.engine.loop import Reconciler

    register_secrets(cfg)
    log = logging.getLogger("sidecar")
    log.info("nginx-acme-sidecar %s starting", __version__)
    # `docker kill -s USR1 <sidecar>`: every thread's stack on stderr (file, line, function; no values)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        alerter = Alerter.from_settings(cfg.alert_urls, cfg.state_dir)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    try:
        docker = Docker()
    except DockerUnavailable as exc:
        log.error("%s (is /var/run/docker.sock mounted?)", exc)
        return 1
    if cfg.role != "standalone":
        from sidecar.state.bundlefiles import read_key
        try:
            key = read_key(cfg.bundle_key_file)
        except ConfigError as exc:
            log.error("configuration error: %s", exc)
            return 2
        if cfg.role == "agent":
            return _agent(cfg, docker, key)
    reconciler = Reconciler(cfg, docker)
    distributor = reconciler.distribute(key) if cfg.role == "issuer" else None
    board, metrics = StatusBoard(), Metrics()
    for observer in (board, metrics, alerter):
        reconciler.observers.add(observer)
    server = None
    if cfg.status_port:
        try:
            app = OpsApp(board, metrics, cfg.state_dir, reconciler)
            if distributor is not None:
                app.nodes, app.webroot = distributor.rows, cfg.webroot_dir
            server = StatusServer(app, cfg.status_addr, cfg.status_port)
        except OSError as exc:
            log.error("configuration error: STATUS_ADDR=%s STATUS_PORT=%d: cannot listen: %s",
                      cfg.status_addr, cfg.status_port, exc)
            return 2
        server.start()
        reconciler.observers.add(server.app.journal)
        log.info("status server on %s:%d (/healthz, /metrics, /status, /plan, /events)", cfg.status_addr, server.port)
    alerter.start()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        reconciler.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        reconciler.run_forever()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except DockerUnavailable as exc:
        log.error("%s", exc)
        return 1
    finally:
        alerter.stop()
        if server is not None:
            server.stop()
    log.info("stopped")
    return 0


def _agent(cfg: settings_mod.Settings, docker: Any, key: bytes) -> int:
    """SIDECAR_ROLE=agent: apply the issuer's bundles to this node's nginx until stopped."""
    import threading
    from sidecar.engine import agent

    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("sidecar").info("received %s, stopping", signal.Signals(signum).name)
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        agent.serve(cfg, docker, key, stopped)
    except (DockerUnavailable, OSError) as exc:
        logging.getLogger("sidecar").error("agent: %s", exc)
        return 1
    return 0


# -- talking to the running sidecar ------------------------------------------------
class Unreachable(Exception):
    """The sidecar's status server did not answer."""


def _target(cfg: settings_mod.Settings) -> tuple[str, int]:
    addr = cfg.status_addr
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)
    return host, cfg.status_port


def request(cfg: settings_mod.Settings, method: str, path: str,
            timeout: float = CLIENT_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """One request to the status server; its JSON answer. Raises ``Unreachable``."""
    host, port = _target(cfg)
    if not port:
        raise Unreachable("the status server is off (STATUS_PORT=0)")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"User-Agent": f"nginx-acme-sidecar-cli/{__version__}"})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"the sidecar does not answer on {host}:{port} ({exc})") from exc
    finally:
        conn.close()
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Unreachable(f"unexpected answer from {host}:{port}: {body[:200]!r}") from exc
    return resp.status, doc if isinstance(doc, dict) else {"value": doc}


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=1, sort_keys=False))


# -- formatting (pure) ---------------------------------------------------------------
def _parse(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def ago(seconds: float) -> str:
    """A short duration: 45s, 12m, 5h, 3d."""
    s = abs(seconds)
    if s < 90:
        return f"{int(s)}s"
    if s < 90 * 60:
        return f"{int(s // 60)}m"
    if s < 36 * 3600:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def when(value: object, now: datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """``2026-07-31 10:00 (in 60d)``, ``... (3h ago)``, or ``-``. Times are UTC."""
    at = _parse(value)
    if at is None:
        return "-"
    delta = (at - now).total_seconds()
    if abs(delta) < 60:
        return f"{at:{fmt}} (now)"
    return f"{at:{fmt}} ({'in ' + ago(delta) if delta > 0 else ago(delta) + ' ago'})"


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int] | None = None) -> str:
    """Plain text columns; ``widths`` caps each column (0: no cap)."""
    caps = list(widths or [0] * len(headers))
    cells = [[_cut(c, caps[i]) if caps[i] else " ".join(str(c).split()) for i, c in enumerate(r)] for r in rows]
    size = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(size[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(size[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return "\n".join(lines)


def format_status(doc: dict[str, Any], width: int = 160) -> str:
    now = _parse(doc.get("now")) or datetime.now(timezone.utc)
    out = []
    h = doc.get("health") or {}
    if h:
        if h.get("status") == "ok":
            age = h.get("last_pass_age_seconds")
            out.append(f"sidecar ok: last pass {ago(age) + ' ago' if age is not None else '?'}, "
                       f"{len(doc.get('sites') or [])} sites; times in UTC")
        else:
            out.append("sidecar UNHEALTHY: " + "; ".join(h.get("problems") or ["?"]))
    if doc.get("note"):
        out.append(str(doc["note"]))
    sites = doc.get("sites") or []
    if not sites:
        out.append("no sites yet")
    else:
        rows = []
        for r in sites:
            expiry = r.get("not_after")
            rows.append([
                r.get("site", ""), ",".join(r.get("names") or []), r.get("source", ""),
                r.get("state", "") + ("" if r.get("live", True) else " (not live)"),
                when(expiry, now, "%Y-%m-%d") if expiry else "-",
                when(r.get("next"), now), r.get("why", ""), str(r.get("failures") or 0),
                r.get("last_error") or "-",
            ])
        wide = width >= 200
        out.append(table(["SITE", "NAMES", "SOURCE", "STATE", "EXPIRES", "NEXT", "WHY", "FAILS", "LAST ERROR"],
                         rows, [40, 40, 36, 18, 0, 0, 0 if wide else 48, 0, 0 if wide else 48]))
        logs = [(r["site"], r["certbot_log"]) for r in sites if r.get("certbot_log")]
        if logs:
            out.append("")
            out.append("latest certbot runs:")
            for site, run in logs:
                code = "timed out" if run.get("exit_code") is None else f"exit {run.get('exit_code')}"
                out.append(f"  {site}: {code}, {when(run.get('at'), now)}: {run.get('last_line') or ''}")
                out.append(f"    {run.get('path')}")
    nodes = doc.get("nodes")
    if nodes is not None:
        out.append("")
        out.append("Swarm nodes (bundle each node's nginx serves):")
        out.append(table(["NODE", "BUNDLE", "STATE", "SITES VERIFIED", "DETAIL"],
                         [[n.get("hostname") or str(n.get("node", ""))[:12], str(n.get("version", 0)),
                           n.get("state", ""), str(n.get("verified", 0)), n.get("detail") or "-"] for n in nodes],
                         [30, 0, 12, 0, 80]) if nodes else "  no agent has answered yet")
    budgets = doc.get("rate_limit_budgets") or {}
    if budgets:
        out.append("")
        out.append("rate-limit budget left: " + ", ".join(f"{k} {v}" for k, v in sorted(budgets.items())))
    problems = doc.get("problems") or []
    if problems:
        out.append("")
        out.append("problems:")
        out += [f"  {p}" for p in problems]
    return "\n".join(out)


def format_plan(doc: dict[str, Any]) -> str:
    now = _parse(doc.get("now")) or datetime.now(timezone.utc)
    rows = []
    for d in doc.get("decisions") or []:
        action = d.get("action", "")
        if action == "wait" and d.get("pending"):
            todo = f"wait, then {d['pending']}"
            at = when(d.get("at"), now)
        elif d.get("runs_certbot"):
            todo = f"{action}: run certbot" + (" (forced)" if d.get("forced") else "")
            at = (f"postponed to {when(d['postponed_until'], now)} ({d.get('waits_for') or 'rate limit'})"
                  if d.get("postponed_until") else "now")
        else:
            todo = "nothing" if action == "ok" else action
            at = f"renew {when(d.get('at'), now)}" if d.get("at") else "-"
        rows.append([d.get("site", ""), todo, at, d.get("reason", "")])
    if not rows:
        return "no sites: nothing to do"
    text = table(["SITE", "NEXT PASS WOULD", "WHEN", "WHY"], rows, [40, 0, 0, 80])
    if doc.get("next_wakeup"):
        text += f"\nnext timed pass: {when(doc['next_wakeup'], now)}"
    count = doc.get("certificates_to_request") or 0
    if count and doc.get("last_request_at"):
        queued = doc.get("queued_for_rate_limits") or 0
        text += (f"\n{count} certificate{'' if count == 1 else 's'} to request"
                 + (f", {queued} of them queued for the CA's rate limits" if queued else "")
                 + f"; the last can be requested {when(doc['last_request_at'], now)}")
    page = doc.get("page") or {}
    if page.get("matched", 0) > len(doc.get("decisions") or []):
        text += f"\n(showing {len(doc.get('decisions') or [])} of {page['matched']} sites)"
    return text


# -- commands --------------------------------------------------------------------------
def _status_from_file(cfg: settings_mod.Settings, why: str) -> dict[str, Any] | None:
    """What ``status`` can say without the running sidecar: the status file, certificates on disk."""
    from sidecar.state import certs, runlogs
    from sidecar.engine.reporter import STATUS_FILE

    try:
        data = json.loads((cfg.state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        attempts = json.loads((cfg.state_dir / "ledger.json").read_text(encoding="utf-8")).get("attempts") or {}
    except (OSError, ValueError, AttributeError):
        attempts = {}
    lineages, _ = certs.read_lineages(cfg.certs_dir)
    now = datetime.now(timezone.utc)
    sites = []
    for entry in data.get("sites") or []:
        name = str(entry.get("name", ""))
        cert = lineages.get(name)
        attempt = attempts.get(name) or {}
        run = runlogs.latest(cfg.state_dir, name)
        sites.append({
            "site": name, "names": entry.get("domains") or [], "source": entry.get("source", ""),
            "state": entry.get("state", ""), "live": bool(entry.get("live")),
            "not_before": cert.not_before.isoformat() if cert else None,
            "not_after": cert.not_after.isoformat() if cert else None,
            "expires_in_days": round((cert.not_after - now).total_seconds() / 86400, 1) if cert else None,
            "next": entry.get("at"), "why": entry.get("reason", ""),
            "last_error": attempt.get("last_error", ""), "failures": int(attempt.get("failures") or 0),
            "certbot_log": None if run is None else {"path": str(run.path), "at": run.at.isoformat(),
                                                     "exit_code": run.exit_code, "last_line": run.last_line},
        })
    return {
        "updated": data.get("updated"), "now": now.isoformat(), "health": {},
        "note": f"{why}; showing {cfg.state_dir / STATUS_FILE} written {data.get('updated')}",
        "sites": sites, "problems": data.get("problems") or [],
        "rate_limit_budgets": data.get("rate_limit_budgets") or {},
    }


def _status(cfg: settings_mod.Settings, as_json: bool) -> int:
    try:
        code, doc = request(cfg, "GET", "/status")
    except Unreachable as exc:
        fallback = _status_from_file(cfg, str(exc))
        if fallback is None:
            print(f"error: {exc}, and there is no status file in {cfg.state_dir} yet", file=sys.stderr)
            return 2
        code, doc = 200, fallback
    return _show(code, doc, as_json, lambda d: format_status(d, shutil.get_terminal_size((160, 40)).columns))


def _plan(cfg: settings_mod.Settings, as_json: bool) -> int:
    try:
        code, doc = request(cfg, "GET", "/plan")
    except Unreachable as exc:
        print(f"error: {exc}; plan needs the running sidecar", file=sys.stderr)
        return 2
    return _show(code, doc, as_json, format_plan)


def _show(code: int, doc: dict[str, Any], as_json: bool, formatter: Callable[[dict[str, Any]], str]) -> int:
    """Print a status server answer: an error line, JSON, or the human table."""
    if code != 200:
        print(f"error: {doc.get('error', doc)}", file=sys.stderr)
        return 1
    if as_json:
        _print_json(doc)
    else:
        print(formatter(doc))
    return 0


def _renew(cfg: settings_mod.Settings, name: str, force: bool, as_json: bool) -> int:
    path = f"/renew/{quote(name, safe='')}" + ("?force=1" if force else "")
    try:
        code, doc = request(cfg, "POST", path)
    except Unreachable as exc:
        print(f"error: {exc}; renew needs the running sidecar", file=sys.stderr)
        return 2
    if as_json:
        _print_json({"status": code, **doc})
    elif code == 202:
        print(doc.get("message", "requested"))
    else:
        print(f"error: {doc.get('error', doc)}", file=sys.stderr)
    return 0 if code == 202 else 1


def _health(cfg: settings_mod.Settings, as_json: bool) -> int:
    try:
        code, doc = request(cfg, "GET", "/healthz", timeout=HEALTH_TIMEOUT)
        ok = code == 200
    except Unreachable as exc:
        from sidecar.engine.reporter import health

        ok, doc = health(cfg)
        doc.update({"from": "status file", "server": str(exc)})
    if as_json:
        _print_json(doc)
        return 0 if ok else 1
    where = f" (from the status file: {doc['server']})" if "from" in doc else ""
    if ok and doc.get("degraded"):
        print("degraded: " + "; ".join(doc["degraded"]) + where)
    elif ok:
        print(f"ok: last pass {ago(doc.get('last_pass_age_seconds') or 0)} ago, {doc.get('sites', 0)} sites{where}")
    else:
        print("unhealthy: " + "; ".join(doc.get("problems") or [str(doc)]) + where)
    return 0 if ok else 1


def _check(cfg: settings_mod.Settings, as_json: bool) -> int:
    """Validate the environment, the sites file and every labelled container's labels."""
    from sidecar.core import desired
    from sidecar.core.model import Problem, ProblemKind
    from sidecar.sources import sitesfile
    from sidecar.sources.containers import defaults_of

    doc: dict[str, Any] = {"settings": {"acme_server": cfg.acme_server, "label_prefix": cfg.label_prefix,
                                        "sites_file": str(cfg.sites_file) if cfg.sites_file else None},
                           "notes": []}
    problems: list[Problem] = []
    file_sites: list[Any] = []
    if cfg.sites_file is None:
        doc["notes"].append("no SITES_FILE set")
    else:
        try:
            text = cfg.sites_file.read_text(encoding="utf-8") if cfg.sites_file.exists() else ""
            file_sites, file_problems = sitesfile.parse_sites_file(text, str(cfg.sites_file), defaults_of(cfg))
            problems += file_problems
        except OSError as exc:
            problems.append(Problem(f"sites file {cfg.sites_file}", f"unreadable: {exc}"))
        except InputError as exc:
            problems.append(Problem(exc.source, exc.message))
    label_sites: list[Any] = []
    consumer_view = None
    try:
        from sidecar.adapters.docker_api import Docker
        from sidecar.sources import consumers
        from sidecar.sources.compat import CompatSources

        docker = Docker(timeout=10)
        own_id = docker.own_container_id(cfg.sidecar_container)
        # The same choice of nginx and the same scope as the running sidecar (SITES_SCOPE, Compose project),
        # and the same reading of nginx-proxy variables and Traefik labels (COMPAT_NGINX_PROXY, COMPAT_TRAEFIK).
        listed, me = docker.list_containers(), docker.find_container(own_id) if own_id else None
        view = CompatSources(cfg, docker.container_env).view(listed, me)
        consumer_view = consumers.read_consumers(listed, cfg, me, view.nginx)  # (acme.consumer labels)
        if view.nginx is None:
            doc["notes"].append("nginx container not found (NGINX_CONTAINER or the label "
                                f"{cfg.nginx_label}=true); label sites are checked without its networks")
        if view.nginx_warning:
            doc["notes"].append(view.nginx_warning)
        label_sites = list(view.sites)
        problems += view.problems
    except DockerUnavailable as exc:
        doc["notes"].append(f"container labels not checked: {exc}")
    state = desired.merge(file_sites, label_sites, problems)
    if consumer_view is not None:
        state = consumers.attach(state, consumer_view, cfg.label_prefix)[0]
    state = dataclasses.replace(state, problems=state.problems + tuple(_dns_credentials(cfg, state.sites)))
    doc["sites"] = [{"site": s.name, "names": list(s.domains), "source": s.source,
                     "upstreams": [u.url for u in s.upstreams]} for s in state.sites]
    doc["problems"] = [str(p) for p in state.problems]
    doc["ok"] = all(p.kind is ProblemKind.WARNING for p in state.problems)  # (a warning: served anyway)
    if as_json:
        _print_json(doc)
    else:
        print(f"settings ok: ACME server {cfg.acme_server}, label prefix {cfg.label_prefix}")
        for note in doc["notes"]:
            print(note)
        for site in state.sites:
            print(f"site {site.name}: {', '.join(site.domains)} -> "
                  f"{', '.join(u.url for u in site.upstreams) or 'certificate only'} ({site.source})")
        for problem in state.problems:
            print(f"{'warning' if problem.kind is ProblemKind.WARNING else 'error'}: {problem}", file=sys.stderr)
    return 0 if doc["ok"] else 1


def _dns_credentials(cfg: settings_mod.Settings, sites: Sequence[Any]) -> list[Any]:
    """The DNS-01 pre-flight of every DNS-01 site (its credentials file there and private), as problems."""
    from sidecar.core import certbot
    from sidecar.core.model import Problem
    from sidecar.engine import credentials

    found = []
    for site in sites:
        challenge = certbot.dns_challenge(cfg, site.options)
        why = credentials.check(cfg.dns_credentials_dir, challenge) if challenge else ""
        if why:
            found.append(Problem(f"site {site.name}", why))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description="HTTPS for sites behind nginx")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the sidecar (default)")
    for name, text in (("status", "sites, certificates, next renewals, errors, certbot logs"),
                       ("plan", "what the next pass would do, without doing it"),
                       ("check", "validate the environment, the sites file and container labels"),
                       ("health", "exit 0 if the running sidecar is healthy")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("renew", help="retry a site now; --force: renew even if not due")
    p.add_argument("name", help="site name (its first domain)")
    p.add_argument("--force", action="store_true", help="renew even if the certificate is not due")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    command = args.command or "run"
    try:
        cfg = settings_mod.load()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    register_secrets(cfg)
    if command == "health":
        return _health(cfg, args.json)
    if command == "status":
        return _status(cfg, args.json)
    if command == "plan":
        return _plan(cfg, args.json)
    if command == "renew":
        return _renew(cfg, args.name, args.force, args.json)
    setup_logging(cfg.log_format, cfg.log_level)
    if command == "check":
        logging.getLogger().setLevel(logging.WARNING)
        return _check(cfg, args.json)
    return _run(cfg)
