"""The sandbox cloud's state: JSON documents in SQLite, shared by threads and processes.

Every resource (ssh keys, Droplets, actions, snapshots, domains, records, reserved IPs,
tags, and the bookkeeping of pending backend work) is one document ``(kind, key) -> dict``
in one table, listed in insertion order. The database runs in WAL mode; each call is one
short transaction, and ``transaction()`` groups several into one atomic change. One
connection per thread, opened lazily.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

DB_NAME = "cloud.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS documents_by_seq ON documents (kind, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

#: Ids of a new cloud start at a random point of this range, so they look like
#: DigitalOcean's and two clouds (state directories) on one Docker host, whose machines
#: are named after Droplet ids, do not hand out the same ids.
ID_RANGE = (100_000_000, 900_000_000)
FIRST_ID = ID_RANGE[0]


class StoreError(Exception):
    """The state database is unusable (wrong version, corrupt)."""


class Conflict(StoreError):
    """A document with that key already exists."""


class Txn:
    """Operations inside one transaction (obtained from ``Store.transaction``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, kind: str, key: str | int) -> dict[str, Any] | None:
        """Return the document, or None if there is none."""
        row = self._conn.execute(
            "SELECT data FROM documents WHERE kind = ? AND key = ?", (kind, str(key))
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Return every document of ``kind`` in insertion order."""
        rows = self._conn.execute(
            "SELECT data FROM documents WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def insert(self, kind: str, key: str | int, doc: dict[str, Any]) -> None:
        """Add a document. Raise Conflict if the key is taken."""
        seq = self._next("seq")
        try:
            self._conn.execute(
                "INSERT INTO documents (kind, key, seq, data) VALUES (?, ?, ?, ?)",
                (kind, str(key), seq, json.dumps(doc)),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{kind} {key} already exists") from None

    def put(self, kind: str, key: str | int, doc: dict[str, Any]) -> None:
        """Replace a document (keeping its place in listings), or add it."""
        cur = self._conn.execute(
            "UPDATE documents SET data = ? WHERE kind = ? AND key = ?", (json.dumps(doc), kind, str(key))
        )
        if cur.rowcount == 0:
            self.insert(kind, key, doc)

    def delete(self, kind: str, key: str | int) -> bool:
        """Remove a document; tell whether it existed."""
        cur = self._conn.execute("DELETE FROM documents WHERE kind = ? AND key = ?", (kind, str(key)))
        return cur.rowcount > 0

    def new_id(self) -> int:
        """Return a fresh numeric id, unique across every kind."""
        return self._next("id")

    def _next(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        value = row[0] + 1 if row else FIRST_ID
        self._conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))
        return value


class Store:
    """The state database of one sandbox cloud, in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / DB_NAME
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)  # idempotent, each statement its own transaction
        with self.transaction() as txn:
            conn = txn._conn
            row = conn.execute("SELECT value FROM counters WHERE name = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO counters (name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
                start = secrets.randbelow(ID_RANGE[1] - ID_RANGE[0]) + ID_RANGE[0]
                conn.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('id', ?)", (start,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {row[0]}, expected {SCHEMA_VERSION}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        """Run the block as one write transaction (committed at the end, rolled back on error)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Txn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def get(self, kind: str, key: str | int) -> dict[str, Any] | None:
        """Return one document, or None."""
        return Txn(self._conn()).get(kind, key)

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Return every document of ``kind`` in insertion order."""
        return Txn(self._conn()).list(kind)

    def update(
        self, kind: str, key: str | int, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Atomically apply ``change`` to a document and store what it returns.

        ``change`` gets the current document and returns the new one (or None to leave it).
        Return the stored document, or None if there was no such document.
        """
        with self.transaction() as txn:
            doc = txn.get(kind, key)
            if doc is None:
                return None
            new = change(doc)
            if new is None:
                return doc
            txn.put(kind, key, new)
            return new

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
