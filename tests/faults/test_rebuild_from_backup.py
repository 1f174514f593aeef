"""Fault cases 1, 4, 5 and 6 on one rebuild from backup (no switch: the session's production stays production).

The store gets a good backup, then a newer one whose stats dump is corrupted (its manifest's sha256 no longer
matches; restic's own data is sound). Production is frozen (`docker pause`: TCP still connects, SSH never
answers) when `fab rebuild --no-switch` starts, through the task itself (what a user runs), with a health check
that cannot pass:

- 1: preflight finds the old host unreachable and chooses the backup source (production stays frozen through
  the data step, so the backup comes from the off-host store, not from the old host's own directory, and is
  thawed once the data step is done);
- 5: the newest backup fails its checksums on the new host; the next older verified one is used, and the
  report says so;
- 4: during the restore (once its first tree is in place) every SSH session on the new host is killed; the restore runs again on a new
  connection and verify proves every database and tree equal to the backup's manifest;
- 6: the health check fails: nothing switched, the task exits non-zero, the new Droplet kept and how to
  reach it printed.

Then the health check is put right and `--resume` finishes the run: RPO reported as the used backup's age.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke import Exit

from relaunch import rebuild as rebuild_
from relaunch.backup.site import install_site
from relaunch.backup.status import run_now
from relaunch.inventory import load_site
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import apps as app_steps
from relaunch.provision import open_host
from relaunch.rebuild import Where, rebuild
from relaunch.state import forget_host, production_record

# the module fixture runs a whole rebuild (and the session's `up` when this module comes first): more than the 900 s default
pytestmark = [pytest.mark.sandbox, pytest.mark.heavy, pytest.mark.timeout(2700)]

ROOT = Path(__file__).resolve().parents[2]

# A copy of the newest local backup under a newer ID, one byte of its first database dump flipped (the manifest
# keeps the original sha256), sent off-host by the host's own runner exactly as a backup is, then removed here.
PLANT = r"""
import importlib.util, json, shutil, sys
from pathlib import Path
sys.path.insert(0, "/usr/local/lib/relaunch")  # the runner's retention module lives beside it
spec = importlib.util.spec_from_file_location("relaunch_backup_runner", "/usr/local/lib/relaunch/backup.py")
runner = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)
config = json.load(open("/etc/relaunch/backup.json"))
root = Path(config["root"])
newest = sorted(runner.local_backups(root))[-1]
planted = runner.new_id(root)
shutil.copytree(root / newest, root / planted)
manifest = json.loads((root / planted / "manifest.json").read_text())
manifest["id"] = planted
(root / planted / "manifest.json").write_text(json.dumps(manifest))
victim = root / planted / manifest["databases"][0]["file"]
data = bytearray(victim.read_bytes()); data[len(data) // 2] ^= 0xFF; victim.write_bytes(bytes(data))
runner.upload(config, root, planted)
shutil.rmtree(root / planted)
print(json.dumps({"id": planted, "file": manifest["databases"][0]["file"], "copy_of": newest}))
"""

# Every SSH session on the host (not the listener): what a dropped connection does to the host's side.
KILL_SESSIONS = r"""for p in /proc/[0-9]*; do
  case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in "sshd: root"*) kill -KILL "${p#/proc/}" 2>/dev/null;; esac
