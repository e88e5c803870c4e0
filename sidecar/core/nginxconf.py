"""Read hand-written nginx configuration: which certificates do its server blocks need?

Pure core plus a small reader, no Docker:

    text --tokenize--> tokens --parse--> directives --parse_tree (includes)--> ServerBlock
    ServerBlock --certificate_demands--> CertDemand (lineage NAME -> its server_names)

The tokenizer follows nginx's own ``ngx_conf_read_token`` rule for rule (Debian
trixie does not package crossplane, the maintained Python parser, so this is a
careful re-implementation with tests):

- words are separated by blanks; ``;`` ends a directive, ``{`` opens a block,
  ``}`` closes one, and ``;`` and ``{`` end a word even without a blank before them;
- ``#`` starts a comment only where a word could start (``a#b`` is one word);
- ``"..."`` and ``'...'`` quote (``;``, ``{``, ``}``, ``#`` and blanks inside are plain
  text), a backslash escapes the next character anywhere, and a closing quote must be
  followed by a blank, ``;``, ``{`` or ``)``;
- ``${name}`` is a variable, its ``{`` does not open a block;
- escapes are resolved as nginx does: ``\\" \\' \\\\ \\t \\r \\n``, any other backslash stays.

A block never spans files; ``include`` is expanded where nginx expands it (globs
sorted, a glob that matches nothing is fine, a relative path is relative to nginx's
conf prefix), with a guard against include loops and nesting deeper than 20 files.

Every error is a ``ConfSyntaxError`` (an ``InputError``) or a ``Problem`` naming
``file:line``; one bad file never hides what the other files ask for.

Shipped snippets (``sidecar/snippets/*.conf``) are copied by ``install_snippets`` to
``NGINX_CONF_DIR/sidecar-include/``: a directory that nginx's ``include conf.d/*.conf``
does not reach (globs do not recurse), for users to include in their own servers.
"""

from __future__ import annotations

import glob as _globmod
import os
import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from sidecar.core.domains import MAX_NAMES_PER_CERT, DomainError, normalize_domain
from sidecar.core.errors import ConfigError, InputError
from sidecar.core.model import Problem
from sidecar.core.render import MOZILLA_INTERMEDIATE_CIPHERS
from sidecar.core.names import LINEAGE_NAME as _LINEAGE_NAME, NGINX_SAFE_PATH, OWNED_PREFIX, TEMP_PREFIX

SNIPPETS_DIRNAME = "sidecar-include"  # NGINX_CONF_DIR/sidecar-include/*.conf: snippets for users
MAX_INCLUDE_DEPTH = 20
# Includes are followed only where a server block, server_name or ssl_certificate can be.
_FOLLOW_INCLUDES_IN = frozenset({"main", "http", "server"})
_BLANK = " \t\r\n"
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


class ConfSyntaxError(InputError):
    """nginx would reject this text; ``source`` is ``file:line`` as nginx reports it."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}", message)
        self.file = file
        self.line = line


class Token(NamedTuple):
    """One word, or (``special``) one of the separators ``;`` ``{`` ``}``."""

    value: str
    line: int
    quoted: bool = False
    special: bool = False


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    file: str
    line: int
    # None: a simple directive ending in ";"; a tuple: the block's children.
    block: tuple[Directive, ...] | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ServerBlock:
    """An HTTP ``server { }`` with its includes expanded (nested blocks kept as they are)."""

    file: str
    line: int
    directives: tuple[Directive, ...]
    # ``ssl_certificate`` directives of the enclosing http level; used when the server has none.
    inherited_certificates: tuple[Directive, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def named(self, name: str) -> tuple[Directive, ...]:
        return tuple(d for d in self.directives if d.name == name)

    @property
    def server_names(self) -> tuple[tuple[str, str], ...]:
        """``(name as written, file:line)`` in order; nginx's default is the empty name."""
        return tuple((arg, d.where) for d in self.named("server_name") for arg in d.args)

    @property
    def listens_ssl(self) -> bool:
        listens = self.named("listen")
        ssl_on = any(d.args == ("on",) for d in self.named("ssl"))
        return ssl_on or any("ssl" in d.args[1:] or "quic" in d.args[1:] for d in listens)

    @property
    def certificates(self) -> tuple[Directive, ...]:
        """The ``ssl_certificate`` directives in force (own ones replace the http level's)."""
        own = self.named("ssl_certificate")
        if own:
            return own
        return self.inherited_certificates if self.listens_ssl else ()


