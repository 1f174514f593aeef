"""The control machine's side of backups over SSH: every failure names its cause and the next command,
and no remote call can block forever (a timeout on every command, SFTP and channel wait)."""

from __future__ import annotations

import ast
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relaunch.apps import compose_command
from relaunch.backup import install as inst
from relaunch.backup import offsite, status
from relaunch.databases import RemoteCommand
from relaunch.databases import runner as db_runner
from relaunch.errors import RelaunchError
from relaunch.inventory import load
from relaunch.render import RenderedFile
from relaunch.upload import upload

SRC = Path(__file__).resolve().parents[2] / "src" / "relaunch"
EXAMPLE = SRC.parents[1] / "inventory" / "example.yml"
INSTALLED = [inst.RUNNER_PATH, inst.CONFIG_PATH, f"{inst.UNIT_DIR}/{inst.SERVICE}", f"{inst.UNIT_DIR}/{inst.TIMER}"]


@dataclass
class Result:
    stdout: str = ""
    stderr: str = ""
    exited: int = 0

    @property
    def ok(self) -> bool:
        return self.exited == 0


class FakeChannel:
    def __init__(self) -> None:
        self.timeout: float | None = None

    def settimeout(self, t: float) -> None:
        self.timeout = t


class FakeFile:
    def __init__(self) -> None:
        self.data = b""

    def __enter__(self) -> FakeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def chmod(self, mode: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.data += data if isinstance(data, bytes) else data.encode()


class FakeSftp:
    def __init__(self) -> None:
        self.channel = FakeChannel()

    def get_channel(self) -> FakeChannel:
        return self.channel

    def open(self, path: str, mode: str) -> FakeFile:
        assert self.channel.timeout, "an SFTP transfer without a timeout"
        return FakeFile()

    def posix_rename(self, a: str, b: str) -> None:
        assert self.channel.timeout, "an SFTP rename without a timeout"


@dataclass
class FakeConn:
    """A production host: answers commands by their first matching prefix; refuses any call without a timeout."""

    answers: dict[str, object] = field(default_factory=dict)
    host: str = "prod.test"
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, **kw: object) -> Result:
        timeout = kw.get("timeout")
        assert isinstance(timeout, (int, float)) and timeout > 0, f"{command[:60]!r} runs without a timeout"
        self.commands.append(command)
        for prefix, answer in self.answers.items():
            if command.startswith(prefix) or prefix in command:
                return answer(command) if callable(answer) else answer  # type: ignore[return-value]
        return Result()

    def sftp(self) -> FakeSftp:
        self._sftp = getattr(self, "_sftp", None) or FakeSftp()
        return self._sftp


def host(installed: bool = True, runs_after: list[dict] | None = None, start: Result | None = None) -> FakeConn:
    state = {"started": False}

    def cat_status(command: str) -> Result:
        return Result(json.dumps({"runs": runs_after or []} if state["started"] else {"runs": []}))

    def systemctl_start(command: str) -> Result:
        state["started"] = True
        return start or Result()

    return FakeConn({
        "for f in": Result("" if installed else "\n".join(INSTALLED) + "\n"),
        "cat /var/lib/relaunch/backup-status.json": cat_status,
        "date +%s": Result("1764230000\n"),
        "systemctl start": systemctl_start,
        "systemctl is-active": Result("inactive\ninactive\n\n"),
        "journalctl": Result("dump stats: exit status 2: Access denied\n"),
        "python3 /usr/local/lib/relaunch/backup.py": Result(json.dumps({"local": [], "offsite": None, "ok": True})),
    })


@pytest.fixture(scope="module")
def inv():
    return load(EXAMPLE)


@pytest.mark.parametrize("call", ["run_now", "status", "list", "verify"])
def test_a_host_without_the_backup_is_told_to_install_it(call: str, inv) -> None:
    conn = host(installed=False, start=Result(stderr="Failed to start relaunch-backup.service: Unit not found.", exited=5))
    with pytest.raises(RelaunchError) as err:
        {"run_now": lambda: status.run_now(conn, "example"), "status": lambda: status.status(conn, inv),
         "list": lambda: status.list_backups(conn, "example"), "verify": lambda: status.verify_backup(conn, "example")}[call]()
    assert str(err.value).startswith("backup is not installed on prod.test: run `fab backup --install --site example`")
    assert inst.RUNNER_PATH in str(err.value)