done; exit 0"""


def container(backend, droplet_id: int):
    return backend.client.containers.get(backend.container_name(int(droplet_id)))


def zone(cloud, name: str) -> dict:
    return {r.id: (r.type, r.name, r.data, r.ttl) for r in cloud.list_records(name)}


def load_tasks():
    spec = importlib.util.spec_from_file_location("relaunch_tasks_faults_backup", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)  # type: ignore[union-attr]
    return tasks


@pytest.fixture(scope="module")
def run(up, site_root, target, sandbox_api, sandbox_backend, tmp_path_factory) -> Any:
    """The rebuild of the module docstring, run once; what each case checks."""
    cloud = target.cloud
    where = Where(cloud, sandbox_api.dns_port, target.key_path)
    inv = load_site("example", site_root)
    install_site(inv, target.key_path)
    old = production_record("example", inv.production.droplet_name)
    conn = open_host(old, target.key_path)
    path = site_root / "inventory" / "example.yml"
    original = path.read_text()
    frozen = container(sandbox_backend, old.droplet_id)
    out: dict[str, Any] = {"events": [], "records_before": zone(cloud, inv.dns.zone), "old": old}
    mp = pytest.MonkeyPatch()
    try:
        good = run_now(conn, "example")
        assert good.ok and (good.offsite or {}).get("ok", True), good
        out["good"] = good.id
        out["planted"] = json.loads(conn.run(f"python3 -c {shlex.quote(PLANT)}", hide=True, in_stream=False,
                                             timeout=600).stdout.strip().splitlines()[-1])

        bad = yaml.safe_load(original)
        bad["apps"][2]["health"].append({"path": "/no-such-page", "status": 200})  # notes answers 404 there
        path.write_text(yaml.safe_dump(bad, sort_keys=False))
        mp.setattr(app_steps, "HEALTH_TIMEOUT", 20)
        killed: list[float] = []

        def inject(event: Event) -> None:
            out["events"].append(event)
            if event.step == "data" and event.kind == "done" and frozen.reload() is None and frozen.status == "paused":
                frozen.unpause()
                out["thawed"] = time.monotonic()
            if event.step == "restore" and event.kind == "info" and event.message.startswith("files of") and not killed:
                # the first tree is in place: the other trees and every database still go over this connection
                journal = Journal.load("example", "rebuild")
                killed.append(time.monotonic())
                container(sandbox_backend, journal.state["new_id"]).exec_run(["sh", "-c", KILL_SESSIONS])

        def with_fixtures(site, options=None, **kw):
            progress = kw.pop("progress")

            def both(event: Event) -> None:
                inject(event)
                progress(event)

            return rebuild(site, options, root=site_root, where=where, progress=both, **kw)

        tasks = load_tasks()
        mp.setattr(rebuild_, "rebuild", with_fixtures)
        frozen.pause()
        out["paused"] = time.monotonic()
        with pytest.raises(Exit) as exited, _captured(tasks) as printed:
            tasks.rebuild.body(None, site="example", no_switch=True)
        out["exit"] = exited.value
        out["printed"] = printed.getvalue()
        out["killed"] = killed
        out["paused_journal"] = json.loads(Journal.path_for("example", "rebuild").read_text())
        out["records_after_failure"] = zone(cloud, inv.dns.zone)
        state = out["paused_journal"]["state"]
        out["new_droplet"] = cloud.get_droplet(int(state["new_id"]))

        path.write_text(original)
        mp.undo()
        out["resumed"] = rebuild("example", root=site_root, where=where, resume=True)
        out["records_after"] = zone(cloud, inv.dns.zone)
        yield out
    finally:
        mp.undo()
        path.write_text(original)
        with contextlib.suppress(Exception):
            frozen.reload()
            if frozen.status == "paused":
                frozen.unpause()
        journal = Journal.load("example", "rebuild")
        state = (out.get("resumed").journal.state if out.get("resumed") else journal.state if journal else {})
        if journal is not None:
            rebuild_.abort("example", root=site_root, destroy=True, where=where)
        elif state.get("new_id"):
            with contextlib.suppress(Exception):
                cloud.destroy_droplet(int(state["new_id"]))
            forget_host("example", state.get("new_name") or "")
        with contextlib.suppress(Exception):
            run_now(conn, "example")  # the newest backup in the store is a good one again
        conn.close()


@contextlib.contextmanager
def _captured(tasks):
    """What the task prints (its rich console), as text."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    saved = tasks.console
    tasks.console = Console(file=buffer, width=200, color_system=None)
    try:
        yield buffer
    finally:
        tasks.console = saved


@pytest.mark.fault(case=1, expected="old host unreachable at start: rebuild from the newest verified backup; RPO reported")
def test_old_host_unreachable_at_start_rebuilds_from_the_newest_verified_backup(run, observed) -> None:
    first = run["paused_journal"]["state"]
    assert first["source"] == "backup" and "does not answer" in first["source_reason"], first["source_reason"]
    result = run["resumed"]
    assert result.status == "passed", result.error
    record = result.record
    assert record["source"] == "backup" and record["backup_id"] == run["good"]
    assert record["rpo_seconds"] > 0 and f"backup {run['good']}" in record["rpo_basis"] and "its age" in record["rpo_basis"]
    assert "RPO" in Path(result.report_md).read_text() and run["good"] in Path(result.report_md).read_text()
    assert run["records_after"] == run["records_before"], "--no-switch: DNS untouched"
    observed(f"source backup ({first['source_reason'][:90]}); backup {record['backup_id']}, RPO {record['rpo_seconds']} s "
             f"({record['rpo_basis'][:60]}...)")


