"""pipeline.steps.restore.verify with fake hosts: what it compares, and that it reads in parallel."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from relaunch.databases.base import Fingerprint, TableFingerprint
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Verify
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import data, restore
from relaunch.transfer import Entry


def fingerprint(rows: int) -> Fingerprint:
    return Fingerprint({"t": TableFingerprint(rows, f"sum{rows}")}, "2026-01-01T00:00:00+00:00", None, "postgresql")


NEW, OLD = SimpleNamespace(host="new"), SimpleNamespace(host="old")


class Ctx:
    def __init__(self, listings: dict[str, Any] | None = None) -> None:
        self.inv = SimpleNamespace(
            databases=[SimpleNamespace(name=n, engine="postgresql", path=None) for n in ("a", "b", "c")],
            apps=[SimpleNamespace(files=["/srv/x"], trees=lambda: ["/srv/x"]),
                  SimpleNamespace(files=["/srv/y", "/srv/z"], trees=lambda: ["/srv/y", "/srv/z"])],
            verify=Verify(), site="s")
        self.journal = Journal.ephemeral("site", "bench", {})
        self.journal.state.update(source="live")
        self.artifacts: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self.results: dict[str, Any] = {restore.OLD_HOST_READY: ["docker-compose"]}
        self.old: Any = OLD

    @property
    def state(self) -> dict[str, Any]:
        return self.journal.state

    def new_conn(self) -> object:
        return NEW

    def old_conn(self) -> object:
        if isinstance(self.old, BaseException):
            raise self.old
        return self.old

    def conn_lost(self, which: str, since: object = None) -> bool:
        return False

    def transport(self, which: str) -> object:
        return f"transport of {which}"

    def mask(self, text: str) -> str:
        return text

    def save_artifact(self, name: str, value: Any) -> None:
        self.artifacts[name] = value


LISTING = {".": Entry("d", 0, 0o755, 0, 0, "", ""), "f": Entry("f", 3, 0o644, 0, 0, "abc", "")}


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake engines and listings on two hosts; each read of a database or tree waits at a barrier that only
    passes while the other host reads the same one."""
    got: dict[str, Any] = {"rows": {n: 10 for n in "abc"}, "source_rows": {n: 10 for n in "abc"},
                           "source_extra": {}, "pairs": {}, "reads": []}
    lock = threading.Lock()

    def meet(what: str, conn: Any) -> None:
        got["reads"].append((conn.host, what))
        with lock:
            barrier = got["pairs"].setdefault(what, threading.Barrier(2, timeout=5))
        barrier.wait()

    def fp(conn: Any, db: Any, compose: object) -> Fingerprint:
        meet(db.name, conn)
        return fingerprint(got["source_rows" if conn is OLD else "rows"][db.name])

    def listing(conn: Any, path: str, sample: object = None, exclude: object = ()) -> dict[str, Entry]:
        meet(path, conn)
        extra = got["source_extra"].get(path, {}) if conn is OLD else {}
        return {**LISTING, **extra}

    monkeypatch.setattr(restore, "engine", lambda kind: SimpleNamespace(fingerprint=fp))
    monkeypatch.setattr(restore.transfer, "tree_listing", listing)
    monkeypatch.setattr(restore.apps, "compose_command", lambda conn: ["docker-compose"])
    got["started"] = []
    monkeypatch.setattr(restore.apps, "start_databases", lambda conn, inv: got["started"].append(conn.host))
    return got


def test_verify_reads_each_database_and_tree_on_both_hosts_at_once_and_records_the_match(hosts) -> None:
    # each read waits for the other host's read of the same database or tree, or fails after 5 s
    ctx = Ctx()
    out = restore.verify(ctx)
    assert out["verified"] is True and set(out["source_fingerprints"]) == {"a", "b", "c"}
    assert [d["fingerprint_match"] for d in ctx.state["verify_databases"]] == [True, True, True]
    assert [(f["path"], f["match"]) for f in ctx.state["verify_files"]] == [("/srv/x", True), ("/srv/y", True),
                                                                              ("/srv/z", True)]
    assert set(ctx.artifacts["source-listings.json"]) == {"/srv/x", "/srv/y", "/srv/z"}
    assert hosts["started"] == []  # this process's data step left the old host's databases up


