"""MariaDB and MySQL: dump (mariadb-dump / mysqldump), restore, fingerprint, snapshot.

Who connects, and how (no password on any command line):

- native: as root over the local unix socket. Debian's MariaDB authenticates root by
  ``unix_socket`` (the OS user is the proof), so no password exists to leak. A server
  where root needs a password is not supported natively (give its client options in
  root's ``~/.my.cnf``, which the clients read anyway).
- a Compose service: the command runs in the container (``docker exec -i``) through a
  small ``sh`` wrapper that writes a 0600 option file inside the container (``mktemp``,
  removed after) from the service's own environment — ``MARIADB_PASSWORD`` or
  ``MYSQL_PASSWORD`` for ``db.user`` (``MARIADB_ROOT_PASSWORD`` / ``MYSQL_ROOT_PASSWORD``
  for root, to create or drop databases), as the official images define them — and
  passes it as ``--defaults-extra-file``. The password never crosses SSH and never
  appears in argv (``printf`` is a shell builtin; ``sed`` reads it on stdin).

Engine ``mysql`` uses ``mysqldump``/``mysql`` (present on MariaDB too); ``mariadb``
uses ``mariadb-dump``/``mariadb``.

Consistency: the dump is one InnoDB snapshot (``--single-transaction``: a REPEATABLE
READ transaction started WITH CONSISTENT SNAPSHOT; no table locks; non-transactional
tables such as MyISAM are not covered). MariaDB cannot hand a snapshot to another
session, so :func:`snapshot` pauses writes to the database's tables instead: one session
holds ``LOCK TABLES ... READ`` on all of them (writers wait; reads go on; other
databases are untouched) while the fingerprint is taken and the dump runs, and releases
it when the block ends.

The backup runner pauses writes only for a moment (:func:`paired_commands`): the same
lock, held while the fingerprint's session and the dump's each start their snapshot, then
released; both snapshots then see the same rows, and each reads on, writers going on.
Where that cannot be done (a table that is not InnoDB, a lock not had within seconds) it
fingerprints the dump itself, restored into a scratch database on the same server
(:func:`scratch_commands`; the fingerprint is then, by construction, that of the dump).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from fabric import Connection

from relaunch.databases import mariadb_restore, runner
from relaunch.databases.base import (
    CANARY_TABLE,
    canary_value,
    Fingerprint,
    RemoteCommand,
    Snapshot,
    compose_prefix,
    fingerprint_driver,
    require,
)
from relaunch.errors import RelaunchError
from relaunch.inventory.model import ComposeService, Database

log = logging.getLogger(__name__)

#: The restore's feeder, run on the host as ``python3 -c`` (stdlib only).
_RESTORE_FILTER = Path(mariadb_restore.__file__).read_text()

ENGINES = ("mariadb", "mysql")

_DUMP_OPTIONS = (
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--no-tablespaces",  # tablespaces need the PROCESS privilege (MySQL >= 8.0.21 fails without it), and one database needs none
    "--default-character-set=utf8mb4",
    "--quick",
)

# sh -c _OPTION_FILE sh PASSWORD_VAR FALLBACK_VAR USER PROGRAM ARGS...
# A 0600 option file inside the container from the service's environment, removed after;
# the client reads it first (--defaults-extra-file must be its first option).
_OPTION_FILE = r"""eval "pw=\${$1:-\${$2:-}}"
if [ -z "$pw" ]; then
  echo "relaunch: neither $1 nor $2 is set in this service; cannot log in as $3" >&2
  exit 3
