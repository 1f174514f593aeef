"""The host's backup runner, run here on temp directories: manifest, atomic directories, lock, verify, retention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from relaunch.backup import manifest as manifest_mod
from relaunch.backup import runner

RUNNER = Path(runner.__file__)


def make_config(tmp_path: Path, *, dumps: dict[str, list[str]] | None = None, offsite: dict | None = None) -> Path:
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
    }
    path = tmp_path / "backup.json"
    path.write_text(json.dumps(config))
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), "--config", str(config), *args], capture_output=True, text=True, timeout=60)


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


def test_local_keep_last_caps_the_host_copies(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    data = json.loads(config.read_text())
    data["local_keep_last"] = 2
    config.write_text(json.dumps(data))
    root = tmp_path / "backups"
    recent = runner.now_utc()
    for minutes in (30, 20, 10):  # all within keep_within_hours: the policy alone would keep them
        name = (recent - runner.dt.timedelta(minutes=minutes)).strftime(runner.ID_FORMAT)
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text("{}")
    assert run(config, "run").returncode == 0
    names = [p.name for p in backups(tmp_path)]
    assert len(names) == 2 and names[0] == (recent - runner.dt.timedelta(minutes=10)).strftime(runner.ID_FORMAT)


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
import json, os, shutil, sys
action, db = sys.argv[1], sys.argv[2]
if action == "drop":
    open(db + ".log", "a").write("drop\\n")
    if os.path.exists(db):
        os.remove(db)
elif action == "create":
    open(db + ".log", "a").write("create\\n")
    open(db, "x").close()
elif action == "restore":
    shutil.copyfile(sys.argv[3], db)
elif action == "fingerprint":
    print(json.dumps({"tables": {"t": {"rows": 1, "checksum": open(db).read().strip()}}, "taken_at": "later"}))
elif action == "fail":
    sys.exit("restore broke")
"""


def scratch_config(tmp_path: Path, restore: str = "restore") -> tuple[Path, Path]:
    config = make_config(tmp_path, dumps={"stats": [sys.executable, "-c", "print('dumped rows')"]})
    db = tmp_path / "scratch"
    fake = [sys.executable, "-c", SCRATCH]
    data = json.loads(config.read_text())
    data["databases"][0].update(
        scratch_restore={"database": "stats_relaunch_fp", "drop_argv": [*fake, "drop", str(db)],
                         "create_argv": [*fake, "create", str(db)], "restore_argv": [*fake, restore, str(db), "/ART"],
                         "fingerprint_argv": [*fake, "fingerprint", str(db)]},
        artifact_placeholder="/ART", fingerprint_method="scratch-restore",
    )
    config.write_text(json.dumps(data))
    return config, db


def test_a_fingerprint_by_restoring_the_dump_into_a_scratch_database_dropped_after(tmp_path: Path) -> None:
    config, db = scratch_config(tmp_path)
    res = run(config, "run")
    assert res.returncode == 0, res.stderr
    [directory] = backups(tmp_path)
    entry = json.loads((directory / "manifest.json").read_text())["databases"][0]
    assert entry["fingerprint"]["tables"] == {"t": {"rows": 1, "checksum": "dumped rows"}}  # of the dump itself
    assert entry["fingerprint"]["taken_at"] == entry["snapshot_at"]
    assert entry["fingerprint_method"] == "scratch-restore"
    assert entry["fingerprint_scratch_database"] == "stats_relaunch_fp" and entry["fingerprint_seconds"] >= 0
    assert not db.exists()
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "drop"]


def test_a_failed_scratch_restore_fails_the_backup_and_still_drops_the_scratch_database(tmp_path: Path) -> None:
    config, db = scratch_config(tmp_path, restore="fail")
    res = run(config, "run")
    assert res.returncode == 1
    assert "fingerprint stats (restore into scratch database)" in res.stderr and "restore broke" in res.stderr
    assert not db.exists() and not backups(tmp_path)
    assert (tmp_path / "scratch.log").read_text().split() == ["drop", "create", "drop"]


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
