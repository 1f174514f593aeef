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
    Compose service. Raise RelaunchError for an engine nobody can dump.
    """
    return [_spec(db, compose) for db in inv.databases]


def _spec(db: Database, compose: list[str]) -> dict[str, Any]:
    module = databases.engine(db.engine)
    spec: dict[str, Any] = {"name": db.name, "engine": db.engine, "file": f"{db.name}.{SUFFIX.get(db.engine, 'dump')}"}
    spec.update(_from_remote_command(module.dump_command(db, compose)))
    # A host-side fingerprint (a command printing Fingerprint JSON) would make the runner put one in the
    # manifest for scheduled runs too; relaunch.databases fingerprints over a connection only, for now.
    fingerprint_command = getattr(module, "fingerprint_command", None)
    if callable(fingerprint_command):
        spec["fingerprint_argv"] = list(fingerprint_command(db, compose).argv)
    return spec


def _from_remote_command(cmd: RemoteCommand) -> dict[str, Any]:
    """The runner's view of a RemoteCommand: its argv (values read from env files: none; credentials come
    from where the command runs, e.g. the Compose service's own environment, or root's local socket)."""
    return {"argv": [str(a) for a in cmd.argv], "env_from_files": {}}
