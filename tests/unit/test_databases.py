"""relaunch.databases: dispatch, commands as data (quoting, no passwords), fingerprints, the SQLite scripts run locally."""

from __future__ import annotations

import hashlib
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from relaunch.databases import ENGINES, Fingerprint, RemoteCommand, TableFingerprint, engine, mariadb, postgresql, sqlite
from relaunch.databases import base, runner
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Database

#: What runs a command in the blog app's db service (a docker exec into its running container).
IN_BLOG_DB = ("sh", "-c", base._EXEC_IN_SERVICE, "sh", "blog", "db")

COMPOSE = ["docker", "compose"]
PASSWORD = "s3cr3t-Pa$$word-'\"-value"


def pg(**kw: object) -> Database:
    base = {"name": "blog", "engine": "postgresql", "runs": {"app": "blog", "service": "db"},
            "database": "blog", "user": "blog", "password": "env:RELAUNCH_TEST_PW"}
    return Database.model_validate({**base, **kw})


def maria(**kw: object) -> Database:
    base = {"name": "stats", "engine": "mariadb", "database": "stats", "user": "stats", "password": "env:RELAUNCH_TEST_PW"}
    return Database.model_validate({**base, **kw})


def lite(path: str = "/srv/notes/notes.db") -> Database:
    return Database.model_validate({"name": "notes", "engine": "sqlite", "path": path})


def every_command(db: Database) -> list[RemoteCommand]:
    eng = engine(db.engine)
    compose = COMPOSE
    return [
        eng.dump_command(db, compose),
        eng.restore_command(db, compose),
        eng.restore_from_file_command(db, compose, "/var/backups/relaunch/x.dump", 2),
        eng.create_command(db, compose),
        eng.drop_command(db, compose),
    ]


ALL_DBS = [pg(), pg(runs="native"), maria(), maria(runs={"app": "blog", "service": "db"}), maria(engine="mysql"), lite()]


# --- dispatch ---------------------------------------------------------------------------


def test_engine_returns_one_module_per_kind_and_mysql_is_served_by_mariadb() -> None:
    assert engine("postgresql") is postgresql
    assert engine("mariadb") is mariadb
    assert engine("mysql") is mariadb
    assert engine("sqlite") is sqlite


