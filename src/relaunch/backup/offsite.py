"""The off-host store (a restic repository): fetching a backup from it onto any host, checking it there.

Backing up to the store is the host runner's job (``relaunch.backup.runner``: ``restic backup``
after each local backup, tagged with the backup ID). This module is the other direction:
what a rebuild or a drill needs when the production host is gone: the repository, its
password and a host with restic are enough.

The password travels to the host as a file (created 0600 by ``mktemp`` before a byte is
written, over SFTP, removed afterwards) and reaches restic as ``RESTIC_PASSWORD_FILE``:
never in argv, never in an environment that ``ps`` or a log would show.
"""

from __future__ import annotations

import json
import logging
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from fabric import Connection

from relaunch.backup.manifest import MANIFEST, Verification, parse, verify
from relaunch.errors import RelaunchError
from relaunch.render import SecretLike

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repository:
    """A restic repository as seen from the host that will use it (``options``: e.g. ``-o sftp.command=...``)."""

    location: str
    password: SecretLike
    options: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Repository({self.location!r}, password=***)"


class _PasswordFile:
    """A 0600 temp file holding the repository password on the host, for the duration of a ``with``."""

    def __init__(self, conn: Connection, password: SecretLike) -> None:
        self.conn = conn
        self.password = password
        self.path = ""

    def __enter__(self) -> str:
        self.path = self.conn.run("umask 077; mktemp /tmp/relaunch-restic.XXXXXX", hide=True, in_stream=False).stdout.strip()
        with self.conn.sftp().open(self.path, "w") as fh:
            fh.write(self.password.reveal().encode())
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path:
            self.conn.run(f"rm -f {shlex.quote(self.path)}", hide=True, in_stream=False, warn=True)


def _restic(conn: Connection, repo: Repository, password_file: str, args: Sequence[str], what: str, timeout: float = 1800):
    argv = ["restic", "-r", repo.location, *repo.options, *args]
    command = f"RESTIC_PASSWORD_FILE={shlex.quote(password_file)} RESTIC_CACHE_DIR=/var/cache/relaunch/restic " + shlex.join(argv)
    run = conn.run(command, warn=True, hide=True, in_stream=False, timeout=timeout)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: {what} failed (restic exit {run.exited}): {run.stderr.strip()[-1500:]}")
    return run


def snapshots(conn: Connection, repo: Repository) -> list[dict]:
    """The repository's relaunch snapshots, read from ``conn``'s host: [{snapshot, id (backup ID), time}]."""
    with _PasswordFile(conn, repo.password) as pw:
        run = _restic(conn, repo, pw, ["snapshots", "--json", "--tag", "relaunch"], "listing snapshots")
    out = []
    for snap in json.loads(run.stdout or "[]") or []:
        tags = [t for t in snap.get("tags") or [] if t != "relaunch"]
        out.append({"snapshot": snap.get("short_id"), "id": tags[0] if tags else None, "time": snap.get("time")})
    return out


def fetch(conn: Connection, backup_id: str, dest: str, repo: Repository) -> str:
    """Restore backup ``backup_id`` from the off-host store into ``dest`` on ``conn``'s host; return its directory there.

    ``conn`` can be any host with restic that reaches the repository (a fresh rebuild host,
    the store itself). Raise RelaunchError if the repository holds no snapshot tagged with
    that ID or the restore fails.
    """
    with _PasswordFile(conn, repo.password) as pw:
        _restic(conn, repo, pw, ["restore", "latest", "--tag", backup_id, "--target", dest], f"restoring {backup_id}")
    found = conn.run(
        f"find {shlex.quote(dest)} -path {shlex.quote('*/' + backup_id + '/' + MANIFEST)} -type f",
        hide=True, in_stream=False, warn=True,
    ).stdout.split()
    if len(found) != 1:
        raise RelaunchError(f"{conn.host}: restored {backup_id} into {dest} but found {len(found)} manifest(s) for it")
    directory = posixpath.dirname(found[0])
    log.info("%s: backup %s restored from the off-host store into %s", conn.host, backup_id, directory)
    return directory


def verify_remote_dir(conn: Connection, directory: str) -> Verification:
    """Check every artifact in ``directory`` on ``conn``'s host against the manifest in it (sha256 and size)."""
    manifest = parse(conn.run(f"cat {shlex.quote(posixpath.join(directory, MANIFEST))}", hide=True, in_stream=False).stdout)
    paths = [posixpath.join(directory, a.file) for a in manifest.artifacts]
    script = "for f in " + " ".join(shlex.quote(p) for p in paths) + \
        '; do [ -f "$f" ] && printf "%s %s\\n" "$(sha256sum < "$f" | cut -d" " -f1)" "$(stat -c %s "$f")" || echo missing; done'
    lines = conn.run(script, hide=True, in_stream=False).stdout.splitlines()
    actual: dict[str, tuple[str, int] | None] = {}
    for art, line in zip(manifest.artifacts, lines, strict=True):
        words = line.split()
        actual[art.file] = None if words == ["missing"] else (words[0], int(words[1]))
    return verify(manifest, actual)
