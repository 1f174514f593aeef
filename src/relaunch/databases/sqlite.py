"""SQLite: dump (the online backup API), restore (an atomic file swap), fingerprint, snapshot.

SQLite is a file, but never copied as one while live: a copy taken during a write (or
without its ``-wal`` file) is torn. Dumps use the online backup API
(``sqlite3.Connection.backup`` in ``python3 -c`` on the host) in ONE step: the whole
database is copied inside one read transaction, so the copy is one consistent snapshot
and, in WAL mode, writers are not blocked meanwhile. The copy goes to a 0600 temporary
file in relaunch's work directory (``$RELAUNCH_WORK_DIR``, which the backup runner sets
to one under its backup root; else ``/var/lib/relaunch/tmp``: on disk, where /tmp may be a
small tmpfs), is written to stdout and removed. Never beside the database: its directory
is often a tree that is archived, and an archive would catch the partial copy, or keep
forever one that a killed run left behind. Why not ``sqlite3 DB ".backup /dev/stdout"``: the backup API seeks
and rewrites pages of its target, which a pipe cannot do. Why not ``VACUUM INTO``: it
rebuilds the database (slower, more CPU) and drops its page layout; the backup keeps the
file as it is, WAL mode included.

The dump is a database file; the restore writes stdin to a temporary file beside the
target, checks it (SQLite header, ``PRAGMA quick_check``), removes the target's stale
``-wal``/``-shm``/``-journal`` (a leftover WAL would be replayed into the new file), and
renames it into place atomically. THE CALLER STOPS THE APP first (and starts it after):
an app holding the old file open would keep writing to it.

Everything runs as root on the host, with python3 (Debian's, present on every Droplet).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from fabric import Connection

from relaunch.databases import runner
from relaunch.databases.base import CANARY_TABLE, Fingerprint, RemoteCommand, Snapshot, canary_value, require
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Database

log = logging.getLogger(__name__)

ENGINES = ("sqlite",)

_OPEN = r"""
import os, sqlite3, sys, urllib.parse
def open_ro(path):
    if not os.path.isfile(path):
        sys.exit(f"relaunch: {path}: no such database file")
    return sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=ro", uri=True, timeout=60, isolation_level=None)
"""

#: Where the SQLite copy goes when the caller names no work directory (``RELAUNCH_WORK_DIR``).
WORK_DIR = "/var/lib/relaunch/tmp"

# argv: database path [keep]. Backup in one step into a temp file in the work directory; with
# "keep" print the temp file's path and time (a snapshot), else stream it to stdout and remove it.
_BACKUP = _OPEN + r"""
import datetime, shutil, tempfile
path = sys.argv[1]
keep = sys.argv[2:] == ["keep"]
src = open_ro(path)
work = os.environ.get("RELAUNCH_WORK_DIR") or @WORK_DIR@
os.makedirs(work, mode=0o700, exist_ok=True)
fd, tmp = tempfile.mkstemp(prefix=".relaunch-sqlite-" + os.path.basename(path) + "-", dir=work)
os.close(fd)
done = False
try:
    dst = sqlite3.connect(tmp)
    at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    src.backup(dst)  # pages=-1: everything in one step, one read transaction
    dst.close()
    src.close()
    if keep:
        print("snap:" + tmp + "\t" + at)
        done = True
    else:
        with open(tmp, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
finally:
    if not done:
        os.unlink(tmp)
""".replace("@WORK_DIR@", repr(WORK_DIR))

# argv: target path. stdin -> temp file beside, checked, stale side files removed, renamed.
_RESTORE = r"""
import os, shutil, sqlite3, sys, tempfile
path = sys.argv[1]
d = os.path.dirname(path)
tmp = None
try:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".relaunch-restore-", dir=d)
    with os.fdopen(fd, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            sys.exit("relaunch: the input is not an SQLite database")
    con = sqlite3.connect(tmp)
    check = [r[0] for r in con.execute("PRAGMA quick_check")]
    con.close()
    if check != ["ok"]:
        sys.exit("relaunch: the restored database fails quick_check: " + "; ".join(check[:5]))
    ref = path if os.path.exists(path) else d
    st = os.stat(ref)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, (st.st_mode & 0o666) if ref == path else 0o640)
    for side in ("-wal", "-shm", "-journal"):
        try:
            os.unlink(path + side)
        except FileNotFoundError:
            pass
    os.replace(tmp, path)
    dfd = os.open(d, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)
except BaseException as exc:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)
    if isinstance(exc, OSError):  # a full disk, a quota: say which file (the traceback named none)
        sys.exit("relaunch: writing %s failed: %s" % (path, exc.strerror or exc))
    raise
