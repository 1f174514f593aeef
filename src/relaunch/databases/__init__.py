"""Databases: one module per engine, the same functions in each, chosen by kind.

Every engine module (:mod:`.postgresql`, :mod:`.mariadb` for ``mariadb`` and ``mysql``,
:mod:`.sqlite`) exposes::

    dump_command(db, compose, compress=None) -> RemoteCommand  # a consistent dump on stdout (compress: 0..9
                                                               #   where the format compresses, else ignored)
    restore_command(db, compose) -> RemoteCommand            # dump on stdin -> EMPTY database
    restore_from_file_command(db, compose, path, jobs) -> RemoteCommand
    create_command(db, compose) / drop_command(db, compose) -> RemoteCommand
    fingerprint_command(db, compose) -> RemoteCommand        # prints the Fingerprint as JSON, on the host
    fingerprint(conn, db, compose) -> Fingerprint            # the same, over a connection
    snapshot(conn, db, compose) -> context manager of Snapshot  # dump + fingerprint of the same data

``compose`` is the host's Compose command as an argv prefix (``["docker-compose"]``);
it matters only for databases that are a Compose service. Planning functions return
commands as data; :mod:`.runner` runs them (:func:`run_to_file`, :func:`stream`).
:mod:`.mariadb_restore` is not an engine: it is the feeder a MariaDB/MySQL restore runs on
the host (python3, stdlib only), which builds each table's plain indexes once its rows are in.
"""

from __future__ import annotations

from types import ModuleType

from relaunch.databases import mariadb, postgresql, sqlite
from relaunch.databases.base import Fingerprint, RemoteCommand, Snapshot, TableFingerprint
from relaunch.databases.runner import StreamResult, run, run_from_file, run_to_file, stream
from relaunch.errors import RelaunchError

#: Engine kind (the inventory's ``engine``) -> its module.
ENGINES: dict[str, ModuleType] = {
    "postgresql": postgresql,
    "mariadb": mariadb,
    "mysql": mariadb,
    "sqlite": sqlite,
}


def engine(kind: str) -> ModuleType:
    """Given an engine kind ('postgresql', 'mariadb', 'mysql', 'sqlite'), return its module.

    Raise RelaunchError naming the kind and the known ones if there is no such engine.
    """
    try:
        return ENGINES[kind]
    except (KeyError, TypeError):
        raise RelaunchError(
            f"unknown database engine {kind!r} (known: {', '.join(sorted(ENGINES))})"
        ) from None


__all__ = [
    "ENGINES",
    "Fingerprint",
    "RemoteCommand",
    "Snapshot",
    "StreamResult",
    "TableFingerprint",
    "engine",
    "run",
    "run_from_file",
    "run_to_file",
    "stream",
]
