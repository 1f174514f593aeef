"""The host's backup runner, run here on temp directories: manifest, atomic directories, lock, verify, retention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from relaunch.backup import manifest as manifest_mod
from relaunch.backup import runner

RUNNER = Path(runner.__file__)


def make_config(tmp_path: Path, *, dumps: dict[str, list[str]] | None = None, offsite: dict | None = None,
                **extra: object) -> Path:
    files = tmp_path / "srv" / "app"
    (files / "sub").mkdir(parents=True)
    (files / "a.txt").write_text("alpha\n")
    (files / "live.db").write_bytes(b"SQLite format 3\0")  # dumped on its own: left out of the archive
    (files / "sub" / "b.bin").write_bytes(os.urandom(4096))
    secret = tmp_path / "db.password"
    secret.write_text("s3cret-value\n")
    secret.chmod(0o600)
    dumps = dumps or {
        "pg": [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'PGDMP' * 1000)"],
        # reads its password from the environment, filled from a file by the runner
        "my": [sys.executable, "-c", "import os; print('-- dump', len(os.environ['DBPW']))"],
    }
    config = {
        "format": 1, "site": "unit", "relaunch_version": "0.0.0", "inventory_sha256": "ab" * 32,
        "root": str(tmp_path / "backups"), "lock": str(tmp_path / "lock"),
        "status_file": str(tmp_path / "state" / "status.json"),
        "verified_file": str(tmp_path / "state" / "verified.json"),
        "retention": {"keep_within_hours": 24, "daily": 7, "weekly": 4},
        "databases": [
            {"name": name, "engine": "postgresql" if name == "pg" else "mariadb", "file": f"{name}.dump", "argv": argv,
             "env_from_files": {"DBPW": str(secret)}}
            for name, argv in dumps.items()
        ],
        "archives": [{"app": "app", "file": "app-files.tar.gz", "paths": [str(files)],
                      "exclude": [str(files / "live.db")]}],
        "offsite": offsite,
        **extra,
    }
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(config))
    return path


def run(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), "--config", str(config), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def backups(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "backups").iterdir())


def test_run_writes_a_backup_whose_manifest_lists_every_artifact_with_its_sha256(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    assert directory.stat().st_mode & 0o077 == 0
    m = manifest_mod.parse((directory / "manifest.json").read_text())
    assert m.id == directory.name and m.site == "unit"
    assert m.raw["relaunch_version"] == "0.0.0" and m.raw["inventory_sha256"] == "ab" * 32
    assert [a.file for a in m.artifacts] == ["pg.dump", "my.dump", "app-files.tar.gz"]
    assert m.database("pg").size == 5000 and m.database("pg").extra["engine"] == "postgresql"
    assert m.database("pg").extra["snapshot_at"].endswith("Z")
    assert (directory / "my.dump").read_text() == "-- dump 12\n"  # the password file's value, read at run time
    assert m.archive("app").extra["files"] == 2  # a.txt and sub/b.bin, not live.db
    with tarfile.open(directory / "app-files.tar.gz") as tar:
        assert not [n for n in tar.getnames() if n.endswith("live.db")]
    assert m.size == sum(a.size for a in m.artifacts)
    assert manifest_mod.verify_local(directory).ok
    status = json.loads((tmp_path / "state" / "status.json").read_text())["runs"]
    assert status[-1]["ok"] and status[-1]["id"] == m.id and status[-1]["size"] == m.size
    assert "s3cret" not in res.stdout + res.stderr


SESSION = """
import sys
sys.stdin.readline()
print("snap:00000003-0000001B-1 2026-11-26T08:00:00.000001+00:00", flush=True)
sys.stdin.read()  # hold the snapshot until stdin closes
open(sys.argv[1], "w").write("closed")
"""


def test_a_snapshot_session_gives_the_dump_and_the_fingerprint_the_same_snapshot(tmp_path: Path) -> None:
    config = make_config(tmp_path, dumps={"pg": [sys.executable, "-c", "import sys; print('dump of', sys.argv[1])", "--snapshot=PH-1"]})
    data = json.loads(config.read_text())
    closed = tmp_path / "closed"
    data["databases"][0].update(
        fingerprint_argv=[sys.executable, "-c", "import json, sys; print(json.dumps({'tables': {}, 'sql': sys.argv[1]}))",
                          "SET TRANSACTION SNAPSHOT 'PH-1';"],
        snapshot={"session_argv": [sys.executable, "-c", SESSION, str(closed)], "send": "BEGIN;\n", "expect": "snap:",
                  "placeholder": "PH-1"},
    )
    config.write_text(json.dumps(data))
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    assert (directory / "pg.dump").read_text() == "dump of --snapshot=00000003-0000001B-1\n"
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint"]["sql"] == "SET TRANSACTION SNAPSHOT '00000003-0000001B-1';"
    assert entry["snapshot_at"] == entry["fingerprint"]["taken_at"] == "2026-11-26T08:00:00.000001+00:00"
    assert closed.read_text() == "closed"  # the session ended with the run


def test_a_fingerprint_of_the_written_artifact(tmp_path: Path) -> None:
    config = make_config(tmp_path, dumps={"notes": [sys.executable, "-c", "print('copy')"]})
    data = json.loads(config.read_text())
    data["databases"][0].update(
        fingerprint_argv=[sys.executable, "-c", "import json, sys; print(json.dumps({'of': open(sys.argv[1]).read()}))", "/ART"],
        artifact_placeholder="/ART",
    )
    config.write_text(json.dumps(data))
    assert run(config, "run").returncode == 0
    [directory] = backups(tmp_path)
    assert json.loads((directory / "manifest.json").read_text())["databases"][0]["fingerprint"] == {"of": "copy\n"}


def test_verify_names_the_corrupted_artifact(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert run(config, "run").returncode == 0
    [directory] = backups(tmp_path)
    target = directory / "pg.dump"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01  # one flipped bit, same size
    target.write_bytes(bytes(data))
    local = manifest_mod.verify_local(directory)
    assert not local.ok and len(local.problems) == 1 and local.problems[0].startswith("pg.dump: sha256")
    res = run(config, "verify")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert out["id"] == directory.name and not out["ok"]
    assert [a["file"] for a in out["artifacts"] if not a["ok"]] == ["pg.dump"]
    verified = json.loads((tmp_path / "state" / "verified.json").read_text())
    assert verified[directory.name]["ok"] is False


def test_verify_reports_a_missing_artifact(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert run(config, "run").returncode == 0
    [directory] = backups(tmp_path)
    (directory / "app-files.tar.gz").unlink()
    assert manifest_mod.verify_local(directory).problems == ("app-files.tar.gz: missing",)


def test_a_failing_dump_fails_the_run_names_the_step_and_leaves_no_backup(tmp_path: Path) -> None:
    config = make_config(tmp_path, dumps={"pg": [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]})
    res = run(config, "run")
    assert res.returncode == 1
    assert "step dump pg" in res.stderr and "boom" in res.stderr
    assert backups(tmp_path) == []  # neither a backup nor its temp directory
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["ok"] is False and last["step"] == "dump pg"


def test_parallel_steps_keep_the_manifest_order_and_report_every_failure(tmp_path: Path) -> None:
    sleepy = [sys.executable, "-c", "import time; time.sleep(1); print('x')"]
    failing = [sys.executable, "-c", "import sys; sys.exit(4)"]
    config = make_config(tmp_path, dumps={"a": sleepy, "b": sleepy, "c": sleepy})
    data = json.loads(config.read_text())
    data["parallel"] = 3
    config.write_text(json.dumps(data))
    started = time.monotonic()
    assert run(config, "run").returncode == 0
    assert time.monotonic() - started < 2.8  # three 1-second dumps at once
    [directory] = backups(tmp_path)
    assert [d["name"] for d in json.loads((directory / "manifest.json").read_text())["databases"]] == ["a", "b", "c"]
    data["databases"][0]["argv"] = failing
    data["databases"][2]["argv"] = failing
    config.write_text(json.dumps(data))
    res = run(config, "run")
    assert res.returncode == 1 and "dump a, dump c" in res.stderr
    assert len(backups(tmp_path)) == 1


def test_a_second_concurrent_run_exits_75_at_once_and_makes_nothing(tmp_path: Path) -> None:
    slow = [sys.executable, "-c", "import sys,time; time.sleep(2); sys.stdout.write('x')"]
    config = make_config(tmp_path, dumps={"pg": slow})
    first = subprocess.Popen([sys.executable, str(RUNNER), "--config", str(config), "run"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not list((tmp_path / "backups").glob(".tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    second = run(config, "run")
    assert time.monotonic() - started < 1.5
    assert second.returncode == runner.EX_ALREADY_RUNNING
    assert "already running" in second.stderr
    assert first.wait(30) == 0
    assert len(backups(tmp_path)) == 1
    assert len(json.loads((tmp_path / "state" / "status.json").read_text())["runs"]) == 1


def test_retention_removes_old_backups_after_a_good_run(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    root = tmp_path / "backups"
    for old in ("20200101T000000Z", "20200102T000000Z"):
        (root / old).mkdir(parents=True)
        (root / old / "manifest.json").write_text("{}")
    (root / "not-a-backup").mkdir()
    assert run(config, "run").returncode == 0
    names = [p.name for p in backups(tmp_path)]
    assert "20200101T000000Z" not in names and "20200102T000000Z" not in names
    assert "not-a-backup" in names and len(names) == 2


def test_list_shows_local_backups_with_their_verification(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert run(config, "run").returncode == 0
    assert run(config, "verify").returncode == 0
    out = json.loads(run(config, "list").stdout)
    assert out["offsite"] is None
    [entry] = out["local"]
    assert entry["verified"]["ok"] is True and entry["size"] > 0


def test_parse_rejects_other_formats() -> None:
    with pytest.raises(manifest_mod.ManifestError):
        manifest_mod.parse('{"format": 9}')
    with pytest.raises(manifest_mod.ManifestError):
        manifest_mod.parse("not json")


# A stand-in server: the "scratch database" is a file; restore copies the dump into it.
SCRATCH = """
import json, os, sys
action, db = sys.argv[1], sys.argv[2]
if action == "drop":
    open(db + ".log", "a").write("drop\\n")
    if os.path.exists(db):
        os.remove(db)
