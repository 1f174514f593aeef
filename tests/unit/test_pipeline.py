"""The pipeline's plan, journal and lock: pure logic on a fake context (no hosts)."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from typing import Any

import pytest

from relaunch.errors import RelaunchError
from relaunch.pipeline import PHASES
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.plan import Plan, Step, execute

SECRET = "hunter2-very-secret"


@dataclass
class FakeContext:
    journal: Journal
    events: list[Event] = field(default_factory=list)

    @property
    def state(self) -> dict[str, Any]:
        return self.journal.state

    def progress(self, event: Event) -> None:
        self.events.append(event)

    def mask(self, text: str) -> str:
        return text.replace(SECRET, "***")


def _journal() -> Journal:
    return Journal.new("example", "rebuild", {"source": None}).masking(lambda s: s.replace(SECRET, "***"))


def test_step_name_must_be_a_phase():
    with pytest.raises(ValueError, match="not a phase"):
        Step("coffee", "make coffee", lambda ctx: None)
    assert PHASES[0] == "preflight" and PHASES[-2:] == ("switch", "handover")


def test_execute_runs_in_order_and_journals_outputs():
    ctx = FakeContext(_journal())
    seen = []
    plan = Plan("rebuild", "example", [
        Step("preflight", "check", lambda c: seen.append("preflight") or {"source": "live"}),
        Step("provision", "make", lambda c: seen.append(c.state["source"]) or {"new_id": 7}),
    ])
    execute(plan, ctx)
    assert seen == ["preflight", "live"]
    data = json.loads(ctx.journal.path.read_text())
    assert data["state"] == {"source": "live", "new_id": 7}
    assert data["steps"]["provision"]["status"] == "done"
    assert stat.S_IMODE(ctx.journal.path.stat().st_mode) == 0o600
    assert [e.kind for e in ctx.events] == ["start", "done", "start", "done"]


def test_failure_pauses_and_resume_skips_what_is_done():
    ctx = FakeContext(_journal())
    calls = {"provision": 0, "boot": 0}

    def provision(c):
        calls["provision"] += 1
        return {"new_id": 1}

    def boot(c):
        calls["boot"] += 1
        if calls["boot"] == 1:
            raise RelaunchError(f"ssh refused (password {SECRET})")
        return {}

    plan = Plan("rebuild", "example", [Step("provision", "p", provision), Step("boot", "b", boot)])
    with pytest.raises(RelaunchError):
        execute(plan, ctx)
    text = ctx.journal.path.read_text()
    assert SECRET not in text and "***" in text
    saved = Journal.load("example", "rebuild")
    assert saved is not None and saved.status == "paused" and saved.steps["boot"]["status"] == "failed"
    resumed = FakeContext(saved.masking(ctx.mask))
    execute(plan, resumed)
    assert calls == {"provision": 1, "boot": 2}
    assert resumed.events[0].kind == "skip"


def test_ctrl_c_is_recorded_as_interrupted():
    ctx = FakeContext(_journal())

    def boom(c):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(Plan("rebuild", "example", [Step("data", "d", boom)]), ctx)
    assert Journal.load("example", "rebuild").steps["data"]["error"] == "interrupted (Ctrl-C)"


def test_close_moves_the_journal_aside():
    j = _journal()
    j.record(new_id=3)
    final = j.close("passed")
    assert final.name == f"rebuild-{j.id}.json" and Journal.load("example", "rebuild") is None


def test_unreadable_journal_is_refused_not_guessed(tmp_path):
    path = Journal.path_for("example", "drill")
    path.write_text("{not json")
    with pytest.raises(RelaunchError, match="unreadable drill journal"):
        Journal.load("example", "drill")
    path.unlink()


def test_a_resumed_journal_keeps_the_order_its_steps_ran_in():
    ctx = FakeContext(_journal())
    plan = Plan("rebuild", "example", [Step(n, n, lambda c: {}) for n in ("preflight", "provision", "data", "bootstrap")])
    execute(plan, ctx)
    reloaded = Journal.load("example", "rebuild")  # the file's keys come back sorted by name
    assert [n for n, _ in reloaded.ordered_steps()] == ["preflight", "provision", "data", "bootstrap"]


def _context(journal: Journal):
    from relaunch.inventory.secrets import Secrets
    from relaunch.pipeline.context import RunContext

    return RunContext(inv=None, secrets=Secrets({}), cloud=None, key_path=None, journal=journal, options={})  # type: ignore[arg-type]


def test_artifacts_of_an_in_memory_run_stay_in_memory():
    # rebuild.data_restore_verify (the benchmark's entry point) runs the data step, which saves the source's
    # listings as an artifact, with a journal kept in memory only: it has no run directory to write them to.
    ctx = _context(Journal.ephemeral("site", "bench", {}))
    ctx.save_artifact("source-listings.json", {"/srv/x": {".": ["d", 0, 493, 0, 0, "", ""]}})
    assert ctx.load_artifact("source-listings.json") == {"/srv/x": {".": ["d", 0, 493, 0, 0, "", ""]}}
    assert ctx.load_artifact("other.json") is None


def test_artifacts_of_a_journaled_run_go_to_its_directory():
    journal = Journal.new("site", "rebuild", {})
    ctx = _context(journal)
    ctx.save_artifact("a.json", [1, 2])
    assert ctx.load_artifact("a.json") == [1, 2]
    assert ctx.artifact_path("a.json").parent == journal.path.parent / f"rebuild-{journal.id}.d"


class _Transport:
    """A paramiko transport as conn_lost sees it: whether it looks active, and whether a new channel opens on it."""

    def __init__(self, active: bool, opens: bool) -> None:
        self.active, self.opens, self.probes, self.closed = active, opens, [], 0

    def is_active(self) -> bool:
        return self.active

    def open_session(self, timeout: float | None = None):
        self.probes.append(timeout)
        if not self.opens:
            raise EOFError()  # what paramiko raises when the peer has closed the socket
        return self

    def close(self) -> None:  # the probe's channel
        self.closed += 1


def _with_conn(transport: _Transport | None):
    from types import SimpleNamespace

    ctx = _context(Journal.ephemeral("site", "rebuild", {}))
    client = SimpleNamespace(transport=transport)
    client.get_transport = lambda: client.transport
    ctx._conns["new"] = SimpleNamespace(client=client)  # type: ignore[assignment]
    return ctx


def test_a_connection_reopened_since_an_attempt_began_counts_as_lost():
    # Seen in fault case 4: the sessions were killed; a parallel restore job's next command reopened the same
    # Connection object (Connection.open: a new transport), so when the failed job asked, the connection was alive
    # and answered the probe, and the failure was not retried.
    first, second = _Transport(active=True, opens=True), _Transport(active=True, opens=True)
    ctx = _with_conn(first)
    began = ctx.transport("new")
    assert began is first and not ctx.conn_lost("new", since=began)
    ctx._conns["new"].client.transport = second  # reopened
    assert ctx.conn_lost("new", since=began)
    assert not ctx.conn_lost("new", since=second) and not ctx.conn_lost("new")


def test_a_connection_whose_sessions_were_cut_counts_as_lost_while_its_transport_still_looks_active():
    # The race seen in fault case 4: sshd's session processes were killed, the running command came back failed
    # with no output, and paramiko's transport had not yet noticed the socket was closed. Opening a channel asks.
    transport = _Transport(active=True, opens=False)
    assert _with_conn(transport).conn_lost("new")
    assert transport.probes and all(t is not None and t <= 15 for t in transport.probes)


def test_a_live_connection_is_not_lost_and_its_probe_channel_is_closed():
    transport = _Transport(active=True, opens=True)
    ctx = _with_conn(transport)
    assert not ctx.conn_lost("new")
    assert transport.closed == 1
    assert not ctx.conn_lost("old")  # never opened: nothing was lost


@pytest.mark.parametrize("transport", [None, _Transport(active=False, opens=True)])
def test_a_connection_without_an_active_transport_is_lost(transport):
    assert _with_conn(transport).conn_lost("new")