fi
umask 077
f=$(mktemp) || exit 1
{
  printf '[client]\nuser="%s"\n' "$(printf '%s' "$3" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
  printf 'password="%s"\n' "$(printf '%s' "$pw" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
} > "$f" || { rm -f -- "$f"; exit 1; }
unset pw
prog=$4
shift 4
"$prog" --defaults-extra-file="$f" "$@"; rc=$?
rm -f -- "$f"
exit "$rc"
"""


def _names(db: Database) -> tuple[str, str]:
    require(db, ENGINES)
    if not db.database or not db.user:
        raise RelaunchError(f"database {db.name!r}: a {db.engine} database needs 'database' and 'user'")
    return db.database, db.user


def _programs(db: Database) -> tuple[str, str]:
    """(dump program, client program) for the engine."""
    return ("mysqldump", "mysql") if db.engine == "mysql" else ("mariadb-dump", "mariadb")


def _client(db: Database, compose: list[str] | None, program: str, admin: bool = False) -> tuple[str, ...]:
    """The argv prefix that runs ``program`` where the database is, logged in (options follow)."""
    _, user = _names(db)
    if not isinstance(db.runs, ComposeService):
        return (program,)  # root over the unix socket
    if admin:
        who = ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD", "root")
    else:
        who = ("MARIADB_PASSWORD", "MYSQL_PASSWORD", user)
    return (*compose_prefix(db, compose), "sh", "-c", _OPTION_FILE, "sh", *who, program)


def _env(db: Database, admin: bool = False) -> tuple[str, ...]:
    if not isinstance(db.runs, ComposeService):
        return ()
    return ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD") if admin else ("MARIADB_PASSWORD", "MYSQL_PASSWORD")


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def dump_command(db: Database, compose: list[str] | None = None, compress: int | None = None) -> RemoteCommand:
    """Given a MariaDB/MySQL database, return the command that writes a consistent SQL dump of it to stdout.

    ``--single-transaction --routines --triggers --events --hex-blob``, utf8mb4, no
    ``CREATE DATABASE``/``USE`` (the dump restores into any database name). Raise
    RelaunchError if ``db`` is not MariaDB/MySQL, or is a Compose service and ``compose``
    is empty. ``compress`` is unused (a SQL dump is plain text).
    """
    name, _ = _names(db)
    dump, _ = _programs(db)
    return RemoteCommand((*_client(db, compose, dump), *_DUMP_OPTIONS, name), f"{dump} {db.name}", _env(db))


def client_restore_command(db: Database, compose: list[str] | None = None, admin: bool = False) -> RemoteCommand:
    """The client alone reading a dump on stdin into ``db.database`` (as root with ``admin``), indexes as they come."""
    name, _ = _names(db)
    _, client = _programs(db)
    return RemoteCommand((*_client(db, compose, client, admin=admin), "--default-character-set=utf8mb4", "--batch", name),
                         f"{client} {db.name} < dump", _env(db, admin=admin))


def restore_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Given an existing, EMPTY database, return the command that restores a dump read on stdin.

    The client stops at the first error (its batch mode default); what ran before stays
    (a SQL dump is not one transaction): on failure drop and recreate the database. The dump
    reaches the client (:func:`client_restore_command`) through
    :mod:`relaunch.databases.mariadb_restore` (python3 on the host): each table's plain
    indexes are built once its rows are in, by sorting them.
    """
    inner = client_restore_command(db, compose)
    return RemoteCommand(("python3", "-c", _RESTORE_FILTER, *inner.argv), inner.description, inner.env)


def restore_from_file_command(db: Database, compose: list[str] | None, path: str, jobs: int = 1) -> RemoteCommand:
    """Given a dump file ``path`` on the host, return the command that restores it (a SQL dump restores serially; ``jobs`` is ignored)."""
    if jobs < 1:
        raise RelaunchError(f"a restore needs at least 1 job, not {jobs}")
    inner = restore_command(db, compose)
    return RemoteCommand(("sh", "-c", 'exec "$@" < "$0"', path, *inner.argv), f"{inner.description} from {path}", inner.env)


def _admin_sql(db: Database, compose: list[str] | None, sql: str, what: str) -> RemoteCommand:
    _, client = _programs(db)
    return RemoteCommand((*_client(db, compose, client, admin=True), "--batch", "-e", sql), what, _env(db, admin=True))


