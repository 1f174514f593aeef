"""pipeline.steps.restore.verify with fake hosts: what it compares, and that it reads in parallel."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from relaunch.databases.base import Fingerprint, TableFingerprint
from relaunch.errors import RelaunchError
from relaunch.pipeline.journal import Journal
from relaunch.inventory.model import Verify
from relaunch.pipeline.steps import restore
from relaunch.transfer import Entry


def fingerprint(rows: int) -> Fingerprint:
    return Fingerprint({"t": TableFingerprint(rows, f"sum{rows}")}, "2026-01-01T00:00:00+00:00", None, "postgresql")


class Ctx:
    def __init__(self, listings: dict[str, Any]) -> None:
        self.inv = SimpleNamespace(
            databases=[SimpleNamespace(name=n, engine="postgresql", path=None) for n in ("a", "b", "c")],
            apps=[SimpleNamespace(files=["/srv/x"], trees=lambda: ["/srv/x"]),
                  SimpleNamespace(files=["/srv/y", "/srv/z"], trees=lambda: ["/srv/y", "/srv/z"])],
            verify=Verify())
        self.journal = Journal.ephemeral("site", "bench", {})
        self.journal.state.update(source="live", source_fingerprints={n: fingerprint(10).to_json() for n in "abc"})
        self._listings = listings
        self.options: dict[str, Any] = {}
        self.results: dict[str, Any] = {}

    @property
    def state(self) -> dict[str, Any]:
        return self.journal.state

    def new_conn(self) -> object:
        return object()

    def load_artifact(self, name: str) -> Any:
        return self._listings


LISTING = {".": Entry("d", 0, 0o755, 0, 0, "", ""), "f": Entry("f", 3, 0o644, 0, 0, "abc", "")}


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fake engines and listings; every read waits at a barrier that only parallel reads pass."""
    barrier = threading.Barrier(2, timeout=5)  # 6 reads: passes in pairs, never alone
    got: dict[str, Any] = {"rows": {n: 10 for n in "abc"}, "barrier": barrier}

    def fp(conn: object, db: Any, compose: object) -> Fingerprint:
        barrier.wait()
        return fingerprint(got["rows"][db.name])

    def listing(conn: object, path: str, sample: object = None, exclude: object = ()) -> dict[str, Entry]:
        barrier.wait()
        return dict(LISTING)

    monkeypatch.setattr(restore, "engine", lambda kind: SimpleNamespace(fingerprint=fp))
    monkeypatch.setattr(restore.transfer, "tree_listing", listing)
    monkeypatch.setattr(restore.apps, "compose_command", lambda conn: ["docker-compose"])
    return got


def saved(paths: list[str]) -> dict[str, Any]:
    return {p: {k: list(e) for k, e in LISTING.items()} for p in paths}


def test_verify_reads_every_database_and_tree_in_parallel_and_records_the_match(hosts) -> None:
    # serially, the first read would wait at the barrier alone and fail after 5 s
    ctx = Ctx(saved(["/srv/x", "/srv/y", "/srv/z"]))
    assert restore.verify(ctx) == {"verified": True}
    assert [d["fingerprint_match"] for d in ctx.state["verify_databases"]] == [True, True, True]
    assert [(f["path"], f["match"]) for f in ctx.state["verify_files"]] == [("/srv/x", True), ("/srv/y", True),
                                                                              ("/srv/z", True)]


def test_verify_names_the_database_and_the_tree_that_differ(hosts) -> None:
    hosts["rows"]["b"] = 9
    ctx = Ctx(saved(["/srv/x", "/srv/y"]))  # no source listing of /srv/z
    with pytest.raises(RelaunchError) as err:
        restore.verify(ctx)
    assert "database b: table t: 9 rows, expected 10" in str(err.value)
    assert "/srv/z: no source listing of /srv/z" in str(err.value)
    assert [d["fingerprint_match"] for d in ctx.state["verify_databases"]] == [True, False, True]


