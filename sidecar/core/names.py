"""Names shared by every layer: the sidecar's own files, lineage names, time stamps.

One place for each: the owned-file prefix tells the renderer what to write, the
installer what it may replace, the conf parser what to skip and the watcher what
not to wake on.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

# Files the sidecar owns in nginx's conf.d ("sidecar-global.conf", "sidecar-site-NAME.conf").
OWNED_PREFIX = "sidecar-"
SITE_FILE_PREFIX = f"{OWNED_PREFIX}site-"
# Temporary files of ``state.files.atomic_write``; only a killed process leaves one behind.
TEMP_PREFIX = ".sidecar-tmp-"
# A certbot lineage (certificate) name as the sidecar accepts it: a path component, no dot first.
LINEAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# A directory the rendered nginx config names (certificates, webroot, snippets): nothing nginx
# would read as syntax (quotes, spaces, ';', braces, '$' variables, newlines).
NGINX_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]{0,200}")
# An ACME profile name (certbot --preferred-profile).
PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def site_filename(site_name: str) -> str:
    return f"{SITE_FILE_PREFIX}{site_name}.conf"


def site_of_file(filename: str) -> str | None:
    """The site a ``sidecar-site-NAME.conf`` belongs to, else None."""
    if filename.startswith(SITE_FILE_PREFIX) and filename.endswith(".conf"):
        return filename[len(SITE_FILE_PREFIX):-len(".conf")]
    return None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
