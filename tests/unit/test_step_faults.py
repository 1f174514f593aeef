"""How the pipeline's steps meet faults, with fake hosts and clouds (the fault suite does it for real: tests/faults).

provision: a half-created Droplet is tagged and reported (rebuild) or left to the drill's clean-up;
data (backup): a backup that fails its manifest's checksums is skipped for the next older one;
restore: a dropped SSH connection makes the restore run again on a new connection;
the task: `fab rebuild --fallback-to-backup` reaches the run's options.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relaunch.backup.manifest import Verification
from relaunch.errors import RelaunchError
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import data, host, restore

REPO = Path(__file__).resolve().parents[2]


class Ctx:
    """Just what the steps use of a RunContext."""

    def __init__(self, kind: str = "rebuild", **options: Any) -> None:
        self.inv = SimpleNamespace(site="s", databases=[SimpleNamespace(name="a", engine="sqlite", path="/srv/a.db")],
                                   apps=[], provider=SimpleNamespace(region="r", size="z", image="i", tags=["t"]),
                                   backups=SimpleNamespace(offsite=SimpleNamespace(repository="sftp:x:/r")))
        self.journal = Journal.ephemeral("s", kind, options)
        self.journal.state["new_name"] = "s-new"
        self.options = options
        self.results: dict = {}
        self.said: list[str] = []
        self.conn = FakeConn()
        self.lost = False
        self.dropped = 0
        self.asked_since: list[object] = []
        self.cloud = SimpleNamespace(tagged=[], tag_droplet=lambda i, t: self.cloud.tagged.append((i, t)))

    @property
    def state(self) -> dict[str, Any]:
        return self.journal.state

    def mask(self, text: str) -> str:
        return text

    def say(self, step: str, message: str) -> None:
        self.said.append(message)

    def new_conn(self, timeout: float = 180) -> FakeConn:
        return self.conn

    def conn_lost(self, which: str, since: object = None) -> bool:
        self.asked_since.append(since)
        return self.lost

    def transport(self, which: str) -> object:
        return f"transport {self.dropped}"

    def drop_conn(self, which: str) -> None:
        self.dropped += 1
        self.lost = False


class FakeConn:
    host = "10.0.0.9"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, **kw: Any) -> SimpleNamespace:
        self.commands.append(command)
        return SimpleNamespace(ok=True, stdout="", stderr="")


# --- provision -----------------------------------------------------------------------


def test_provision_tags_and_reports_a_half_created_droplet_and_moves_the_run_to_a_new_name(monkeypatch) -> None:
    ctx = Ctx()
    monkeypatch.setattr(host, "find_droplet", lambda cloud, inv, name: None)

    def create_host(*a: Any, **kw: Any) -> None:
        monkeypatch.setattr(host, "find_droplet",
                            lambda cloud, inv, name: SimpleNamespace(id=42, name=name, status="new"))
        raise RelaunchError("creating droplet 's-new' (id 42): the API reports the create action on droplet 42 as errored")

    monkeypatch.setattr(host, "create_host", create_host)
    monkeypatch.setattr(host, "ensure_client_key", lambda path: "ssh-ed25519 AAAA")
    ctx.key_path = Path("/nonexistent")
    with pytest.raises(RelaunchError) as err:
        host.provision(ctx)  # type: ignore[arg-type]
    message = str(err.value)
    assert "s-new (id 42, status new) is kept for inspection, tagged relaunch-failed" in message
    assert "fab rebuild --resume --site s" in message and "Nothing was switched" in message
    assert ctx.cloud.tagged == [(42, "relaunch-failed")]
    assert ctx.state["failed_droplets"] == [{"name": "s-new", "id": 42, "status": "new", "tagged": "relaunch-failed"}]
    assert ctx.state["new_name"] == "s-new-2"


def test_provision_in_a_drill_leaves_the_half_created_droplet_to_the_drills_clean_up(monkeypatch) -> None:
    ctx = Ctx("drill")
    calls = iter([None, SimpleNamespace(id=7, name="s-new", status="new")])
    monkeypatch.setattr(host, "find_droplet", lambda cloud, inv, name: next(calls))
    monkeypatch.setattr(host, "create_host", lambda *a, **kw: (_ for _ in ()).throw(RelaunchError("never active")))
    monkeypatch.setattr(host, "ensure_client_key", lambda path: "ssh-ed25519 AAAA")
    ctx.key_path = Path("/nonexistent")
    with pytest.raises(RelaunchError, match="destroyed with the drill's scratch"):
        host.provision(ctx)  # type: ignore[arg-type]
    assert ctx.cloud.tagged == [] and ctx.state["new_name"] == "s-new"


def test_provision_journals_how_long_the_cloud_took_to_make_the_droplet(monkeypatch) -> None:
    # from the accepted request to an active Droplet is the cloud's part (the Droplet's boot), reported apart
    ctx = Ctx()
    clock = iter([100.0, 107.25, 200.0])
    monkeypatch.setattr(host.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(host, "find_droplet", lambda cloud, inv, name: None)

    def create_host(*a: Any, requested: Any = None, **kw: Any) -> Any:
        requested(42)
        return SimpleNamespace(droplet_id=42, ipv4="10.0.0.9", ipv6=None)

    monkeypatch.setattr(host, "create_host", create_host)
    monkeypatch.setattr(host, "ensure_client_key", lambda path: "ssh-ed25519 AAAA")
    monkeypatch.setattr(host, "render_user_data", lambda context: "#cloud-config")
    monkeypatch.setattr(host, "render_context", lambda ctx, hk: None)
    monkeypatch.setattr(host, "wants_ipv6", lambda inv: False)
    ctx.key_path = Path("/nonexistent")
    out = host.provision(ctx)  # type: ignore[arg-type]
    assert out["provision_cloud_seconds"] == 7.2 and out["created"] and out["new_id"] == 42
    assert any("the cloud took 7.2 s to make it" in m for m in ctx.said)


# --- data from a backup ----------------------------------------------------------------


@pytest.fixture
def store(monkeypatch) -> dict[str, Any]:
    """A store with three backups; the ones in ``bad`` fail their manifest check."""
    got: dict[str, Any] = {"bad": set(), "fetched": []}
    ids = ["20261127T100000Z", "20261127T110000Z", "20261127T120000Z"]

    @contextlib.contextmanager
    def access(ctx: Any, conn: Any):
        yield "repo"

    def fetch(conn: Any, backup_id: str, dest: str, repo: Any, *, site: str) -> str:
        got["fetched"].append(backup_id)
        return f"{dest}/{backup_id}"

    def verify(conn: Any, directory: str) -> Verification:
        backup_id = directory.rsplit("/", 1)[1]
        if backup_id in got["bad"]:
            return Verification(backup_id, False, ("stats.sql: sha256 0000… (9 bytes) does not match the manifest's",))
        return Verification(backup_id, True, ())

    def parse(text: str) -> Any:
        from datetime import datetime, timezone

        return SimpleNamespace(id=got["fetched"][-1], images={}, artifacts=[],
                               finished_at=datetime(2026, 11, 27, 11, tzinfo=timezone.utc))

    monkeypatch.setattr(data, "store_access", access)
    monkeypatch.setattr(data.offsite, "snapshots", lambda conn, repo, site: [{"id": i, "time": i} for i in ids])
    monkeypatch.setattr(data.offsite, "fetch", fetch)
    monkeypatch.setattr(data.offsite, "verify_remote_dir", verify)
    monkeypatch.setattr(data, "parse", parse)
    return got


def test_data_backup_skips_a_newest_backup_that_fails_its_checksums_for_the_next_older(store) -> None:
    store["bad"] = {"20261127T120000Z"}
    ctx = Ctx()
    out = data.data_backup(ctx)  # type: ignore[arg-type]
    assert store["fetched"] == ["20261127T120000Z", "20261127T110000Z"]
    assert out["backup_id"] == "20261127T110000Z"
    assert out["backups_skipped"][0]["id"] == "20261127T120000Z"
    assert "does not match its manifest: stats.sql" in out["backups_skipped"][0]["reason"]
    assert "newer backup(s) skipped: 20261127T120000Z does not match its manifest" in out["rpo_basis"]
    assert any("rm -rf" in c for c in ctx.conn.commands), "the bad copy is removed from the new host"


def test_data_backup_asked_for_a_backup_that_fails_its_checksums_stops(store) -> None:
    store["bad"] = {"20261127T110000Z"}
    ctx = Ctx(backup_id="20261127T110000Z")
    with pytest.raises(RelaunchError, match="backup 20261127T110000Z fetched onto 10.0.0.9 does not match its manifest"):
        data.data_backup(ctx)  # type: ignore[arg-type]
    assert store["fetched"] == ["20261127T110000Z"]


def test_data_backup_stops_when_no_backup_passes(store) -> None:
    store["bad"] = {"20261127T100000Z", "20261127T110000Z", "20261127T120000Z"}
    with pytest.raises(RelaunchError, match="none of the 3 newest backups"):
        data.data_backup(Ctx())  # type: ignore[arg-type]


# --- restore ---------------------------------------------------------------------------


@pytest.fixture
def restoring(monkeypatch) -> dict[str, Any]:
    got: dict[str, Any] = {"runs": [], "fail": 0}
    monkeypatch.setattr(restore.apps, "stop_writers", lambda *a, **kw: SimpleNamespace(compose=None))
    monkeypatch.setattr(data, "engine", lambda kind: SimpleNamespace(
        drop_command=lambda db, c: "drop", create_command=lambda db, c: "create",
        restore_from_file_command=lambda db, c, path, jobs: "restore"))

    def run_command(conn: Any, cmd: str) -> bytes:
        got["runs"].append(cmd)
        if cmd == "restore" and got["fail"]:
            got["fail"] -= 1
            got["ctx"].lost = got["lose"]
            raise RelaunchError("10.0.0.9: restore failed (exit -1): ")
        return b""

    monkeypatch.setattr(data, "run_command", run_command)
    return got


def test_restore_runs_again_on_a_new_connection_when_the_connection_dropped(restoring) -> None:
    ctx = Ctx()
    ctx.state["dumps"] = {"a": {"file": "/var/lib/relaunch/rebuild/x/a.dump"}}
    restoring.update(ctx=ctx, fail=1, lose=True)
    assert restore.restore(ctx) == {}  # type: ignore[arg-type]
    assert restoring["runs"] == ["drop", "create", "restore", "drop", "create", "restore"]
    assert ctx.dropped == 1
    kills = [c for c in ctx.conn.commands if "/proc/" in c and restore.workdir(ctx) in c]
    assert len(kills) == 2, "what an earlier attempt left running is stopped before each attempt"
    assert any("connection to the new host dropped" in m for m in ctx.said)


def test_restore_asks_whether_the_connection_dropped_since_the_attempt_began(restoring) -> None:
    # a parallel job reopens a dropped connection on the same object: only the transport the attempt began
    # with tells that it dropped (RunContext.conn_lost)
    ctx = Ctx()
    ctx.state["dumps"] = {"a": {"file": "/var/lib/relaunch/rebuild/x/a.dump"}}
    restoring.update(ctx=ctx, fail=1, lose=True)
    restore.restore(ctx)  # type: ignore[arg-type]
    assert ctx.asked_since == ["transport 0"]


def test_restore_does_not_retry_a_failure_on_a_live_connection(restoring) -> None:
    ctx = Ctx()
    ctx.state["dumps"] = {"a": {"file": "/x/a.dump"}}
    restoring.update(ctx=ctx, fail=1, lose=False)
    with pytest.raises(RelaunchError, match="restore failed"):
        restore.restore(ctx)  # type: ignore[arg-type]
    assert restoring["runs"] == ["drop", "create", "restore"] and ctx.dropped == 0


def test_restore_gives_up_after_its_attempts(restoring) -> None:
    ctx = Ctx()
    ctx.state["dumps"] = {"a": {"file": "/x/a.dump"}}
    restoring.update(ctx=ctx, fail=restore.RESTORE_ATTEMPTS, lose=True)
    with pytest.raises(RelaunchError, match="restore failed"):
        restore.restore(ctx)  # type: ignore[arg-type]
    assert restoring["runs"].count("restore") == restore.RESTORE_ATTEMPTS


# --- the task --------------------------------------------------------------------------


def test_rebuild_task_passes_fallback_to_backup(monkeypatch) -> None:
    from invoke import Exit

    from relaunch import rebuild as rebuild_

    spec = importlib.util.spec_from_file_location("relaunch_tasks_faults_test", REPO / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)  # type: ignore[union-attr]
    seen = {}

    def fake(site: str, options: Any, **kw: Any) -> None:
        seen["options"] = options
        raise RelaunchError("stop here")

    monkeypatch.setattr(rebuild_, "rebuild", fake)
    with pytest.raises(Exit, match="stop here"):
        tasks.rebuild.body(None, fallback_to_backup=True, no_switch=True)
    assert seen["options"].fallback_to_backup is True and seen["options"].switch is False


# --- data (live): the old host lost mid-way ------------------------------------------------


@pytest.mark.parametrize("lost", ["paramiko", "invoke", "relaunch"])
def test_data_live_losing_the_old_host_stops_with_the_commands_to_go_on(monkeypatch, lost) -> None:
    import invoke
    import paramiko

    errors = {"paramiko": paramiko.SSHException("SSH session not active"),
              "invoke": invoke.exceptions.UnexpectedExit(SimpleNamespace(exited=-1, command="x", hide=(),
                                                                         pty=False, stdout="", stderr="")),
              "relaunch": RelaunchError("old: pg_dump failed (exit -1)")}
    monkeypatch.setattr(data, "data_live", lambda ctx: (_ for _ in ()).throw(errors[lost]))
    with pytest.raises(RelaunchError) as err:
        data.data_any(Ctx())  # type: ignore[arg-type]
    assert "`fab rebuild --resume --site s`" in str(err.value)
    assert "`fab rebuild --resume --source backup --site s`" in str(err.value)


def test_data_live_losing_the_old_host_falls_back_to_the_newest_backup_when_allowed(monkeypatch) -> None:
    import paramiko

    monkeypatch.setattr(data, "data_live", lambda ctx: (_ for _ in ()).throw(paramiko.SSHException("gone")))
    monkeypatch.setattr(data, "data_backup", lambda ctx, old_host=None: {"source": "backup", "backup_id": "b1"})
    ctx = Ctx(fallback_to_backup=True)
    out = data.data_any(ctx)  # type: ignore[arg-type]
    assert out["source"] == "backup" and "fell back to the newest backup" in out["source_reason"]
    assert ctx.dropped == 1


def test_restore_runs_again_when_reconnecting_to_the_new_host_fails(restoring, monkeypatch) -> None:
    """The next command after a drop reconnects; sshd busy with the killed sessions answers late: paramiko's
    AuthenticationException from that reconnect, on a transport still open, is a dropped connection too."""
    import paramiko

    ctx = Ctx()
    ctx.state["dumps"] = {"a": {"file": "/x/a.dump"}}
    restoring.update(ctx=ctx, fail=0, lose=False)
    calls = {"n": 0}
    plain = data.run_command

    def reconnect_fails_once(conn: Any, cmd: str) -> bytes:
        if cmd == "drop" and not calls["n"]:
            calls["n"] += 1
            raise paramiko.ssh_exception.AuthenticationException("Authentication timeout.")
        return plain(conn, cmd)

    monkeypatch.setattr(data, "run_command", reconnect_fails_once)
    assert restore.restore(ctx) == {}  # type: ignore[arg-type]
    assert restoring["runs"] == ["drop", "create", "restore"] and ctx.dropped == 1


def test_resuming_with_source_backup_runs_the_data_step_and_all_that_depends_on_it_again() -> None:
    from relaunch.rebuild import resume_from_backup

    journal = Journal.ephemeral("s", "rebuild", {})
    journal.state.update(source="live")
    for name in ("preflight", "provision", "boot", "bootstrap", "data", "restore"):
        journal.step_done(name, 1.0, {})
    journal.step_failed("verify", 1.0, "the old host could not be read to prove the copy")
    resume_from_backup(journal, None)
    assert [name for name, _ in journal.ordered_steps() if journal.done(name)] == ["preflight", "provision", "boot",
                                                                                     "bootstrap"]
    assert "verify" not in journal.steps and journal.state["source"] == "backup"
    assert journal.data["options"] == {"source": "backup", "backup_id": None}