def test_verify_names_the_database_and_the_tree_that_differ(hosts) -> None:
    hosts["rows"]["b"] = 9
    hosts["source_extra"]["/srv/z"] = {"g": Entry("f", 1, 0o644, 0, 0, "def", "")}
    ctx = Ctx()
    with pytest.raises(RelaunchError) as err:
        restore.verify(ctx)
    assert "database b: table t: 9 rows, expected 10" in str(err.value)
    assert "/srv/z: missing: g" in str(err.value) and "nothing was switched" in str(err.value)
    assert [d["fingerprint_match"] for d in ctx.state["verify_databases"]] == [True, False, True]


def test_a_resumed_verify_starts_the_old_host_s_databases_before_reading_them(hosts) -> None:
    ctx = Ctx()
    ctx.results.clear()  # another process ran the data step: the old host may have rebooted since
    assert restore.verify(ctx)["verified"] is True
    assert hosts["started"] == ["old"]


@pytest.mark.parametrize("lost", [OSError("Connection refused"), RelaunchError("SSH did not answer within 20 s")])
def test_an_old_host_lost_before_verify_stops_it_with_the_commands_to_go_on(hosts, lost) -> None:
    ctx = Ctx()
    ctx.old = lost
    with pytest.raises(RelaunchError) as err:
        restore.verify(ctx)
    assert "the old host could not be read to prove the copy" in str(err.value) and str(lost) in str(err.value)
    assert "`fab rebuild --resume --site s`" in str(err.value)
    assert "`fab rebuild --resume --source backup --site s`" in str(err.value)
    assert hosts["reads"] == []  # nothing compared, nothing recorded as verified
    assert "verify_databases" not in ctx.state


def test_verify_of_a_backup_compares_with_its_manifest_and_archives_and_never_reads_the_old_host(hosts,
                                                                                                monkeypatch) -> None:
    ctx = Ctx()
    ctx.old = AssertionError("a backup's verify reads nothing on the old host")
    ctx.state.update(source="backup", source_fingerprints={n: fingerprint(10).to_json() for n in "abc"},
                     archives={"x": {"file": "/w/x.tar.gz", "paths": ["/srv/x", "/srv/y", "/srv/z"]}})
    monkeypatch.setattr(restore.transfer, "archive_listing",
                        lambda conn, file, paths: {p: dict(LISTING) for p in paths})
    hosts["pairs"] = {n: threading.Barrier(1) for n in ("a", "b", "c", "/srv/x", "/srv/y", "/srv/z")}
    assert restore.verify(ctx) == {"verified": True}
    assert {host for host, _ in hosts["reads"]} == {"new"}


def test_restore_skips_a_database_the_data_step_restored_and_restores_the_rest_from_their_files(monkeypatch) -> None:
    ran: list[tuple[str, ...]] = []
    said: list[str] = []

    def command(what: str) -> Any:
        return lambda db, compose, *rest, **kw: SimpleNamespace(argv=(what, db.name, *rest))

    monkeypatch.setattr(data, "engine", lambda kind: SimpleNamespace(
        drop_command=command("drop"), create_command=command("create"), restore_from_file_command=command("restore")))
    monkeypatch.setattr(data, "run_command", lambda conn, cmd: ran.append(cmd.argv))
    monkeypatch.setattr(restore.apps, "stop_writers", lambda conn, inv, **kw: SimpleNamespace(compose=["docker-compose"]))
    ctx = Ctx()
    ctx.say = lambda step, text: said.append(text)  # type: ignore[attr-defined]
    ctx.state["dumps"] = {"a": {"file": "/w/a.dump", "restored": True},
                          "b": {"file": "/w/b.dump", "restored": False, "restore_error": "exit 1"},
                          "c": {"file": "/w/c.dump"}}
    restore._restore_once(ctx)
    assert sorted(ran) == sorted([("drop", "b"), ("create", "b"), ("restore", "b", "/w/b.dump"),
                                  ("drop", "c"), ("create", "c"), ("restore", "c", "/w/c.dump")])
    assert "database a: restored in the data step" in said


def test_restore_readies_the_new_host_unless_this_process_s_live_data_step_just_did(monkeypatch) -> None:
    readied: list[str] = []
    monkeypatch.setattr(data, "engine", lambda kind: None)
    def stop_writers(conn: Any, inv: Any, **kw: Any) -> Any:
        readied.append(f"stop, databases_up={kw.get('databases_up')}")
        return SimpleNamespace(compose=["docker-compose"])

    monkeypatch.setattr(restore.apps, "stop_writers", stop_writers)
    ctx = Ctx()
    ctx.inv.databases = []
    ctx.state["dumps"] = {}
    ctx.results[restore.NEW_HOST_READY] = ["docker-compose"]
    restore._restore_once(ctx)
    assert readied == []
    restore._restore_once(ctx)
    assert readied == ["stop, databases_up=True"]


