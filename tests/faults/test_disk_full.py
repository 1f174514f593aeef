"""Fault 9 (the non-CI case): the disk fills on the new host while a rebuild from backup restores.

The CI case is in test_metachar_site.py (an SQLite database's directory on a full tmpfs during
a live rebuild's restore). Here the session's example site is rebuilt from its off-host
backup, and when the restore starts a 256 KiB tmpfs is mounted over /srv/notes on the new
host (the notes app's tree, with its SQLite database): extracting the archive there fails.
The error must name the new host and the path; nothing may be switched; the paused rebuild
is then aborted (its Droplet destroyed).
"""

from __future__ import annotations

import subprocess

import pytest

from relaunch.backup.site import connect_production, install_site
from relaunch.backup.status import run_now
from relaunch.inventory import load_site
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.rebuild import RebuildOptions, Where, abort, rebuild
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

FULL = "/srv/notes"


def records(cloud, zone: str) -> dict:
    return {r.id: (r.type, r.name, r.data) for r in cloud.list_records(zone)}


@pytest.mark.fault(case=9, expected="rebuild from backup, the new host's /srv/notes full during restore: error names "
                   "host and path; records untouched")
def test_a_full_disk_while_a_backup_is_restored(up, site_root, target, sandbox_api, sandbox_backend, observed) -> None:
    inv = load_site("example", site_root)
    install_site(inv, target.key_path)
    conn = connect_production(inv, target.key_path)
    try:
        assert run_now(conn, inv.site, timeout=900).ok  # a backup in the store, whatever ran before in the session
    finally:
        conn.close()
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    before = records(target.cloud, inv.dns.zone)
    state: dict = {}

    def disk_full(event: Event) -> None:
        if event.kind == "start" and event.step == "restore" and not state:
            new = load_hosts("example")[Journal.load("example", "rebuild").state["new_name"]]
            state["ip"] = new.ipv4
            state["container"] = sandbox_backend.container_name(new.droplet_id)
            subprocess.run(["docker", "exec", state["container"], "sh", "-c",
                            'mkdir -p "$1" && mount -t tmpfs -o size=256k tmpfs "$1"', "sh", FULL],
                           check=True, capture_output=True, timeout=60)

    try:
        result = rebuild("example", RebuildOptions(source="backup", settle=0), root=site_root, where=where,
                         progress=disk_full)
        assert state, f"the restore never started: the rebuild {result.status}: {result.error}"
        assert result.status == "failed"
        observed(f"error: {result.error[:200]}")
        assert state["ip"] in result.error and FULL in result.error, result.error
        assert "No space left on device" in result.error, result.error
        assert result.journal.steps["restore"]["status"] == "failed" and "switch" not in result.journal.steps
        assert records(target.cloud, inv.dns.zone) == before
        observed("records untouched")
    finally:
        if Journal.load("example", "rebuild") is not None:
            abort("example", root=site_root, where=where, destroy=True)