elif action == "create":
    open(db + ".log", "a").write("create\\n")
    open(db, "x").close()
elif action == "stream":  # the restore reading the dump on stdin, as it is written
    open(db + ".log", "a").write("stream\\n")
    data = sys.stdin.buffer.read()
    if os.environ.get("STREAM_FAIL"):
        sys.exit("restore broke")
    open(db, "wb").write(data)
elif action == "fingerprint":
    print(json.dumps({"tables": {"t": {"rows": 1, "checksum": open(db).read().strip()}}, "taken_at": "later"}))
"""


def scratch_config(tmp_path: Path, dump: list[str]) -> tuple[Path, Path]:
    config = make_config(tmp_path, dumps={"stats": dump})
    db = tmp_path / "scratch"
    fake = [sys.executable, "-c", SCRATCH]
    data = json.loads(config.read_text())
    data["databases"][0].update(
        scratch_restore={"database": "stats_relaunch_fp", "drop_argv": [*fake, "drop", str(db)],
                         "create_argv": [*fake, "create", str(db)], "stream_argv": [*fake, "stream", str(db)],
                         "fingerprint_argv": [*fake, "fingerprint", str(db)]},
        fingerprint_method="scratch-restore",
    )
    config.write_text(json.dumps(data))
    return config, db


def test_the_scratch_restore_reads_the_dump_while_it_is_written_not_after(tmp_path: Path) -> None:
    # The dump writes half, then waits until the restore has begun (it logs "stream"): with the
    # restore started only after the dump, this dump would wait its whole 20 s and the run fail.
    log = tmp_path / "scratch.log"
    dump = [sys.executable, "-c", (
        "import sys, time, pathlib\n"
        "sys.stdout.write('dumped '); sys.stdout.flush()\n"
        f"log = pathlib.Path({str(log)!r}); deadline = time.monotonic() + 20\n"
        "while 'stream' not in (log.read_text() if log.exists() else ''):\n"
        "    if time.monotonic() > deadline: sys.exit('the restore never started')\n"
        "    time.sleep(0.05)\n"
        "print('rows')\n")]
    config, db = scratch_config(tmp_path, dump)
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint"]["tables"] == {"t": {"rows": 1, "checksum": "dumped rows"}}  # of the dump itself
    assert (directory / "stats.dump").read_text() == "dumped rows\n"
    assert entry["fingerprint"]["taken_at"] == entry["snapshot_at"]
    assert entry["fingerprint_method"] == "scratch-restore" and entry["fingerprint_seconds"] >= 0
    assert entry["fingerprint_scratch_database"] == "stats_relaunch_fp"
    assert not db.exists()
    assert log.read_text().split() == ["drop", "create", "stream", "drop"]


def test_a_streamed_scratch_restore_that_fails_fails_the_backup_and_still_drops_the_scratch_database(
        tmp_path: Path) -> None:
    config, db = scratch_config(tmp_path, [sys.executable, "-c", "print('dumped rows' * 100000)"])
    res = run(config, "run", env={**os.environ, "STREAM_FAIL": "1"})
    assert res.returncode == 1
    assert "fingerprint stats (restore into scratch database)" in res.stderr and "restore broke" in res.stderr
    assert not db.exists() and not backups(tmp_path)
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "stream", "drop"]


# A stand-in MariaDB session for the pause: it logs each statement, lists the tables it is
# given (argv[2], JSON) and answers "listed:"/"locked:"; UNLOCK TABLES touches the file argv[3].
PAUSE_SESSION = """
import json, os, pathlib, sys
log, tables, unlocked = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), pathlib.Path(sys.argv[3])
for line in sys.stdin:
    line = line.strip()
    with log.open("a") as fh:
        fh.write(line + "\\n")
    if line.startswith("LOCK TABLES") and os.environ.get("LOCK_FAIL"):
        sys.exit("ERROR 1205 (HY000) at line 3: Lock wait timeout exceeded; try restarting transaction")
    if line == "TABLES":
        for t, e in tables:
            print("table:" + json.dumps({"t": t, "e": e}))
        print("listed:", flush=True)
    elif line == "SELECT 'locked:';":
        print("locked:", flush=True)
    elif line == "UNLOCK TABLES;":
        unlocked.touch()
