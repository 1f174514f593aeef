"""PostgreSQL: dump (pg_dump custom format), restore (pg_restore), fingerprint, snapshot.

Who connects, and how (no password anywhere):

- a Compose service (``runs: {app, service}``): commands run in the service's container
  (``docker exec -i`` into its running container, see ``base.compose_prefix``) and connect over the
  container's local socket as ``db.user``, which the image trusts (reaching that socket
  takes root on the host already; see examples/images/postgres/entrypoint.sh).
  Creating and dropping databases needs the cluster's superuser, :data:`ADMIN_USER`.
- native: commands run as the ``postgres`` system user (``runuser``) with peer
  authentication; restores take ``--role=<db.user>`` so the objects belong to the app.

Consistency: ``pg_dump`` always dumps one snapshot (a REPEATABLE READ transaction).
:func:`snapshot` exports a snapshot from a transaction it holds open, takes the
fingerprint in that snapshot (``SET TRANSACTION SNAPSHOT``) and hands out a dump command
that uses it too (``pg_dump --snapshot``): dump and fingerprint see exactly the same
rows, while writers keep writing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from fabric import Connection

from relaunch.databases import runner
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

ENGINES = ("postgresql",)
#: The cluster's superuser inside a Compose service (only to create and drop databases).
ADMIN_USER = "postgres"

# Settings that make a row's text form the same in every session (dump side and restore side).
_STABLE_TEXT = """SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
"""

# One query per ordinary table, generated from the catalogue and run by \gexec in the same
# transaction: row count, and the md5 of the sorted md5s of each row's text (order-free,
# 32 bytes per row in memory; fine to tens of millions of rows). The md5s are sorted bytewise
# (COLLATE "C": memcmp and abbreviated keys, not the database's locale). Lower-case hex sorts
# the same in every collation, so the checksum is the one a sort in the database's collation
# gives: fingerprints in older manifests still compare.
_PER_TABLE = r"""SELECT format(
  'SELECT %L || json_build_object(''table'', %L, ''rows'', count(*), ''checksum'', '
  'md5(coalesce(string_agg(md5(ROW(_relaunch_t.*)::text) COLLATE "C", '''' '
  'ORDER BY md5(ROW(_relaunch_t.*)::text) COLLATE "C"), '''')))::text '
  'FROM %I.%I AS _relaunch_t',
  'fp:', n.nspname || '.' || c.relname, n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY n.nspname, c.relname \gexec
"""

_NOW = """SELECT 'at:' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"');\n"""


def _names(db: Database) -> tuple[str, str]:
    require(db, ENGINES)
    if not db.database or not db.user:
        raise RelaunchError(f"database {db.name!r}: a postgresql database needs 'database' and 'user'")
    return db.database, db.user


def _client(db: Database, compose: list[str] | None, program: str, admin: bool = False) -> tuple[str, ...]:
    """The argv prefix that runs ``program`` where the database is, connected as the right user."""
    _, user = _names(db)
    if isinstance(db.runs, ComposeService):
        return (*compose_prefix(db, compose), program, "-U", ADMIN_USER if admin else user)
    return ("runuser", "-u", "postgres", "--", program)


def session_command(db: Database, compose: list[str] | None = None, dbname: str | None = None) -> RemoteCommand:
    """Given a PostgreSQL database, return a quiet ``psql`` that reads SQL on stdin and stops at the first error.

    What a snapshot holds open (its transaction exports the snapshot dump and fingerprint share).
    """
    name, _ = _names(db)
    return RemoteCommand(
        (*_client(db, compose, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname or name),
        f"psql {db.name}",
    )


def dump_command(db: Database, compose: list[str] | None = None, snapshot: str | None = None,
                 compress: int | None = None) -> RemoteCommand:
    """Given a PostgreSQL database, return the command that writes a consistent dump of it to stdout.

    ``pg_dump --format=custom`` (compressed; pg_restore can restore it in parallel from a
    file). ``snapshot``: an exported snapshot to dump (see :func:`snapshot`). ``compress``:
    pg_dump's ``--compress`` level (0: none; None: pg_dump's default) — a dump that only
    crosses a data centre's network is faster uncompressed (measured: ``bench/run``). Raise
    RelaunchError if ``db`` is not PostgreSQL, or is a Compose service and ``compose`` is
    empty, or ``compress`` is not 0..9.
    """
    name, _ = _names(db)
    argv = [*_client(db, compose, "pg_dump"), "--format=custom", "--no-password"]
    if compress is not None:
        if not 0 <= int(compress) <= 9:
            raise RelaunchError(f"pg_dump --compress takes 0..9, not {compress}")
        argv.append(f"--compress={int(compress)}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    argv += ["-d", name]
    return RemoteCommand(tuple(argv), f"pg_dump {db.name}")


def restore_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Given a PostgreSQL database that exists and is EMPTY, return the command that restores a dump read on stdin.

    ``pg_restore --no-owner --exit-on-error --single-transaction``: all or nothing. The
    objects belong to ``db.user`` (who connects, in Compose; ``--role`` when native).
    """
    name, user = _names(db)
    argv = [*_client(db, compose, "pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction", "--no-password"]
    if not isinstance(db.runs, ComposeService):
        argv.append(f"--role={user}")
    argv += ["-d", name]
    return RemoteCommand(tuple(argv), f"pg_restore {db.name}")


# "$@" is pg_restore with its options; the dump arrives on stdin and is copied to a file
# the restoring user can read (pg_restore -j needs a seekable file, and the dump on the
# host is root's and 0600, or outside the container).
_PARALLEL = r"""f=$(mktemp) || exit 1
cat > "$f" || { rm -f -- "$f"; exit 1; }
"$@" "$f"; rc=$?
rm -f -- "$f"
exit "$rc"
"""


def restore_from_file_command(db: Database, compose: list[str] | None, path: str, jobs: int = 2) -> RemoteCommand:
    """Given a dump file ``path`` on the host and an EMPTY database, return the command that restores it with ``jobs`` workers.

    pg_restore -j needs a seekable file its own user can read, where it runs: the dump is
    first copied (through stdin) to a temporary file in that place (the container, or the
    postgres user's /tmp), then removed. Not one transaction (parallel workers cannot
    share one): on failure the database is left partly restored — drop and recreate it.
    Raise RelaunchError if ``jobs`` < 1.
    """
    if jobs < 1:
        raise RelaunchError(f"pg_restore needs at least 1 job, not {jobs}")
    name, user = _names(db)
    restore = ["pg_restore", "--no-owner", "--exit-on-error", "--no-password", f"--jobs={jobs}", "-d", name]
    if isinstance(db.runs, ComposeService):
        inner = (*compose_prefix(db, compose), "sh", "-c", _PARALLEL, "sh", *restore[:1], "-U", user, *restore[1:])
    else:
        restore.insert(1, f"--role={user}")
        inner = ("runuser", "-u", "postgres", "--", "sh", "-c", _PARALLEL, "sh", *restore)
    return RemoteCommand(("sh", "-c", 'exec "$@" < "$0"', path, *inner), f"pg_restore -j{jobs} {db.name} from {path}")


def create_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that creates ``db.database`` empty, owned by ``db.user``. Fails if it exists."""
    name, user = _names(db)
    return RemoteCommand((*_client(db, compose, "createdb", admin=True), "--no-password", "-O", user, name), f"createdb {name}")


def drop_command(db: Database, compose: list[str] | None = None) -> RemoteCommand:
    """Return the command that drops ``db.database`` if it exists (all its data goes).

    ``--force`` (PostgreSQL 13+) ends the sessions still connected to it: a restore cut off by a
    dropped SSH connection leaves its pg_restore running inside a container, which would make a
    plain dropdb fail ("being accessed by other users") and the restore's retry with it.
    """
    name, _ = _names(db)
    return RemoteCommand((*_client(db, compose, "dropdb", admin=True), "--no-password", "--force", "--if-exists", name),
                         f"dropdb {name}")


def fingerprint_command(db: Database, compose: list[str] | None = None, snapshot: str | None = None) -> RemoteCommand:
    """Return the host command that prints the database's fingerprint as JSON (:meth:`Fingerprint.to_json`'s form).

    Every table is read in one REPEATABLE READ, READ ONLY transaction (``snapshot``: an
    exported snapshot to read instead, see :func:`snapshot`); ``taken_at`` is that
    transaction's start (:func:`snapshot` replaces it with the export's time). Runs
    python3 on the host (a stdlib driver around psql).
    """
    name, _ = _names(db)
    sql = _STABLE_TEXT + "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
    if snapshot:
        sql += f"SET TRANSACTION SNAPSHOT '{_checked_snapshot(snapshot)}';\n"
    sql += _NOW + _PER_TABLE + "COMMIT;\n"
    return fingerprint_driver("postgresql", "lines", name, sql, session_command(db, compose).argv, f"fingerprint {db.name}")


def fingerprint(conn: Connection, db: Database, compose: list[str] | None = None, snapshot: str | None = None) -> Fingerprint:
    """Given a connection to the host, return the database's fingerprint (see :func:`fingerprint_command`).

    Raise RelaunchError if the query fails.
    """
    return Fingerprint.from_json(runner.run(conn, fingerprint_command(db, compose, snapshot)).decode())


def _checked_snapshot(snapshot: str) -> str:
    # pg_export_snapshot() ids are hex and dashes; refuse anything else (it goes into SQL text)
    if not snapshot or not all(ch in "0123456789ABCDEFabcdef-" for ch in snapshot):
        raise RelaunchError(f"not a PostgreSQL snapshot id: {snapshot!r}")
    return snapshot


@contextlib.contextmanager
def snapshot(conn: Connection, db: Database, compose: list[str] | None = None) -> Iterator[Snapshot]:
    """Hold one snapshot of the database open; yield a dump command and a fingerprint that both read it.

    A psql session keeps a REPEATABLE READ transaction open and exports its snapshot
    (``pg_export_snapshot``); the fingerprint imports it, and the dump command carries
    ``--snapshot``. Run the dump before the block ends: the snapshot dies with the
    session. Writers are never held off. Raise RelaunchError if the session fails.
    """
    session = runner.Session(conn, session_command(db, compose))
    try:
        session.send(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
            "SELECT 'snap:' || pg_export_snapshot() || ' ' || "
            "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"');\n"
        )
        snap_id, taken_at = session.expect("snap:").split(" ", 1)
        fp = fingerprint(conn, db, compose, snapshot=snap_id)
        fp = Fingerprint(tables=fp.tables, taken_at=taken_at, integrity=fp.integrity, engine=fp.engine)
        log.info("%s: snapshot %s of %s at %s", conn.host, snap_id, db.name, taken_at)
        yield Snapshot(dump=dump_command(db, compose, snapshot=snap_id), fingerprint=fp, writes_paused=False)
    finally:
        session.close()


def canary_write(conn: Connection, db: Database, compose: list[str] | None, value: str) -> None:
    """Insert the marker ``value`` into the database's canary table (made if missing), as the app's user."""
    v = canary_value(value)
    sql = (f"CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (value text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now());\n"
           f"INSERT INTO {CANARY_TABLE} (value) VALUES ('{v}');\n")
    runner.run(conn, session_command(db, compose), stdin=sql.encode())


def canary_read(conn: Connection, db: Database, compose: list[str] | None = None) -> list[str]:
    """The canary markers the database holds ([] when it has no canary table)."""
    psql = session_command(db, compose)
    if runner.run(conn, psql, stdin=f"SELECT to_regclass('{CANARY_TABLE}') IS NOT NULL;\n".encode()).decode().strip() != "t":
        return []
    return runner.run(conn, psql, stdin=f"SELECT value FROM {CANARY_TABLE};\n".encode()).decode().split()
