"""What every database engine module shares: commands as data, fingerprints, snapshots.

An engine module (``postgresql``, ``mariadb``, ``sqlite``) plans; it returns
:class:`RemoteCommand` values (argument lists, nothing run) and the runner
(``relaunch.databases.runner``) executes them over SSH. The only engine functions that
touch a host are ``fingerprint`` and ``snapshot``, which must read answers back.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
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


#: Runs "$@" in the running container of compose project $1's service $2 through ``docker exec``
#: (Compose v1 is a Python program: each ``docker-compose exec`` took 0.86 s against 0.11 s on a
#: loaded host, and a rebuild runs dozens of these). Compose names a project after its
#: directory, /srv/<app>; exit 125 (docker's own "could not run") when no container runs.
_EXEC_IN_SERVICE = (
    'c=$(docker ps -q --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=$2" '
    '--filter status=running | head -n 1); '
    '[ -n "$c" ] || { echo "no running container of compose service $1/$2" >&2; exit 125; }; '
    'shift 2; exec docker exec -i "$c" "$@"'
)


def compose_prefix(db: Database, compose: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Given a database and the host's Compose argv prefix, return what runs a command where the database is.

    Native databases: ``()`` (the command runs on the host). A Compose service: a ``docker
    exec -i`` into the service's running container (see ``_EXEC_IN_SERVICE``), the command's
    argv following as arguments, never through a shell. Raise RelaunchError if the database
    is a Compose service and ``compose`` is empty (the host has no Compose: nothing runs it).
    """
    if not isinstance(db.runs, ComposeService):
        return ()
    if not compose:
        raise RelaunchError(
            f"database {db.name!r} runs in compose app {db.runs.app!r}: the host's compose command is needed "
            "(see relaunch.example_site.parse_compose_command)"
        )
    return ("sh", "-c", _EXEC_IN_SERVICE, "sh", db.runs.app, db.runs.service)


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


@dataclass
class Snapshot:
    """A dump command and a fingerprint that see the same data, valid inside ``engine.snapshot(...)``.

    ``dump`` must be run (by a runner) before the ``with`` block ends. ``writes_paused``
    tells whether the engine had to hold writers off to give this guarantee (MariaDB).
    """

    dump: RemoteCommand
    fingerprint: Fingerprint
    writes_paused: bool = False


def require(db: Database, engines: tuple[str, ...]) -> None:
    """Raise RelaunchError unless ``db`` is of one of ``engines`` (an engine module was handed the wrong one)."""
    if db.engine not in engines:
        raise RelaunchError(f"database {db.name!r} is {db.engine}, not {' or '.join(engines)}")


# The host-side half of every SQL engine's fingerprint (python3, stdlib only), so the same
# code serves a connection (engine.fingerprint) and a command run on the host by itself
# (engine.fingerprint_command, e.g. by the backup runner):
#   python3 -c FINGERPRINT_DRIVER ENGINE MODE DATABASE SQL CLIENT-ARGV...
# runs the SQL client with SQL on stdin and prints the Fingerprint as JSON. MODE "lines":
# the client prints at:/integrity:/fp: lines. MODE "mariadb": SQL lists the columns of each
# base table; the driver then builds the per-table checksum query (see mariadb.py) and
# runs it in a second session. MODE "mariadb-paired": the same, but the second session's
# output is read as it comes and, the moment its snapshot is taken, the driver prints
# "snapshot:<time>" on a line of its own before the JSON (the backup runner waits for it
# to start the dump while writes are paused, see relaunch.databases.mariadb.paired_commands).
FINGERPRINT_DRIVER = r'''
import json, subprocess, sys, threading
engine, mode, database, sql = sys.argv[1:5]
client = sys.argv[5:]

def ask(query):
    p = subprocess.run(client, input=query.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.stderr.buffer.write(p.stderr[-4000:])
        sys.exit(p.returncode)
    return p.stdout.decode("utf-8", "replace")

def ident(v):
    return "`" + v.replace("`", "``") + "`"

def string(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"

def mariadb_sql(database, tables):
    parts = [
        "SET SESSION time_zone = '+00:00';",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ;",
        "SET SESSION optimizer_switch = 'derived_merge=off';",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;",
        "SELECT CONCAT('at:', DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%f+00:00'));",
    ]
    for table, columns in sorted(tables.items()):
        row = "CONCAT_WS(',', " + ", ".join("QUOTE(%s)" % ident(c) for c in columns) + ")"
        sums = ", ".join(
            "COALESCE(SUM(CAST(CONV(SUBSTRING(h, %d, 8), 16, 10) AS UNSIGNED)), 0)" % (1 + 8 * i) for i in range(4))
        parts.append(
            "SELECT CONCAT('fp:', JSON_OBJECT('table', %s, 'rows', COUNT(*), 'checksum', MD5(CONCAT_WS(':', COUNT(*), %s)))) "
            "FROM (SELECT MD5(%s) AS h FROM %s.%s) AS relaunch_rows;" % (string(table), sums, row, ident(database), ident(table)))
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"

def announce_snapshot(query):
    p = subprocess.Popen(client, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def feed():
        try:
            p.stdin.write(query.encode())
            p.stdin.close()
        except OSError:
            pass
    threading.Thread(target=feed, daemon=True).start()
    err = []
    drain = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    drain.start()
    lines = []
    for raw in p.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line.startswith("at:"):
            sys.stdout.write("snapshot:" + line[3:] + "\n")
            sys.stdout.flush()
        lines.append(line)
    code = p.wait()
    drain.join()
    if code != 0:
        sys.stderr.buffer.write(b"".join(err)[-4000:])
        sys.exit(code)
    return "\n".join(lines)

out = ask(sql)
if mode in ("mariadb", "mariadb-paired"):
    tables = {}
    for line in out.splitlines():
        if line.strip():
            item = json.loads(line)
            tables.setdefault(item["t"], []).append(item["c"])
    out = (announce_snapshot if mode == "mariadb-paired" else ask)(mariadb_sql(database, tables))
result = {"engine": engine, "taken_at": None, "integrity": None, "tables": {}}
for line in out.splitlines():
    if line.startswith("at:"):
        result["taken_at"] = line[3:]
    elif line.startswith("integrity:"):
        result["integrity"] = line[len("integrity:"):]
    elif line.startswith("fp:"):
        item = json.loads(line[3:])
        result["tables"][item["table"]] = {"rows": int(item["rows"]), "checksum": item["checksum"]}
if not result["taken_at"]:
    sys.exit("relaunch: the fingerprint query gave no answer")
print(json.dumps(result, sort_keys=True))
'''


def fingerprint_driver(engine: str, mode: str, database: str, sql: str, client: tuple[str, ...], what: str,
                       env: tuple[str, ...] = ()) -> RemoteCommand:
    """Return the host command that runs ``client`` with ``sql`` through :data:`FINGERPRINT_DRIVER` (prints Fingerprint JSON)."""
    return RemoteCommand(("python3", "-c", FINGERPRINT_DRIVER, engine, mode, database, sql, *client), what, env)


#: The table a drill's canary writes its marker rows into, in each production database.
CANARY_TABLE = "relaunch_canary"
_CANARY_VALUE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def canary_value(value: str) -> str:
    """``value`` if it may be a canary marker (letters, digits, ``._:-``, at most 64); raise RelaunchError otherwise."""
    if not _CANARY_VALUE.match(value):
        raise RelaunchError(f"a canary value is letters, digits and ._:- (at most 64), not {value!r}")
    return value
