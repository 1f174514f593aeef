"""A backup taken while the example site's apps keep writing restores to a consistent state.

One backup run on the sandbox production Droplet; then each database's dump is restored
FROM THE BACKUP DIRECTORY into a new empty database beside it (PostgreSQL ``blog_check``
in the Compose db service, MariaDB ``stats_check``, SQLite a new file), and the restored
database's fingerprint must equal the manifest's exactly, for all three engines. The
manifest's fingerprints were taken without pausing any writer (PostgreSQL: one exported
snapshot; SQLite: the dumped copy; MariaDB: the dump restored into a scratch database).
"""

from __future__ import annotations

import json
import logging
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
    log.warning("backup %s: %.1f s; stats dump %.2f s incl. its scratch-restore fingerprint %.2f s (%d bytes)",
                done.id, seconds, stats["seconds"], stats["fingerprint_seconds"], manifest.database("stats").size)
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
    expected = Fingerprint.from_json(json.dumps(entry.extra["fingerprint"]))
    assert expected.tables and expected.rows > 0
    assert entry.extra["fingerprint_method"] == {"blog": "shared-snapshot", "stats": "scratch-restore",
                                                 "notes": "dumped-copy"}[name]
    db = inv.database(name)
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


def test_nothing_is_left_behind(conn: Connection, backup: tuple[str, Manifest], compose: list[str]) -> None:
    databases_left = sh(conn, "mariadb -N -e \"SHOW DATABASES LIKE '%relaunch_fp'; SHOW DATABASES LIKE '%check'\"")
    assert databases_left == ""
    assert sh(conn, "ls /var/tmp | grep relaunch-check || true") == ""
    blog = sh(conn, f"{' '.join(compose)} -f /srv/blog/compose.yml exec -T db "
                    "psql -U blog -d postgres -Atc \"SELECT datname FROM pg_database WHERE datname LIKE '%check'\"")
    assert blog == ""