"""

# Waits (at most 20 s) for the file argv[1]; exits 1 if it never comes.
WAIT_FOR = "import os, sys, time\ndeadline = time.monotonic() + 20\nwhile not os.path.exists(sys.argv[1]):\n" \
           "    if time.monotonic() > deadline: sys.exit('never: ' + sys.argv[1])\n    time.sleep(0.02)\n"


def paired_config(tmp_path: Path, tables: list[tuple[str, str]], hold_max_s: int = 30,
                  before_marker_s: float = 0.3) -> tuple[Path, Path, Path]:
    """A MariaDB spec with the pause (stand-ins above) and the scratch way beside it; (config, session log, unlocked)."""
    unlocked, session_log = tmp_path / "unlocked", tmp_path / "session.log"
    # the dump: a header, then a line written inside its transaction; then it waits for the unlock (not its own end)
    dump = [sys.executable, "-c", "import sys, time, subprocess\n"
            f"sys.stdout.write('-- MariaDB dump\\n'); sys.stdout.flush(); time.sleep({before_marker_s})\n"
            "sys.stdout.write('-- Table structure for table `t1`\\n'); sys.stdout.flush()\n"
            f"subprocess.run([sys.executable, '-c', {WAIT_FOR!r}, {str(unlocked)!r}], check=True)\n"
            "print('INSERT INTO t1 VALUES (1);')\n"]
    config, _ = scratch_config(tmp_path, dump)
    data = json.loads(config.read_text())
    fp = [sys.executable, "-c", "import json, subprocess, sys\nprint('snapshot:2026-11-29T06:00:00+00:00', flush=True)\n"
          f"subprocess.run([sys.executable, '-c', {WAIT_FOR!r}, {str(unlocked)!r}], check=True)\n"
          "print(json.dumps({'tables': {'t1': {'rows': 1, 'checksum': 'c'}}, 'taken_at': None}))\n"]
    data["databases"][0].update(fingerprint_method="paired-snapshot", paired={
        "database": "stats", "session_argv": [sys.executable, "-c", PAUSE_SESSION, str(session_log), json.dumps(tables),
                                              str(unlocked)],
        "tables_sql": "TABLES\n", "fingerprint_argv": fp, "lock_wait_s": 5, "hold_max_s": hold_max_s,
        "dump_markers": ["-- Table structure for table "]})
    config.write_text(json.dumps(data))
    return config, session_log, unlocked


def test_the_pause_locks_every_table_and_ends_once_the_dump_shows_its_transaction_not_at_its_end(tmp_path: Path) -> None:
    # The dump and the fingerprint each wait for the unlock: a pause held to the dump's end could not finish.
    config, session_log, _ = paired_config(tmp_path, [("t1", "InnoDB"), ("a`b", "InnoDB")])
    res = run(config, "run")
    assert res.returncode == 0, res.stderr + res.stdout
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint_method"] == "paired-snapshot" and "fingerprint_unpaired" not in entry
    assert entry["fingerprint"]["tables"] == {"t1": {"rows": 1, "checksum": "c"}}
    assert entry["fingerprint"]["taken_at"] == entry["snapshot_at"] == "2026-11-29T06:00:00+00:00"
    assert 0.3 <= entry["writes_paused_s"] < 10
    assert session_log.read_text().splitlines() == [
        "SET SESSION lock_wait_timeout = 5;", "TABLES", "LOCK TABLES `stats`.`t1` READ, `stats`.`a``b` READ;",
        "SELECT 'locked:';", "UNLOCK TABLES;"]
    assert "writes to stats paused for" in res.stdout
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "scratch.log").exists()  # the scratch way unused


def test_a_table_not_innodb_sends_the_fingerprint_the_scratch_way_without_a_lock(tmp_path: Path) -> None:
    config, session_log, unlocked = paired_config(tmp_path, [("t1", "InnoDB"), ("old", "MyISAM")])
    unlocked.touch()  # nothing would unlock: the stand-in dump may go on
    res = run(config, "run")
    assert res.returncode == 0, res.stderr + res.stdout
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint_method"] == "scratch-restore" and "writes_paused_s" not in entry
    assert "old (MyISAM)" in entry["fingerprint_unpaired"]
    assert entry["fingerprint"]["tables"]["t"]["checksum"].startswith("-- MariaDB dump")  # the scratch stand-in's
    assert not any(line.startswith("LOCK TABLES") for line in session_log.read_text().splitlines())
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "stream", "drop"]


def test_a_lock_not_had_in_time_sends_the_fingerprint_the_scratch_way(tmp_path: Path) -> None:
    config, session_log, unlocked = paired_config(tmp_path, [("t1", "InnoDB")])
    unlocked.touch()  # the session dies before any unlock: the stand-in dump may go on
    res = run(config, "run", env={**os.environ, "LOCK_FAIL": "1"})
    assert res.returncode == 0, res.stderr + res.stdout
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint_method"] == "scratch-restore" and "writes_paused_s" not in entry
    assert "locking 1 tables" in entry["fingerprint_unpaired"] and "ERROR 1205" in entry["fingerprint_unpaired"]
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "stream", "drop"]


def test_a_pause_that_reaches_its_bound_resumes_writes_and_fingerprints_the_written_dump_the_scratch_way(
        tmp_path: Path) -> None:
    config, session_log, _ = paired_config(tmp_path, [("t1", "InnoDB")], hold_max_s=1, before_marker_s=3)
    res = run(config, "run")
    assert res.returncode == 0, res.stderr + res.stdout
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint_method"] == "scratch-restore" and "writes_paused_s" not in entry
    assert entry["fingerprint_unpaired"].startswith("writes resumed after 1 s")
    assert entry["fingerprint"]["tables"]["t"]["checksum"] == (directory / "stats.dump").read_text().strip()
    assert session_log.read_text().splitlines()[-1] == "UNLOCK TABLES;"
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "stream", "drop"]
    assert "writes resumed" in res.stdout


def test_the_snapshot_fingerprint_runs_beside_the_dump(tmp_path: Path) -> None:
    # Each waits (at most 20 s) for the other to have started: run one after the other, they cannot both finish.
    marks = tmp_path / "marks"
    marks.mkdir()
    def waiter(me: str, other: str, output: str) -> list[str]:
        return [sys.executable, "-c", (
            "import sys, time, pathlib\n"
            f"d = pathlib.Path({str(marks)!r}); (d / {me!r}).touch(); deadline = time.monotonic() + 20\n"
            f"while not (d / {other!r}).exists():\n"
            "    if time.monotonic() > deadline: sys.exit('alone')\n"
            "    time.sleep(0.05)\n"
            f"sys.stdout.write({output!r})\n")]
    session = [sys.executable, "-c", "import sys; sys.stdin.readline(); print('snap:S1 2026-11-28T00:00:00+00:00', "
               "flush=True); sys.stdin.read()"]
    config = make_config(tmp_path, dumps={"pg": waiter("dump", "fp", "PGDMP")})
    data = json.loads(config.read_text())
    data["databases"][0].update(fingerprint_argv=waiter("fp", "dump", '{"tables": {}}'), snapshot={
        "session_argv": session, "send": "BEGIN;\n", "expect": "snap:", "placeholder": "@SNAP@"})
    config.write_text(json.dumps(data))
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint"] == {"tables": {}, "taken_at": "2026-11-28T00:00:00+00:00"}


def test_a_sqlite_copy_is_fingerprinted_without_leaving_wal_or_shm_beside_it(tmp_path: Path) -> None:
    import sqlite3

    from relaunch.databases import sqlite as sqlite_engine
    from relaunch.inventory.model import Database

    live = tmp_path / "notes.db"
    con = sqlite3.connect(live)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(50)])
    con.commit()  # left open: the live database keeps its WAL, as under a running app
    db = Database(name="notes", engine="sqlite", path=str(live))
    config = make_config(tmp_path, dumps={"notes": list(sqlite_engine.dump_command(db).argv)})
    data = json.loads(config.read_text())
    fp_argv = [a if a != str(live) else "/ART" for a in sqlite_engine.fingerprint_command(db).argv]
    data["databases"][0].update(fingerprint_argv=fp_argv, artifact_placeholder="/ART", engine="sqlite",
                                file="notes.sqlite3")
    config.write_text(json.dumps(data))
    done = run(config, "run")
    con.close()
    assert done.returncode == 0, done.stderr
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint"]["tables"]["notes"]["rows"] == 50
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith("notes")) == ["notes.sqlite3"]


# --- a stand-in restic: snapshots in a JSON file, every call logged ----------------------

FAKE_RESTIC = r'''#!PYTHON
import hashlib, json, os, sys, time
state_path = os.environ["FAKE_RESTIC_STATE"]
state = json.load(open(state_path)) if os.path.exists(state_path) else {"snapshots": [], "calls": []}
args = sys.argv[1:]
i = args.index("-r") + 2
while i < len(args) and args[i] == "-o":
    i += 2
cmd, rest = args[i], args[i + 1:]
state["calls"].append([cmd, *rest])
def save():
    json.dump(state, open(state_path + ".tmp", "w"))
    os.replace(state_path + ".tmp", state_path)
save()
if os.environ.get("FAKE_RESTIC_SLEEP") and cmd == os.environ.get("FAKE_RESTIC_SLEEP_ON", cmd):
    time.sleep(float(os.environ["FAKE_RESTIC_SLEEP"]))
if os.path.exists(state_path + ".down") and cmd != "cat":
    sys.exit("Fatal: unable to open repository: ssh: connect to host backup: Connection refused")
def opt(name):
    return [rest[j + 1] for j, a in enumerate(rest) if a == name]
if cmd == "snapshots":
    hosts, tagsets = opt("--host"), [t.split(",") for t in opt("--tag")]
    out = [s for s in state["snapshots"] if (not hosts or s["hostname"] in hosts)
           and (not tagsets or any(all(t in s["tags"] for t in ts) for ts in tagsets))]
    print(json.dumps(out))
elif cmd == "backup":
    path = rest[-1]
    n = len(state["snapshots"]) + len(state["calls"])
    sid = hashlib.sha256(f"{path}{n}{time.time()}".encode()).hexdigest()
    state["snapshots"].append({"id": sid, "short_id": sid[:8], "hostname": opt("--host")[0], "tags": opt("--tag"),
                               "paths": [os.path.join(os.getcwd(), path)], "time": "2026-11-26T08:00:00Z"})
    save()
    print(json.dumps({"message_type": "summary", "snapshot_id": sid[:8], "data_added": 100, "total_bytes_processed": 1000}))
elif cmd == "forget":
    ids = [a for a in rest if not a.startswith("-")]
    state["snapshots"] = [s for s in state["snapshots"] if s["id"] not in ids and s["short_id"] not in ids]
    save()
elif cmd == "cat":
    sys.exit(0 if state.get("initialized") else 1)
elif cmd == "init":
    state["initialized"] = True
    save()
'''


def fake_restic(tmp_path: Path) -> tuple[dict, dict[str, str], Path]:
    """(the offsite config section, the runner's environment, the state file) for a stand-in restic on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "restic"
    script.write_text(FAKE_RESTIC.replace("PYTHON", sys.executable))
    script.chmod(0o755)
    password = tmp_path / "restic.password"
    password.write_text("pw\n")
    state = tmp_path / "restic-state.json"
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_RESTIC_STATE": str(state)}
    offsite = {"repository": "sftp:restic@store:/srv/restic/shared", "password_file": str(password),
               "cache_dir": str(tmp_path / "cache"), "options": []}
    return offsite, env, state


def restic_state(state: Path) -> dict:
    return json.loads(state.read_text()) if state.exists() else {"snapshots": [], "calls": []}


def old_backup(root: Path, minutes_ago: float) -> str:
    name = (runner.now_utc() - runner.dt.timedelta(minutes=minutes_ago)).strftime(runner.ID_FORMAT)
    (root / name).mkdir(parents=True)
    (root / name / "manifest.json").write_text("{}")
    return name


def test_local_keep_last_caps_only_the_host_copies_that_are_off_host(tmp_path: Path) -> None:
    offsite, env, _ = fake_restic(tmp_path)
    config = make_config(tmp_path, offsite=offsite, local_keep_last=2)
    root = tmp_path / "backups"
    olds = [old_backup(root, m) for m in (30, 20, 10)]  # all within keep_within_hours: the policy alone would keep them
    res = run(config, "run", env=env)
    assert res.returncode == 0, res.stderr
    names = [p.name for p in backups(tmp_path)]
    assert len(names) == 2 and names[0] == olds[-1]  # the three old ones went off-host first, then the cap applied


def test_an_off_host_outage_keeps_every_backup_and_the_next_run_uploads_them_oldest_first(tmp_path: Path) -> None:
    offsite, env, state = fake_restic(tmp_path)
    config = make_config(tmp_path, offsite=offsite, local_keep_last=2)
    Path(f"{state}.down").touch()
    for _ in range(4):
        res = run(config, "run", env=env)
        assert res.returncode == 1 and "offsite snapshots" in res.stderr and "Connection refused" in res.stderr
        time.sleep(1.05)  # one backup ID per second
    made = [p.name for p in backups(tmp_path)]
    assert len(made) == 4  # not trimmed to 2: none of them is off-host
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["local_ok"] and not last["ok"] and last["step"] == "offsite snapshots"
    assert last["local"]["not_offsite"] == made and last["local"]["floor_bytes"] > 0 and last["local"]["free_bytes"] > 0
    Path(f"{state}.down").unlink()
    res = run(config, "run", env=env)
    assert res.returncode == 0, res.stderr
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    uploaded = [u["id"] for u in status["runs"][-1]["offsite"]["uploaded"]]
    assert uploaded == sorted(uploaded) and uploaded[:4] == made and len(uploaded) == 5  # oldest first, then the new one
    assert [c[-1] for c in restic_state(state)["calls"] if c[0] == "backup"] == uploaded
    assert len(backups(tmp_path)) == 2  # off-host now: the cap applies
    res = run(config, "run", env=env)  # nothing is uploaded twice
    assert [u["id"] for u in json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]["offsite"]["uploaded"]] \
        == [backups(tmp_path)[-1].name]