def test_restore_skips_a_database_the_data_step_restored_and_restores_the_rest_from_their_files(monkeypatch) -> None:
    ran: list[tuple[str, ...]] = []
    said: list[str] = []

    def command(what: str) -> Any:
        return lambda db, compose, *rest, **kw: SimpleNamespace(argv=(what, db.name, *rest))

    monkeypatch.setattr(restore, "engine", lambda kind: SimpleNamespace(
        drop_command=command("drop"), create_command=command("create"), restore_from_file_command=command("restore")))
    monkeypatch.setattr(restore, "run_command", lambda conn, cmd: ran.append(cmd.argv))
    monkeypatch.setattr(restore.apps, "stop_writers", lambda conn, inv, **kw: None)
    monkeypatch.setattr(restore.apps, "start_databases", lambda conn, inv: None)
    monkeypatch.setattr(restore.apps, "compose_command", lambda conn: ["docker-compose"])
    ctx = Ctx({})
    ctx.say = lambda step, text: said.append(text)  # type: ignore[attr-defined]
    ctx.state["dumps"] = {"a": {"file": "/w/a.dump", "restored": True},
                          "b": {"file": "/w/b.dump", "restored": False, "restore_error": "exit 1"},
                          "c": {"file": "/w/c.dump"}}
    restore._restore_once(ctx)  # noqa: SLF001
    assert sorted(ran) == sorted([("drop", "b"), ("create", "b"), ("restore", "b", "/w/b.dump"),
                                  ("drop", "c"), ("create", "c"), ("restore", "c", "/w/c.dump")])
    assert "database a: restored in the data step as its dump arrived" in said


def test_restore_readies_the_new_host_unless_this_process_s_live_data_step_just_did(monkeypatch) -> None:
    readied: list[str] = []
    monkeypatch.setattr(restore, "engine", lambda kind: None)
    monkeypatch.setattr(restore.apps, "stop_writers", lambda conn, inv, **kw: readied.append("stop"))
    monkeypatch.setattr(restore.apps, "start_databases", lambda conn, inv: readied.append("start"))
    monkeypatch.setattr(restore.apps, "compose_command", lambda conn: ["docker-compose"])
    ctx = Ctx({})
    ctx.inv.databases = []
    ctx.state["dumps"] = {}
    ctx.results[restore.NEW_HOST_READY] = True
    restore._restore_once(ctx)  # noqa: SLF001
    assert readied == []
    restore._restore_once(ctx)  # noqa: SLF001 - a second attempt (after a dropped connection): ready it again
    assert readied == ["stop", "start"]


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

    monkeypatch.setattr(restore, "engine", lambda kind: SimpleNamespace(
        drop_command=command("drop"), create_command=command("create"), restore_from_file_command=command("restore")))
    monkeypatch.setattr(restore, "run_command", run_command)
    monkeypatch.setattr(restore.apps, "stop_writers", lambda conn, inv, **kw: None)
    monkeypatch.setattr(restore.apps, "start_databases", lambda conn, inv: None)
    monkeypatch.setattr(restore.apps, "compose_command", lambda conn: ["docker-compose"])
    ctx = Ctx({})
    ctx.inv.databases = [SimpleNamespace(name="a", engine="postgresql", path=None),
                         SimpleNamespace(name="n", engine="sqlite", path="/srv/x/n.db")]
    ctx.new_conn = lambda: New()  # type: ignore[method-assign]
    ctx.say = lambda step, text: None  # type: ignore[attr-defined]
    ctx.state["dumps"] = {"a": {"file": "/w/a.dump"}, "n": {"file": "/w/n.dump"}}
    ctx.state["archives"] = {"x": {"file": "/w/x.tar.gz", "paths": ["/srv/x"]}}
    restore._restore_once(ctx)  # noqa: SLF001
    assert order.index("archive") < order.index("drop n") and order[-1] == "restore n"