def test_engine_fails_loudly_naming_the_kind_and_the_known_ones() -> None:
    with pytest.raises(RelaunchError) as err:
        engine("oracle")
    assert "'oracle'" in str(err.value)
    for kind in ENGINES:
        assert kind in str(err.value)
    with pytest.raises(RelaunchError):
        engine(["postgresql"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(set(ENGINES.values()), key=lambda m: m.__name__))
def test_engine_modules_expose_the_same_functions(kind) -> None:
    for name in ("dump_command", "restore_command", "restore_from_file_command", "create_command",
                 "drop_command", "fingerprint_command", "fingerprint", "snapshot"):
        assert callable(getattr(kind, name)), f"{kind.__name__} lacks {name}"


def test_engine_module_refuses_a_database_of_another_engine() -> None:
    with pytest.raises(RelaunchError, match="is sqlite, not postgresql"):
        postgresql.dump_command(lite(), COMPOSE)
    with pytest.raises(RelaunchError, match="is postgresql, not mariadb or mysql"):
        mariadb.dump_command(pg(), COMPOSE)
    with pytest.raises(RelaunchError, match="not sqlite"):
        sqlite.dump_command(maria())


# --- commands ---------------------------------------------------------------------------


def test_dump_command_postgresql_compose_runs_pg_dump_custom_in_the_service() -> None:
    argv = postgresql.dump_command(pg(), COMPOSE).argv
    assert argv[:6] == IN_BLOG_DB
    assert argv[6:9] == ("pg_dump", "-U", "blog")
    assert "--format=custom" in argv and argv[-2:] == ("-d", "blog")


def test_dump_command_postgresql_snapshot_is_passed_to_pg_dump() -> None:
    assert "--snapshot=00000003-0000004B-1" in postgresql.dump_command(pg(), COMPOSE, snapshot="00000003-0000004B-1").argv


def test_dump_command_compress_sets_pg_dump_s_level_and_is_ignored_where_nothing_compresses() -> None:
    assert not any(a.startswith("--compress") for a in postgresql.dump_command(pg(), COMPOSE).argv)
    assert "--compress=0" in postgresql.dump_command(pg(), COMPOSE, compress=0).argv
    with pytest.raises(RelaunchError, match="0..9"):
        postgresql.dump_command(pg(), COMPOSE, compress=10)
    for kind in ENGINES:  # every engine takes the argument (the live data step passes it to each)
        cmd = engine(kind).dump_command
        assert "compress" in cmd.__code__.co_varnames[: cmd.__code__.co_argcount]


def test_dump_command_postgresql_native_runs_as_the_postgres_user() -> None:
    argv = postgresql.dump_command(pg(runs="native"), None).argv
    assert argv[:5] == ("runuser", "-u", "postgres", "--", "pg_dump")


def test_dump_command_mariadb_native_is_root_over_the_socket_with_the_consistency_options() -> None:
    argv = mariadb.dump_command(maria()).argv
    assert argv[0] == "mariadb-dump" and argv[-1] == "stats"
    for option in ("--single-transaction", "--routines", "--triggers", "--events", "--hex-blob"):
        assert option in argv
    assert not any(a.startswith(("-p", "--password", "-u", "--user")) for a in argv)
    assert mariadb.dump_command(maria(engine="mysql")).argv[0] == "mysqldump"
    restore = mariadb.restore_command(maria(engine="mysql")).argv
    assert restore[:2] == ("python3", "-c") and restore[3] == "mysql" and restore[-1] == "stats"


def test_dump_command_mariadb_compose_logs_in_with_an_option_file_from_the_service_env() -> None:
    cmd = mariadb.dump_command(maria(runs={"app": "blog", "service": "db"}), COMPOSE)
    assert cmd.argv[:6] == IN_BLOG_DB
    script = cmd.argv[8]
    assert cmd.argv[6:8] == ("sh", "-c")
    assert '--defaults-extra-file="$f"' in script and "umask 077" in script and 'rm -f -- "$f"' in script
    assert cmd.argv[9:14] == ("sh", "MARIADB_PASSWORD", "MYSQL_PASSWORD", "stats", "mariadb-dump")
    assert cmd.env == ("MARIADB_PASSWORD", "MYSQL_PASSWORD")
    admin = mariadb.create_command(maria(runs={"app": "blog", "service": "db"}), COMPOSE)
    assert admin.argv[10:13] == ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD", "root")


def test_mariadb_option_file_script_keeps_the_password_off_every_command_line(tmp_path: Path) -> None:
    """Run the wrapper locally with a fake client: it gets the option file, never the password."""
    fake = tmp_path / "client"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "ARG:$a"; done\ncat "${1#--defaults-extra-file=}"\n'
                    'stat -c "MODE:%a" "${1#--defaults-extra-file=}"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["sh", "-c", mariadb._OPTION_FILE, "sh", "MARIADB_PASSWORD", "MYSQL_PASSWORD", "stats", str(fake), "--batch", "stats"],
        env={"PATH": "/usr/bin:/bin", "MYSQL_PASSWORD": PASSWORD}, capture_output=True, text=True, check=True,
    ).stdout
    args = [line[4:] for line in out.splitlines() if line.startswith("ARG:")]
    assert args[0].startswith("--defaults-extra-file=") and args[1:] == ["--batch", "stats"]
    assert not any(PASSWORD in a for a in args)
    assert "MODE:600" in out
    assert 'user="stats"' in out
    assert 'password="s3cr3t-Pa$$word-\'\\"-value"' in out  # the " escaped for the option file
    missing = subprocess.run(["sh", "-c", mariadb._OPTION_FILE, "sh", "A", "B", "stats", str(fake)],
                             env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert missing.returncode == 3 and "neither A nor B is set" in missing.stderr


@pytest.mark.parametrize("db", ALL_DBS, ids=lambda d: f"{d.engine}-{'native' if d.runs == 'native' else 'compose'}")
def test_commands_never_carry_a_password_or_its_reference(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAUNCH_TEST_PW", PASSWORD)
    for cmd in every_command(db):
        line = cmd.shell()
        assert PASSWORD not in line and "RELAUNCH_TEST_PW" not in line
        assert "-p" not in cmd.argv
        assert not any(a.startswith("--password") for a in cmd.argv)
        assert "PGPASSWORD" not in line


@pytest.mark.parametrize("db", ALL_DBS, ids=lambda d: f"{d.engine}-{'native' if d.runs == 'native' else 'compose'}")
def test_commands_are_quoted_so_the_shell_gives_back_the_same_argv(db: Database) -> None:
    odd = {"database": "x; rm -rf / #'\"$(id)", "user": "u `id` $HOME"} if db.engine != "sqlite" else {"path": "/srv/my notes/it's $(id).db"}
    db = db.model_copy(update=odd)
    for cmd in every_command(db):
        assert shlex.split(cmd.shell()) == list(cmd.argv)
        assert str(cmd) == cmd.shell()
        value = odd.get("database") or odd["path"]
        assert any(value in a or a == value.rsplit("/", 1)[0] for a in cmd.argv)  # whole, or its directory


def test_compose_database_without_the_compose_command_is_refused() -> None:
    with pytest.raises(RelaunchError, match="compose command is needed"):
        postgresql.dump_command(pg(), None)
    with pytest.raises(RelaunchError, match="compose command is needed"):
        mariadb.restore_command(maria(runs={"app": "blog", "service": "db"}), [])


def test_remote_command_refuses_an_empty_or_non_string_argv() -> None:
    with pytest.raises(RelaunchError):
        RemoteCommand(())
    with pytest.raises(RelaunchError):
        RemoteCommand(("ls", 3))  # type: ignore[arg-type]


def test_restore_command_postgresql_is_one_transaction_without_owners() -> None:
    argv = postgresql.restore_command(pg(), COMPOSE).argv
    assert argv[6:9] == ("pg_restore", "-U", "blog")
    for option in ("--no-owner", "--exit-on-error", "--single-transaction"):
        assert option in argv
    assert "--role=blog" in postgresql.restore_command(pg(runs="native")).argv


def test_restore_from_file_command_postgresql_is_parallel_from_a_seekable_copy() -> None:
    cmd = postgresql.restore_from_file_command(pg(), COMPOSE, "/var/backups/blog.dump", 4)
    assert cmd.argv[:4] == ("sh", "-c", 'exec "$@" < "$0"', "/var/backups/blog.dump")
    assert "--jobs=4" in cmd.argv and "--single-transaction" not in cmd.argv
    assert 'mktemp' in cmd.argv[cmd.argv.index("db") + 3]
    with pytest.raises(RelaunchError, match="at least 1 job"):
        postgresql.restore_from_file_command(pg(), COMPOSE, "/x", 0)


def test_create_and_drop_commands_postgresql_use_the_superuser_in_compose() -> None:
    assert postgresql.create_command(pg(), COMPOSE).argv[6:] == ("createdb", "-U", "postgres", "--no-password", "-O", "blog", "blog")
    assert postgresql.drop_command(pg(), COMPOSE).argv[-2:] == ("--if-exists", "blog")
    assert mariadb.create_command(maria()).argv[-1] == "CREATE DATABASE `stats` CHARACTER SET utf8mb4"
    assert mariadb.drop_command(maria(database="a`b")).argv[-1] == "DROP DATABASE IF EXISTS `a``b`"


FAKE_CLIENT = r"""
import json, sys
sql = sys.stdin.read()
if "information_schema" in sql:
    for t, c in [("we`ird", "i`d"), ("we`ird", "path"), ("a", "x")]:
        print(json.dumps({"t": t, "c": c}))
else:
    open(sys.argv[1], "w").write(sql)
    print("at:2026-01-01T00:00:00.000000+00:00")
    print("fp:" + json.dumps({"table": "a", "rows": 2, "checksum": "c1"}))
    print("fp:" + json.dumps({"table": "we`ird", "rows": 0, "checksum": "c2"}))
"""


def test_fingerprint_command_mariadb_builds_the_checksum_query_on_the_host(tmp_path: Path) -> None:
    """Run the host-side driver here with a fake client: identifiers quoted, one snapshot, JSON out."""
    db = maria(database="st`ats")
    cmd = mariadb.fingerprint_command(db)
    assert cmd.argv[:2] == ("python3", "-c") and cmd.argv[3:6] == ("mariadb", "mariadb", "st`ats")
    seen = tmp_path / "sql"
    argv = [sys.executable, *cmd.argv[1:7], sys.executable, "-c", FAKE_CLIENT, str(seen)]
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    got = Fingerprint.from_json(out)
    assert got.engine == "mariadb" and got.tables == {"a": TableFingerprint(2, "c1"), "we`ird": TableFingerprint(0, "c2")}
    sql = seen.read_text()
    assert "START TRANSACTION WITH CONSISTENT SNAPSHOT" in sql
    assert "FROM `st``ats`.`we``ird`" in sql and "QUOTE(`i``d`)" in sql
    assert sql.index("'a'") < sql.index("'we`ird'")  # tables in name order
    assert "GROUP_CONCAT" not in sql  # constant memory, no max_allowed_packet cap
    # each row's MD5 once: the derived table is materialised, not merged (sandbox test_databases checks the plan)
    assert sql.index("derived_merge=off") < sql.index("START TRANSACTION")


def test_fingerprint_command_fails_with_the_client_status_and_stderr() -> None:
    cmd = postgresql.fingerprint_command(pg(), COMPOSE)
    argv = [sys.executable, *cmd.argv[1:7], "sh", "-c", "echo 'psql: no such database' >&2; exit 2"]
    run = subprocess.run(argv, capture_output=True, text=True)
    assert run.returncode == 2 and "psql: no such database" in run.stderr


def test_fingerprint_command_postgresql_reads_one_repeatable_read_transaction() -> None:
    cmd = postgresql.fingerprint_command(pg(), COMPOSE, snapshot="00000003-0000004B-1")
    sql = cmd.argv[6]
    assert sql.index("BEGIN ISOLATION LEVEL REPEATABLE READ") < sql.index("SET TRANSACTION SNAPSHOT '00000003-0000004B-1'")
    assert "\\gexec" in sql and "SET TimeZone = 'UTC'" in sql
    assert cmd.argv[7:13] == IN_BLOG_DB
    # the row hashes are sorted bytewise, not in the database's locale (sandbox test_databases: same checksum)
    assert "string_agg(md5(ROW(_relaunch_t.*)::text) COLLATE \"C\", '''' " in sql
    assert "ORDER BY md5(ROW(_relaunch_t.*)::text) COLLATE \"C\")" in sql


def test_postgresql_snapshot_ids_are_checked_before_reaching_sql() -> None:
    assert postgresql._checked_snapshot("00000003-0000004B-1") == "00000003-0000004B-1"
    with pytest.raises(RelaunchError):
        postgresql._checked_snapshot("x'; DROP TABLE posts; --")


# --- fingerprints -----------------------------------------------------------------------


def fp(**tables: tuple[int, str]) -> Fingerprint:
    return Fingerprint({n: TableFingerprint(r, c) for n, (r, c) in tables.items()}, "2026-01-01T00:00:00+00:00", "ok", "sqlite")


def test_fingerprint_json_round_trips() -> None:
    one = fp(notes=(3, "abc"), tags=(0, "def"))
    again = Fingerprint.from_json(one.to_json())
    assert again == one
    assert again.rows == 3


def test_fingerprint_from_json_refuses_what_is_not_one() -> None:
    for text in ("", "[]", '{"tables": {"a": {"rows": "x", "checksum": 1}}, "taken_at": "t"}', '{"tables": {}}'):
        with pytest.raises(RelaunchError, match="not a database fingerprint"):
            Fingerprint.from_json(text)


def test_fingerprint_diff_is_empty_for_the_same_content_taken_at_another_time() -> None:
    a = fp(notes=(3, "abc"))
    b = Fingerprint(a.tables, "2030-01-01T00:00:00+00:00", "ok", "sqlite")
    assert a.diff(b) == []


def test_fingerprint_diff_names_every_difference() -> None:
    expected = fp(notes=(3, "abc"), tags=(2, "t"), gone=(1, "g"))
    got = Fingerprint({"notes": TableFingerprint(4, "zzz"), "tags": TableFingerprint(2, "other"),
                       "extra": TableFingerprint(5, "e")}, "t", "row 3 missing from index", "sqlite")
    assert expected.diff(got) == [
        "table gone: missing (1 rows expected)",
        "table extra: unexpected (5 rows)",
        "table notes: 4 rows, expected 3 (+1)",
        "table tags: same 2 rows but different content (checksum other…, expected t…)",
        "integrity: 'row 3 missing from index', expected 'ok'",
    ]


# --- the SQLite scripts, run here on real files -------------------------------------------


def _python(script: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], input=stdin, capture_output=True)


def _notes_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB, score REAL)")
    con.executemany("INSERT INTO notes (body, data, score) VALUES (?, ?, ?)",
                    [(f"note {i}", bytes([i % 256]) * 10, i / 3) for i in range(500)] + [(None, None, None)])
    con.commit()
    con.close()