def create_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that creates ``db.database`` empty (utf8mb4). Fails if it exists. Grants nothing."""
    name, _ = _names(db)
    return _admin_sql(db, compose, f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4", f"create database {name}")


def drop_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that drops ``db.database`` if it exists (all its data goes)."""
    name, _ = _names(db)
    return _admin_sql(db, compose, f"DROP DATABASE IF EXISTS {_ident(name)}", f"drop database {name}")


def _query(db: Database, compose: list[str] | None, admin: bool = False) -> RemoteCommand:
    """A client reading SQL on stdin, printing raw tab-separated rows without headers."""
    _, client = _programs(db)
    return RemoteCommand(
        (*_client(db, compose, client, admin=admin), "--batch", "--raw", "--skip-column-names", "--unbuffered",
         "--default-character-set=utf8mb4"),
        f"{client} {db.name}",
        _env(db, admin=admin),
    )


def _columns(conn: Connection, db: Database, compose: list[str] | None) -> dict[str, list[str]]:
    """Base table -> its columns in order, from information_schema."""
    name, _ = _names(db)
    sql = _columns_sql(name)
    tables: dict[str, list[str]] = {}
    for line in runner.run(conn, _query(db, compose), sql.encode()).decode().splitlines():
        if line.strip():
            item = json.loads(line)
            tables.setdefault(item["t"], []).append(item["c"])
    return tables


def _columns_sql(database: str) -> str:
    return (
        "SELECT JSON_OBJECT('t', c.TABLE_NAME, 'c', c.COLUMN_NAME) FROM information_schema.COLUMNS c "
        "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME "
        f"WHERE c.TABLE_SCHEMA = {_sql_string(database)} AND t.TABLE_TYPE = 'BASE TABLE' "
        "ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION;\n"
    )


def fingerprint_command(db: Database, compose: list[str] | None = None, admin: bool = False) -> RemoteCommand:
    """Return the host command that prints the database's fingerprint as JSON (:meth:`Fingerprint.to_json`'s form).

    Two sessions: the base tables' columns, then one ``START TRANSACTION WITH CONSISTENT
    SNAPSHOT`` (InnoDB) that reads every table; ``taken_at`` is its start (a table
    created in between is missed). Each row is serialised as ``CONCAT_WS(',',
    QUOTE(col), ...)`` (QUOTE keeps NULL apart from 'NULL' and escapes binary) and hashed
    with MD5; a table's checksum is the MD5 of its row count and the sums of the four
    32-bit parts of those hashes: independent of row order, in constant memory. The
    hashes come from a derived table the session keeps materialised (``derived_merge=off``):
    merged, each part would compute the row's MD5 again, four times per row. (An
    ordered ``GROUP_CONCAT`` would be capped by ``group_concat_max_len`` and, whatever
    that is set to, by ``max_allowed_packet``: 16 MB by default, about 500 000 rows.)
    Runs python3 on the host (a stdlib driver around the client, see base.py). ``admin``:
    as root (a Compose service: its root password), e.g. for a database ``db.user`` has no
    rights on.
    """
    name, _ = _names(db)
    query = _query(db, compose, admin=admin)
    return fingerprint_driver(db.engine, "mariadb", name, _columns_sql(name), query.argv, f"fingerprint {db.name}", query.env)


def fingerprint(conn: Connection, db: Database, compose: list[str] | None = None) -> Fingerprint:
    """Given a connection to the host, return the database's fingerprint (see :func:`fingerprint_command`).

    Raise RelaunchError if a query fails.
    """
    return Fingerprint.from_json(runner.run(conn, fingerprint_command(db, compose)).decode())


#: Suffix of the scratch database a backup's dump is restored into to fingerprint it.
SCRATCH_SUFFIX = "_relaunch_fp"
_MAX_NAME = 64  # MariaDB/MySQL identifier length


