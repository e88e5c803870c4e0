"""Command line: ``python -m sidecar [run|check|health]``.

- ``run``     (default) the sidecar: watch, issue, render, reload
- ``check``   validate the environment and the sites file, print the sites, exit
- ``health``  exit 0 if the last reconcile pass is recent (Docker HEALTHCHECK)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from datetime import datetime, timezone
from typing import Sequence

from . import __version__, settings as settings_mod
from .errors import ConfigError, DockerUnavailable, InputError


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = __import__("time").gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "docker", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(cfg: settings_mod.Settings) -> int:
    from .docker_api import Docker
    from .reconciler import Reconciler

    log = logging.getLogger("sidecar")
    log.info("nginx-acme-sidecar %s starting", __version__)
    try:
        docker = Docker()
    except DockerUnavailable as exc:
        log.error("%s (is /var/run/docker.sock mounted?)", exc)
        return 1
    reconciler = Reconciler(cfg, docker)

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
    log.info("stopped")
    return 0


def _check(cfg: settings_mod.Settings) -> int:
    from . import sitesfile

    print(f"settings ok: ACME server {cfg.acme_server}, label prefix {cfg.label_prefix}")
    if cfg.sites_file is None:
        print("no SITES_FILE set")
        return 0
    try:
        text = cfg.sites_file.read_text(encoding="utf-8")
        sites, problems = sitesfile.parse_sites_file(text, str(cfg.sites_file))
    except (OSError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for site in sites:
        print(f"site {site.name}: {', '.join(site.domains)} -> {', '.join(u.url for u in site.upstreams)}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description="HTTPS for sites behind nginx")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "check", "health"))
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    try:
        cfg = settings_mod.load()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "health":
        from .reconciler import health

        ok, message = health(cfg)
        print(message)
        return 0 if ok else 1
    setup_logging(cfg.log_format, cfg.log_level)
    if args.command == "check":
        return _check(cfg)
    return _run(cfg)
