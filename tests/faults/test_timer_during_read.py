"""Fault 13 (the non-CI cases): the backup timer fires while the backups are being read.

The CI case is in test_metachar_site.py (production's backup starts while that site's drill
fetches from the store). Here, on the session's example production host (``up``): the
backup service starts (what the timer does) while

- the off-host store's newest backup is fetched with the code a rebuild's or drill's data
  step uses (store access, ``restic restore``, then every artifact checked against the
  manifest), and while
- the host's own newest local backup is verified (``fab backup --verify``).

Both readers must finish with whole backups, and the fired run must pass.
"""

from __future__ import annotations

import shlex
import threading
import time

import pytest

from relaunch.backup import offsite
from relaunch.backup.install import SERVICE
from relaunch.backup.site import install_site
from relaunch.backup.status import read_runs, run_now, verify_backup
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.store import store_access
from relaunch.provision import open_host

pytestmark = [pytest.mark.sandbox]


def sh(conn, command: str, timeout: float = 120) -> str:
    return conn.run(command, hide=True, in_stream=False, timeout=timeout).stdout.strip()


def fire_and_wait(conn, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while sh(conn, f"systemctl is-active {SERVICE} || true") in ("activating", "active", "deactivating"):
        assert time.monotonic() < deadline, "the fired backup did not end"
        time.sleep(0.5)


@pytest.mark.fault(case=13, expected="the timer fires during a fetch from the store and during a local verify: "
                   "both readers get whole backups; the fired run passes")
def test_the_timer_firing_while_the_store_and_a_local_backup_are_read(up, site_root, target, observed) -> None:
    inv = load_site("example", site_root)
    install_site(inv, target.key_path)
    conn = open_host(up.host, target.key_path)
    side = open_host(up.host, target.key_path)
    work = "/var/lib/relaunch/fault-13"
    ctx = RunContext(inv, resolve_all(inv), target.cloud, target.key_path, Journal.ephemeral("example", "drill", {}), {})
    try:
        fire_and_wait(conn)
        run_now(conn, inv.site, timeout=900)  # a backup to read, on the host and off-host
        runs_before = len(read_runs(conn))
        with store_access(ctx, conn) as repo:
            newest = sorted(s["id"] for s in offsite.snapshots(conn, repo, inv.site) if s.get("id"))[-1]
            sh(side, f"systemctl start --no-block {SERVICE}")  # the timer fires
            directory = offsite.fetch(conn, newest, f"{work}/backup", repo, site=inv.site)
        check = offsite.verify_remote_dir(conn, directory)
        assert check.ok, check.describe()
        observed(f"fetched {newest} from the store while a backup ran: every artifact matches its manifest")

        sh(side, f"systemctl start --no-block {SERVICE}")
        verified: dict = {}
        reader = threading.Thread(target=lambda: verified.update(verify_backup(conn, inv.site, offsite=False)))
        reader.start()
        reader.join(timeout=900)
        assert not reader.is_alive()
        fire_and_wait(side)
        assert verified.get("ok") is not False, verified
        new_runs = read_runs(conn)[runs_before:]
        assert len(new_runs) >= 1 and all(r.ok for r in new_runs), new_runs
        observed(f"local verify during a run: {verified.get('id') or verified.get('backup_id')} whole; "
                 f"{len(new_runs)} fired run(s) passed")
    finally:
        ctx.close()
        sh(conn, f"rm -rf -- {shlex.quote(work)}")
        conn.close()
        side.close()