def test_below_the_free_space_floor_backups_not_off_host_go_oldest_first_and_the_status_says_so(tmp_path: Path) -> None:
    offsite, env, state = fake_restic(tmp_path)
    config = make_config(tmp_path, offsite=offsite, local_keep_last=2, min_free_bytes=10**18)
    Path(f"{state}.down").touch()
    root = tmp_path / "backups"
    olds = [old_backup(root, m) for m in (30, 20)]
    assert run(config, "run", env=env).returncode == 1
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["local"]["floor_bytes"] == 10**18 and last["local"]["removed_below_floor"] == olds
    assert [p.name for p in backups(tmp_path)] == [last["id"]]  # never the newest


def test_offsite_queries_are_scoped_to_the_site_and_the_host_never_forgets_or_prunes(tmp_path: Path) -> None:
    """The host's store key is append-only: retention off-host is the operator's (relaunch.backup.prune).

    The run still says what the policy would forget there, counting this site's snapshots only.
    """
    offsite, env, state = fake_restic(tmp_path)
    other = [{"id": f"{n:064x}", "short_id": f"{n:08x}", "hostname": "other", "tags": ["relaunch", "site:other", bid],
              "paths": ["/x"], "time": "2020-01-01T00:00:00Z"} for n, bid in ((1, "20200101T000000Z"), (2, "20200102T000000Z"))]
    mislabelled = {"id": f"{3:064x}", "short_id": f"{3:08x}", "hostname": "unit", "tags": ["relaunch", "site:other", "20200103T000000Z"],
                   "paths": ["/x"], "time": "2020-01-03T00:00:00Z"}
    legacy = {"id": f"{4:064x}", "short_id": f"{4:08x}", "hostname": "unit", "tags": ["relaunch", "20200104T000000Z"],
              "paths": ["/x"], "time": "2020-01-04T00:00:00Z"}
    state.write_text(json.dumps({"snapshots": [*other, mislabelled, legacy], "calls": []}))
    config = make_config(tmp_path, offsite={**offsite, "append_only": True}, local_keep_last=4)
    for _ in range(2):
        res = run(config, "run", env=env)
        assert res.returncode == 0, res.stderr
        time.sleep(1.05)
    st = restic_state(state)
    assert {s["id"] for s in [*other, mislabelled, legacy]} <= {s["id"] for s in st["snapshots"]}  # nothing forgotten
    assert not [c for c in st["calls"] if c[0] in ("forget", "prune")], st["calls"]
    for call in st["calls"]:
        if call[0] == "snapshots":
            assert call[call.index("--host") + 1] == "unit", call
        if call[0] == "backup":
            assert call[call.index("--host") + 1] == "unit" and "site:unit" in call, call
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    retention = status["runs"][-1]["offsite"]["retention"]
    # this site's: the legacy snapshot (years old: the policy drops it) and the two just made (kept)
    assert (retention["snapshots"], retention["would_forget"], retention["would_keep"]) == (3, 1, 2), retention
    assert retention["append_only"] is True and "fab backup --prune" in retention["by"]
    assert "prune" not in status
    listed = json.loads(run(config, "list", env=env).stdout)["offsite"]
    assert [s["id"] for s in listed][-2:] == [r["id"] for r in status["runs"]]


