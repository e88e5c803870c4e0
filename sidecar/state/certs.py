"""Read certificate lineages (certbot's ``live/NAME/``) with ``cryptography``.

``parse_certificate`` is pure (bytes in, ``Certificate`` out); ``read_lineages``
is the small reader around it. A lineage counts only when its certificate,
full chain and private key all exist: nginx must never be pointed at a missing file.
"""

from __future__ import annotations

import logging
import os
import pickle  # noqa: S403 - the helper process's answer (see _Helper) and state.memo
import re
import subprocess  # noqa: S404 - the helper process: the sidecar's own interpreter and code
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from sidecar.core.model import Certificate, Problem
from sidecar.state import memo

log = logging.getLogger(__name__)

_KEY_OIDS = {"1.2.840.10045.2.1": "ecdsa", "1.2.840.113549.1.1.1": "rsa"}  # id-ecPublicKey, rsaEncryption


def _key_type(cert: x509.Certificate) -> str:
    # The algorithm's OID when cryptography has it (43 and later): no key object built (10,000 at a first start)
    oid = getattr(cert, "public_key_algorithm_oid", None)
    if oid is not None and oid.dotted_string in _KEY_OIDS:
        return _KEY_OIDS[oid.dotted_string]
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return type(key).__name__


def _issuer(cert: x509.Certificate) -> str:
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME):
        attrs = cert.issuer.get_attributes_for_oid(oid)
        if attrs:
            return str(attrs[0].value)
    return cert.issuer.rfc4514_string()


_ISSUERS: dict[bytes, str] = {}  # authority key id -> the issuer's name (one CA signs thousands)


def parse_certificate(pem: bytes, name: str, fullchain_path: str = "", privkey_path: str = "",
                      acme_server: str = "") -> Certificate:
    """Parse the leaf (first) certificate of ``pem``. Raises ValueError on garbage."""
    cert = x509.load_pem_x509_certificate(pem)
    names: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    aki: bytes | None = None
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        pass
    has_ocsp = False
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        has_ocsp = any(d.access_method == AuthorityInformationAccessOID.OCSP for d in aia)
    except x509.ExtensionNotFound:
        pass
    issuer = _ISSUERS.get(aki, "") if aki else ""
    if not issuer:
        issuer = _issuer(cert)
        if aki and len(_ISSUERS) < 1000:
            _ISSUERS[aki] = issuer
    return Certificate(
        name=name,
        names=frozenset(names),
        not_before=cert.not_valid_before_utc,  # (aware, in UTC)
        not_after=cert.not_valid_after_utc,
        issuer=issuer,
        key_type=_key_type(cert),
        serial=cert.serial_number,
        authority_key_id=aki,
        has_ocsp_url=has_ocsp,
        fullchain_path=fullchain_path,
        privkey_path=privkey_path,
        acme_server=acme_server,
    )


def renewal_setting(certs_dir: Path, name: str, wanted: str) -> str:
    """One ``key = value`` line of certbot's ``renewal/NAME.conf`` (``server``, ``account``...), or ""."""
    return _setting(os.path.join(str(certs_dir), "renewal", f"{name}.conf"), wanted)


def _setting(path: str, wanted: str) -> str:
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError:
        return ""
    # (one search, not a loop over the lines: ten thousand of these at a first start)
    m = re.search(rb"^[ \t]*" + re.escape(wanted.encode()) + rb"[ \t]*=(.*)$", text, re.M)
    return m.group(1).strip().decode("utf-8", "replace") if m else ""


def renewal_server(certs_dir: Path, name: str) -> str:
    """The ACME directory a lineage was issued from, or ""."""
    return renewal_setting(certs_dir, name, "server")


Signature = tuple[int, ...]  # what a lineage's files looked like (see _signature)
# lineage name -> (what the files looked like, the certificate read from them)
LineageCache = dict[str, tuple[Signature, Certificate]]
# the lineages' names; what is known of them without parsing; the ones to parse (see _scan)
Scan = tuple[list[str], dict[str, Certificate | Problem], list[tuple[str, Signature]]]


def _signature(cert_path: str, renewal: str) -> Signature:
    """Changes whenever certbot writes a new certificate (the live symlink points at a new
    archive file) or the renewal settings; a stat is far cheaper than parsing. Raises
    FileNotFoundError when there is no certificate."""
    st = os.stat(cert_path)
    try:
        rt = os.stat(renewal)
        renewal_sig = (rt.st_ino, rt.st_mtime_ns, rt.st_size)
    except OSError:
        renewal_sig = (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size, *renewal_sig)