def test_sqlite_dump_restore_and_fingerprint_scripts_round_trip(tmp_path: Path) -> None:
    src, dst = tmp_path / "notes.db", tmp_path / "restored" / "notes.db"
    dst.parent.mkdir()
    _notes_db(src)
    live = sqlite3.connect(src)  # an open writer with a pending WAL, as in production
    live.execute("INSERT INTO notes (body) VALUES ('in the wal')")
    live.commit()
    dump = _python(sqlite._BACKUP, str(src))
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.startswith(b"SQLite format 3\x00")
    restored = _python(sqlite._RESTORE, str(dst), stdin=dump.stdout)
    assert restored.returncode == 0, restored.stderr
    before = Fingerprint.from_json(_python(sqlite._FINGERPRINT, str(src)).stdout)
    after = Fingerprint.from_json(_python(sqlite._FINGERPRINT, str(dst)).stdout)
    assert before.tables["notes"].rows == 502
    assert before.integrity == "ok"
    assert before.diff(after) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db", "notes.db-shm", "notes.db-wal", "restored"]
    assert (dst.stat().st_mode & 0o777) == 0o640
    live.execute("UPDATE notes SET body = 'changed' WHERE id = 1")
    live.commit()
    changed = Fingerprint.from_json(_python(sqlite._FINGERPRINT, str(src)).stdout)
    assert before.diff(changed) == ["table notes: same 502 rows but different content "
                                    f"(checksum {changed.tables['notes'].checksum[:12]}…, expected {before.tables['notes'].checksum[:12]}…)"]


