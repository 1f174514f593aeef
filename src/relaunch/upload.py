"""Put rendered files on a host: only what differs, secret files never readable by others.

Every remote step is bounded in time (``relaunch.remote.QUICK_TIMEOUT``). A file is written
as ``PATH.relaunch-new`` and renamed into place; the backup never archives that name.

Over SFTP for root; for a sudoer's connection (:class:`relaunch.remote.SudoConnection`: SFTP
would write as the login user, who may not write there) each file travels on the stdin of
a command run as root, which sets the mode before the first byte arrives (umask 077).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
from typing import Protocol

from fabric import Connection

from relaunch.errors import RelaunchError
from relaunch.databases.base import RemoteCommand
from relaunch.databases.runner import run as run_command
from relaunch.remote import QUICK_TIMEOUT, execute, needs_sudo, sftp

log = logging.getLogger(__name__)


class FileLike(Protocol):
    path: str
    content: bytes
    mode: int
    secret: bool


def remote_state(conn: Connection, paths: list[str]) -> dict[str, tuple[str, int]]:
    """Return (sha256, mode) of each existing file among ``paths`` on the host, in one round trip."""
    if not paths:
        return {}
    script = (
        "for f in " + " ".join(shlex.quote(p) for p in paths)
        + '; do [ -f "$f" ] && printf \'%s %s %s\\n\' "$(sha256sum < "$f" | cut -d" " -f1)" "$(stat -c %a "$f")" "$f";'
        + " done; true"
    )
    out = execute(conn, script, timeout=QUICK_TIMEOUT, what="reading the files' state", warn=False).stdout
    state: dict[str, tuple[str, int]] = {}
    for line in out.splitlines():
        digest, mode, path = line.split(" ", 2)
        state[path] = (digest, int(mode, 8))
    return state


# $1 the path, $2 its mode (octal); the content on stdin. Made 0600 (umask) and set to its mode before filled.
_WRITE_AS_ROOT = r"""
set -eu
umask 077
tmp="$1.relaunch-new"
rm -f -- "$tmp"
: > "$tmp"
chmod "$2" -- "$tmp"
cat > "$tmp"
mv -f -- "$tmp" "$1"
"""


def upload(conn: Connection, files: list[FileLike]) -> list[str]:
    """Write each file whose content or mode differs on the host; return the paths written.

    Parent directories are made (0755). A secret file is created empty, set to 0600, and
    only then filled, so its content is never readable by others, not even briefly.
    """
    current = remote_state(conn, [f.path for f in files])
    changed = [f for f in files if current.get(f.path) != (hashlib.sha256(f.content).hexdigest(), f.mode)]
    if not changed:
        return []
    dirs = sorted({posixpath.dirname(f.path) for f in changed})
    execute(conn, "mkdir -p -m 0755 " + " ".join(shlex.quote(d) for d in dirs), timeout=QUICK_TIMEOUT,
            what="making directories", warn=False)
    if needs_sudo(conn):
        for f in changed:
            run_command(conn, RemoteCommand(("sh", "-c", _WRITE_AS_ROOT, "sh", f.path, f"{f.mode:o}"), f"writing {f.path}"),
                        stdin=f.content)
            log.info("%s: wrote %s (%o) through sudo", conn.host, f.path, f.mode)
        return [f.path for f in changed]
    client = sftp(conn, QUICK_TIMEOUT)  # every read and write bounded: a dead link fails, never hangs
    for f in changed:
        try:
            with client.open(f.path + ".relaunch-new", "wb") as fh:
                fh.chmod(f.mode)  # before any byte is written
                fh.write(f.content)
            client.posix_rename(f.path + ".relaunch-new", f.path)
        except OSError as exc:  # socket.timeout included
            raise RelaunchError(f"{conn.host}: could not write {f.path}: {exc}") from exc
        log.info("%s: wrote %s (%o)", conn.host, f.path, f.mode)
    return [f.path for f in changed]
