"""Fault 8: runs of one site that meet.

Two rebuilds of one site at once: the second is refused (naming the first's pid) before it
asks the cloud anything or writes a journal. A rebuild while a drill runs: the drill is
stopped (SIGTERM), cleans up after itself, and the rebuild goes on.

The first case runs with other processes holding the locks as a running rebuild or drill
does (no sandbox: nothing may get as far as a cloud); the second (``RELAUNCH_FAULTS=all``)
with a real drill of the session's example site in another process, and a real rebuild.
These moved here from tests/unit/test_pipeline.py (the lock and the drill stop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.secrets import ensure_sandbox_secrets
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal, holder_pid, run_lock
from relaunch.rebuild import RebuildOptions, Where, abort, rebuild, stop_drill


class CloudReached(Exception):
    """The run got past its lock and preflight's first question went to the cloud."""


class StopAtTheCloud:
    """A cloud whose first call ends the run (the test only needs to see the run get that far)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self.calls.append((name, time.monotonic()))
        raise CloudReached(name)


def hold(kind: str, ready: Path, on_term: str = "") -> subprocess.Popen:
    """Another process holding the site's ``kind`` lock (as a running rebuild or drill does) until killed."""
    code = textwrap.dedent(f"""
        import pathlib, signal, sys, time
        from relaunch.pipeline.journal import run_lock
        def stop(*_):
            {on_term or 'pass'}
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        with run_lock("example", {kind!r}):
            pathlib.Path({str(ready)!r}).write_text("held")
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    for _ in range(300):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert ready.exists(), "the lock holder did not start"
    return proc


@pytest.fixture
def own_state(tmp_path, monkeypatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(state))
    return state


@pytest.fixture
def example_root(site_root: Path) -> Path:
    ensure_sandbox_secrets(load_site("example", site_root))  # what `fab sandbox-up` makes
    return site_root


def test_lock_refuses_a_second_run_and_names_the_holder(own_state) -> None:
    with run_lock("example", "rebuild"):
        assert holder_pid("example", "rebuild") == os.getpid()
        with pytest.raises(RelaunchError, match=f"pid {os.getpid()}"):
            with run_lock("example", "rebuild"):
                pass
    assert holder_pid("example", "rebuild") is None


@pytest.mark.fault(case=8, ci=True, expected="a second rebuild refused (pid named, nothing asked of the cloud, no "
                   "journal); a rebuild during a drill stops the drill, which cleans up; the rebuild goes on")
def test_a_second_rebuild_is_refused_and_a_rebuild_stops_a_running_drill(
        example_root, own_state, tmp_path, observed) -> None:
    cloud = StopAtTheCloud()
    where = Where(cloud, None, tmp_path / "key")  # type: ignore[arg-type]
    first = hold("rebuild", tmp_path / "rebuild-ready")
    try:
        with pytest.raises(RelaunchError, match=f"another rebuild of site 'example' is running \\(pid {first.pid}\\)"):
            rebuild("example", RebuildOptions(), root=example_root, where=where)
        assert cloud.calls == [] and Journal.load("example", "rebuild") is None
        assert list(own_state.rglob("*.json")) == []
    finally:
        first.kill()
        first.wait(timeout=10)
    observed(f"second rebuild refused: another rebuild ... is running (pid {first.pid}); no cloud call, no journal")

    cleaned = tmp_path / "drill-cleaned-up"
    drill_proc = hold("drill", tmp_path / "drill-ready",
                      on_term=f"time.sleep(0.5); pathlib.Path({str(cleaned)!r}).write_text(str(time.monotonic()))")
    events: list[Event] = []
    try:
        with pytest.raises(CloudReached):
            rebuild("example", RebuildOptions(), root=example_root, where=where, progress=events.append)
        assert drill_proc.wait(timeout=10) == 0
    finally:
        drill_proc.kill()
    assert cleaned.exists(), "the drill was not given the chance to clean up"
    assert float(cleaned.read_text()) <= cloud.calls[0][1], "the rebuild went on before the drill had cleaned up"
    assert holder_pid("example", "drill") is None
    assert any("stopping it" in e.message for e in events) and any("stopped" in e.message for e in events)
    observed(f"drill (pid {drill_proc.pid}) got SIGTERM, cleaned up, let go; the rebuild then went on to "
             f"{cloud.calls[0][0]}")


def test_stop_drill_without_a_drill_does_nothing(own_state) -> None:
    assert stop_drill("example") is None


# --- with the sandbox: a real drill, a real rebuild ----------------------------------------------

DRILL = """
import json, os, sys
from pathlib import Path
from relaunch.cloud import Cloud
from relaunch.drill import DrillOptions, drill
from relaunch.rebuild import Where
root, url, dns_port, key, out = sys.argv[1:6]
with Cloud(token=os.environ["RELAUNCH_TEST_TOKEN"], endpoint=url, poll_interval=0.2, poll_max_interval=1.0) as cloud:
    try:
        result = drill("example", DrillOptions(), root=root, where=Where(cloud, int(dns_port), Path(key)))
    except KeyboardInterrupt:  # SIGTERM: the drill cleaned up, reported and re-raised (as `fab drill` sees it)
        Path(out).write_text(json.dumps({"status": "interrupted"}))
        sys.exit(143)
Path(out).write_text(json.dumps({"status": result.status, "error": result.error}))
"""


@pytest.fixture
def drill_process(up, site_root, target, sandbox_api, tmp_path) -> Iterator[tuple[subprocess.Popen, Path]]:
    from relaunch.backup.site import install_site

    install_site(load_site("example", site_root), target.key_path)
    out = tmp_path / "drill.json"
    env = {**os.environ, "RELAUNCH_TEST_TOKEN": "sandbox-test-token"}
    proc = subprocess.Popen([sys.executable, "-c", DRILL, str(site_root), sandbox_api.url, str(sandbox_api.dns_port),
                             str(target.key_path), str(out)], env=env)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.sandbox
@pytest.mark.heavy
@pytest.mark.fault(case=8, expected="a real drill running when a rebuild starts: the drill stops, destroys its scratch "
                   "Droplet, reports; the rebuild creates its Droplet and goes on")
def test_a_rebuild_stops_a_real_drill_which_destroys_its_scratch_droplet(
        drill_process, site_root, target, sandbox_api, observed) -> None:
    from relaunch.drill import DRILL_TAG
    from relaunch.pipeline.report import list_reports

    proc, out = drill_process
    cloud = target.cloud
    deadline = time.monotonic() + 900
    while not cloud.list_droplets(DRILL_TAG):  # the drill has made its scratch Droplet
        assert proc.poll() is None, "the drill ended before it made its scratch Droplet"
        assert time.monotonic() < deadline, "no scratch Droplet within 15 minutes"
        time.sleep(1)
    where = Where(cloud, sandbox_api.dns_port, target.key_path)
    sent: list[Event] = []

    def stop_after_provision(event: Event) -> None:
        if event.kind == "done" and event.step == "provision" and not sent:
            sent.append(event)
            os.kill(os.getpid(), signal.SIGTERM)  # enough: the rebuild went on past the drill

    try:
        with pytest.raises(KeyboardInterrupt):
            rebuild("example", RebuildOptions(settle=0), root=site_root, where=where, progress=stop_after_provision)
        assert proc.wait(timeout=60) is not None
        drilled = json.loads(out.read_text())
        assert drilled["status"] in ("interrupted", "failed"), drilled
        report = list_reports("example")
        drills = [r for r in report if r["kind"] == "drill"]
        assert drills, report
        record = json.loads(Path(drills[0]["path_json"]).read_text())
        assert record["status"] != "passed" and record["scratch_destroyed"] is True, record
        assert cloud.list_droplets(DRILL_TAG) == []
        journal = Journal.load("example", "rebuild")
        assert journal is not None and journal.done("provision") and journal.state.get("new_id")
        observed(f"drill {drilled['status']} ({(record.get('error') or '')[:80]}), scratch Droplet destroyed; rebuild provisioned "
                 f"{journal.state['new_name']}")
    finally:
        if Journal.load("example", "rebuild") is not None:
            abort("example", root=site_root, where=where, destroy=True)
