"""The variants timed on one pair of sandbox hosts, and what resets the new host between them.

Every baseline runs ON the new host and pulls from the old host over the same temporary
link relaunch uses (:func:`relaunch.transfer.link`: a pinned, temporary key), so the three
variants take the same network path. The databases' commands are the engines' own
(``relaunch.databases``): the baselines run the same client programs as relaunch, and a
MariaDB restore is its client alone, as a person runs it (relaunch feeds its client through
``relaunch.databases.mariadb_restore``, which is part of what it measures).
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import shlex
import time
from dataclasses import dataclass
from typing import Any

from fabric import Connection

from relaunch import apps
from relaunch.databases import engine, mariadb
from relaunch.databases.base import RemoteCommand
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.transfer import Link, _exec  # noqa: PLC2701 - the one channel runner

log = logging.getLogger(__name__)

#: Where the baselines keep their files, on both hosts (removed by :func:`reset`).
WORK = "/var/lib/relaunch-bench"
#: Where relaunch's data step leaves its dumps for the ``bench`` journal kind (removed by :func:`reset`).
RELAUNCH_WORK = "/var/lib/relaunch/bench"
#: The runner the backup service starts (its process is what the memory sampler follows).
RUNNER = "/usr/local/lib/relaunch/backup.py"

q = shlex.quote


@dataclass
class Timed:
    seconds: float
    steps: dict[str, float]


def run_script(conn: Connection, script: str, what: str, timeout: float = 7200) -> Timed:
    """Run a bash script (on stdin) on ``conn``'s host; return its wall time here and its ``bench-step`` marks.

    A line ``bench-step NAME EPOCH`` marks when step NAME ended (the script prints ``bench-start EPOCH``
    first). Raise RelaunchError with the output's tail if the script fails.
    """
    started = time.monotonic()
    # the script is an argument, not stdin: `docker-compose exec -T` reads stdin and would eat the rest of it
    res = _exec(conn, RemoteCommand(("bash", "-c", script, "bench"), what))
    seconds = time.monotonic() - started
    stdout = res.out.decode("utf-8", "replace")
    if res.status != 0:
        raise RelaunchError(f"{conn.host}: {what} failed (exit {res.status}):\n{(stdout + res.err)[-2000:]}")
    steps: dict[str, float] = {}
    last = None
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "bench-start":
            last = float(rest)
        elif word == "bench-step" and last is not None:
            name, at = rest.rsplit(" ", 1)
            steps[name] = round(float(at) - last, 3)
            last = float(at)
    return Timed(seconds, steps)


PRELUDE = 'set -euo pipefail\nmark() { echo "bench-step $1 $EPOCHREALTIME"; }\necho "bench-start $EPOCHREALTIME"\n'


def _scp(ln: Link, remote_path: str, local: str) -> list[str]:
    opts = ln.ssh_options()[1:-2]  # without "ssh" and "-p PORT"
    host = f"[{ln.address}]" if ":" in ln.address else ln.address
    return ["scp", "-q", *opts, "-P", str(ln.port), f"{ln.user}@{host}:{remote_path}", local]


def plain_restore(db: Any, compose: list[str]) -> RemoteCommand:
    """The engine's restore as a person runs it: MariaDB's client alone, without the feeder relaunch puts before it
    (``relaunch.databases.mariadb_restore``, which holds the plain indexes back until the rows are in)."""
    if db.engine in mariadb.ENGINES:
        return mariadb.client_restore_command(db, compose)
    return engine(db.engine).restore_command(db, compose)


def _from_file(argv: tuple[str, ...], path: str) -> str:
    return shlex.join(("sh", "-c", 'exec "$@" < "$0"', path, *argv))


def by_hand(ln: Link, inv: Inventory, compose_old: list[str], compose_new: list[str], trees: list[str]) -> str:
    """What a person does from their notes, one step after another, on the new host.

    For each database: dump it to a file on the old host, copy the file over with scp,
    create the database and restore the file. Then rsync each app tree. No verification.
    """
    lines = [PRELUDE, f"mkdir -p {WORK}/hand"]
    for db in inv.databases:
        eng = engine(db.engine)
        remote_file = f"{WORK}/hand/{db.name}.dump"
        local = f"{WORK}/hand/{db.name}.dump"
        dump = ln.remote(eng.dump_command(db, compose_old).argv)
        lines.append(shlex.join([*ln.ssh_argv(), f"mkdir -p {WORK}/hand && {dump} > {remote_file}"]) + f"; mark dump-{db.name}")
        lines.append(shlex.join(_scp(ln, remote_file, local)) + f"; mark scp-{db.name}")
        lines.append(shlex.join(eng.create_command(db, compose_new).argv))
        lines.append(_from_file(plain_restore(db, compose_new).argv, local) + f"; mark restore-{db.name}")
    for tree in trees:
        rsync = ["rsync", "-aH", "--numeric-ids", "--delete", "-e", shlex.join(ln.ssh_options()),
                 ln.rsync_source(tree), f"{tree}/"]
        lines.append(f"mkdir -p {q(tree)}; " + shlex.join(rsync) + f"; mark rsync-{tree}")
    return "\n".join(lines) + "\n"


def floor(ln: Link, inv: Inventory, compose_old: list[str], compose_new: list[str], trees: list[str]) -> str:
    """The best plain shell can do, on the new host: every dump piped into its restore over ssh, and every
    tree's rsync, all at once; no file in between, no verification, the same dump options as relaunch's live
    pull (pg_dump uncompressed). SQLite files inside a tree are left to their dump (the tree's rsync skips them)."""
    lines = [PRELUDE, "pids=()"]
    for db in inv.databases:
        eng = engine(db.engine)
        # the same dump as relaunch's live pull (uncompressed: it only crosses the hosts' network)
        dump = shlex.join([*ln.ssh_argv(), ln.remote(eng.dump_command(db, compose_old, compress=0).argv)])
        restore = shlex.join(plain_restore(db, compose_new).argv)
        create = shlex.join(eng.create_command(db, compose_new).argv)
        lines.append(f"( {create} && {dump} </dev/null | {restore}; mark db-{db.name} ) & pids+=($!)")
    for tree in trees:
        # the SQLite files come with their dump, and the restore's temporary file beside them is not --delete's
        excludes = [f"--exclude=/{posixpath.relpath(p, tree)}" for db in inv.databases if db.path
                    and db.path.startswith(tree + "/") for p in (db.path, f"{db.path}-wal", f"{db.path}-shm",
                                                                f"{db.path}-journal", posixpath.join(
                                                                    posixpath.dirname(db.path),
                                                                    f".{posixpath.basename(db.path)}.relaunch-restore-*"))]
        rsync = ["rsync", "-aH", "--numeric-ids", "--delete", *excludes, "-e", shlex.join(ln.ssh_options()),
                 ln.rsync_source(tree), f"{tree}/"]
        lines.append(f"( mkdir -p {q(tree)} && {shlex.join(rsync)} </dev/null; mark rsync-{tree} ) & pids+=($!)")
    lines.append('rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit "$rc"')
    return "\n".join(lines) + "\n"


def reset_script(inv: Inventory, compose_new: list[str], trees: list[str]) -> str:
    """What puts the new host back to empty between rounds: every database dropped, every tree emptied,
    every dump left by a variant removed."""
    lines = ["set -euo pipefail"]
    for db in inv.databases:
        lines.append(shlex.join(engine(db.engine).drop_command(db, compose_new).argv))
    for tree in trees:
        lines.append(f"if [ -d {q(tree)} ]; then find {q(tree)} -mindepth 1 -delete; fi")
    lines.append(f"rm -rf {WORK} {RELAUNCH_WORK}")
    return "\n".join(lines) + "\n"


def quiesce(conn: Connection, inv: Inventory, *, backup_timer: bool) -> None:
    """Stop the site's writers (and the backup timer) on a host, keep its database servers up: stable data."""
    apps.stop_writers(conn, inv, backup_timer=backup_timer, databases_up=True)


# --- backups ---------------------------------------------------------------------------------------------

# Follows the backup runner while it runs: its own peak (VmHWM) and the peak of the summed RSS of its
# process tree (dumps, tar, restic); stops when the stop file appears; writes JSON to the out file.
SAMPLER = r"""
import json, os, sys, time
runner, stop, out = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
peak_runner = peak_tree = 0
seen = False
deadline = time.monotonic() + 7200
def kb(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
while time.monotonic() < deadline:
    procs = {}
    runners = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except (OSError, ValueError, IndexError):
            continue
        procs[int(pid)] = ppid
        if runner in cmd and b"run" in cmd.split(b"\0"):
            runners.append(int(pid))
    for r in runners:
        seen = True
        peak_runner = max(peak_runner, kb(r, "VmHWM"))
        tree, frontier = {r}, [r]
        while frontier:
            kids = [p for p, pp in procs.items() if pp in frontier and p not in tree]
            tree.update(kids)
            frontier = kids
        peak_tree = max(peak_tree, sum(kb(p, "VmRSS") for p in tree))
    if os.path.exists(stop):
        break
    time.sleep(0.1)
json.dump({"seen": seen, "runner_peak_mb": peak_runner / 1024, "tree_peak_mb": peak_tree / 1024}, open(out, "w"))
"""


def scheduled_backup(conn: Connection, site: str, root: str | None = None) -> dict[str, Any]:
    """One run of the installed backup service (what the timer starts), timed, with the runner's peak memory
    and where its time went (``report.backup_breakdown``: its manifest under ``root`` and its status entry)."""
    from bench.report import backup_breakdown, timeline
    from relaunch.backup.install import BACKUP_ROOT, SERVICE
    from relaunch.backup.status import run_now

    conn.run(f"mkdir -p {WORK} && rm -f {WORK}/sampler.stop {WORK}/sampler.json", hide=True, in_stream=False)
    conn.put(io.StringIO(SAMPLER), f"{WORK}/sampler.py")
    conn.run(f"nohup python3 {WORK}/sampler.py {RUNNER} {WORK}/sampler.stop {WORK}/sampler.json "
             ">/dev/null 2>&1 </dev/null &", hide=True, in_stream=False, pty=False)
    since = conn.run("date +%s", hide=True, in_stream=False).stdout.strip()
    started = time.monotonic()
    run = run_now(conn, site)
    seconds = time.monotonic() - started
    conn.run(f"touch {WORK}/sampler.stop; for i in $(seq 50); do [ -s {WORK}/sampler.json ] && break; sleep 0.1; done",
             hide=True, in_stream=False)
    mem = json.loads(conn.run(f"cat {WORK}/sampler.json", hide=True, in_stream=False).stdout)
    manifest = json.loads(conn.run(f"cat {q(posixpath.join(root or BACKUP_ROOT, str(run.id), 'manifest.json'))}",
                                   hide=True, in_stream=False).stdout)
    # the service's journal with microsecond times: the runner's log lines (and systemd's start/finish) as a timeline
    journal = conn.run(f"journalctl -u {SERVICE} --since @{q(since)} -o short-unix --no-pager", hide=True,
                       in_stream=False, warn=True).stdout
    breakdown = backup_breakdown(seconds, run.seconds, manifest, run.offsite)
    breakdown["timeline"] = timeline(journal)
    return {"seconds": seconds, "id": run.id, **mem, "breakdown": breakdown}


def plain_backup_script(inv: Inventory, compose: list[str], trees: list[str], config: dict[str, Any]) -> str:
    """The same work as a scheduled backup, by a plain script on the production host: each database dumped
    to a file, the trees in one tar.gz (gzip -3, as the runner), the same off-host copy (restic, the same
    repository, password file and cache); no manifest, no fingerprint, no retention."""
    off = config["offsite"]
    lines = [PRELUDE, f"d={WORK}/plain/$(date +%s%N)", 'mkdir -p "$d"']
    skip = []
    for db in inv.databases:
        lines.append(shlex.join(engine(db.engine).dump_command(db, compose).argv) + f' > "$d"/{q(db.name)}.dump')
        if db.path:
            skip += [db.path, f"{db.path}-wal", f"{db.path}-shm", f"{db.path}-journal"]
    lines.append("mark dumps")
    excludes = " ".join(q(f"--exclude={p}") for p in skip)
    lines.append(f'tar -c {excludes} -f - {" ".join(q(t) for t in trees)} 2>/dev/null | gzip -3 > "$d"/files.tar.gz; mark tar')
    restic = ["restic", "-r", off["repository"], *off.get("options", []), "--quiet", "backup", "--host", "bench-plain",
              "--tag", "bench-plain"]
    lines.append(f"RESTIC_PASSWORD_FILE={q(off['password_file'])} RESTIC_CACHE_DIR={q(off.get('cache_dir') or '/var/cache/relaunch/restic')} "
                 + shlex.join(restic) + ' "$d"; mark restic')
    lines.append('rm -rf "$d"')
    return "\n".join(lines) + "\n"


def workload_script(inv: Inventory, compose: list[str], trees: list[str], seed: int, rows: int = 20000,
                    files: int = 8, file_kb: int = 512) -> str:
    """A fixed write workload on the production host: the same ``rows`` rows in every database and the same
    ``files`` files in the first tree for a given ``seed`` (deterministic content)."""
    lines = ["set -euo pipefail"]
    for db in inv.databases:
        eng = engine(db.engine)
        if db.engine == "postgresql":
            sql = (f"CREATE TABLE IF NOT EXISTS bench_workload (seed int, i int, v text);\n"
                   f"INSERT INTO bench_workload SELECT {seed}, i, repeat(md5({seed}::text || ':' || i::text), 4) "
                   f"FROM generate_series(1, {rows}) AS i;\n")
            cmd = eng.session_command(db, compose).argv
        elif db.engine in ("mariadb", "mysql"):
            sql = (f"USE `{db.database}`;\nCREATE TABLE IF NOT EXISTS bench_workload (seed int, i int, v text) ENGINE=InnoDB;\n"
                   f"INSERT INTO bench_workload SELECT {seed}, seq, REPEAT(MD5(CONCAT({seed}, ':', seq)), 4) "
                   f"FROM seq_1_to_{rows};\n")
            cmd = eng._query(db, compose).argv  # noqa: SLF001 - the engine's own query client
        else:
            py = ("import hashlib, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                  "c.execute('CREATE TABLE IF NOT EXISTS bench_workload (seed int, i int, v text)'); "
                  f"c.executemany('INSERT INTO bench_workload VALUES (?, ?, ?)', (({seed}, i, hashlib.md5(b'%d:%d' % ({seed}, i)).hexdigest() * 4) for i in range(1, {rows} + 1))); "
                  "c.commit()")
            lines.append(shlex.join(["python3", "-c", py, db.path]))
            continue
        lines.append(shlex.join(cmd) + " <<'BENCH_SQL'\n" + sql + "BENCH_SQL")
    tree = trees[0]
    py = ("import hashlib, os, sys; d, seed, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]); "
          "os.makedirs(d, exist_ok=True)\n"
          "for f in range(n):\n"
          "    h = hashlib.sha256(b'%d:%d' % (seed, f)).digest(); out = bytearray()\n"
          "    while len(out) < kb * 1024:\n"
          "        h = hashlib.sha256(h).digest(); out += h\n"
          "    open(os.path.join(d, 'w%03d.bin' % f), 'wb').write(out[:kb * 1024])")
    lines.append(shlex.join(["python3", "-c", py, f"{tree}/bench-workload-{seed}", str(seed), str(files), str(file_kb)]))
    return "\n".join(lines) + "\n"
