"""A backup taken while the example site's apps keep writing restores to a consistent state.

One backup run on the sandbox production Droplet; then each database's dump is restored
FROM THE BACKUP DIRECTORY into a new empty database beside it (PostgreSQL ``blog_check``
in the Compose db service, MariaDB ``stats_check``, SQLite a new file), and the restored
database's fingerprint must equal the manifest's exactly, for all three engines. The
manifest's fingerprints were taken with writers going on (PostgreSQL: one exported
snapshot; SQLite: the dumped copy; MariaDB: two snapshots started while its writes paused
for a moment, or, where writes cannot be paused, the dump restored into a scratch database:
both ways are checked here).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import Connection

from relaunch import databases
from relaunch.backup import install as inst
from relaunch.backup.manifest import Manifest, parse
from relaunch.backup.site import install_site
from relaunch.backup.status import run_now
from relaunch.databases import Fingerprint, run
from relaunch.example_site import COMPOSE_COMMAND_FILE, parse_compose_command
from relaunch.inventory import load_site
from relaunch.inventory.model import Database, Inventory
from relaunch.provision import open_host
from relaunch.sandbox.site import SiteUp, Target

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)


def sh(conn: Connection, command: str, timeout: float = 300) -> str:
    return conn.run(command, hide=True, in_stream=False, timeout=timeout).stdout.strip()


@pytest.fixture(scope="module")
def inv(up: SiteUp, site_root: Path) -> Inventory:
    return load_site("example", site_root)


@pytest.fixture(scope="module")
def conn(up: SiteUp, inv: Inventory, target: Target) -> Iterator[Connection]:
    install_site(inv, target.key_path)  # idempotent: whatever test_backup.py left, the inventory's own setup
    c = open_host(up.host, target.key_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def compose(conn: Connection) -> list[str]:
    return parse_compose_command(sh(conn, f"cat {COMPOSE_COMMAND_FILE}"))


def rows(conn: Connection, db: Database, compose: list[str]) -> int:
    return databases.engine(db.engine).fingerprint(conn, db, compose).rows


@pytest.fixture(scope="module")
def backup(conn: Connection, inv: Inventory, compose: list[str]) -> tuple[str, Manifest]:
    """One backup run while the three apps write; every database grew across it."""
    before = {db.name: rows(conn, db, compose) for db in inv.databases}
    started = time.monotonic()
    done = run_now(conn, inv.site)
    seconds = time.monotonic() - started
    assert done.ok and done.id
    after = {db.name: rows(conn, db, compose) for db in inv.databases}
    assert all(after[n] > before[n] for n in before), (before, after)  # the apps kept writing
    manifest = parse(sh(conn, f"cat {inst.BACKUP_ROOT}/{done.id}/manifest.json"))
    stats = manifest.database("stats").extra
    log.warning("backup %s: %.1f s; stats dump %.2f s, writes paused %.2f s, fingerprint %.2f s after the dump (%d bytes)",
                done.id, seconds, stats["seconds"], stats["writes_paused_s"], stats["fingerprint_seconds"],
                manifest.database("stats").size)
    return done.id, manifest


def check_target(db: Database) -> Database:
    """A new database beside ``db``: ``<database>_check`` on the same server, or a new SQLite file."""
    if db.engine == "sqlite":
        return db.model_copy(update={"path": f"/var/tmp/relaunch-check-{db.name}.db"})
    return db.model_copy(update={"database": f"{db.database}_check"})


@pytest.mark.parametrize("name", ["blog", "stats", "notes"])
def test_each_dump_of_the_backup_restores_to_the_manifest_fingerprint(
    name: str, conn: Connection, inv: Inventory, compose: list[str], backup: tuple[str, Manifest]
) -> None:
    backup_id, manifest = backup
    entry = manifest.database(name)
    assert entry.extra["fingerprint_method"] == {"blog": "shared-snapshot", "stats": "paired-snapshot",
                                                 "notes": "dumped-copy"}[name]
    assert_restores_to_its_fingerprint(conn, inv.database(name), compose, backup_id, manifest)


def assert_restores_to_its_fingerprint(conn: Connection, db: Database, compose: list[str], backup_id: str,
                                       manifest: Manifest) -> None:
    """Restore the backup's dump of ``db`` into a new database beside it; its fingerprint must be the manifest's."""
    entry = manifest.database(db.name)
    expected = Fingerprint.from_json(json.dumps(entry.extra["fingerprint"]))
    assert expected.tables and expected.rows > 0
    name = db.name
    eng = databases.engine(db.engine)
    new = check_target(db)
    run(conn, eng.drop_command(new, compose))
    run(conn, eng.create_command(new, compose))
    try:
        started = time.monotonic()
        run(conn, eng.restore_from_file_command(new, compose, f"{inst.BACKUP_ROOT}/{backup_id}/{entry.file}", 2))
        restored = eng.fingerprint(conn, new, compose)
        log.info("%s: restored %d rows from the backup in %.2f s", name, restored.rows, time.monotonic() - started)
    finally:
        run(conn, eng.drop_command(new, compose))
    assert expected.diff(restored) == []
    assert expected.engine == restored.engine == db.engine


def mariadb(conn: Connection, sql: str) -> str:
    return sh(conn, f"mariadb -N stats -e {shlex.quote(sql)}")


@pytest.fixture
def scratch_table(conn: Connection) -> Iterator[str]:
    """A table of the test's own in the stats database, gone after."""
    table = "relaunch_test_unpaired"
    mariadb(conn, f"DROP TABLE IF EXISTS {table}")
    yield table
    mariadb(conn, f"DROP TABLE IF EXISTS {table}")