def test_a_run_lists_the_store_once_and_counts_what_it_uploaded_in_the_retention_preview(tmp_path: Path) -> None:
    """Each restic call opens the repository anew (key derivation, an ssh session): the run lists the site's
    snapshots once, and its retention preview is that listing plus the snapshots it uploaded."""
    offsite, env, state = fake_restic(tmp_path)
    config = make_config(tmp_path, offsite=offsite, local_keep_last=4)
    root = tmp_path / "backups"
    old = old_backup(root, 60 * 24 * 400)  # not off-host yet: uploaded by this run too; the policy drops it
    res = run(config, "run", env=env)
    assert res.returncode == 0, res.stderr
    calls = [c[0] for c in restic_state(state)["calls"]]
    assert calls.count("snapshots") == 1 and calls.count("backup") == 2, calls
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert [u["id"] for u in last["offsite"]["uploaded"]] == [old, last["id"]]
    retention = last["offsite"]["retention"]
    assert (retention["snapshots"], retention["would_keep"], retention["would_forget"]) == (2, 1, 1), retention


# --- subprocesses: stderr drained, deadlines, SIGTERM, a status entry however a run ends ---


def test_a_dump_that_fills_the_stderr_pipe_does_not_block_the_run(tmp_path: Path) -> None:
    chatty = [sys.executable, "-c", "import sys; sys.stderr.write('w' * (1 << 20)); sys.stderr.flush(); sys.stdout.write('x' * 70000)"]
    config = make_config(tmp_path, dumps={"pg": chatty})
    res = run(config, "run", timeout=30)
    assert res.returncode == 0, res.stderr[-500:]
    [directory] = backups(tmp_path)
    assert (directory / "pg.dump").stat().st_size == 70000