@pytest.mark.fault(case=5, ci=True, expected="a corrupted backup artifact: detected by checksum before restore; the next "
                   "older verified backup used and the report says so")
def test_a_corrupted_newest_backup_is_skipped_for_the_next_older_verified_one(run, observed) -> None:
    planted, good = run["planted"], run["good"]
    state = run["paused_journal"]["state"]
    assert [s["id"] for s in state["backups_skipped"]] == [planted["id"]]
    reason = state["backups_skipped"][0]["reason"]
    assert "does not match its manifest" in reason and planted["file"] in reason and "sha256" in reason
    assert state["backup_id"] == good
    # detected before anything was restored: the data step (fetch, check) comes before the restore
    steps = run["paused_journal"]["steps"]
    assert steps["data"]["order"] < steps["restore"]["order"]
    said = [e.message for e in run["events"] if e.step == "data" and e.kind == "info"]
    assert any(planted["id"] in m and "trying the next older one" in m for m in said), said
    record = run["resumed"].record
    assert record["backup_id"] == good and f"skipped: {planted['id']}" in record["rpo_basis"]
    report = Path(run["resumed"].report_md).read_text()
    assert planted["id"] in report and "does not match its manifest" in report
    assert all(d["fingerprint_match"] for d in record["databases"])
    observed(f"backup {planted['id']} ({planted['file']} flipped) skipped at the data step: {reason[:90]}; "
             f"used {good}; the report's RPO basis names the skipped one")


@pytest.mark.fault(case=4, ci=True, expected="SSH connection dropped during restore: the step is retried and the "
                   "result is identical (fingerprints match)")
def test_ssh_dropped_during_restore_is_retried_to_an_identical_result(run, observed) -> None:
    assert run["killed"], "the sessions were killed during the restore"
    said = [e.message for e in run["events"] if e.step == "restore" and e.kind == "info"]
    retried = [m for m in said if "connection to the new host dropped" in m]
    assert retried, said
    steps = run["paused_journal"]["steps"]
    assert steps["restore"]["status"] == "done" and steps["verify"]["status"] == "done"
    state = run["paused_journal"]["state"]
    assert len(state["verify_databases"]) == 3
    assert all(d["fingerprint_match"] for d in state["verify_databases"]), state["verify_databases"]
    assert state["verify_files"] and all(f["match"] for f in state["verify_files"]), state["verify_files"]
    observed(f"sessions killed after {said[0][:40]!r}; {retried[0][:110]}; verify: "
             f"{len(state['verify_databases'])} fingerprints and {len(state['verify_files'])} trees match")


@pytest.mark.fault(case=6, ci=True, expected="a health check fails on the new host: no switch, exit non-zero, the new "
                   "Droplet kept and how to inspect it printed")
def test_failing_health_check_keeps_the_new_droplet_and_says_how_to_reach_it(run, observed) -> None:
    exited, printed = run["exit"], run["printed"]
    assert exited.code == 1 and "health checks fail" in str(exited.message) and "/no-such-page" in str(exited.message)
    journal = run["paused_journal"]
    assert journal["status"] == "paused" and journal["steps"]["health"]["status"] == "failed"
    assert "switch" not in journal["steps"]
    assert run["records_after_failure"] == run["records_before"]
    droplet, state = run["new_droplet"], journal["state"]
    assert droplet.status == "active" and droplet.ipv4 == state["new_ipv4"]
    assert f"kept for inspection: ssh root@{state['new_ipv4']}" in printed, printed
    assert "fab rebuild --resume --site example" in printed
    observed(f"exit {exited.code}; DNS unchanged; Droplet {droplet.name} kept (active); printed: "
             f"'kept for inspection: ssh root@{state['new_ipv4']}'")
