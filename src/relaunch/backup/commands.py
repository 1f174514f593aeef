"""The dump command of each database, as the host's backup runner receives it (an argv list, no shell).

The commands come from ``relaunch.databases`` (one module per engine: ``engine(kind).dump_command(db,
compose)``): this module only turns them into the runner's JSON.

A spec is ``{"name", "engine", "file", "argv", "env_from_files"}``: ``env_from_files`` maps
an environment variable to a 0600 file on the host that the runner reads at run time
(e.g. ``PGPASSWORD`` from ``/etc/relaunch/secrets/blog.password``), so no password is in
the config, in argv, or in a log.
"""

from __future__ import annotations

import logging
from typing import Any

from relaunch import databases
from relaunch.databases import RemoteCommand
from relaunch.inventory.model import Database, Inventory

log = logging.getLogger(__name__)

#: File suffix of each engine's dump (what ``restore`` expects).
SUFFIX = {"postgresql": "pgdump", "mariadb": "sql", "mysql": "sql", "sqlite": "sqlite3"}


def database_specs(inv: Inventory, compose: list[str]) -> list[dict[str, Any]]:
    """Return one runner spec per database of ``inv``, in inventory order.

    ``compose`` is the host's Compose command (argv prefix) for databases that are a
    Compose service. ``inv.backups.mariadb_fingerprint`` says how MariaDB/MySQL dumps are
    fingerprinted (paired with a brief pause of writes, through a scratch restore, or not
    at all). Raise RelaunchError for an engine nobody can dump.
    """
    return [_spec(db, compose, inv.backups.mariadb_fingerprint) for db in inv.databases]


#: Stand-ins the runner replaces at run time: the exported snapshot's id (hex and dashes, as
#: ``relaunch.databases.postgresql`` checks) and the path of the artifact just written.
SNAPSHOT_PLACEHOLDER = "00000000-0000000A-1"
ARTIFACT_PLACEHOLDER = "/relaunch-backup-artifact"


#: How a manifest's fingerprint was obtained (its ``fingerprint_method``).
METHOD_SNAPSHOT = "shared-snapshot"  # the fingerprint read the snapshot the dump read
METHOD_DUMPED_COPY = "dumped-copy"  # the fingerprint is of the dump itself (a database file)
METHOD_SCRATCH_RESTORE = "scratch-restore"  # the dump restored into a scratch database, fingerprinted, dropped
METHOD_PAIRED = "paired-snapshot"  # writes paused while the fingerprint's and the dump's snapshots started


def _spec(db: Database, compose: list[str], mariadb_fingerprint: bool | str = "paired") -> dict[str, Any]:
    """The runner's spec of one database: its dump, and a fingerprint of exactly the data dumped.

    - PostgreSQL: a psql session holds a REPEATABLE READ transaction and exports its
      snapshot; the fingerprint and ``pg_dump --snapshot`` both read it (writers go on).
    - SQLite: the dump is a consistent copy of the file, so the fingerprint is taken of
      the dump itself (``PRAGMA integrity_check`` included).
    - MariaDB/MySQL: the server cannot share one transaction's snapshot between sessions,
      and pausing writes for fingerprint + dump (``relaunch.databases.mariadb.snapshot``)
      is too much to impose every few minutes. ``paired`` (the default, or true): writes
      pause only while the fingerprint's and the dump's snapshots start, then both read
      on (``relaunch.databases.mariadb.paired_commands``); where that cannot be done the
      runner takes the scratch way. ``scratch``: the dump is restored, as it is written
      (the runner feeds it to the scratch client too), into a scratch database on the
      same server and that is fingerprinted, then dropped
      (``relaunch.databases.mariadb.scratch_commands``): the fingerprint is of the dump
      by construction, writers never wait, at about a restore's cost. (Parsing the
      dump's INSERTs instead would have to reproduce the server's own rendering of every
      value type.) With ``mariadb_fingerprint`` off: none, and the manifest says so.
    """
    module = databases.engine(db.engine)
    spec: dict[str, Any] = {"name": db.name, "engine": db.engine, "file": f"{db.name}.{SUFFIX.get(db.engine, 'dump')}",
                            "fingerprint_note": None, "fingerprint_method": None}
    if db.engine == "postgresql":
        spec.update(_from_remote_command(module.dump_command(db, compose, snapshot=SNAPSHOT_PLACEHOLDER)))
        spec["fingerprint_argv"] = list(module.fingerprint_command(db, compose, snapshot=SNAPSHOT_PLACEHOLDER).argv)
        spec["snapshot"] = {  # what relaunch.databases.postgresql.snapshot() does, run by the host's runner
            "session_argv": list(module.session_command(db, compose).argv),
            "send": ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                     "SELECT 'snap:' || pg_export_snapshot() || ' ' || "
                     "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"');\n"),
            "expect": "snap:",
            "placeholder": SNAPSHOT_PLACEHOLDER,
        }
        spec["fingerprint_method"] = METHOD_SNAPSHOT
    elif db.engine == "sqlite":
        spec.update(_from_remote_command(module.dump_command(db, compose)))
        argv = list(module.fingerprint_command(db, compose).argv)
        spec["fingerprint_argv"] = [ARTIFACT_PLACEHOLDER if a == db.path else a for a in argv]
        spec["artifact_placeholder"] = ARTIFACT_PLACEHOLDER
        spec["fingerprint_method"] = METHOD_DUMPED_COPY
    else:
        spec.update(_from_remote_command(module.dump_command(db, compose)))
        if mariadb_fingerprint in (True, "paired"):
            paired = module.paired_commands(db, compose)
            spec["paired"] = {
                "database": db.database,
                "session_argv": list(paired.session.argv),
                "tables_sql": paired.tables_sql,
                "fingerprint_argv": list(paired.fingerprint.argv),
                "lock_wait_s": paired.lock_wait_s,
                "hold_max_s": paired.hold_max_s,
                "dump_markers": list(paired.dump_markers),
            }
        if mariadb_fingerprint:
            scratch = module.scratch_commands(db, compose)
            spec["scratch_restore"] = {
                "database": scratch.database,
                "drop_argv": list(scratch.drop.argv),
                "create_argv": list(scratch.create.argv),
                "stream_argv": list(scratch.restore.argv),  # the runner restores the dump as it is written
                "fingerprint_argv": list(scratch.fingerprint.argv),
            }
            spec["fingerprint_method"] = METHOD_PAIRED if "paired" in spec else METHOD_SCRATCH_RESTORE
        else:
            spec["fingerprint_note"] = ("none: turned off (backups.mariadb_fingerprint: false); an exact one needs "
                                        "the dump restored, or writes paused (MariaDB cannot share a snapshot)")
    return spec


def _from_remote_command(cmd: RemoteCommand) -> dict[str, Any]:
    """The runner's view of a RemoteCommand: its argv (values read from env files: none; credentials come
    from where the command runs, e.g. the Compose service's own environment, or root's local socket)."""
    return {"argv": [str(a) for a in cmd.argv], "env_from_files": {}}