def scratch_name(db: Database) -> str:
    """Given a database, return the name of its scratch twin: ``<database>_relaunch_fp``.

    Only ``[A-Za-z0-9_]`` and at most 64 characters: a name with anything else, or too
    long, is cut and given 8 hex digits of its SHA-256 so that distinct names stay distinct.
    """
    name, _ = _names(db)
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    room = _MAX_NAME - len(SCRATCH_SUFFIX)
    if safe != name or len(safe) > room:
        safe = f"{safe[: room - 9]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe + SCRATCH_SUFFIX


@dataclass(frozen=True)
class ScratchCommands:
    """The commands that fingerprint a dump file by restoring it into a scratch database, in order.

    ``drop`` (a leftover of a run that died), ``create``, ``restore`` (the client reading
    the dump on stdin: the backup runner feeds it while the dump is written), ``fingerprint``
    (prints JSON), then ``drop`` again whatever happened.
    All run as root (native: the unix socket; Compose: the service's root password, from
    its environment through the option-file wrapper), since ``db.user`` has no rights on
    the scratch database.
    """

    database: str
    drop: RemoteCommand
    create: RemoteCommand
    restore: RemoteCommand
    fingerprint: RemoteCommand


def scratch_commands(db: Database, compose: list[str] | None) -> ScratchCommands:
    """Given a database, return the commands that fingerprint a dump of it (fed to ``restore``'s stdin).

    The dump is restored into :func:`scratch_name` on the same server and fingerprinted
    with :func:`fingerprint_command`'s query: the fingerprint is that of exactly what was
    dumped, and the live database's writers are never paused. It costs about a restore's
    time and, while it runs, the database's size again on the server. Whatever database
    has the scratch name is dropped (the name is relaunch's). Events in the dump are
    restored as dumped: with the event scheduler on, one firing in the seconds the scratch
    database lives would change what is fingerprinted (such a database should turn the
    fingerprint off, ``backups.mariadb_fingerprint: false``).
    """
    scratch = db.model_copy(update={"database": scratch_name(db)})
    _, client = _programs(db)
    restore = replace(client_restore_command(scratch, compose, admin=True), description=f"{client} {scratch.database}")
    return ScratchCommands(
        database=scratch_name(db),
        drop=drop_command(scratch, compose),
        create=create_command(scratch, compose),
        restore=restore,
        fingerprint=fingerprint_command(scratch, compose, admin=True),
    )


#: Seconds the backup runner waits for the pause's lock (``lock_wait_timeout``): writers
#: queue behind a lock that waits, so this is short; past it the backup takes the scratch way.
PAIRED_LOCK_WAIT_S = 5
#: Seconds writes may stay paused while the fingerprint's and the dump's snapshots start.
PAIRED_HOLD_MAX_S = 30
#: Lines of a dump (``mariadb-dump``/``mysqldump`` with comments, as :func:`dump_command`
#: runs it) written only once its transaction has started: the end of the pause.
PAIRED_DUMP_MARKERS = (
    "-- Table structure for table ",
    "-- Temporary table structure for view ",
    "-- Dumping events for database ",
    "-- Dumping routines for database ",
    "-- Dump completed",
)


@dataclass(frozen=True)
class PairedCommands:
    """What the backup runner needs to fingerprint a dump with one brief pause of writes (no scratch restore).

    The runner opens ``session`` (a client reading SQL on stdin), sends ``tables_sql``
    (one ``table:{"t": name, "e": engine}`` line per base table, then ``listed:``) and,
    when every table is InnoDB, ``LOCK TABLES <each> READ`` with ``lock_wait_timeout`` =
    ``lock_wait_s``: writers to this database wait from then on, readers do not. With the
    lock held it starts ``fingerprint`` (it prints ``snapshot:<time>`` once its
    ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` is taken, then reads on and prints the
    fingerprint's JSON), then the dump (``--single-transaction``: its snapshot is taken
    before it writes any of ``dump_markers``); when one of those has been written, or
    the dump ended, it unlocks. Both snapshots were taken with no write in between,
    so the fingerprint is that of exactly what was dumped. Each lasts ``hold_max_s``
    at most; past it the runner unlocks and fingerprints the dump the scratch way.
    """

    session: RemoteCommand
    tables_sql: str
    fingerprint: RemoteCommand
    lock_wait_s: int = PAIRED_LOCK_WAIT_S
    hold_max_s: int = PAIRED_HOLD_MAX_S
    dump_markers: tuple[str, ...] = PAIRED_DUMP_MARKERS


