"""certbot's on-disk layout, and running new issuances side by side.

certbot holds a lock on its whole configuration directory for the length of a
run, so two runs on ``/etc/letsencrypt`` cannot overlap. A *new* lineage does not
need anything from that directory but the ACME account, so it is issued in a
private staging directory (``CERTS_DIR/.staging/NAME``, holding a copy of the
account) and then moved into place:

    archive/NAME      -> moved as is
    renewal/NAME.conf -> moved, with the staging path rewritten to CERTS_DIR
    live/NAME         -> moved last (its symlinks are relative: ../../archive/NAME/...)

``live/NAME`` appearing is what makes the lineage visible (``certs.read_lineages``),
so a crash half-way leaves at worst an unreferenced archive or renewal file,
which ``recover`` removes at the next start (guided by a journal file). Renewals and name changes of an
existing lineage run in ``CERTS_DIR`` itself, one at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from sidecar.state.certs import renewal_setting
from sidecar.state.files import atomic_write

log = logging.getLogger(__name__)

STAGING = ".staging"


def account_dir(config_dir: Path, server: str) -> Path:
    url = urlsplit(server)
    return config_dir / "accounts" / url.netloc / url.path.strip("/")


def has_account(config_dir: Path, server: str) -> bool:
    path = account_dir(config_dir, server)
    try:
        return any(p.is_dir() for p in path.iterdir())
    except FileNotFoundError:
        return False


def renewal_account(certs_dir: Path, name: str, server: str) -> str | None:
    """The ACME account an existing lineage was issued with, if it is stored for ``server``."""
    account = renewal_setting(certs_dir, name, "account")
    if account.isalnum() and (account_dir(certs_dir, server) / account).is_dir():
        return account
    return None


def default_account(config_dir: Path, server: str) -> str | None:
    """The account to use for new lineages when several are stored (certbot would
    otherwise ask which, and fail non-interactively): the oldest one."""
    path = account_dir(config_dir, server)
    try:
        accounts = [p for p in path.iterdir() if p.is_dir() and p.name.isalnum()]
    except FileNotFoundError:
        return None
    if len(accounts) < 2:
        return None
    return min(accounts, key=lambda p: (p.stat().st_mtime, p.name)).name


def is_fresh(certs_dir: Path, name: str) -> bool:
    """True when no part of lineage ``name`` exists yet."""
    return not (
        (certs_dir / "live" / name).exists()
        or (certs_dir / "archive" / name).exists()
        or (certs_dir / "renewal" / f"{name}.conf").exists()
    )


def prepare_staging(certs_dir: Path, name: str) -> Path:
    """A private config dir for one new lineage, holding a copy of the accounts."""
    staging = certs_dir / STAGING / name
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True, mode=0o700)
    accounts = certs_dir / "accounts"
    if accounts.is_dir():
        shutil.copytree(accounts, staging / "accounts", symlinks=True)
    return staging


def adopt_staged(certs_dir: Path, staging: Path, name: str) -> None:
    """Move a lineage issued in ``staging`` into ``certs_dir``. Raises OSError on conflicts."""
    src_live, src_archive = staging / "live" / name, staging / "archive" / name
    src_conf = staging / "renewal" / f"{name}.conf"
    if not (src_live.is_dir() and src_archive.is_dir() and src_conf.is_file()):
        raise FileNotFoundError(f"staged lineage {name} is incomplete in {staging}")
    if not is_fresh(certs_dir, name):
        raise FileExistsError(f"lineage {name} appeared in {certs_dir} meanwhile")
    for sub in ("live", "archive", "renewal"):
        (certs_dir / sub).mkdir(mode=0o755 if sub != "archive" else 0o700, exist_ok=True)
    journal = certs_dir / STAGING / f"{name}.adopting"
    atomic_write(journal, str(staging) + "\n")
    os.replace(src_archive, certs_dir / "archive" / name)
    text = src_conf.read_text(encoding="utf-8").replace(str(staging), str(certs_dir))
    atomic_write(certs_dir / "renewal" / f"{name}.conf", text)
    os.replace(src_live, certs_dir / "live" / name)
    journal.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def discard_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def recover(certs_dir: Path) -> list[str]:
    """Clean up after a crash: staging dirs, and lineages whose move was interrupted.

    Only lineages with an adoption journal (``.staging/NAME.adopting``) are touched,
    never a lineage someone else left incomplete. Returns what was removed.
    """
    removed: list[str] = []
    root = certs_dir / STAGING
    if not root.is_dir():
        return removed
    for journal in sorted(root.glob("*.adopting")):
        name = journal.name[: -len(".adopting")]
        if not (certs_dir / "live" / name).exists():
            for leftover in (certs_dir / "renewal" / f"{name}.conf", certs_dir / "archive" / name):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                    removed.append(str(leftover.relative_to(certs_dir)))
                elif leftover.exists():
                    leftover.unlink()
                    removed.append(str(leftover.relative_to(certs_dir)))
        journal.unlink()
    for child in root.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            removed.append(f"{STAGING}/{child.name}")
    return removed
