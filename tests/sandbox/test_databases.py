"""relaunch.databases on the example site's production Droplet, while its three apps keep writing.

For each engine (PostgreSQL in Compose, native MariaDB, SQLite): a snapshot gives a dump
and a fingerprint of the same data; the dump restores into a NEW empty database on the
same host (``blog_restore`` in the same Compose service, ``stats_restore``, a new SQLite
file), whose fingerprint must equal the snapshot's exactly, while the live database
moves on. The same through :func:`stream` (dump piped into restore over two SSH
channels), and a failing side's error carries both sides' stderr.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection

from relaunch import databases
from relaunch.databases import RemoteCommand, run, run_from_file, run_to_file, stream
from relaunch.errors import RelaunchError
from relaunch.example_site import COMPOSE_COMMAND_FILE, parse_compose_command
from relaunch.health import check_site
from relaunch.inventory import load_site
from relaunch.inventory.model import Database, Inventory
from relaunch.provision import open_host
from relaunch.sandbox.site import SiteUp, Target

pytestmark = pytest.mark.sandbox
log = logging.getLogger(__name__)

NAMES = ["blog", "stats", "notes"]


@pytest.fixture(scope="module")
def inv(site_root: Path) -> Inventory:
    return load_site("example", site_root)


@pytest.fixture(scope="module")
def conn(up: SiteUp, target: Target) -> Iterator[Connection]:
    c = open_host(up.host, target.key_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def compose(conn: Connection) -> list[str]:
    return parse_compose_command(conn.run(f"cat {COMPOSE_COMMAND_FILE}", hide=True, in_stream=False).stdout)


def restore_target(db: Database) -> Database:
    """A new, separate database beside ``db`` on the same server (or a new file)."""
    if db.engine == "sqlite":
        assert db.path
        return db.model_copy(update={"path": db.path.replace(".db", "-restore.db")})
    return db.model_copy(update={"database": f"{db.database}_restore"})


@pytest.fixture
def empty(conn: Connection, inv: Inventory, compose: list[str]) -> Iterator:
    """Make a new empty restore target for a database; drop it (and any dump file) after."""
    made: list[Database] = []

    def make(db: Database) -> Database:
        new = restore_target(db)
        eng = databases.engine(new.engine)
        run(conn, eng.drop_command(new, compose))
        run(conn, eng.create_command(new, compose))
        made.append(new)
        return new

    yield make
    for new in made:
        run(conn, databases.engine(new.engine).drop_command(new, compose))
    conn.run("rm -f /var/tmp/relaunch-test-*.dump", hide=True, in_stream=False)


def rows_grow(conn: Connection, db: Database, compose: list[str], beyond: int, timeout: float = 20) -> int:
    """Wait until the live database holds more than ``beyond`` rows (its app is writing); return the count."""
    eng = databases.engine(db.engine)
    deadline = time.monotonic() + timeout
    while True:
        rows = eng.fingerprint(conn, db, compose).rows
        if rows > beyond or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def tables_as_created(conn: Connection, database: str) -> dict[str, str]:
    """Each table's SHOW CREATE TABLE in a native MariaDB database (its AUTO_INCREMENT counter left out)."""
    def sql(query: str) -> str:
        return conn.run(f"mariadb -N -B -e {shlex.quote(query)} {shlex.quote(database)}", hide=True,
                        in_stream=False).stdout

    return {table: re.sub(r" AUTO_INCREMENT=\d+", "", sql(f"SHOW CREATE TABLE `{table}`").split("\t", 1)[1])
            for table in sql("SHOW TABLES").split()}


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_dump_restores_to_the_snapshot_fingerprint_while_the_app_writes(
    name: str, conn: Connection, inv: Inventory, compose: list[str], empty
) -> None:
    db = inv.database(name)
    eng = databases.engine(db.engine)
    new = empty(db)
    dump = f"/var/tmp/relaunch-test-{name}.dump"
    before = eng.fingerprint(conn, db, compose)
    started = time.monotonic()
    with eng.snapshot(conn, db, compose) as snap:
        size, sha = run_to_file(conn, snap.dump, dump)
    dumped = time.monotonic() - started
    assert size > 10_000
    assert conn.run(f"sha256sum {dump}", hide=True, in_stream=False).stdout.split()[0] == sha
    assert conn.run(f"stat -c %a {dump}", hide=True, in_stream=False).stdout.strip() == "600"
    started = time.monotonic()
    if db.engine == "postgresql":  # the parallel path from a file (pg_restore -j)
        run(conn, eng.restore_from_file_command(new, compose, dump, 2))
    else:
        run_from_file(conn, eng.restore_command(new, compose), dump)
    restored = time.monotonic() - started
    after = eng.fingerprint(conn, new, compose)
    log.info("%s: snapshot+dump %.2f s (%d bytes), restore %.2f s", name, dumped, size, restored)

    assert snap.fingerprint.diff(after) == []
    assert snap.fingerprint.tables and snap.fingerprint.rows >= before.rows > 0
    assert snap.writes_paused == (db.engine == "mariadb")
    if db.engine == "sqlite":
        assert after.integrity == "ok"
    if db.engine == "mariadb":  # the plain indexes the restore built once the rows were in are the dump's
        assert tables_as_created(conn, new.database) == tables_as_created(conn, db.database)
    # the app kept writing (MariaDB's writer again, once the snapshot's lock is gone)
    assert rows_grow(conn, db, compose, snap.fingerprint.rows) > snap.fingerprint.rows