def test_sqlite_restore_refuses_garbage_and_leaves_the_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "notes.db"
    _notes_db(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    result = _python(sqlite._RESTORE, str(target), stdin=b"not a database at all" * 100)
    assert result.returncode != 0 and b"not an SQLite database" in result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_sqlite_restore_onto_a_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    """A write that fails (here a file size limit standing in for a full disk) says which file, cleans up."""
    import resource
    import signal

    src, dst = tmp_path / "notes.db", tmp_path / "full dir" / "notes.db"
    dst.parent.mkdir()
    _notes_db(src)
    con = sqlite3.connect(src)
    con.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 1000,)] * 200)
    con.commit()
    con.close()
    dump = _python(sqlite._BACKUP, str(src)).stdout
    assert len(dump) > 64 * 1024

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = subprocess.run([sys.executable, "-c", sqlite._RESTORE, str(dst)], input=dump, capture_output=True,
                            preexec_fn=limit)
    assert result.returncode != 0
    assert f"relaunch: writing {dst} failed: File too large".encode() in result.stderr, result.stderr
    assert list(dst.parent.iterdir()) == []
    assert str(dst) in sqlite.restore_command(Database(name="notes", engine="sqlite", path=str(dst))).description


def test_sqlite_dump_of_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    result = _python(sqlite._BACKUP, str(tmp_path / "nope.db"))
    assert result.returncode != 0 and b"no such database file" in result.stderr