HELPER_MIN = 1000  # certificates to parse before a second process helps (see read_lineages)
HELPER_SHARE = 0.4  # of them, to the helper (it first spends 0.1 to 0.2 s starting Python and importing)
AHEAD_SHARE = 0.6  # to the helper of a read begun ahead (it starts while this process reads the sites file)
HELPER_TIMEOUT = 120.0


def _paths(certs_dir: str, name: str) -> tuple[str, str, str, str]:
    """A lineage's certificate, full chain, private key and renewal settings."""
    base = os.path.join(certs_dir, "live", name)
    return (os.path.join(base, "cert.pem"), os.path.join(base, "fullchain.pem"), os.path.join(base, "privkey.pem"),
            os.path.join(certs_dir, "renewal", f"{name}.conf"))


def _parse_lineage(certs_dir: str, name: str) -> Certificate | str:
    """The lineage's certificate, or why it cannot be read."""
    cert_path, chain, key, conf = _paths(certs_dir, name)
    try:
        with open(cert_path, "rb") as fh:
            return parse_certificate(fh.read(), name, chain, key, _setting(conf, "server"))
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"


def _scan(root: str, cache: LineageCache | None) -> Scan | None:
    """The lineages' names; what is known of them without parsing (from ``cache``, or their
    problem); and the ones to parse, with their signatures. None without a ``live`` directory."""
    try:
        # (the directory's own listing says which entries are directories: no stat for each)
        with os.scandir(os.path.join(root, "live")) as it:
            entries = sorted(e.name for e in it if e.is_dir())
    except FileNotFoundError:
        return None
    known: dict[str, Certificate | Problem] = {}
    todo: list[tuple[str, Signature]] = []
    for name in entries:
        cert_path, chain, key, conf = _paths(root, name)
        try:
            signature = _signature(cert_path, conf)  # (the certificate's stat: it exists)
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            known[name] = Problem(f"certificate {cert_path}", f"unreadable: {exc}")
            continue
        if signature is None or not (os.path.exists(chain) and os.path.exists(key)):
            known[name] = Problem(f"certificate {os.path.dirname(cert_path)}",
                                  "incomplete lineage (cert, fullchain or privkey missing)")
            continue
        cached = cache.get(name) if cache is not None else None
        if cached is not None and cached[0] == signature:
            known[name] = cached[1]
        else:
            todo.append((name, signature))
    return entries, known, todo


def read_lineages(
    certs_dir: Path, cache: LineageCache | None = None, helper: bool = False, ahead: "Ahead | None" = None
) -> tuple[dict[str, Certificate], list[Problem]]:
    """Every usable lineage under ``certs_dir/live``, keyed by lineage name.

    With ``cache``, a lineage whose files did not change since the last call is not parsed again
    (then a lineage costs four ``stat`` calls: plain strings, not ``Path``, at ten thousand of them).
    With ``helper``, when at least ``HELPER_MIN`` are to be parsed (a first start beside ten
    thousand certificates), a second process parses ``HELPER_SHARE`` of them meanwhile (``python
    -m sidecar.state.certs``), on the second core. ``ahead``: the read ``parse_ahead`` began, its
    helper parsing while the caller did something else.
    """
    root = str(certs_dir)
    scanned = ahead.scanned if ahead is not None else _scan(root, cache)
    if scanned is None:
        return {}, []
    entries, known, todo = scanned
    theirs = set(ahead.helper.names) if ahead is not None else set()
    names = [name for name, _ in todo if name not in theirs]
    mine = len(names) - int(len(names) * HELPER_SHARE) if helper and len(names) >= HELPER_MIN else len(names)
    helpers = [h for h in (ahead.helper if ahead is not None else None,
                           _Helper(root, names[mine:]) if mine < len(names) else None) if h is not None]
    parsed = {name: _parse_lineage(root, name) for name in names[:mine]}
    for h in helpers:  # (their answers once this process has parsed its own share)
        parsed.update(h.results() or {name: _parse_lineage(root, name) for name in h.names})
    for name, signature in todo:
        result = parsed[name]
        if isinstance(result, str):
            known[name] = Problem(f"certificate {_paths(root, name)[0]}", result)
            continue
        known[name] = result
        if cache is not None:
            cache[name] = (signature, result)
    found: dict[str, Certificate] = {}
    problems: list[Problem] = []
    for name in entries:
        kept = known[name]
        if isinstance(kept, Problem):
            problems.append(kept)
        else:
            found[name] = kept
    return found, problems


class Ahead:
    """A read of the lineages begun early (``parse_ahead``): the directory as it was then, and a
    helper process parsing the first ``share`` of the certificates to parse (the reader parses
    the rest once it gets there)."""

    def __init__(self, root: str, scanned: Scan, share: int) -> None:
        self.scanned = scanned
        self.helper = _Helper(root, [name for name, _ in scanned[2][:share]])

    def cancel(self) -> None:
        self.helper.cancel()


