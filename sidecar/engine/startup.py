"""Start-up: directories, who we are, what a killed predecessor left behind, the certbot sandbox."""

from __future__ import annotations

import logging
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path

from sidecar.adapters import nginx, runner
from sidecar.adapters.docker_api import Docker
from sidecar.core import nginxconf
from sidecar.core.model import ContainerInfo
from sidecar.core.settings import Settings
from sidecar.engine import credentials
from sidecar.state import files, lineage

log = logging.getLogger("sidecar")

OWNER_LABEL = "nginx-acme-sidecar.owner"


@dataclass(frozen=True)
class Environment:
    me: ContainerInfo | None  # the sidecar's own container (None: not in a container)
    owner: str                # certbot containers carry it, so stacks on one engine never touch each other's
    runner: runner.Runner


def _report_cleaned(leftovers: list[str]) -> None:
    for leftover in leftovers:
        log.warning("cleaned up after an interrupted run: removed %s", leftover)


def clean_certs(certs_dir: Path) -> None:
    """A killed run's temporary files in the certificates' volume, removed in the background once
    the first pass is done: nothing reads them, and walking ten thousand lineages (most of a
    second) would delay the first plan, before it or alongside it."""
    threading.Thread(target=lambda: _report_cleaned(files.remove_temp_files([certs_dir])), name="clean-up",
                     daemon=True).start()


def prepare(settings: Settings, docker: Docker) -> Environment:
    s = settings
    for d in (s.certs_dir, s.webroot_dir, s.conf_dir, s.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    challenges = s.webroot_dir / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True, exist_ok=True)
    own_id = docker.own_container_id(s.sidecar_container)
    if own_id:
        volumes = docker.mounts_for(own_id, [str(s.certs_dir), str(s.webroot_dir)])
    else:
        log.warning("not running in a container (or it could not be found): certbot gets host paths %s and %s",
                    s.certs_dir, s.webroot_dir)
        volumes = {str(s.certs_dir): {"bind": str(s.certs_dir), "mode": "rw"},
                   str(s.webroot_dir): {"bind": str(s.webroot_dir), "mode": "rw"}}
    volumes = {**volumes, **_credentials(docker, own_id, s.dns_credentials_dir)}
    me = docker.find_container(own_id) if own_id else None
    owner = me.name if me else "host"
    # First stop a certbot a killed predecessor left running: it may still write into .staging.
    removed = docker.remove_labelled(f"{OWNER_LABEL}={owner}")
    if removed:
        log.info("removed %d leftover certbot container(s) from an earlier run", removed)
    _report_cleaned([*lineage.recover(s.certs_dir), *files.remove_temp_files([s.conf_dir, s.state_dir])])
    # (the certificates' volume is searched after the first pass: see clean_certs)
    for probe in challenges.glob("sidecar-probe-*"):
        probe.unlink(missing_ok=True)
    for name in nginx.install_snippets(s.conf_dir, str(s.webroot_dir)):
        log.info("include snippet for hand-written configs: %s", s.conf_dir / nginxconf.SNIPPETS_DIRNAME / name)
    docker.ensure_image(s.certbot_image)
    sandbox = runner.Sandbox(
        image=s.certbot_image, volumes=volumes,
        network_mode=f"container:{own_id}" if own_id else None,
        labels={s.managed_label: "certbot", OWNER_LABEL: owner}, timeout=s.certbot_timeout_seconds)

    def make(image: str, number: int) -> runner.Runner:
        if image != s.certbot_image:
            docker.ensure_image(image)
        box = dataclasses.replace(sandbox, image=image)
        name = f"{owner}-certbot" + (f"-{number}" if number > 1 else "")
        return (runner.ExecRunner(docker, box, name, s.certbot_concurrency, launcher=s.certbot_launcher)
                if s.certbot_runner == "exec" else runner.ContainerRunner(docker, box))

    run = make(s.certbot_image, 1)
    if any(image != s.certbot_image for _, image in s.certbot_images):
        run = runner.Images(run, s.certbot_image, make)
    return Environment(me, owner, run)


def _credentials(docker: Docker, own_id: str | None, directory: Path) -> dict[str, dict[str, str]]:
    """DNS-01 credentials for the certbot container, read-only: DNS_CREDENTIALS_DIR when it is a mount
    of the sidecar, and the credentials files (``*.ini``, ``*.json``: Docker secrets) mounted inside it;
    nothing else of the sidecar's. Their values are registered for redaction at once."""
    if own_id:
        found = {source: bind for source, bind in docker.mounts_under(own_id, str(directory)).items()
                 if bind["bind"] == str(directory) or bind["bind"].endswith((".ini", ".json"))}
    else:
        found = {str(directory): {"bind": str(directory), "mode": "ro"}} if directory.is_dir() else {}
    if found:
        read = credentials.register_all(directory)
        log.info("DNS-01 credentials: %s passed to certbot read-only (%d file%s)", directory,
                 read, "" if read == 1 else "s")
    return found