@dataclass(frozen=True)
class ParsedConfig:
    servers: tuple[ServerBlock, ...]
    problems: tuple[Problem, ...] = ()
    # Local paths of every file read (for watching their directories).
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertDemand:
    """Certificate lineage ``name`` must exist and cover ``domains`` (first server_name first)."""

    name: str
    domains: tuple[str, ...]
    # ``file:line`` of each ssl_certificate directive that names the lineage.
    sources: tuple[str, ...]


# -- tokenizer -------------------------------------------------------------------


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\" and i + 1 < n and raw[i + 1] in _UNESCAPE:
            out.append(_UNESCAPE[raw[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokenize(text: str, file: str = "<string>") -> Iterator[Token]:
    """The tokens of ``text``, as nginx reads them. Raises ``ConfSyntaxError`` only.

    Errors found here: a quote not followed by a separator, ``;`` or ``{`` without a
    directive name, ``}`` in the middle of a directive, and an unfinished directive or
    quote at the end of the file. Brace balance is the parser's job.
    """
    line = 1
    nargs = 0  # words in the current directive so far
    last_space, need_space, quoted, s_quoted, d_quoted, comment, variable = True, False, False, False, False, False, False
    start, start_line = 0, 1
    i, n = 0, len(text)

    def reset() -> None:
        nonlocal nargs, last_space, need_space, quoted, s_quoted, d_quoted, variable
        nargs = 0
        last_space, need_space, quoted, s_quoted, d_quoted, variable = True, False, False, False, False, False

    while i < n:
        ch = text[i]
        i += 1
        if ch == "\n":
            line += 1
            comment = False  # and the newline itself is a blank
        elif comment:
            continue
        if quoted:
            quoted = False
            continue
        if need_space:
            if ch in _BLANK:
                last_space, need_space = True, False
                continue
            if ch in ";{":
                yield Token(ch, line, special=True)
                reset()
                continue
            if ch == ")":
                last_space, need_space = True, False
            else:
                raise ConfSyntaxError(file, line, f'unexpected "{ch}"')
        if last_space:
            start, start_line = i - 1, line
            if ch in _BLANK:
                continue
            if ch in ";{":
                if nargs == 0:
                    raise ConfSyntaxError(file, line, f'unexpected "{ch}"')
                yield Token(ch, line, special=True)
                reset()
                continue
            if ch == "}":
                if nargs != 0:
                    raise ConfSyntaxError(file, line, 'unexpected "}"')
                yield Token(ch, line, special=True)
                reset()
                continue
            if ch == "#":
                comment = True
                continue
            last_space = False
            if ch == "\\":
                quoted = True
            elif ch == '"':
                start += 1
                d_quoted = True
            elif ch == "'":
                start += 1
                s_quoted = True
            elif ch == "$":
                variable = True
            continue
        # Inside a word.
        if ch == "{" and variable:
            continue
        variable = False
        if ch == "\\":
            quoted = True
            continue
        if ch == "$":
            variable = True
            continue
        found = was_quoted = False
        if d_quoted:
            if ch == '"':
                d_quoted, need_space, found, was_quoted = False, True, True, True
        elif s_quoted:
            if ch == "'":
                s_quoted, need_space, found, was_quoted = False, True, True, True
        elif ch in _BLANK or ch in ";{":
            last_space, found = True, True
        if found:
            yield Token(_unescape(text[start:i - 1]), start_line, was_quoted)
            nargs += 1
            if ch in ";{":
                yield Token(ch, line, special=True)
                reset()
    if nargs > 0 or not last_space:
        raise ConfSyntaxError(file, line, 'unexpected end of file, expecting ";" or "}"')


# -- parser ----------------------------------------------------------------------


def parse(text: str, file: str = "<string>") -> tuple[Directive, ...]:
    """The directives of one file (includes not expanded). Raises ``ConfSyntaxError`` only."""
    stack: list[tuple[list[Directive], list[Token], int]] = []  # (siblings, head of the open block, line)
    current: list[Directive] = []
    words: list[Token] = []
    for tok in tokenize(text, file):
        if not tok.special:
            words.append(tok)
            continue
        if tok.value == ";":
            current.append(Directive(words[0].value, tuple(w.value for w in words[1:]), file, words[0].line))
            words = []
        elif tok.value == "{":
            stack.append((current, words, tok.line))
            current, words = [], []
        else:  # "}"
            if not stack:
                raise ConfSyntaxError(file, tok.line, 'unexpected "}"')
            parent, head, _ = stack.pop()
            parent.append(Directive(head[0].value, tuple(w.value for w in head[1:]), file, head[0].line,
                                    tuple(current)))
            current = parent
    if stack:
        line = text.count("\n") + 1
        opened = stack[-1][2]
        raise ConfSyntaxError(file, line, f'unexpected end of file, expecting "}}" (block opened on line {opened})')
    return tuple(current)


# -- reading files and includes --------------------------------------------------


def read_text(path: Path) -> str:
    """nginx reads bytes; undecodable ones survive as surrogates."""
    return path.read_text(encoding="utf-8", errors="surrogateescape")


def _glob(pattern: str) -> list[str]:
    return sorted(_globmod.glob(pattern))


@dataclass
class _Walk:
    conf_root: str
    read: Callable[[Path], str]
    glob: Callable[[str], list[str]]
    mounts: list[tuple[str, Path]]
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, None] = field(default_factory=dict)
    # nginx path -> its directives, the syntax error, or why it could not be read
    cache: dict[str, tuple[Directive, ...] | ConfSyntaxError | str] = field(default_factory=dict)
    servers: list[tuple[str, int, tuple[Directive, ...]]] = field(default_factory=list)
    http_certs: list[Directive] = field(default_factory=list)

    def problem(self, source: str, message: str) -> None:
        p = Problem(source, message)
        if p not in self.problems:
            self.problems.append(p)

    def local(self, nginx_path: str) -> Path:
        """Where the sidecar sees a path of the nginx container."""
        for prefix, local in self.mounts:
            if nginx_path == prefix or nginx_path.startswith(prefix + "/"):
                return local / nginx_path[len(prefix):].lstrip("/")
        return Path(nginx_path)

    def nginx_path(self, local: Path) -> str:
        text = str(local)
        for prefix, mounted in self.mounts:
            m = str(mounted).rstrip("/")
            if text == m or text.startswith(m + "/"):
                return posixpath.join(prefix, text[len(m):].lstrip("/")).rstrip("/") or "/"
        return text

    def load(self, path: str) -> tuple[Directive, ...] | ConfSyntaxError | str:
        if path not in self.cache:
            local = self.local(path)
            self.files.setdefault(str(local), None)
            try:
                self.cache[path] = parse(self.read(local), path)
            except ConfSyntaxError as exc:
                self.cache[path] = exc
            except (OSError, ValueError) as exc:
                self.cache[path] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return self.cache[path]

    def expand(self, include: Directive, context: str, stack: tuple[str, ...]) -> list[Directive]:
        if len(include.args) != 1:
            self.problem(include.where, 'invalid number of arguments in "include" directive')
            return []
        target = include.args[0]
        if not posixpath.isabs(target):
            target = posixpath.join(self.conf_root, target)
        target = posixpath.normpath(target)
        if _GLOB_CHARS.search(target):
            paths = [self.nginx_path(Path(p)) for p in self.glob(str(self.local(target)))]
        else:
            paths = [target]
        out: list[Directive] = []
        for path in paths:
            if _is_own(posixpath.basename(path)):
                continue
            out.extend(self.file(path, context, stack, include.where))
        return out

    def file(self, path: str, context: str, stack: tuple[str, ...], included_at: str = "") -> list[Directive]:
        """The directives of ``path`` with includes expanded, as seen from ``context``."""
        here = included_at or path
        if path in stack:
            self.problem(here, "include loop: " + " -> ".join(stack + (path,)))
            return []
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.problem(here, f"includes nested deeper than {MAX_INCLUDE_DEPTH} files; {path} not read")
            return []
        loaded = self.load(path)
        if isinstance(loaded, ConfSyntaxError):
            self.problem(loaded.source, loaded.message)
            return []
        if isinstance(loaded, str):
            self.problem(here, f"cannot read {path}: {loaded}")
            return []
        return self.level(loaded, context, stack + (path,))

    def level(self, directives: Sequence[Directive], context: str, stack: tuple[str, ...]) -> list[Directive]:
        """One block level, includes spliced in; server blocks collected in the order nginx reads them."""
        out: list[Directive] = []
        for d in directives:
            if d.name == "include" and d.block is None and context in _FOLLOW_INCLUDES_IN:
                out.extend(self.expand(d, context, stack))
                continue
            out.append(d)
            if d.block is None:
                if context == "http" and d.name == "ssl_certificate":
                    self.http_certs.append(d)
            elif d.name == "http" and context == "main":
                self.level(d.block, "http", stack)
            elif d.name == "server" and context == "http":
                inner = self.level(d.block, "server", stack)
                self.servers.append((d.file, d.line, tuple(inner)))
        return out


def _is_own(name: str) -> bool:
    return name.startswith(OWNED_PREFIX) and name.endswith(".conf")


def parse_tree(
    root_files: Sequence[Path],
    conf_root: Path | str,
    read: Callable[[Path], str] = read_text,
    *,
    glob: Callable[[str], list[str]] = _glob,
    mounts: Mapping[str, Path] | None = None,
    root_context: str = "http",
) -> ParsedConfig:
    """Every HTTP server block of ``root_files``, includes followed.

    ``root_files`` are read in the order given (``conf_d_roots`` gives nginx's order
    for ``conf.d/*.conf``); their top level is ``root_context``: ``"http"`` for files
    included from the ``http { }`` block (conf.d), ``"main"`` for an ``nginx.conf``.
    ``conf_root`` is nginx's conf prefix (``/etc/nginx``), which relative includes are
    relative to. ``mounts`` maps nginx paths to where the sidecar sees them
    (``{"/etc/nginx/conf.d": Path("/conf")}``); by default both are the same.
    Files named ``sidecar-*.conf`` are skipped wherever they come from.
    """
    walk = _Walk(
        conf_root=str(conf_root),
        read=read,
        glob=glob,
        mounts=sorted(((k.rstrip("/") or "/", v) for k, v in (mounts or {}).items()), key=lambda m: -len(m[0])),
    )
    for root in root_files:
        if _is_own(root.name):
            continue
        walk.file(walk.nginx_path(root), root_context, ())
    http_certs = tuple(walk.http_certs)
    servers = tuple(ServerBlock(f, ln, ds, http_certs) for f, ln, ds in walk.servers)
    return ParsedConfig(servers, tuple(walk.problems), tuple(walk.files))


def conf_d_roots(conf_dir: Path) -> list[Path]:
    """``conf_dir/*.conf`` in nginx's order, without the sidecar's own files."""
    try:  # (glob's rule without glob: ten thousand of the sidecar's own files are skipped by name)
        names = sorted(os.listdir(conf_dir))
    except OSError:
        return []
    return [conf_dir / n for n in names if n.endswith(".conf") and not n.startswith(".") and not _is_own(n)]


def relevant_change(path: str) -> bool:
    """For a watcher of the conf dir: False for the sidecar's own writes (no self-triggered passes)."""
    parts = Path(path).parts
    name = parts[-1] if parts else ""
    if SNIPPETS_DIRNAME in parts:
        return False
    return not (name.startswith(OWNED_PREFIX) or name.startswith(TEMP_PREFIX))


# -- certificate demands ---------------------------------------------------------


def _lineage_of(path: str, certs_dir: str, files: tuple[str, ...]) -> str | None:
    """NAME when ``path`` is ``<certs_dir>/live/NAME/<one of files>``, else None."""
    if not posixpath.isabs(path):
        return None
    norm = posixpath.normpath(path)
    live = posixpath.join(posixpath.normpath(certs_dir), "live") + "/"
    if not norm.startswith(live):
        return None
    rest = norm[len(live):].split("/")
    if len(rest) != 2 or rest[1] not in files:
        return None
    return rest[0]


def _under_live(path: str, certs_dir: str) -> bool:
    return path.startswith(posixpath.join(posixpath.normpath(certs_dir), "live") + "/")


def _names(server: ServerBlock, problems: list[Problem]) -> list[str]:
    """The names a certificate can cover; the rest reported (``_`` and "" are silently none)."""
    names: list[str] = []
    for raw, where in server.server_names:
        if raw in ("", "_"):
            continue
        if raw.startswith("~"):
            problems.append(Problem(where, f"server_name {raw}: a regular expression cannot be put in a "
                                           "certificate; list the names it should match"))
            continue
        if "$" in raw:
            problems.append(Problem(where, f"server_name {raw}: a variable cannot be put in a certificate"))
            continue
        candidate = raw
        if raw.startswith(".") and len(raw) > 1:
            problems.append(Problem(where, f"server_name {raw}: only {raw[1:]} is covered, the wildcard "
                                           f"*{raw} cannot be validated over HTTP-01"))
            candidate = raw[1:]
        elif "*" in raw:
            problems.append(Problem(where, f"server_name {raw}: wildcards cannot be validated over HTTP-01; "
                                           "list the names instead"))
            continue
        try:
            name = normalize_domain(candidate)
        except DomainError as exc:
            problems.append(Problem(where, f"server_name {raw}: {exc}"))
            continue
        if name not in names:
            names.append(name)
    return names


def certificate_demands(servers: Iterable[ServerBlock], certs_dir: str) -> tuple[list[CertDemand], list[Problem]]:
    """Which lineages under ``certs_dir/live`` the servers use, and the names each must cover.

    A server counts when one of its ``ssl_certificate`` paths is
    ``<certs_dir>/live/NAME/fullchain.pem`` (or ``cert.pem``); other paths
    (``/etc/ssl/...``) are not the sidecar's business. The lineage's names are the union of
    the ``server_name``s of every server using it, in order of appearance.
    """
    domains: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    problems: list[Problem] = []
    for server in servers:
        certs = server.certificates
        keys = server.named("ssl_certificate_key")
        names: list[str] | None = None
        for index, cert in enumerate(certs):
            if len(cert.args) != 1:
                continue
            path = cert.args[0]
            if path.startswith("data:"):
                continue
            if "$" in path:
                if _under_live(path, certs_dir):
                    problems.append(Problem(cert.where, f"ssl_certificate {path}: the sidecar cannot tell which "
                                                        "certificate a path with variables names"))
                continue
            name = _lineage_of(path, certs_dir, ("fullchain.pem", "cert.pem"))
            if name is None:
                if _under_live(path, certs_dir):
                    problems.append(Problem(cert.where, f"ssl_certificate {path}: expected "
                                                        f"{certs_dir.rstrip('/')}/live/NAME/fullchain.pem"))
                continue
            if not _LINEAGE_NAME.fullmatch(name):
                problems.append(Problem(cert.where, f"ssl_certificate {path}: {name!r} is not a usable lineage name"))
                continue
            if len(keys) == len(certs) and len(keys[index].args) == 1:
                key_name = _lineage_of(keys[index].args[0], certs_dir, ("privkey.pem",))
                if key_name is not None and key_name != name:
                    problems.append(Problem(keys[index].where, f"ssl_certificate_key is from lineage {key_name}, "
                                                               f"the certificate from {name}"))
            if names is None:
                names = _names(server, problems)
            if not names:
                problems.append(Problem(cert.where, f"certificate {name}: the server block at {server.where} "
                                                    "has no server_name a certificate can cover"))
                continue
            merged = domains.setdefault(name, [])
            merged.extend(d for d in names if d not in merged)
            where = sources.setdefault(name, [])
            if cert.where not in where:
                where.append(cert.where)
    demands: list[CertDemand] = []
    for name, names in domains.items():
        if len(names) > MAX_NAMES_PER_CERT:
            problems.append(Problem(sources[name][0], f"certificate {name}: {len(names)} names; a certificate "
                                                      f"holds at most {MAX_NAMES_PER_CERT}"))
            continue
        demands.append(CertDemand(name, tuple(names), tuple(sources[name])))
    return demands, list(dict.fromkeys(problems))


def default_server_ports(servers: Iterable[ServerBlock]) -> dict[int, str]:
    """port -> ``file:line`` of the user's ``listen ... default_server`` directives.

    The sidecar's global file declares ``default_server`` on 80 and 443 too, and nginx
    refuses two for one address: where a user has one, the global file must not.
    """
    found: dict[int, str] = {}
    for server in servers:
        for d in server.named("listen"):
            if d.args and "default_server" in d.args[1:]:
                port = listen_port(d.args[0])
                if port is not None:
                    found.setdefault(port, d.where)
    return found


def listen_port(address: str) -> int | None:
    """The port of a ``listen`` address (80 when only a host is given); None for unix sockets."""
    if address.startswith("unix:"):
        return None
    if address.startswith("["):
        host_end = address.find("]")
        rest = address[host_end + 1:] if host_end >= 0 else ""
        text = rest[1:] if rest.startswith(":") else ""
    elif ":" in address:
        text = address.rsplit(":", 1)[1]
    elif address.isdigit():
        text = address
    else:
        text = ""
    if not text:
        return 80
    return int(text) if text.isdigit() and 0 < int(text) < 65536 else None


def demands_from_files(
    root_files: Sequence[Path],
    conf_root: Path | str,
    certs_dir: str,
    read: Callable[[Path], str] = read_text,
    *,
    mounts: Mapping[str, Path] | None = None,
    root_context: str = "http",
) -> tuple[list[CertDemand], list[Problem]]:
    """``parse_tree`` then ``certificate_demands``: parse problems first, then the others."""
    parsed = parse_tree(root_files, conf_root, read, mounts=mounts, root_context=root_context)
    demands, problems = certificate_demands(parsed.servers, certs_dir)
    return demands, list(dict.fromkeys([*parsed.problems, *problems]))


# -- shipped snippets ------------------------------------------------------------

_WEBROOT_LINE = "root /var/www/acme;"


def snippet_files(webroot: str = "/var/www/acme") -> dict[str, str]:
    """file name -> content of the shipped snippets, the challenge root set to ``webroot``."""
    if not NGINX_SAFE_PATH.fullmatch(webroot):
        raise ConfigError(f"WEBROOT_DIR={webroot!r}: only absolute paths of letters, digits and ._/- fit in a snippet")
    found: dict[str, str] = {}
    for entry in sorted(resources.files("sidecar.core").joinpath("snippets").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".conf") and entry.is_file():
            text = entry.read_text(encoding="utf-8")
            text = text.replace("@MOZILLA_INTERMEDIATE_CIPHERS@", MOZILLA_INTERMEDIATE_CIPHERS)
            found[entry.name] = text.replace(_WEBROOT_LINE, f"root {webroot.rstrip('/') or '/'};")
    return found


__all__ = [
    "CertDemand", "ConfSyntaxError", "Directive", "ParsedConfig", "ServerBlock", "Token",
    "certificate_demands", "conf_d_roots", "default_server_ports", "demands_from_files",
    "listen_port", "parse", "parse_tree", "read_text", "relevant_change", "snippet_files", "tokenize",
]