"""

# argv: database path. Prints the Fingerprint as JSON, everything read in one read transaction.
_FINGERPRINT = _OPEN + r"""
import datetime, hashlib, json
con = open_ro(sys.argv[1])
con.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
con.execute("BEGIN")
result = {"engine": "sqlite", "taken_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")}
result["integrity"] = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
result["tables"] = {}
names = [r[0] for r in con.execute(
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
for name in names:
    rows, total = 0, 0
    quoted = '"' + name.replace('"', '""') + '"'
    for row in con.execute("SELECT * FROM " + quoted):
        rows += 1
        total += int.from_bytes(hashlib.sha256(repr(row).encode("utf-8", "surrogateescape")).digest()[:16], "big")
    checksum = hashlib.sha256(f"{rows}:{total % (1 << 128)}".encode()).hexdigest()
    result["tables"][name] = {"rows": rows, "checksum": checksum}
con.execute("COMMIT")
print(json.dumps(result, sort_keys=True))
"""


def _path(db: Database) -> str:
    require(db, ENGINES)
    if not db.path:
        raise RelaunchError(f"database {db.name!r}: a sqlite database needs 'path'")
    return db.path


def dump_command(db: Database, compose: list[str] | None = None, compress: int | None = None) -> RemoteCommand:
    """Given an SQLite database, return the command that writes a consistent copy of its file to stdout.

    The online backup API in one step (see the module's docstring); ``compose`` and ``compress`` are
    unused (SQLite is always a file on the host). Raise RelaunchError if ``db`` is not SQLite.
    """
    path = _path(db)
    return RemoteCommand(("python3", "-c", _BACKUP, path), f"sqlite backup {db.name}")


def restore_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that reads a dump on stdin and puts it atomically in place at ``db.path``.

    Whatever was at ``db.path`` is replaced (with its -wal/-shm/-journal). The caller
    stops the app first. A new file takes the owner of its directory and mode 0640; a
    replaced one keeps its owner and mode.
    """
    path = _path(db)
    return RemoteCommand(("python3", "-c", _RESTORE, path), f"sqlite restore {db.name} into {path}")


def restore_from_file_command(db: Database, compose: list[str] | None, path: str, jobs: int = 1) -> RemoteCommand:
    """Given a dump file ``path`` on the host, return the command that restores it (``jobs`` is ignored)."""
    if jobs < 1:
        raise RelaunchError(f"a restore needs at least 1 job, not {jobs}")
    inner = restore_command(db, compose)
    return RemoteCommand(("sh", "-c", 'exec "$@" < "$0"', path, *inner.argv), f"{inner.description} from {path}")


def create_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that prepares an empty database: its directory (the restore makes the file)."""
    path = _path(db)
    return RemoteCommand(("install", "-d", "-m", "0755", "--", os.path.dirname(path)), f"mkdir for {db.name}")


def drop_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that removes the database file and its -wal, -shm and -journal files."""
    path = _path(db)
    return RemoteCommand(
        ("rm", "-f", "--", path, f"{path}-wal", f"{path}-shm", f"{path}-journal"), f"remove {db.name}"
    )


def fingerprint_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the host command that prints the database's fingerprint as JSON (:meth:`Fingerprint.to_json`'s form).

    Rows hashed on the host in Python (order-free: a sum of per-row SHA-256 parts) and
    ``PRAGMA integrity_check`` ("ok" when sound), in one read transaction; opened read-only.
    """
    path = _path(db)
    return RemoteCommand(("python3", "-c", _FINGERPRINT, path), f"fingerprint {db.name}")


def fingerprint(conn: Connection, db: Database, compose: list[str] | None = None) -> Fingerprint:
    """Given a connection to the host, return the database's fingerprint (see :func:`fingerprint_command`).

    Raise RelaunchError if the file is missing or unreadable.
    """
    return Fingerprint.from_json(runner.run(conn, fingerprint_command(db, compose)).decode())


@contextlib.contextmanager
def snapshot(conn: Connection, db: Database, compose: list[str] | None = None) -> Iterator[Snapshot]:
    """Copy the database once (backup API, one step); yield a dump of that copy and its fingerprint.

    The copy is the snapshot: fingerprint and dump read the same frozen file, so they
    match exactly, and writers were never held off. The copy (0600, in the work directory
    ``WORK_DIR``, never beside the database) is removed when the block ends. Raise RelaunchError if the copy fails.
    """
    path = _path(db)
    out = runner.run(conn, RemoteCommand(("python3", "-c", _BACKUP, path, "keep"), f"snapshot {db.name}")).decode()
    line = next((x for x in out.splitlines() if x.startswith("snap:")), None)
    if line is None:
        raise RelaunchError(f"database {db.name!r}: the snapshot gave no answer")
    copy, taken_at = line[5:].split("\t", 1)
    try:
        fp = fingerprint(conn, db.model_copy(update={"path": copy}), compose)
        fp = Fingerprint(tables=fp.tables, taken_at=taken_at, integrity=fp.integrity, engine=fp.engine)
        yield Snapshot(dump=RemoteCommand(("cat", "--", copy), f"sqlite snapshot of {db.name}"), fingerprint=fp)
    finally:
        runner.run(conn, RemoteCommand(("rm", "-f", "--", copy, f"{copy}-wal", f"{copy}-shm"), f"remove snapshot of {db.name}"))


_CANARY = r"""
import sqlite3, sys
path, table, value = sys.argv[1:4]
con = sqlite3.connect(path, timeout=30)
with con:
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} (value TEXT PRIMARY KEY, written_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))")
    if value:
        con.execute(f"INSERT INTO {table} (value) VALUES (?)", (value,))
"""

_CANARY_READ = r"""
import sqlite3, sys
path, table = sys.argv[1:3]
con = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
    for (value,) in con.execute(f"SELECT value FROM {table}"):
        print(value)
"""


def canary_write(conn: Connection, db: Database, compose: list[str] | None, value: str) -> None:
    """Insert the marker ``value`` into the database file's canary table (made if missing), in one transaction."""
    runner.run(conn, RemoteCommand(("python3", "-c", _CANARY, _path(db), CANARY_TABLE, canary_value(value)),
                                   f"canary {db.name}"))


def canary_read(conn: Connection, db: Database, compose: list[str] | None = None) -> list[str]:
    """The canary markers the database file holds ([] when it has no canary table)."""
    return runner.run(conn, RemoteCommand(("python3", "-c", _CANARY_READ, _path(db), CANARY_TABLE),
                                          f"canary of {db.name}")).decode().split()