def test_a_failed_run_names_its_step_its_error_and_what_to_do_next() -> None:
    failed = {"started_at": "2026-11-27T10:00:00Z", "finished_at": "2026-11-27T10:00:09Z", "ok": False, "state": "finished",
              "local_ok": True, "id": "20261127T100000Z", "step": "offsite snapshots",
              "error": "restic snapshots exited 1: Fatal: unable to open repository"}
    conn = host(runs_after=[failed], start=Result(exited=3))
    with pytest.raises(RelaunchError) as err:
        status.run_now(conn, "example")
    text = str(err.value)
    assert "failed at step offsite snapshots: restic snapshots exited 1" in text
    assert "Next: the backup is on prod.test but not off-host" in text and "`fab backup --list --site example`" in text
    assert "`fab backup --status --site example`" in text


def test_the_run_started_is_the_one_reported_even_when_the_timer_starts_the_next_at_once() -> None:
    # Found in a sandbox run (a 1-minute timer, a loaded machine): our run had ended well, the timer's run had
    # begun and recorded itself "running" before the status was read; run_now took that one as ours: "failed (exit 0)"
    ours = {"started_at": "2026-11-27T10:00:00Z", "finished_at": "2026-11-27T10:00:05Z", "ok": True, "state": "finished",
            "id": "20261127T100000Z"}
    timers = {"started_at": "2026-11-27T10:00:06Z", "ok": False, "state": "running", "id": None, "step": None, "error": None}
    assert status.run_now(host(runs_after=[ours, timers]), "example").id == "20261127T100000Z"


def test_a_service_that_fails_before_the_runner_records_a_run_says_where_to_look() -> None:
    conn = host(start=Result(stderr="Job for relaunch-backup.service failed because of unavailable resources.", exited=1))
    with pytest.raises(RelaunchError) as err:
        status.run_now(conn, "example")
    text = str(err.value)
    assert "failed before the runner recorded a run" in text and "unavailable resources" in text
    assert "journalctl -u relaunch-backup.service" in text and "`fab backup --install --site example`" in text


def test_a_run_that_never_recorded_its_end_is_reported_killed(inv) -> None:
    killed = {"started_at": "2026-11-27T10:00:00Z", "ok": False, "state": "running", "id": None, "step": None, "error": None}
    conn = host()
    conn.answers["cat /var/lib/relaunch/backup-status.json"] = Result(json.dumps({"runs": [killed]}))
    st = status.status(conn, inv)
    assert st.last_failed and any("never recorded its end" in w for w in st.warnings)
    conn.answers["systemctl is-active"] = Result("active\nactivating\n\n")  # it is running right now: not a failure
    assert not status.status(conn, inv).last_failed


def test_every_backup_call_over_ssh_has_a_timeout(inv, tmp_path: Path) -> None:
    run = {"started_at": "2026-11-27T10:00:00Z", "ok": True, "state": "finished", "id": "20261127T100000Z"}
    conn = host(runs_after=[run])
    status.status(conn, inv)
    status.run_now(conn, "example")
    status.list_backups(conn, "example")
    status.verify_backup(conn, "example")
    status.journal(conn)
    compose_command(conn)
    upload(conn, [RenderedFile("/etc/relaunch/x", b"x", 0o600, secret=True)])
    assert conn.sftp().channel.timeout
    repo = offsite.Repository("/srv/restic/example", password=type("S", (), {"reveal": lambda self: "pw"})())
    conn.answers["restic"] = Result(json.dumps([{"id": "f" * 64, "short_id": "ffffffff", "hostname": "example",
                                                 "tags": ["relaunch", "site:example", "20261127T100000Z"], "time": "t"}]))
    conn.answers["find "] = Result("/d/20261127T100000Z/manifest.json\n")
    assert offsite.snapshots(conn, repo, "example")[0]["id"] == "20261127T100000Z"
    offsite.fetch(conn, "20261127T100000Z", "/d", repo, site="example")
    assert any(" restore " + "f" * 64 in c for c in conn.commands)  # by the exact snapshot of this site


def test_fetch_never_takes_another_sites_backup_of_the_same_id() -> None:
    conn = host()
    conn.answers["restic"] = Result(json.dumps([{"id": "e" * 64, "short_id": "eeeeeeee", "hostname": "other",
                                                 "tags": ["relaunch", "site:other", "20261127T100000Z"], "time": "t"}]))
    repo = offsite.Repository("/srv/restic/shared", password=type("S", (), {"reveal": lambda self: "pw"})())
    with pytest.raises(RelaunchError, match="holds no snapshot of backup 20261127T100000Z of site 'example'"):
        offsite.fetch(conn, "20261127T100000Z", "/d", repo, site="example")
    assert not any(" restore " in c for c in conn.commands)