@pytest.mark.parametrize("where", ["dump", "fingerprint", "restic"])
def test_every_subprocess_has_a_deadline(tmp_path: Path, where: str) -> None:
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    offsite, env, _ = fake_restic(tmp_path)
    if where == "restic":
        env = {**env, "FAKE_RESTIC_SLEEP": "60", "FAKE_RESTIC_SLEEP_ON": "snapshots"}
    config = make_config(tmp_path, dumps={"pg": hang if where == "dump" else [sys.executable, "-c", "print('x')"]},
                         offsite=offsite, timeouts={"dump": 2, "command": 2, "restic": 2})
    if where == "fingerprint":
        data = json.loads(config.read_text())
        data["databases"][0].update(fingerprint_argv=[*hang, "/ART"], artifact_placeholder="/ART")
        config.write_text(json.dumps(data))
    started = time.monotonic()
    res = run(config, "run", env=env, timeout=40)
    assert time.monotonic() - started < 20
    assert res.returncode == 1
    assert "did not finish within 2 s" in res.stderr
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["step"] == {"dump": "dump pg", "fingerprint": "fingerprint pg", "restic": "offsite snapshots"}[where]


def _start_slow_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    pidfile = tmp_path / "dump.pid"
    slow = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)", str(pidfile)]
    config = make_config(tmp_path, dumps={"pg": slow})
    proc = subprocess.Popen([sys.executable, str(RUNNER), "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # SIGABRT prints every thread's stack
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, pidfile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ")[1][0] != "Z"


def test_sigterm_stops_the_children_and_the_run_still_records_its_end(tmp_path: Path) -> None:
    proc, pidfile = _start_slow_run(tmp_path)
    dump_pid = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)  # seconds on a loaded machine; a run that hangs is shown where it hangs
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the runner did not end within 60 s of SIGTERM; its threads:\n{err[-8000:]}")
    finally:
        proc.kill()
    assert code != 0
    deadline = time.monotonic() + 5
    while _alive(dump_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(dump_pid)  # the dump was stopped with the run
    assert backups(tmp_path) == []
    [entry] = json.loads((tmp_path / "state" / "status.json").read_text())["runs"]
    assert entry["ok"] is False and entry["state"] == "finished" and entry["step"] == "stopped"
    assert "SIGTERM" in entry["error"] and entry["finished_at"]


def test_a_killed_run_leaves_an_entry_that_the_next_run_marks_killed(tmp_path: Path) -> None:
    proc, pidfile = _start_slow_run(tmp_path)
    proc.kill()  # SIGKILL: nothing of the run can react
    proc.wait(10)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # its dump, in a process group of its own
    [entry] = json.loads((tmp_path / "state" / "status.json").read_text())["runs"]
    assert entry["state"] == "running" and entry["ok"] is False
    config = tmp_path / "backup.json"
    data = json.loads(config.read_text())
    data["databases"][0]["argv"] = [sys.executable, "-c", "print('x')"]
    config.write_text(json.dumps(data))
    assert run(config, "run").returncode == 0
    killed, good = json.loads((tmp_path / "state" / "status.json").read_text())["runs"]
    assert killed["state"] == "killed" and killed["ok"] is False and "without recording its end" in killed["error"]
    assert good["ok"] and good["state"] == "finished"


def test_status_verified_and_backup_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    old = os.umask(0o022)
    try:
        assert run(config, "run").returncode == 0
        assert run(config, "verify").returncode == 0
    finally:
        os.umask(old)
    state = tmp_path / "state"
    for path in (state / "status.json", state / "verified.json", *backups(tmp_path)[0].iterdir()):
        assert path.stat().st_mode & 0o777 == 0o600, path


# --- temporary files never in an archived tree -----------------------------------------


def test_the_sqlite_dump_writes_its_copy_in_the_work_dir_never_beside_the_database(tmp_path: Path) -> None:
    import sqlite3

    from relaunch.databases import sqlite as sqlite_engine
    from relaunch.inventory.model import Database

    tree = tmp_path / "srv" / "notes"
    tree.mkdir(parents=True)
    live = tree / "notes.db"
    con = sqlite3.connect(live)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    con.commit()
    con.close()
    db = Database(name="notes", engine="sqlite", path=str(live))
    work = tmp_path / "work"
    argv = [*sqlite_engine.dump_command(db).argv, "keep"]  # keep: the copy stays and its path is printed
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ, runner.WORK_DIR_ENV: str(work)})
    assert out.returncode == 0, out.stderr
    copy = Path(out.stdout.split("snap:", 1)[1].split("\t")[0])
    assert copy.parent == work and copy.is_file()
    assert sorted(p.name for p in tree.iterdir()) == ["notes.db"]


