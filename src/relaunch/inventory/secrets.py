"""Secret references (``env:NAME``, ``file:PATH``) and the values they stand for.

An inventory never holds a secret, only a reference. ``resolve_all`` turns every
reference into a ``Secret``, whose value shows only through ``.reveal()``: its repr, str
and format are ``***``, so it cannot slip into a log line, a message or a traceback by
accident. ``masked`` hides secret values in text that is about to be logged.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets as _random
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from relaunch import formats
from relaunch.inventory.errors import InventoryError, Problem
from relaunch.inventory.loader import _is_secret_meta, _mentions_secret, source_of
from relaunch.inventory.model import Inventory
from relaunch.inventory.source import KeyPath, Source
from relaunch.inventory.tls import ensure_sandbox_certificate
from relaunch.state import make_private_dirs

log = logging.getLogger(__name__)

MASK = "***"
_MAX_SECRET_BYTES = 64 * 1024


class Secret:
    """A secret value. ``str``, ``repr`` and any format show ``***``; ``reveal()`` gives the value."""

    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: str = "") -> None:
        self._value = value
        self.ref = ref  # the reference it came from (env:NAME / file:PATH): not secret

    def reveal(self) -> str:
        """The value itself. Call it only where the value goes to its consumer (env file, stdin)."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({self.ref!r}, {MASK})" if self.ref else f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return _random.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled (it would carry its value); pass the reference instead")


class Secrets(Mapping[str, Secret]):
    """Resolved secrets, by reference string (``'env:NAME'``, ``'file:PATH'``) as written in the inventory."""

    def __init__(self, by_ref: Mapping[str, Secret] | None = None) -> None:
        self._by_ref = dict(by_ref or {})

    def __getitem__(self, ref: str) -> Secret:
        return self._by_ref[ref]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_ref)

    def __len__(self) -> int:
        return len(self._by_ref)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._by_ref)})"

    def mask(self, text: str) -> str:
        """``masked(text, self)``."""
        return masked(text, self.values())