def test_a_write_transaction_that_holds_the_pause_off_sends_the_backup_the_scratch_way(
    conn: Connection, inv: Inventory, compose: list[str], scratch_table: str
) -> None:
    """Writers are never held behind a lock that waits: after 5 s the backup restores its dump into a scratch database."""
    mariadb(conn, f"CREATE TABLE {scratch_table} (id INT PRIMARY KEY) ENGINE=InnoDB")
    # a write transaction left open 40 s (its table's metadata lock is held to its end); the session is ended after
    holder = ("mariadb stats -e " + shlex.quote(f"START TRANSACTION; INSERT INTO {scratch_table} VALUES (1); "
                                                 "SELECT SLEEP(40); ROLLBACK"))
    sh(conn, f"systemd-run --unit=relaunch-test-holder --collect {holder}")
    try:
        deadline = time.monotonic() + 30
        while "SLEEP(40)" not in sh(conn, "mariadb -N -e 'SHOW PROCESSLIST'"):
            assert time.monotonic() < deadline, "the open transaction never started"
            time.sleep(0.2)
        done = run_now(conn, inv.site)
        assert done.ok and done.id
    finally:
        sh(conn, "systemctl stop relaunch-test-holder || true")
    manifest = parse(sh(conn, f"cat {inst.BACKUP_ROOT}/{done.id}/manifest.json"))
    stats = manifest.database("stats").extra
    assert stats["fingerprint_method"] == "scratch-restore", stats
    assert "locking" in stats["fingerprint_unpaired"] and "writes_paused_s" not in stats
    assert_restores_to_its_fingerprint(conn, inv.database("stats"), compose, done.id, manifest)


def test_a_table_a_dump_transaction_does_not_cover_sends_the_backup_the_scratch_way(
    conn: Connection, inv: Inventory, compose: list[str], scratch_table: str
) -> None:
    mariadb(conn, f"CREATE TABLE {scratch_table} (id INT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO {scratch_table} VALUES (1), (2)")
    done = run_now(conn, inv.site)
    assert done.ok and done.id
    manifest = parse(sh(conn, f"cat {inst.BACKUP_ROOT}/{done.id}/manifest.json"))
    stats = manifest.database("stats").extra
    assert stats["fingerprint_method"] == "scratch-restore", stats
    assert f"{scratch_table} (MyISAM)" in stats["fingerprint_unpaired"]
    assert stats["fingerprint"]["tables"][scratch_table]["rows"] == 2
    assert_restores_to_its_fingerprint(conn, inv.database("stats"), compose, done.id, manifest)


def test_nothing_is_left_behind(conn: Connection, backup: tuple[str, Manifest], compose: list[str]) -> None:
    databases_left = sh(conn, "mariadb -N -e \"SHOW DATABASES LIKE '%relaunch_fp'; SHOW DATABASES LIKE '%check'\"")
    assert databases_left == ""
    assert sh(conn, "ls /var/tmp | grep relaunch-check || true") == ""
    blog = sh(conn, f"{' '.join(compose)} -f /srv/blog/compose.yml exec -T db "
                    "psql -U blog -d postgres -Atc \"SELECT datname FROM pg_database WHERE datname LIKE '%check'\"")
    assert blog == ""