def test_the_runner_gives_its_children_a_work_dir_under_the_backup_root(tmp_path: Path) -> None:
    probe = [sys.executable, "-c", "import os; print(os.environ['RELAUNCH_WORK_DIR'], os.path.isdir(os.environ['RELAUNCH_WORK_DIR']))"]
    config = make_config(tmp_path, dumps={"pg": probe})
    assert run(config, "run").returncode == 0
    [directory] = backups(tmp_path)
    assert (directory / "pg.dump").read_text() == f"{tmp_path / 'backups' / runner.WORK_DIR_NAME} True\n"
    assert not (tmp_path / "backups" / runner.WORK_DIR_NAME).exists()  # emptied after the run


def test_the_archive_leaves_out_temporary_files_relaunch_left_in_a_tree(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    files = tmp_path / "srv" / "app"
    (files / ".live.db.relaunch-k2j3h4").write_bytes(b"partial copy")  # a SQLite copy or restore a killed command left
    (files / "sub" / "settings.env.relaunch-new").write_text("half uploaded")  # relaunch.upload's temp name
    (files / ".hidden-but-the-app's").write_text("kept")
    assert run(config, "run").returncode == 0, "run"
    [directory] = backups(tmp_path)
    with tarfile.open(directory / "app-files.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if "relaunch-" in n]
    assert any(n.endswith(".hidden-but-the-app's") for n in names)
    entry = manifest_mod.parse((directory / "manifest.json").read_text()).archive("app").extra
    assert len(entry["excluded_temporary"]) == 2


# --- what a deploy needs: the images by digest ------------------------------------------

FAKE_DOCKER = r'''#!PYTHON
import json, sys
args = sys.argv[1:]
containers = {
    "c1": {"Config": {"Image": "registry:5000/example/blog@sha256:" + "a" * 64,
                      "Labels": {"com.docker.compose.project": "blog", "com.docker.compose.service": "web"}}, "Image": "sha256:" + "1" * 64},
    "c2": {"Config": {"Image": "registry:5000/example/postgres:15",
                      "Labels": {"com.docker.compose.project": "blog", "com.docker.compose.service": "db"}}, "Image": "sha256:" + "2" * 64},
    "c3": {"Config": {"Image": "local/thing:dev",
                      "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "app"}}, "Image": "sha256:" + "3" * 64},
}
if args[0] == "ps":
    project = args[args.index("--filter") + 1].split("=", 2)[2]
    print("\n".join(k for k, c in containers.items() if c["Config"]["Labels"]["com.docker.compose.project"] == project))
elif args[0] == "inspect":
    print(json.dumps([containers[k] for k in args[1:]]))
elif args[:2] == ["image", "inspect"]:
    image = args[-1]
    print(json.dumps({"sha256:" + "2" * 64: ["registry:5000/example/postgres@sha256:" + "b" * 64]}.get(image, [])))
'''


def test_the_manifest_records_the_image_digest_of_every_compose_service(tmp_path: Path) -> None:
    bindir = tmp_path / "dockerbin"
    bindir.mkdir()
    (bindir / "docker").write_text(FAKE_DOCKER.replace("PYTHON", sys.executable))
    (bindir / "docker").chmod(0o755)
    config = make_config(tmp_path, compose_apps=[{"app": "blog", "services": ["db", "web"]},
                                                 {"app": "shop", "services": ["app"]}, {"app": "gone", "services": ["x"]}])
    res = run(config, "run", env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    m = manifest_mod.parse((directory / "manifest.json").read_text())
    assert m.images == {"blog": {"web": "registry:5000/example/blog@sha256:" + "a" * 64,
                                 "db": "registry:5000/example/postgres@sha256:" + "b" * 64}}
    problems = m.raw["deploy"]["problems"]
    assert any(p.startswith("shop/app: image local/thing:dev is known by no digest") for p in problems)
    assert any(p.startswith("gone: no container of compose project gone") for p in problems)
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert len(last["warnings"]) == 2


def test_a_manifest_without_deploy_parses_with_no_images(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert run(config, "run").returncode == 0
    [directory] = backups(tmp_path)
    raw = json.loads((directory / "manifest.json").read_text())
    assert raw["deploy"] == {"images": {}}
    del raw["deploy"]
    assert manifest_mod.parse(json.dumps(raw)).images == {}


def test_a_corrupt_status_file_is_moved_aside_and_the_run_still_records_itself(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    status = tmp_path / "state" / "status.json"
    status.parent.mkdir()
    status.write_text('{"runs": [')  # a write cut short
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    assert "moved to" in res.stderr and (tmp_path / "state" / "status.json.corrupt").exists()
    assert json.loads(status.read_text())["runs"][-1]["ok"] is True