def test_server_databases_restore_while_the_archives_extract_and_a_sqlite_file_after_them(monkeypatch) -> None:
    both = threading.Barrier(2, timeout=5)  # the archive and the PostgreSQL restore: passes only if they overlap
    order: list[str] = []

    def command(what: str) -> Any:
        return lambda db, compose, *rest, **kw: SimpleNamespace(argv=(what, db.name))

    def run_command(conn: object, cmd: Any) -> None:
        if cmd.argv == ("restore", "a"):
            both.wait()
        order.append(" ".join(cmd.argv))

    class New:
        def run(self, script: str, **kw: Any) -> Any:
            if "tar -xzpf" in script:
                both.wait()
                order.append("archive")
            return SimpleNamespace(ok=True, stdout="", stderr="")

    monkeypatch.setattr(data, "engine", lambda kind: SimpleNamespace(
        drop_command=command("drop"), create_command=command("create"), restore_from_file_command=command("restore")))
    monkeypatch.setattr(data, "run_command", run_command)
    monkeypatch.setattr(restore.apps, "stop_writers", lambda conn, inv, **kw: SimpleNamespace(compose=["docker-compose"]))
    ctx = Ctx()
    ctx.inv.databases = [SimpleNamespace(name="a", engine="postgresql", path=None),
                         SimpleNamespace(name="n", engine="sqlite", path="/srv/x/n.db")]
    ctx.new_conn = lambda: New()  # type: ignore[method-assign]
    ctx.say = lambda step, text: None  # type: ignore[attr-defined]
    ctx.state["dumps"] = {"a": {"file": "/w/a.dump"}, "n": {"file": "/w/n.dump"}}
    ctx.state["archives"] = {"x": {"file": "/w/x.tar.gz", "paths": ["/srv/x"]}}
    restore._restore_once(ctx)
    assert order.index("archive") < order.index("drop n") and order[-1] == "restore n"


def test_a_command_cut_off_when_the_old_host_dies_mid_verify_reads_as_the_old_host_lost(hosts, monkeypatch) -> None:
    import invoke

    def listing(conn: Any, path: str, sample: object = None, exclude: object = ()) -> dict[str, Entry]:
        if conn is OLD:
            raise invoke.exceptions.UnexpectedExit(SimpleNamespace(exited=-1, command="x", hide=(), pty=False,
                                                                   stdout="", stderr=""))
        return dict(LISTING)

    monkeypatch.setattr(restore.transfer, "tree_listing", listing)
    hosts["pairs"] = {n: threading.Barrier(1) for n in ("a", "b", "c")}
    ctx = Ctx()
    ctx.conn_lost = lambda which, since=None: which == "old" and since == "transport of old"  # type: ignore[method-assign]
    with pytest.raises(RelaunchError, match="the old host could not be read to prove the copy"):
        restore.verify(ctx)


def test_the_leftover_killer_kills_what_holds_a_work_file_open_and_nothing_else(tmp_path) -> None:
    # the host command run here, on real processes: one holds a file of the work directory open, one a file of a
    # directory whose name only starts like it
    import subprocess
    import sys

    work, other = tmp_path / "work", tmp_path / "work-other"
    work.mkdir()
    other.mkdir()
    hold = "import sys, time; f = open(sys.argv[1], 'w'); print('open', flush=True); time.sleep(60)"
    inside = subprocess.Popen([sys.executable, "-c", hold, str(work / "db.dump")], stdout=subprocess.PIPE, text=True)
    beside = subprocess.Popen([sys.executable, "-c", hold, str(other / "db.dump")], stdout=subprocess.PIPE, text=True)
    try:
        assert inside.stdout.readline() == "open\n" and beside.stdout.readline() == "open\n"
        done = subprocess.run(["sh", "-c", restore.kill_leftovers_command(str(work))], timeout=30)
        assert done.returncode == 0
        assert inside.wait(timeout=10) == -9
        assert beside.poll() is None
    finally:
        for proc in (inside, beside):
            proc.kill()
            proc.wait()
