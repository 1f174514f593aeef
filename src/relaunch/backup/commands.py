"""The dump command of each database, as the host's backup runner receives it (an argv list, no shell).

The commands come from ``relaunch.databases`` (one module per engine: ``engine(kind).dump_command(db,
compose)``). Until that package is present, a minimal built-in table gives the same kind
of consistent dump so the runner can be built and tested; it is used only when
``relaunch.databases`` cannot be imported, and goes away with it.

A spec is ``{"name", "engine", "file", "argv", "env_from_files"}``: ``env_from_files`` maps
an environment variable to a 0600 file on the host that the runner reads at run time
(e.g. ``PGPASSWORD`` from ``/etc/relaunch/secrets/blog.password``), so no password is in
the config, in argv, or in a log.
"""

from __future__ import annotations

import logging
from typing import Any

from relaunch.errors import RelaunchError
from relaunch.inventory.model import ComposeService, Database, Inventory

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
    spec: dict[str, Any] = {"name": db.name, "engine": db.engine, "file": f"{db.name}.{SUFFIX.get(db.engine, 'dump')}"}
    try:
        from relaunch import databases  # the engine modules, when they are there
    except ImportError:
        databases = None  # type: ignore[assignment]
    if databases is not None:
        cmd = databases.engine(db.engine).dump_command(db, compose)
        spec.update(_from_remote_command(cmd))
        fp = getattr(databases.engine(db.engine), "fingerprint_command", None)
        if callable(fp):
            spec["fingerprint_argv"] = _from_remote_command(fp(db, compose))["argv"]
        return spec
    spec.update(argv=_builtin_argv(db, compose), env_from_files={})
    return spec


def _from_remote_command(cmd: Any) -> dict[str, Any]:
    """Take ``argv`` and the env-from-file mapping off a ``relaunch.databases`` RemoteCommand."""
    argv = list(getattr(cmd, "argv"))
    env_files = dict(getattr(cmd, "env_from_files", None) or getattr(cmd, "env_files", None) or {})
    if getattr(cmd, "stdin", None):
        raise RelaunchError(f"dump command {argv[:2]} wants stdin, which the backup runner does not give")
    return {"argv": [str(a) for a in argv], "env_from_files": {str(k): str(v) for k, v in env_files.items()}}


def _builtin_argv(db: Database, compose: list[str]) -> list[str]:
    """A consistent dump to stdout for each engine (interim; see the module docstring)."""
    if db.engine == "postgresql":
        dump = ["pg_dump", "--format=custom", "--no-password", "-U", str(db.user), "-d", str(db.database)]
        if isinstance(db.runs, ComposeService):
            # the example postgres image trusts its local socket, as the official image does
            return [*compose, "-f", f"/srv/{db.runs.app}/compose.yml", "exec", "-T", db.runs.service, *dump]
        return ["runuser", "-u", "postgres", "--", "pg_dump", "--format=custom", "-d", str(db.database)]
    if db.engine in ("mariadb", "mysql"):
        dump = ["mariadb-dump" if db.engine == "mariadb" else "mysqldump", "--single-transaction", "--routines",
                "--triggers", "--events", "--databases", str(db.database)]
        if isinstance(db.runs, ComposeService):
            return [*compose, "-f", f"/srv/{db.runs.app}/compose.yml", "exec", "-T", db.runs.service, *dump]
        return dump  # root over the local socket (unix_socket authentication)
    if db.engine == "sqlite":
        # the online backup API into a private temp file, streamed out, removed
        script = (
            "import os,shutil,sqlite3,sys,tempfile\n"
            "src=sqlite3.connect('file:'+sys.argv[1]+'?mode=ro',uri=True)\n"
            "fd,tmp=tempfile.mkstemp(prefix='relaunch-sqlite-');os.close(fd)\n"
            "try:\n dst=sqlite3.connect(tmp);src.backup(dst);dst.close()\n"
            " with open(tmp,'rb') as f: shutil.copyfileobj(f,sys.stdout.buffer)\n"
            "finally:\n os.unlink(tmp)\n"
        )
        return ["python3", "-c", script, str(db.path)]
    raise RelaunchError(f"database {db.name!r}: no dump command for engine {db.engine!r}")
