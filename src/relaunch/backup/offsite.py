"""The off-host store (a restic repository): fetching a backup from it onto any host, checking it there.

Backing up to the store is the host runner's job (``relaunch.backup.runner``: ``restic backup``
after each local backup, tagged with the backup ID). This module is the other direction:
what a rebuild or a drill needs when the production host is gone: the repository, its
password and a host with restic are enough.

The password travels to the host as a file (created 0600 by ``mktemp`` before a byte is
written, over SFTP, removed afterwards) and reaches restic as ``RESTIC_PASSWORD_FILE``:
never in argv, never in an environment that ``ps`` or a log would show.

Every query is scoped to one site (its host name and ``site:<name>`` tag, the runner's
:func:`relaunch.backup.runner.snapshot_query` and :func:`~relaunch.backup.runner.parse_snapshots`):
several sites may share one repository, and backup IDs (times) can be the same in two of them.
Every remote command has a bounded time.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from fabric import Connection

from relaunch.backup.manifest import MANIFEST, Verification, parse, verify
from relaunch.backup.runner import parse_snapshots, snapshot_query
from relaunch.errors import RelaunchError
from relaunch.remote import QUICK_TIMEOUT, execute, sftp
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
        self.path = execute(self.conn, "umask 077; mktemp /tmp/relaunch-restic.XXXXXX", timeout=QUICK_TIMEOUT,
                            what="making the password file", warn=False).stdout.strip()
        try:
            with sftp(self.conn).open(self.path, "w") as fh:
                fh.write(self.password.reveal().encode())
        except OSError as exc:
            self.__exit__()
            raise RelaunchError(f"{self.conn.host}: could not write the restic password file: {exc}") from None
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path:
            execute(self.conn, f"rm -f {shlex.quote(self.path)}", timeout=QUICK_TIMEOUT, what="removing the password file")


def _restic(conn: Connection, repo: Repository, password_file: str, args: Sequence[str], what: str, timeout: float = 1800):
    argv = ["restic", "-r", repo.location, *repo.options, *args]
    command = f"RESTIC_PASSWORD_FILE={shlex.quote(password_file)} RESTIC_CACHE_DIR=/var/cache/relaunch/restic " + shlex.join(argv)
    run = execute(conn, command, timeout=timeout, what=what)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: {what} failed (restic exit {run.exited}): {run.stderr.strip()[-1500:]}")
    return run


def snapshots(conn: Connection, repo: Repository, site: str) -> list[dict]:
    """The site's snapshots in the repository, read from ``conn``'s host: [{snapshot, full_id, id (backup ID), time, paths}]."""
    with _PasswordFile(conn, repo.password) as pw:
        run = _restic(conn, repo, pw, ["snapshots", "--json", *snapshot_query(site)], "listing snapshots", timeout=600)
    return parse_snapshots(run.stdout, site)


def fetch(conn: Connection, backup_id: str, dest: str, repo: Repository, *, site: str) -> str:
    """Restore backup ``backup_id`` of ``site`` from the off-host store into ``dest`` on ``conn``'s host; return its directory there.

    ``conn`` can be any host with restic that reaches the repository (a fresh rebuild host,
    the store itself). The snapshot is chosen among the site's only (the newest of that ID).
    Raise RelaunchError if the site has no snapshot of that backup or the restore fails.
    """
    with _PasswordFile(conn, repo.password) as pw:
        run = _restic(conn, repo, pw, ["snapshots", "--json", *snapshot_query(site)], "listing snapshots", timeout=600)
        found = sorted((s for s in parse_snapshots(run.stdout, site) if s["id"] == backup_id), key=lambda s: s["time"] or "")
        if not found:
            raise RelaunchError(f"the off-host store {repo.location} holds no snapshot of backup {backup_id} of site {site!r}: "
                                f"`fab backup --list --site {site}` lists the backups it holds")
        _restic(conn, repo, pw, ["restore", found[-1]["full_id"], "--target", dest], f"restoring {backup_id}")
    manifests = execute(
        conn, f"find {shlex.quote(dest)} -path {shlex.quote('*/' + backup_id + '/' + MANIFEST)} -type f",
        timeout=300, what=f"finding the manifest of {backup_id}",
    ).stdout.split()
    if len(manifests) != 1:
        raise RelaunchError(f"{conn.host}: restored {backup_id} into {dest} but found {len(manifests)} manifest(s) for it; "
                            f"restore into an empty directory")
    directory = posixpath.dirname(manifests[0])
    log.info("%s: backup %s restored from the off-host store into %s", conn.host, backup_id, directory)
    return directory


def verify_remote_dir(conn: Connection, directory: str) -> Verification:
    """Check every artifact in ``directory`` on ``conn``'s host against the manifest in it (sha256 and size)."""
    manifest = parse(execute(conn, f"cat {shlex.quote(posixpath.join(directory, MANIFEST))}", timeout=QUICK_TIMEOUT,
                             what="reading the manifest", warn=False).stdout)
    paths = [posixpath.join(directory, a.file) for a in manifest.artifacts]
    script = "for f in " + " ".join(shlex.quote(p) for p in paths) + \
        '; do [ -f "$f" ] && printf "%s %s\\n" "$(sha256sum < "$f" | cut -d" " -f1)" "$(stat -c %s "$f")" || echo missing; done'
    lines = execute(conn, script, timeout=3600, what=f"hashing the artifacts in {directory}", warn=False).stdout.splitlines()
    actual: dict[str, tuple[str, int] | None] = {}
    for art, line in zip(manifest.artifacts, lines, strict=True):
        words = line.split()
        actual[art.file] = None if words == ["missing"] else (words[0], int(words[1]))
    return verify(manifest, actual)
