"""Fault 14: the off-host store is unreachable during a backup.

On the session's example production host (``up``, backups installed): the store (the
sandbox's backup Droplet) stops answering SSH, a backup runs. It must be recorded as failed
with the cause (the off-host step, the store named), the local backup must be kept (whole,
with its manifest, and not removed by retention), and once the store answers again the next
run must carry the one that missed its copy off-host too (oldest first).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from relaunch.backup import offsite
from relaunch.backup.install import BACKUP_ROOT, SERVICE, TIMER
from relaunch.backup.site import install_site
from relaunch.backup.status import read_runs, run_now
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.store import sandbox_store_record, store_access
from relaunch.provision import open_host

pytestmark = [pytest.mark.sandbox]


def sh(conn, command: str, timeout: float = 120) -> str:
    return conn.run(command, hide=True, in_stream=False, timeout=timeout).stdout.strip()


def store_ssh(container: str, action: str) -> None:
    # ssh.socket too: with socket activation a stopped service would come back on the next connection
    subprocess.run(["docker", "exec", container, "systemctl", action, "ssh.socket", "ssh.service"],
                   capture_output=True, timeout=60)


def wait_idle(conn, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sh(conn, f"systemctl is-active {SERVICE} || true") in ("activating", "active", "deactivating"):
        assert time.monotonic() < deadline, "a backup run did not finish"
        time.sleep(0.5)


@pytest.mark.fault(case=14, ci=True, expected="store unreachable: the run recorded failed with the cause, the local "
                   "backup kept; the next run copies both off-host")
def test_a_backup_while_the_store_is_unreachable_fails_keeps_the_local_copy_and_the_next_catches_up(
        up, site_root, target, sandbox_backend, observed) -> None:
    inv = load_site("example", site_root)
    install_site(inv, target.key_path)
    store = sandbox_store_record(inv)
    assert store is not None
    store_container = sandbox_backend.container_name(store.droplet_id)
    conn = open_host(up.host, target.key_path)
    sh(conn, f"systemctl stop {TIMER}")
    try:
        wait_idle(conn)
        store_ssh(store_container, "stop")
        try:
            with pytest.raises(RelaunchError) as failed:
                run_now(conn, inv.site, timeout=900)
        finally:
            store_ssh(store_container, "start")
        last = read_runs(conn)[-1]
        assert not last.ok and last.local_ok and last.id, last
        assert last.step and "offsite" in last.step, last
        assert last.error and ("backup.example.test" in last.error or store.ipv4 in last.error), last.error
        assert last.id in str(failed.value) or "offsite" in str(failed.value)
        observed(f"run {last.id} failed at {last.step}: {last.error[:120]}")
        kept = sh(conn, f"test -s {BACKUP_ROOT}/{last.id}/manifest.json && ls {BACKUP_ROOT}")
        assert last.id in kept.split()
        observed("local backup kept with its manifest")

        missed = last.id
        again = run_now(conn, inv.site, timeout=900)
        assert again.ok and again.id != missed
        ctx = RunContext(inv, resolve_all(inv), target.cloud, target.key_path,
                         Journal.ephemeral("example", "drill", {}), {})
        try:
            with store_access(ctx, conn) as repo:
                ids = [s["id"] for s in offsite.snapshots(conn, repo, inv.site)]
        finally:
            ctx.close()
        assert missed in ids and again.id in ids, ids
        observed(f"next run {again.id} passed; the store now holds {missed} and {again.id}")
    finally:
        sh(conn, f"systemctl start {TIMER}")
        conn.close()
