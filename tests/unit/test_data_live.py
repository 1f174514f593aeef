"""pipeline.steps.data.data_live with fake hosts: what it pulls, how, and what runs alongside what."""

from __future__ import annotations

import contextlib
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from relaunch.databases.base import Fingerprint, RemoteCommand
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Verify, inside
from relaunch.inventory.secrets import Secrets
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import data
from relaunch.transfer import Pulled, TreeCopy


class Conn:
    host = "10.0.0.1"

    def run(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {"dumps": [], "trees": [], "barrier": threading.Barrier(1)}

    def fingerprint(conn: Any, db: Any, compose: Any) -> Fingerprint:
        raise AssertionError("the data step fingerprints nothing: the verify step does, on both hosts at once")

    def tree_listing(conn: Any, path: str, sample: Any = None, exclude: Any = ()) -> Any:
        raise AssertionError("the data step lists no tree: the verify step does, on both hosts at once")

    def dump_command(db: Any, compose: Any, compress: int | None = None) -> RemoteCommand:
        return RemoteCommand(("pg_dump", db.name), f"dump {db.name}"), compress

    def pull_dump(link: Any, cmd: Any, new: Any, path: str, progress: Any = None) -> Pulled:
        command, compress = cmd
        calls["dumps"].append((command.argv, compress, path))
        calls["barrier"].wait()
        return Pulled(3, "abc", 0.1)

    def pull_dump_restoring(link: Any, cmd: Any, new: Any, path: str, restore: Any, progress: Any = None) -> Pulled:
        command, compress = cmd
        calls["dumps"].append((command.argv, compress, path, restore.argv))
        calls["barrier"].wait()
        error = calls.get("restore_error", "")
        return Pulled(3, "abc", 0.1, restored=not error, restore_error=error)

    def on_new_host(db: Any, compose: Any, what: str) -> RemoteCommand:
        return RemoteCommand((what, db.name, *compose))

    def pull_tree(link: Any, path: str, new: Any, progress: Any = None, exclude: Any = ()) -> TreeCopy:
        calls["trees"].append((path, list(exclude)))
        return TreeCopy(path, 1, 3, 1, 3, 0, 0.1)

    @contextlib.contextmanager
    def link(*args: Any, **kwargs: Any):
        yield "LINK"

    monkeypatch.setattr(data, "engine", lambda kind: SimpleNamespace(
        fingerprint=fingerprint, dump_command=dump_command,
        drop_command=lambda db, compose: on_new_host(db, compose, "drop"),
        create_command=lambda db, compose: on_new_host(db, compose, "create"),
        restore_from_file_command=lambda db, compose, file, jobs=1: RemoteCommand(("restore-file", db.name, file)),
        restore_command=lambda db, compose: on_new_host(db, compose, "restore")))
    calls["new_host"] = []
    def run_command(conn: Any, cmd: RemoteCommand) -> bytes:
        calls["new_host"].append(cmd.argv)
        if cmd.argv[0] == "restore-file" and calls.get("place_error"):
            raise RelaunchError(calls["place_error"])
        return b""

    monkeypatch.setattr(data, "run_command", run_command)
    monkeypatch.setattr(data.transfer, "link", link)
    monkeypatch.setattr(data.transfer, "pull_dump", pull_dump)
    monkeypatch.setattr(data.transfer, "pull_dump_restoring", pull_dump_restoring)
    monkeypatch.setattr(data.transfer, "pull_tree", pull_tree)
    monkeypatch.setattr(data.transfer, "tree_listing", tree_listing)
    def stop_writers(conn: Any, inv: Any, **kw: Any) -> Any:
        assert kw.get("databases_up") is True  # one go: writers stopped, then database servers up
        return SimpleNamespace(backup_timer=False, compose=["docker-compose"])

    monkeypatch.setattr(data.apps, "stop_writers", stop_writers)
    return calls


def context(databases: list[Any], files: list[str]) -> RunContext:
    inv = SimpleNamespace(databases=databases, apps=[SimpleNamespace(files=files, trees=lambda: files)], site="example",
                          verify=Verify())
    journal = Journal.ephemeral("example", "bench", {})
    journal.state["old"] = {"address": "10.0.0.1", "host_key": "ssh-ed25519 AAAA"}
    ctx = RunContext(inv, Secrets({}), None, None, journal, {})  # type: ignore[arg-type]
    ctx._conns.update(old=Conn(), new=Conn())
    Conn.is_connected = True  # type: ignore[attr-defined]
    return ctx


def test_data_live_only_moves_data_uncompressed_and_leaves_the_old_host_ready_for_verify(hosts) -> None:
    # the dump and the tree copy run at the same time (the barrier), or the test times out; the old host's CPU
    # and disks serve them alone: no fingerprint, no listing (the fakes of both raise)
    hosts["barrier"] = threading.Barrier(2, timeout=5)
    ctx = context([SimpleNamespace(name="blog", engine="postgresql", path=None)], ["/srv/blog/uploads"])
    real_tree = data.transfer.pull_tree

    def pull_tree(*args: Any, **kwargs: Any) -> TreeCopy:
        hosts["barrier"].wait()
        return real_tree(*args, **kwargs)

    data.transfer.pull_tree = pull_tree  # type: ignore[assignment]  # restored by monkeypatch (the fixture set it)
    out = data.data_live(ctx)
    assert hosts["dumps"] == [(("pg_dump", "blog"), 0, f"{data.workdir(ctx)}/blog.dump",
                               ("restore", "blog", "docker-compose"))]
    assert "source_fingerprints" not in out and out["dumps"]["blog"]["sha256"] == "abc"
    assert ctx.results[data.OLD_HOST_READY] == ["docker-compose"] and ctx.results[data.NEW_HOST_READY] == ["docker-compose"]


def test_a_database_server_is_emptied_and_restored_as_its_dump_arrives(hosts) -> None:
    ctx = context([SimpleNamespace(name="blog", engine="postgresql", path=None)], ["/srv/blog/uploads"])
    out = data.data_live(ctx)
    assert hosts["new_host"] == [("drop", "blog", "docker-compose"), ("create", "blog", "docker-compose")]
    assert out["dumps"]["blog"]["restored"] is True and "restore_error" not in out["dumps"]["blog"]


def test_each_pull_waits_only_for_its_own_database_to_be_emptied(hosts, monkeypatch) -> None:
    # emptying "slow" on the new host cannot end before the tree copy and the other database's pull have begun;
    # "slow"'s own pull begins only once it is empty
    hosts["barrier"] = threading.Barrier(1)
    order: list[tuple[str, ...]] = []
    others_began = threading.Barrier(3, timeout=5)  # the tree, the other pull, and the emptying of "slow"
    real_run, real_pull, real_tree = data.run_command, data.transfer.pull_dump_restoring, data.transfer.pull_tree

    def run_command(conn: Any, cmd: RemoteCommand) -> bytes:
        if cmd.argv[:2] == ("drop", "slow"):
            others_began.wait()
        order.append(cmd.argv[:2])
        return real_run(conn, cmd)

    def pull_dump_restoring(link: Any, cmd: Any, new: Any, path: str, restore: Any, progress: Any = None) -> Pulled:
        order.append(("pull", restore.argv[1]))
        if restore.argv[1] == "fast":
            others_began.wait()
        return real_pull(link, cmd, new, path, restore, progress)

    def pull_tree(*args: Any, **kwargs: Any) -> TreeCopy:
        others_began.wait()
        return real_tree(*args, **kwargs)

    monkeypatch.setattr(data, "run_command", run_command)
    monkeypatch.setattr(data.transfer, "pull_dump_restoring", pull_dump_restoring)
    monkeypatch.setattr(data.transfer, "pull_tree", pull_tree)
    ctx = context([SimpleNamespace(name=n, engine="mariadb", path=None) for n in ("slow", "fast")], ["/srv/stats"])
    out = data.data_live(ctx)
    slow = [step for step in order if step[1] == "slow"]
    assert slow == [("drop", "slow"), ("create", "slow"), ("pull", "slow")]
    assert out["dumps"]["slow"]["restored"] is True and out["dumps"]["fast"]["restored"] is True


def test_a_restore_that_fails_on_the_way_leaves_the_file_for_the_restore_step(hosts) -> None:
    hosts["restore_error"] = "new host 10.0.0.2: pg_restore blog exit 1: out of disk"
    ctx = context([SimpleNamespace(name="blog", engine="postgresql", path=None)], ["/srv/blog/uploads"])
    out = data.data_live(ctx)
    assert out["dumps"]["blog"]["restored"] is False
    assert out["dumps"]["blog"]["restore_error"] == hosts["restore_error"]
    assert out["dumps"]["blog"]["file"] == f"{data.workdir(ctx)}/blog.dump"


def test_data_live_leaves_sqlite_files_out_of_the_tree_copy_and_puts_them_in_place_after_it(hosts) -> None:
    hosts["barrier"] = threading.Barrier(1)
    notes = SimpleNamespace(name="notes", engine="sqlite", path="/srv/notes/notes.db")
    ctx = context([notes], ["/srv/notes"])
    out = data.data_live(ctx)
    # its file lives in the tree being copied: pulled to a file, put in place from it once the tree is copied
    assert len(hosts["dumps"][0]) == 3 and out["dumps"]["notes"]["restored"] is True
    assert hosts["new_host"] == [("drop", "notes", "docker-compose"), ("create", "notes", "docker-compose"),
                                 ("restore-file", "notes", f"{data.workdir(ctx)}/notes.dump")]
    assert hosts["trees"] == [("/srv/notes", ["/srv/notes/notes.db", "/srv/notes/notes.db-journal",
                                              "/srv/notes/notes.db-shm", "/srv/notes/notes.db-wal"])]


def test_nothing_is_read_from_the_old_host_before_its_writers_have_stopped(hosts, monkeypatch) -> None:
    hosts["barrier"] = threading.Barrier(1)
    events: list[str] = []
    stopped = threading.Event()

    def stop_writers(conn: Any, inv: Any, **kw: Any) -> Any:
        if conn is ctx.old_conn():
            stopped.wait(0.3)  # slow: the link and the new host's readying go on meanwhile
            events.append("old writers stopped")
        return SimpleNamespace(backup_timer=False, compose=[])

    real_link = data.transfer.link

    @contextlib.contextmanager
    def link(*args: Any, **kwargs: Any):
        events.append("link")
        with real_link(*args, **kwargs) as ln:
            yield ln

    def pull_tree(ln: Any, path: str, new: Any, progress: Any = None, exclude: Any = ()) -> TreeCopy:
        events.append("read")
        return TreeCopy(path, 1, 3, 1, 3, 0, 0.1)

    monkeypatch.setattr(data.apps, "stop_writers", stop_writers)
    monkeypatch.setattr(data.transfer, "link", link)
    monkeypatch.setattr(data.transfer, "pull_tree", pull_tree)
    ctx = context([], ["/srv/a"])
    data.data_live(ctx)
    assert events == ["link", "old writers stopped", "read"]
    assert ctx.results[data.NEW_HOST_READY] == []


@pytest.mark.parametrize("last", ["dump", "tree"])
def test_a_sqlite_file_is_put_in_place_once_both_its_dump_and_its_tree_have_arrived(hosts, monkeypatch, last) -> None:
    hosts["barrier"] = threading.Barrier(1)
    order: list[str] = []
    first_done = threading.Event()
    real_dump, real_tree = data.transfer.pull_dump, data.transfer.pull_tree

    def arrive(what: str, pull: Any, *args: Any, **kwargs: Any) -> Any:
        if last == what:
            assert first_done.wait(5)
        got = pull(*args, **kwargs)
        order.append(what)
        first_done.set()
        return got

    def run_command(conn: Any, cmd: RemoteCommand) -> bytes:
        order.append(cmd.argv[0])
        return b""

    monkeypatch.setattr(data.transfer, "pull_dump", lambda *a, **kw: arrive("dump", real_dump, *a, **kw))
    monkeypatch.setattr(data.transfer, "pull_tree", lambda *a, **kw: arrive("tree", real_tree, *a, **kw))
    monkeypatch.setattr(data, "run_command", run_command)
    notes = SimpleNamespace(name="notes", engine="sqlite", path="/srv/notes/notes.db")
    data.data_live(context([notes], ["/srv/notes"]))
    first = "tree" if last == "dump" else "dump"
    assert order[:5] == [first, last, "drop", "create", "restore-file"]


def test_a_sqlite_file_that_fails_to_go_in_place_is_left_to_the_restore_step(hosts) -> None:
    hosts["place_error"] = "10.0.0.1: sqlite restore notes failed (exit 1): disk full"
    ctx = context([SimpleNamespace(name="notes", engine="sqlite", path="/srv/notes/notes.db")], ["/srv/notes"])
    out = data.data_live(ctx)
    assert out["dumps"]["notes"]["restored"] is False and "disk full" in out["dumps"]["notes"]["restore_error"]


def test_a_file_is_inside_a_tree_only_below_it() -> None:
    assert inside("/srv/notes/notes.db", "/srv/notes") and inside("/srv/notes/notes.db", "/srv/notes/")
    assert not inside("/srv/notes2/notes.db", "/srv/notes") and not inside("/srv/notes", "/srv/notes")