# The class, not the sample: no remote call in these modules without a bound.
BOUNDED_MODULES = ["backup/status.py", "backup/offsite.py", "backup/install.py", "backup/site.py",
                   "backup/sandbox_store.py", "upload.py", "databases/runner.py"]


@pytest.mark.parametrize("module", BOUNDED_MODULES)
def test_no_unbounded_remote_call_is_left(module: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        receiver = ast.unparse(node.func.value)
        if node.func.attr == "run" and "conn" in receiver and not any(k.arg == "timeout" for k in node.keywords):
            problems.append(f"line {node.lineno}: {ast.unparse(node)[:80]} has no timeout")
        if node.func.attr == "sftp" and "conn" in receiver:
            problems.append(f"line {node.lineno}: {receiver}.sftp() without a channel timeout (use relaunch.remote.sftp)")
        if node.func.attr == "recv_exit_status":
            problems.append(f"line {node.lineno}: recv_exit_status() waits forever (use _exit_status)")
    assert problems == []


class SilentChannel:
    """A channel whose command ended its output but whose exit status never comes (a host that stopped answering)."""

    def __init__(self) -> None:
        self.status_event = threading.Event()
        self.exit_status = -1

    def recv(self, n: int) -> bytes:
        return b""

    recv_stderr = recv

    def sendall(self, data: bytes) -> None:
        pass

    def shutdown_write(self) -> None:
        pass

    def settimeout(self, t: float) -> None:
        pass

    def close(self) -> None:
        pass

    def recv_exit_status(self) -> int:  # what paramiko does: wait, with no bound
        self.status_event.wait()
        return self.exit_status


def test_waiting_for_an_exit_status_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_runner, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(db_runner, "open_channel", lambda conn, cmd: SilentChannel())
    outcome: list[BaseException | bytes] = []

    def call() -> None:
        try:
            outcome.append(db_runner.run(type("C", (), {"host": "prod.test"})(), RemoteCommand(("true",), "probe")))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "runner.run waited for the exit status without a bound"
    assert isinstance(outcome[0], RelaunchError) and "no exit status within" in str(outcome[0])


def test_run_now_finds_its_run_when_the_one_before_started_in_the_same_second() -> None:
    """Runs are told apart by their process, not by a start time of second resolution (a CI run failed so)."""
    stopped = {"started_at": "2026-11-27T16:33:30Z", "pid": 4101, "ok": False, "state": "finished", "id": None,
               "step": "stopped", "error": "stopped by SIGTERM"}
    ours = {"started_at": "2026-11-27T16:33:30Z", "pid": 4177, "ok": True, "state": "finished", "id": "20261127T163330Z"}
    conn = host(runs_after=[stopped, ours])
    conn.answers["cat /var/lib/relaunch/backup-status.json"] = lambda command: Result(
        json.dumps({"runs": [stopped, ours] if conn.started else [stopped]}))
    conn.started = False
    start = conn.answers["systemctl start"]
    conn.answers["systemctl start"] = lambda command: (setattr(conn, "started", True), start(command))[1]
    assert status.run_now(conn, "example").id == "20261127T163330Z"


def test_run_now_never_returns_a_run_that_began_before_it_was_called() -> None:
    """A run already going (the timer fired a moment before) began before the caller's last writes (a drill's
    canary): run_now waits for it, then starts one of its own and returns that one (a sandbox drill failed so)."""
    timers = {"started_at": "2026-11-28T15:30:14Z", "pid": 700, "ok": False, "state": "running", "id": None}
    timers_done = {**timers, "ok": True, "state": "finished", "id": "20261128T153014Z"}
    ours = {"started_at": "2026-11-28T15:30:19Z", "pid": 745, "ok": True, "state": "finished", "id": "20261128T153019Z"}
    starts: list[str] = []
    runs = {0: [timers], 1: [timers_done], 2: [timers_done, ours]}
    conn = host()
    conn.answers["cat /var/lib/relaunch/backup-status.json"] = lambda command: Result(
        json.dumps({"runs": runs[len(starts)]}))
    conn.answers["systemctl start"] = lambda command: (starts.append(command), Result())[1]
    conn.answers["systemctl is-active"] = lambda command: Result("activating\n" if not starts else "inactive\n",
                                                                 exited=0 if not starts else 3)
    assert status.run_now(conn, "example").id == ours["id"]
    assert len(starts) == 2