def masked(text: str, secrets: Iterable[Secret | str] | Secrets) -> str:
    """Return ``text`` with every occurrence of every secret value replaced by ``***``.

    Longer values are replaced first, so a secret containing another is hidden whole.
    Empty values are ignored (there is nothing to hide).
    """
    items = secrets.values() if isinstance(secrets, Mapping) else secrets
    values = {s.reveal() if isinstance(s, Secret) else str(s) for s in items}
    for value in sorted((v for v in values if v), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def references(inv: Inventory) -> list[tuple[KeyPath, str]]:
    """Every secret reference in ``inv`` with its key path, in document order."""
    found: list[tuple[KeyPath, str]] = []

    def walk(obj: Any, path: KeyPath, secret: bool) -> None:
        if isinstance(obj, BaseModel):
            for name, field in type(obj).model_fields.items():
                is_secret = _is_secret_meta(field.metadata) or _mentions_secret(field.annotation)
                walk(getattr(obj, name), (*path, name), is_secret)
        elif isinstance(obj, list | tuple):
            for i, item in enumerate(obj):
                walk(item, (*path, i), secret)
        elif isinstance(obj, dict):
            for key, item in obj.items():
                walk(item, (*path, key), secret)
        elif secret and isinstance(obj, str):
            found.append((path, obj))

    walk(inv, (), False)
    return found


def _display(inv: Inventory, src: Source, path: KeyPath) -> str:
    """Key path with list items by name (apps[blog]) even for an inventory built in code."""
    if src.labels:
        return src.describe(path)
    labels: dict[KeyPath, str] = {}
    cur: Any = inv
    for n, part in enumerate(path):
        cur = getattr(cur, part, None) if isinstance(part, str) and isinstance(cur, BaseModel) else (
            cur[part] if isinstance(cur, list | tuple) and isinstance(part, int) else None
        )
        name = getattr(cur, "name", None) if isinstance(part, int) else None
        if isinstance(name, str):
            labels[path[: n + 1]] = name
    return Source(src.file, {}, labels).describe(path)


def _file_path(ref: str, base_dir: Path) -> Path:
    return Path(os.path.abspath(base_dir / Path(ref.removeprefix("file:")).expanduser()))


def _base_dir(inv: Inventory, base_dir: Path | str | None) -> Path:
    if base_dir is not None:
        return Path(base_dir)
    origin = source_of(inv).origin
    if origin is None:
        raise ValueError("base_dir is required for an inventory not loaded from a file")
    return origin.parent


class _Unresolved(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _read(ref: str, base_dir: Path) -> str:
    if ref.startswith("env:"):
        name = ref.removeprefix("env:")
        value = os.environ.get(name)
        if value is None:
            raise _Unresolved(f"environment variable {name} is not set", "secret-missing-env")
        if value == "":
            raise _Unresolved(f"environment variable {name} is empty", "secret-empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 (os.environ keeps them as surrogates)
            raise _Unresolved(f"environment variable {name} is not UTF-8 text", "secret-not-text") from None
        return value
    if not ref.startswith("file:"):
        raise _Unresolved(f"{ref!r} is not a secret reference (env:NAME or file:PATH)", "secret-bad-ref")
    written = ref.removeprefix("file:")
    path = _file_path(ref, base_dir)
    shown = f"file {written}" + (f" ({path})" if str(path) != written else "")
    # The file itself is read, never what a symlink points at: its mode is the one checked and the
    # one a chmod hint would change (O_NOFOLLOW: a link swapped in after the check is refused too).
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _Unresolved(f"{shown} does not exist", "secret-missing-file") from None
    except OSError as exc:
        raise _Unresolved(f"{shown} cannot be read: {exc.strerror}", "secret-unreadable") from None
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        raise _Unresolved(
            f"{shown} is a symlink (to {target}); relaunch reads only regular files: name the file itself "
            f"(file:{target}) or put the secret in {path}", "secret-symlink",
        )
    if not stat.S_ISREG(st.st_mode):
        raise _Unresolved(f"{shown} is not a regular file", "secret-not-file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise _Unresolved(
            f"{shown} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}", "secret-mode"
        )
    if st.st_size > _MAX_SECRET_BYTES:
        raise _Unresolved(f"{shown} is {st.st_size} bytes; a secret is at most {_MAX_SECRET_BYTES}", "secret-too-large")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Unresolved(f"{shown} is a symlink; relaunch reads only regular files", "secret-symlink") from None
        raise _Unresolved(f"{shown} cannot be read: {exc.strerror}", "secret-unreadable") from None
    try:
        st2 = os.fstat(fd)
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise _Unresolved(f"{shown} changed while it was read; try again", "secret-unreadable")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(_MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise _Unresolved(f"{shown} cannot be read: {exc.strerror}", "secret-unreadable") from None
    finally:
        os.close(fd)
    try:
        value = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _Unresolved(f"{shown} is not UTF-8 text", "secret-not-text") from None
    if value == "":
        raise _Unresolved(f"{shown} is empty", "secret-empty")
    return value


def resolve(inv: Inventory, base_dir: Path | str | None = None) -> tuple[Secrets, list[Problem]]:
    """Resolve what can be resolved; return (secrets, problems) without raising for unresolvable ones.

    Each problem names every key path that uses the reference; ``code`` tells the kind
    (``secret-missing-file``, ``secret-missing-env``, ``secret-mode``, ...).
    """
    base = _base_dir(inv, base_dir)
    src = source_of(inv)
    paths: dict[str, list[KeyPath]] = {}
    for path, ref in references(inv):
        paths.setdefault(ref, []).append(path)
    resolved: dict[str, Secret] = {}
    problems: list[Problem] = []
    for ref, where in paths.items():
        try:
            value = _read(ref, base)
        except _Unresolved as exc:
            shown = ", ".join(_display(inv, src, p) for p in where)
            problems.append(Problem(src.file, src.line_of(where[0]) if src.lines else None, shown, str(exc), exc.code))
            continue
        unusable = [(p, why) for p in where if (why := usage_problem(p, value))]
        for p, why in unusable:
            line = src.line_of(p) if src.lines else None
            problems.append(Problem(src.file, line, _display(inv, src, p), f"the secret {ref} {why}", "secret-unusable"))
        if not unusable:
            resolved[ref] = Secret(value, ref)
    return Secrets(resolved), problems


#: The secrets that are key files (PEM / OpenSSH): lines, written to a 0600 file as they are.
KEY_FILES = (("proxy", "tls", "key"), ("backups", "offsite", "ssh_key"), ("backups", "offsite", "append_only_key"))


def usage_problem(path: KeyPath, value: str) -> str | None:
    """Why a secret ``value`` cannot serve at key path ``path``, or None (the message never holds the value).

    Where it goes decides what it may hold (``relaunch.formats``): an app's ``secret_env``
    goes to its env file; the TLS key and the store's SSH keys are key files (lines); the API token goes into an HTTP
    header (no whitespace); every other secret (database and store passwords, keys) is
    read from a file by shell and written into SQL and option files: printable text.
    """
    if len(path) == 4 and path[0] == "apps" and path[2] == "secret_env":
        return formats.env_value_problem(value)
    if path in KEY_FILES:
        return None  # PEM / OpenSSH key files: lines, written to a 0600 file as they are
    if path == ("provider", "token"):
        if any(ch.isspace() for ch in value.strip()) or not value.strip().isprintable():
            return "holds whitespace or control characters, which an API token cannot"
        return None
    return formats.text_problem(value)


def resolve_one(inv: Inventory, path: KeyPath, base_dir: Path | str | None = None) -> Secret:
    """Resolve the one reference at key ``path`` (e.g. ``("provider", "token")``) and return its Secret.

    The same rules as :func:`resolve_all` (symlinks, modes, what the place may hold). Raise
    InventoryError naming the file, line and key if there is no reference there or it
    cannot be resolved.
    """
    src = source_of(inv)
    ref = dict(references(inv)).get(tuple(path))
    line = src.line_of(tuple(path)) if src.lines else None
    shown = _display(inv, src, tuple(path))
    if ref is None:
        raise InventoryError(Problem(src.file, line, shown, "no secret reference here", "secret-missing"))
    try:
        value = _read(ref, _base_dir(inv, base_dir))
    except _Unresolved as exc:
        raise InventoryError(Problem(src.file, line, shown, str(exc), exc.code)) from None
    why = usage_problem(tuple(path), value)
    if why:
        raise InventoryError(Problem(src.file, line, shown, f"the secret {ref} {why}", "secret-unusable"))
    return Secret(value, ref)


def resolve_all(inv: Inventory, base_dir: Path | str | None = None) -> Secrets:
    """Return a Secret for every reference in ``inv`` (keyed by the reference string).

    ``file:`` paths are relative to ``base_dir`` (default: the inventory file's directory),
    ``~`` expanded; the file must be a regular file with no group/other permissions
    (mode 0600 or 0400), not empty, UTF-8; trailing newlines are dropped. ``env:`` names a
    set, non-empty environment variable. Raise InventoryError listing every reference
    that cannot be resolved, each with the key path(s) that use it. Values never appear
    in messages or logs.
    """
    secrets, problems = resolve(inv, base_dir)
    if problems:
        raise InventoryError(problems, file=source_of(inv).file)
    log.debug("resolved %d secret reference(s)", len(secrets))
    return secrets


def file_reference_path(inv: Inventory, ref: str, base_dir: Path | str | None = None) -> Path:
    """The file a ``file:`` reference of ``inv`` names (relative paths start at the inventory's directory)."""
    return _file_path(ref, _base_dir(inv, base_dir))


def missing_sandbox_secrets(inv: Inventory, base_dir: Path | str | None = None) -> list[Path]:
    """The ``file:`` secrets of a sandbox site that do not exist yet (what ensure_sandbox_secrets would create).

    Empty for a non-sandbox site.
    """
    if inv.provider.kind != "sandbox":
        return []
    base = _base_dir(inv, base_dir)
    missing: list[Path] = []
    for _, ref in references(inv):
        if ref.startswith("file:"):
            path = _file_path(ref, base)
            if not os.path.lexists(path) and path not in missing:
                missing.append(path)
    return missing


def ensure_sandbox_secrets(inv: Inventory, base_dir: Path | str | None = None) -> list[Path]:
    """For a sandbox site, create every missing ``file:`` secret with a random value; return the files created.

    Missing parent directories are made with mode 0700, files with 0600 (each holds
    ``secrets.token_urlsafe(24)`` and a newline; one reference used twice is one file,
    so an app and its database agree). Existing files are left alone, whatever their
    mode (``resolve_all`` refuses a bad one). With ``proxy.tls``, the key, certificate and
    CA are made (or remade, when they no longer fit) by
    ``relaunch.inventory.tls.ensure_sandbox_certificate``. For any other provider do nothing and
    return []: real secrets are the user's to make.
    """
    created: list[Path] = []
    tls = inv.proxy.tls
    if inv.provider.kind == "sandbox" and tls is not None:
        if not tls.key.startswith("file:"):
            src = source_of(inv)
            raise InventoryError(Problem(src.file, src.line_of(("proxy", "tls", "key")), "proxy.tls.key",
                                         "a sandbox site's TLS key must be a file: reference (relaunch makes it)"))
        created += ensure_sandbox_certificate(inv, _file_path(tls.key, _base_dir(inv, base_dir)))
    off = inv.backups.offsite
    if inv.provider.kind == "sandbox" and off is not None and off.ssh_key and off.ssh_key.startswith("file:"):
        # The store's login key is an SSH key, not a password (the sandbox authorizes it on its backup Droplet).
        key_path = _file_path(off.ssh_key, _base_dir(inv, base_dir))
        if not os.path.lexists(key_path):
            from relaunch.remote import ensure_client_key

            make_private_dirs(key_path.parent)
            ensure_client_key(key_path)
            created.append(key_path)
    for path in missing_sandbox_secrets(inv, base_dir):
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (_random.token_urlsafe(24) + "\n").encode())
        finally:
            os.close(fd)
        created.append(path)
        log.info("created sandbox secret file %s", path)
    return created


__all__ = [
    "MASK",
    "Secret",
    "Secrets",
    "ensure_sandbox_secrets",
    "masked",
    "missing_sandbox_secrets",
    "references",
    "resolve",
    "resolve_all",
    "resolve_one",
]
