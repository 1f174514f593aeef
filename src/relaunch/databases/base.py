"""What every database engine module shares: commands as data, fingerprints, snapshots.

An engine module (``postgresql``, ``mariadb``, ``sqlite``) plans; it returns
:class:`RemoteCommand` values (argument lists, nothing run) and the runner
(``relaunch.databases.runner``) executes them over SSH. The only engine functions that
touch a host are ``fingerprint`` and ``snapshot``, which must read answers back.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from relaunch.errors import RelaunchError
from relaunch.inventory.model import ComposeService, Database


@dataclass(frozen=True)
class RemoteCommand:
    """One command to run as root on a host: an argument list, never a shell string.

    ``argv`` is joined with :func:`shlex.join` to reach the remote shell, so every value
    is quoted. No secret is ever part of ``argv``. ``env`` names environment variables the
    command reads where it runs (inside a Compose service, say) — names only, never
    values; they document where a credential comes from. ``description`` is for logs.
    """

    argv: tuple[str, ...]
    description: str = ""
    env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise RelaunchError(f"a remote command needs a non-empty list of strings, not {self.argv!r}")

    def shell(self) -> str:
        """Return the command line for the remote shell, every value quoted."""
        return shlex.join(self.argv)

    def __str__(self) -> str:
        return self.shell()


def compose_prefix(db: Database, compose: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Given a database and the host's Compose argv prefix, return what runs a command where the database is.

    Native databases: ``()`` (the command runs on the host). A Compose service:
    ``(*compose, "-f", "/srv/<app>/compose.yml", "exec", "-T", "<service>")``.
    Raise RelaunchError if the database is a Compose service and ``compose`` is empty.
    """
    if not isinstance(db.runs, ComposeService):
        return ()
    if not compose:
        raise RelaunchError(
            f"database {db.name!r} runs in compose app {db.runs.app!r}: the host's compose command is needed "
            "(see relaunch.example_site.parse_compose_command)"
        )
    return (*compose, "-f", f"/srv/{db.runs.app}/compose.yml", "exec", "-T", db.runs.service)


@dataclass(frozen=True)
class TableFingerprint:
    """One table: its row count and a checksum of its content (order of rows does not matter)."""

    rows: int
    checksum: str


@dataclass(frozen=True)
class Fingerprint:
    """What a database held at one moment: per table rows and checksum, when, and an integrity verdict.

    Checksums are only comparable between fingerprints of the same engine (each engine
    serialises rows its own way); they are stable across a dump and its restore.
    ``integrity`` is the engine's own check where it has one (SQLite: ``PRAGMA
    integrity_check``, "ok" when sound), else None.
    """

    tables: dict[str, TableFingerprint]
    taken_at: str
    integrity: str | None = None
    engine: str = ""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def to_json(self) -> str:
        """Return the fingerprint as a JSON document (tables sorted by name)."""
        return json.dumps(
            {
                "engine": self.engine,
                "taken_at": self.taken_at,
                "integrity": self.integrity,
                "tables": {n: {"rows": t.rows, "checksum": t.checksum} for n, t in sorted(self.tables.items())},
            },
            indent=2,
            sort_keys=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        """Given what :meth:`to_json` wrote, return the fingerprint. Raise RelaunchError if it is not one."""
        try:
            data: Any = json.loads(text)
            tables = {
                str(name): TableFingerprint(rows=int(t["rows"]), checksum=str(t["checksum"]))
                for name, t in data["tables"].items()
            }
            return cls(
                tables=tables,
                taken_at=str(data["taken_at"]),
                integrity=data.get("integrity"),
                engine=str(data.get("engine", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RelaunchError(f"not a database fingerprint ({type(exc).__name__}: {exc})") from exc

    def diff(self, other: Fingerprint) -> list[str]:
        """Return how ``other`` differs from this one, one human-readable line each; [] when they match.

        Compares tables (missing, extra), row counts, checksums and the integrity verdict;
        never the time taken.
        """
        out: list[str] = []
        if self.engine and other.engine and self.engine != other.engine:
            out.append(f"engine: {self.engine} here, {other.engine} there (checksums are not comparable)")
        for name in sorted(self.tables.keys() - other.tables.keys()):
            out.append(f"table {name}: missing ({self.tables[name].rows} rows expected)")
        for name in sorted(other.tables.keys() - self.tables.keys()):
            out.append(f"table {name}: unexpected ({other.tables[name].rows} rows)")
        for name in sorted(self.tables.keys() & other.tables.keys()):
            mine, theirs = self.tables[name], other.tables[name]
            if mine.rows != theirs.rows:
                out.append(f"table {name}: {theirs.rows} rows, expected {mine.rows} ({theirs.rows - mine.rows:+d})")
            elif mine.checksum != theirs.checksum:
                out.append(f"table {name}: same {mine.rows} rows but different content (checksum {theirs.checksum[:12]}…, expected {mine.checksum[:12]}…)")
        if self.integrity != other.integrity:
            out.append(f"integrity: {other.integrity!r}, expected {self.integrity!r}")
        return out


def utc_now() -> str:
    """The current time, UTC, ISO 8601 with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Snapshot:
    """A dump command and a fingerprint that see the same data, valid inside ``engine.snapshot(...)``.

    ``dump`` must be run (by a runner) before the ``with`` block ends. ``writes_paused``
    tells whether the engine had to hold writers off to give this guarantee (MariaDB).
    """

    dump: RemoteCommand
    fingerprint: Fingerprint
    writes_paused: bool = False
    notes: list[str] = field(default_factory=list)


def require(db: Database, engines: tuple[str, ...]) -> None:
    """Raise RelaunchError unless ``db`` is of one of ``engines`` (an engine module was handed the wrong one)."""
    if db.engine not in engines:
        raise RelaunchError(f"database {db.name!r} is {db.engine}, not {' or '.join(engines)}")