# --- the runner's host-side wrapper, run here ------------------------------------------------


def test_run_to_file_wrapper_writes_0600_hashes_and_renames(tmp_path: Path) -> None:
    out = tmp_path / "x.dump"
    run = subprocess.run(["sh", "-c", runner._TO_FILE, str(out), "printf", "hello"], capture_output=True, text=True, check=True)
    tag, size, digest = run.stdout.split()
    assert (tag, int(size), digest) == ("relaunch-dump", 5, hashlib.sha256(b"hello").hexdigest())
    assert out.read_bytes() == b"hello" and (out.stat().st_mode & 0o777) == 0o600


def test_run_to_file_wrapper_leaves_nothing_when_the_dump_fails(tmp_path: Path) -> None:
    out = tmp_path / "x.dump"
    run = subprocess.run(["sh", "-c", runner._TO_FILE, str(out), "sh", "-c", "echo partial; exit 7"], capture_output=True)
    assert run.returncode == 7
    assert list(tmp_path.iterdir()) == []


# --- MariaDB: fingerprint of a dump through a scratch restore -----------------------------


@pytest.mark.parametrize(("database", "expected"), [
    ("stats", "stats_relaunch_fp"),
    ("my-db", "my_db_" + hashlib.sha256(b"my-db").hexdigest()[:8] + "_relaunch_fp"),
    ("x" * 64, "x" * 43 + "_" + hashlib.sha256(b"x" * 64).hexdigest()[:8] + "_relaunch_fp"),
])
def test_scratch_name_is_safe_and_at_most_64_characters(database: str, expected: str) -> None:
    name = mariadb.scratch_name(maria(database=database))
    assert name == expected and len(name) <= 64
    assert name.replace("_", "").isalnum()