def paired_commands(db: Database, compose: list[str] | None) -> PairedCommands:
    """Given a database, return the commands that fingerprint its dump with one brief pause of writes.

    As ``db.user`` (the dump's own login; it needs ``LOCK TABLES`` on the database, which
    the official images' user has). See :class:`PairedCommands`.
    """
    name, _ = _names(db)
    query = _query(db, compose)
    tables_sql = (
        "SELECT CONCAT('table:', JSON_OBJECT('t', TABLE_NAME, 'e', COALESCE(ENGINE, ''))) FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = {_sql_string(name)} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;\n"
        "SELECT 'listed:';\n"
    )
    fp = fingerprint_driver(db.engine, "mariadb-paired", name, _columns_sql(name), query.argv,
                            f"fingerprint {db.name} (paired with the dump)", query.env)
    return PairedCommands(session=query, tables_sql=tables_sql, fingerprint=fp)


@contextlib.contextmanager
def snapshot(conn: Connection, db: Database, compose: list[str] | None = None) -> Iterator[Snapshot]:
    """Pause writes to the database's tables; yield a dump command and a fingerprint that see the same rows.

    MariaDB/MySQL cannot share one transaction's snapshot with another session, so a
    session holds ``LOCK TABLES <every base table> READ`` for the whole block: writers to
    those tables wait (their clients' timeouts must outlast fingerprint + dump), readers
    and other databases go on. Run the dump inside the block. The lock ends with the
    block (the session's stdin closes). Raise RelaunchError if the lock cannot be taken.
    """
    name, _ = _names(db)
    tables = sorted(_columns(conn, db, compose))
    session = runner.Session(conn, _query(db, compose))
    try:
        if tables:
            locks = ", ".join(f"{_ident(name)}.{_ident(t)} READ" for t in tables)
            session.send(f"SET SESSION lock_wait_timeout = 60;\nLOCK TABLES {locks};\n")
        session.send("SELECT 'locked:';\n")
        session.expect("locked:", timeout=90)
        log.info("%s: writes to %s paused (%d tables locked)", conn.host, db.name, len(tables))
        fp = fingerprint(conn, db, compose)
        yield Snapshot(dump=dump_command(db, compose), fingerprint=fp, writes_paused=True)
    finally:
        session.close()
        log.info("%s: writes to %s resumed", conn.host, db.name)


def canary_write(conn: Connection, db: Database, compose: list[str] | None, value: str) -> None:
    """Insert the marker ``value`` into the database's canary table (made if missing)."""
    name, _ = _names(db)
    v = canary_value(value)
    sql = (f"USE {_ident(name)};\nCREATE TABLE IF NOT EXISTS {CANARY_TABLE} (value VARCHAR(64) PRIMARY KEY, "
           f"written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB;\n"
           f"INSERT INTO {CANARY_TABLE} (value) VALUES ({_sql_string(v)});\n")
    runner.run(conn, _query(db, compose), stdin=sql.encode())


def canary_read(conn: Connection, db: Database, compose: list[str] | None = None) -> list[str]:
    """The canary markers the database holds ([] when it has no canary table)."""
    name, _ = _names(db)
    exists = runner.run(conn, _query(db, compose), stdin=(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
        f"{_sql_string(name)} AND table_name = {_sql_string(CANARY_TABLE)};\n").encode())
    if exists.decode().strip() == "0":
        return []
    return runner.run(conn, _query(db, compose), stdin=f"SELECT value FROM {_ident(name)}.{CANARY_TABLE};\n".encode()).decode().split()