def parse_ahead(certs_dir: Path, cache: LineageCache | None = None) -> Ahead | None:
    """Start parsing, in a helper process, the certificates ``read_lineages`` would parse now, when
    there are at least ``HELPER_MIN`` (a first start beside ten thousand): the caller does other work
    meanwhile (the sites file) and passes the result to ``read_lineages``, whose read then began
    here (what changes in between is seen by the next read, as a change during any read would be).
    None when not worth it."""
    root = str(certs_dir)
    try:
        with os.scandir(os.path.join(root, "live")) as it:  # (a restart knows them all: no stat for each)
            if sum(1 for e in it if e.name not in (cache or {})) < HELPER_MIN:
                return None
    except FileNotFoundError:
        return None
    scanned = _scan(root, cache)
    if scanned is None or len(scanned[2]) < HELPER_MIN:
        return None
    return Ahead(root, scanned, int(len(scanned[2]) * AHEAD_SHARE))


class _Helper:
    """``python -m sidecar.state.certs CERTS_DIR``, parsing the lineages named on its stdin.

    Answers a pickled ``{name: Certificate or why not}`` on its stdout (a process of the sidecar's
    own code, started by it, through a pipe only the two share). None from ``results`` when it
    failed in any way: the caller then parses those itself."""

    def __init__(self, certs_dir: str, names: list[str]) -> None:
        self.names = names
        self.proc: subprocess.Popen[bytes] | None = None
        root = str(Path(__file__).resolve().parents[2])  # (where the sidecar package is)
        # (an environment of its own: it needs none of the sidecar's settings, secrets among them)
        env = {"PATH": os.environ.get("PATH", os.defpath),
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "sidecar.state.certs", certs_dir], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            log.warning("certificates: no helper process (%s); parsing them all here", exc)
            return
        # (the names through a thread: more than a pipe holds would block this one until the child reads)
        self.feeder = threading.Thread(target=self._feed, name="lineage-helper-feed", daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write("\0".join(self.names).encode("utf-8", "surrogateescape"))
            self.proc.stdin.close()
        except OSError:
            pass

    def _fed(self) -> None:
        self.feeder.join(HELPER_TIMEOUT)
        assert self.proc is not None
        self.proc.stdin = None  # (closed by the feeder: communicate() must not flush it)

    def cancel(self) -> None:
        """Stop it, its answer unread."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self._fed()
        self.proc.communicate()  # (reaps it and closes its pipes)

    def results(self) -> dict[str, Certificate | str] | None:
        if self.proc is None:
            return None
        self._fed()
        try:
            out, err = self.proc.communicate(timeout=HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            log.warning("certificates: the helper process took over %.0f s; parsing its share here", HELPER_TIMEOUT)
            return None
        except OSError as exc:
            log.warning("certificates: the helper process failed (%s); parsing its share here", exc)
            return None
        try:
            found = pickle.loads(out) if self.proc.returncode == 0 else None  # noqa: S301 - our own child's answer
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            found = None
        if not isinstance(found, dict) or set(found) != set(self.names):
            last = (err.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            log.warning("certificates: the helper process failed (exit %s: %s); parsing its share here",
                      self.proc.returncode, last[:200])
            return None
        return found


def _helper_main(argv: list[str]) -> int:
    names = [n for n in sys.stdin.buffer.read().decode("utf-8", "surrogateescape").split("\0") if n]
    sys.stdout.buffer.write(pickle.dumps({name: _parse_lineage(argv[0], name) for name in names},
                                         protocol=pickle.HIGHEST_PROTOCOL))
    return 0


CACHE_KEY = "lineage facts"  # (state.memo's key adds the sidecar's code: a new version parses again)


def save_cache(path: Path, cache: LineageCache) -> None:
    """Keep what the certificates said for the next start (pickled in the state volume, see
    ``state.memo``: ten thousand load in 0.05 s, against 0.23 s as JSON); best effort."""
    memo.save(path, memo.key(CACHE_KEY, str(path)), dict(cache))  # (a copy: certbot threads may add to it)


def load_cache(path: Path) -> LineageCache:
    """What ``save_cache`` kept; empty when missing or not understood (then everything is parsed)."""
    found = memo.load(path, memo.key(CACHE_KEY, str(path)))
    return found if isinstance(found, dict) else {}


if __name__ == "__main__":  # the helper process (see _Helper)
    raise SystemExit(_helper_main(sys.argv[1:]))