def test_scratch_commands_native_restore_the_dump_into_the_scratch_database_as_root() -> None:
    cmds = mariadb.scratch_commands(maria(), None)
    assert cmds.database == "stats_relaunch_fp"
    assert "DROP DATABASE IF EXISTS `stats_relaunch_fp`" in cmds.drop.argv
    assert "CREATE DATABASE `stats_relaunch_fp` CHARACTER SET utf8mb4" in cmds.create.argv
    assert cmds.restore.argv[0] == "mariadb"  # the client itself: the dump arrives on its stdin
    assert cmds.restore.argv[-1] == "stats_relaunch_fp"
    assert cmds.fingerprint.argv[0] == "python3" and "stats_relaunch_fp" in cmds.fingerprint.argv
    assert "`stats`" not in " ".join(cmds.drop.argv + cmds.create.argv)  # never the live database
    for cmd in (cmds.drop, cmds.create, cmds.restore, cmds.fingerprint):
        assert not any(a.startswith(("-p", "--password", "-u", "--user")) for a in cmd.argv)


def test_scratch_commands_compose_log_in_as_root_from_the_service_env() -> None:
    cmds = mariadb.scratch_commands(maria(runs={"app": "blog", "service": "db"}), COMPOSE)
    for cmd in (cmds.drop, cmds.create, cmds.restore, cmds.fingerprint):
        assert ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD", "root") == tuple(
            cmd.argv[cmd.argv.index("MARIADB_ROOT_PASSWORD"):][:3]), cmd.description
        assert cmd.env == ("MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD")
        assert PASSWORD not in cmd.shell()