@pytest.mark.parametrize("name", NAMES)
def test_stream_pipes_a_dump_into_a_restore_over_two_channels(
    name: str, up: SiteUp, target: Target, conn: Connection, inv: Inventory, compose: list[str], empty
) -> None:
    db = inv.database(name)
    eng = databases.engine(db.engine)
    new = empty(db)
    other = open_host(up.host, target.key_path)  # a second connection, as to another host
    try:
        with eng.snapshot(conn, db, compose) as snap:
            result = stream(conn, snap.dump, other, eng.restore_command(new, compose), chunk=64 * 1024)
    finally:
        other.close()
    log.info("%s: streamed %d bytes in %.2f s", name, result.bytes, result.seconds)
    assert result.bytes > 10_000 and len(result.sha256) == 64
    assert snap.fingerprint.diff(eng.fingerprint(conn, new, compose)) == []


def test_stream_failure_names_both_sides(conn: Connection, inv: Inventory, compose: list[str]) -> None:
    db = inv.database("blog")
    eng = databases.engine(db.engine)
    nowhere = db.model_copy(update={"database": "no_such_database"})
    with pytest.raises(RelaunchError) as err:
        stream(conn, eng.dump_command(db, compose), conn, eng.restore_command(nowhere, compose))
    message = str(err.value)
    assert "(dump)" in message and "(restore)" in message
    assert 'database "no_such_database" does not exist' in message


def test_the_mariadb_checksum_query_hashes_each_row_once(conn: Connection, inv: Inventory, compose: list[str]) -> None:
    """Each table's query sums four 32-bit parts of ``MD5(row)`` taken from a derived table.

    Merged into the outer query (the server's default), the derived column is an alias and
    the MD5 is computed once per part: four times per row, twice the time of the whole
    fingerprint (25.3 s against 11.7 s for 2 million rows here). The server's own plan for
    the driver's exact SQL must show the derived table materialised.
    """
    db = inv.database("stats")
    cmd = databases.mariadb.fingerprint_command(db, compose)
    record = "/var/tmp/relaunch-test-fingerprint.sql"
    client = cmd.argv[7:]
    spy = RemoteCommand((*cmd.argv[:7], "sh", "-c", f'tee -a {record} | "$@"', "sh", *client), "spy", cmd.env)
    try:
        run(conn, spy)
        sql = conn.run(f"cat {record}", hide=True, in_stream=False).stdout
    finally:
        conn.run(f"rm -f {record}", hide=True, in_stream=False)
    lines = sql.splitlines()
    settings = [line for line in lines if line.startswith("SET ")]
    checks = [line for line in lines if line.startswith("SELECT CONCAT('fp:'")]
    assert len(checks) >= 3  # page_views, daily, meta
    explain = "\n".join([*settings, *(f"EXPLAIN {check}" for check in checks)]) + "\n"
    plan = run(conn, RemoteCommand(client, "explain", cmd.env), explain.encode()).decode()
    select_types = [row.split("\t")[1] for row in plan.splitlines() if row.strip()]
    assert "SIMPLE" not in select_types, plan
    assert select_types.count("DERIVED") == len(checks), plan


def test_the_postgresql_checksum_is_the_one_a_sort_in_any_collation_gives(
    conn: Connection, inv: Inventory, compose: list[str]
) -> None:
    """The fingerprint sorts the row hashes bytewise (``COLLATE "C"``: faster than the database's locale).

    Lower-case hex sorts the same in every collation, so each table's checksum must be the one
    the sort in the database's own collation gives (what fingerprints in older manifests hold),
    and the one in ICU's root collation: read here in one transaction while the blog writes.
    """
    db = inv.database("blog")
    session = databases.postgresql.session_command(db, compose)
    tables = run(conn, session, b"SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables "
                                b"ORDER BY 1;\n").decode().split()
    icu = run(conn, session, b"SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu';\n").decode().strip() == "1"
    collations = ['COLLATE "C"', "", *(['COLLATE "und-x-icu"'] if icu else [])]
    row = "md5(ROW(t.*)::text)"
    sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n" + "".join(
        f"SELECT {', '.join(f'md5(coalesce(string_agg({row} {c}, {chr(39) * 2} ORDER BY {row} {c}), {chr(39) * 2}))' for c in collations)}, "
        f"count(*) FROM {table} t;\n" for table in tables) + "COMMIT;\n"
    lines = run(conn, session, sql.encode()).decode().split()
    assert len(lines) == len(tables) >= 2, lines
    for table, line in zip(tables, lines):
        *checksums, rows = line.split("|")
        assert len(set(checksums)) == 1, f"{table}: {collations} gave {checksums}"
    assert any(int(line.split("|")[-1]) > 10 for line in lines), lines  # the order was put to the test


def test_nothing_is_left_behind_and_the_site_is_healthy(
    conn: Connection, inv: Inventory, compose: list[str], up: SiteUp
) -> None:
    # the snapshot copies, temp and lock sessions of the tests above are gone
    leftovers = conn.run(
        "ls -A /srv/notes | grep relaunch || true; ls /var/tmp | grep relaunch-test || true; "
        f"{' '.join(compose)} -f /srv/blog/compose.yml exec -T db ls -A /tmp; "
        "mariadb -N -e 'SHOW OPEN TABLES WHERE In_use > 0'",
        hide=True, in_stream=False,
    ).stdout.strip()
    assert leftovers == ""
    report = check_site(inv, up.host.ipv4)
    assert report.ok, [r.describe() for r in report.results]
