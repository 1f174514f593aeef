"""Verify's reads of one host (a database's fingerprint, a tree's listing), and the ones a live data step takes early.

A live pull's slowest stream (most often one big database restored on the new host by a
single client) leaves the hosts' other cores waiting. :class:`Early` uses that wait: the
moment a database is restored on the new host as its dump arrived, its fingerprint is
taken on both hosts, and the moment a tree is copied, it is listed on both (on the new
host once no database file inside it is being put in place); a database file inside a tree
(SQLite) on the old host once its dump is pulled, on the new host once it is put in
place. The old host's writers stay
stopped from the data step on, and nothing touches a database the data step restored or a
tree it copied before verify, so a read taken early is the one verify would take. One read
at a time on each host, so the streams still running keep the rest of it. The verify step
of the same process uses them and reads only the rest; a resumed run reads everything.

A read that fails early is left to verify: it is logged, never a failure of the data step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from relaunch import transfer
from relaunch.databases import Fingerprint, engine

log = logging.getLogger(__name__)

#: ``ctx.results`` key: the :class:`Taken` reads of this process's live data step, for its verify step.
EARLY = "early_reads"


def fingerprint(conn: Any, db: Any, compose: list[str]) -> Fingerprint:
    """Return ``db``'s fingerprint on ``conn``'s host (and log how long it took)."""
    started = time.monotonic()
    got = engine(db.engine).fingerprint(conn, db, compose)
    log.info("%s: fingerprint of %s in %.1f s", conn.host, db.name, time.monotonic() - started)
    return got


def listing(conn: Any, path: str, sample: transfer.Sampling, exclude: list[str]) -> transfer.Listing:
    """Return the listing of the tree at ``path`` on ``conn``'s host (and log how long it took)."""
    started = time.monotonic()
    got = transfer.tree_listing(conn, path, sample, exclude=exclude)
    log.info("%s: listing of %s in %.1f s", conn.host, path, time.monotonic() - started)
    return got


@dataclass
class Taken:
    """Reads already taken: fingerprints by database name, listings by tree path, of the source and the new host."""

    source_fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    new_fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    source_listings: dict[str, transfer.Listing] = field(default_factory=dict)
    new_listings: dict[str, transfer.Listing] = field(default_factory=dict)

    def count(self) -> int:
        return sum(map(len, (self.source_fingerprints, self.new_fingerprints, self.source_listings, self.new_listings)))


class Early:
    """The reads a live pull takes as each database and tree arrives, one at a time on each host (see the module)."""

    def __init__(self, old: Any, new: Any, compose_old: list[str], compose_new: list[str],
                 sample: transfer.Sampling, exclude: list[str]) -> None:
        self.old, self.new = old, new
        self.compose_old, self.compose_new = compose_old, compose_new
        self.sample, self.exclude = sample, exclude
        self.taken = Taken()
        self._lock = threading.Lock()
        self._pools = {"old": ThreadPoolExecutor(1, "early-old"), "new": ThreadPoolExecutor(1, "early-new")}

    def source_fingerprint(self, db: Any) -> None:
        """``db``'s dump was pulled: fingerprint it on the old host."""
        self._submit("old", self.taken.source_fingerprints, db.name, lambda: fingerprint(self.old, db, self.compose_old))

    def new_fingerprint(self, db: Any) -> None:
        """``db`` was restored on the new host: fingerprint it there."""
        self._submit("new", self.taken.new_fingerprints, db.name, lambda: fingerprint(self.new, db, self.compose_new))

    def source_listing(self, path: str) -> None:
        """The tree at ``path`` was copied: list it on the old host."""
        self._submit("old", self.taken.source_listings, path, lambda: listing(self.old, path, self.sample, self.exclude))

    def new_listing(self, path: str) -> None:
        """The tree at ``path`` was copied, and no database file inside it is being put in place: list it here."""
        self._submit("new", self.taken.new_listings, path, lambda: listing(self.new, path, self.sample, self.exclude))

    def _submit(self, host: str, into: dict[str, Any], key: str, read: Callable[[], Any]) -> None:
        def job() -> None:
            try:
                got = read()
            except Exception as exc:  # verify reads it again, and fails there if it must
                log.warning("an early read of %s on the %s host failed (verify reads it again): %s", key, host, exc)
                return
            with self._lock:
                into[key] = got

        self._pools[host].submit(job)

    def finish(self, completed: bool) -> Taken:
        """Wait for the reads under way; when the pull did not complete, drop those not started. Return what was taken."""
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=not completed)
        return self.taken
