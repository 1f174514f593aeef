"""Fault 10: a host key that does not match the pinned one is refused, never accepted (old, new, backup host).

The session's example site (``up``) has three kinds of host relaunch talks to: the old
(production) host, the new host a run builds, and the backup host (the off-host store).
Each is made to show a key other than the one pinned for it (the pin is swapped for a
freshly made key: to relaunch that is the same as the host's key changing under it) and
every connection relaunch makes to it must fail at once, saying so, and never fall back
or re-pin. The pins are put back afterwards.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from relaunch.backup.install import STORE_KNOWN_HOSTS
from relaunch.backup.site import install_site
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import host
from relaunch.pipeline.store import sandbox_store_record, store_access
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, abort, rebuild
from relaunch.remote import HostKey, HostKeyMismatch
from relaunch.state import forget_host, load_hosts, production_record, save_host

pytestmark = [pytest.mark.sandbox]


def other_key() -> str:
    return HostKey.generate().public_line


@pytest.fixture
def pins(up):
    """The site's hosts.json records as they were; put back after the test whatever it changed."""
    before = load_hosts("example")
    yield before
    for name in set(load_hosts("example")) - set(before):
        forget_host("example", name)
    for record in before.values():
        save_host("example", record)


@pytest.mark.fault(case=10, ci=True, expected="old, new and backup host showing another key: refused at once, "
                   "no fallback, no re-pin, nothing created")
def test_a_host_key_other_than_the_pinned_one_is_refused_for_old_new_and_backup_hosts(
        up, pins, site_root, target, sandbox_api, observed) -> None:
    inv = load_site("example", site_root)
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    prod = production_record("example", inv.production.droplet_name)
    assert prod is not None
    droplets = {d.id for d in target.cloud.list_droplets()}

    # the old host: the rebuild stops in preflight; it neither syncs nor falls back to the backups
    save_host("example", dataclasses.replace(prod, host_key=other_key()))
    result = rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    assert result.status == "failed"
    assert "does not match the pinned key" in result.error and prod.ipv4 in result.error, result.error
    assert result.journal.state.get("source") is None, "it chose a data source after the mismatch"
    assert {d.id for d in target.cloud.list_droplets()} == droplets
    assert abort("example", root=site_root, where=where).undone == []
    observed(f"old: rebuild failed in preflight: {result.error[:90]}; no Droplet, no fallback to backup")
    save_host("example", prod)

    # the new host: the address a run's new Droplet answers at shows another key
    secrets = resolve_all(inv)
    journal = Journal.ephemeral("example", "rebuild", {})
    journal.state["new_name"] = "example-impostor"
    save_host("example", dataclasses.replace(prod, name="example-impostor", role="rebuild", host_key=other_key()))
    ctx = RunContext(inv, secrets, target.cloud, target.key_path, journal, {})
    started = time.monotonic()
    try:
        with pytest.raises(HostKeyMismatch, match="does not match the pinned key"):
            host.boot(ctx)
    finally:
        ctx.close()
    took = time.monotonic() - started
    assert took < 60, f"a mismatch was retried like a slow boot ({took:.0f} s)"
    assert load_hosts("example")["example-impostor"].host_key != prod.host_key, "the impostor's key was pinned"
    observed(f"new: boot refused in {took:.1f} s, nothing re-pinned")

    # the backup host: relaunch's own connection to the store (a drill's or rebuild's read access)
    store = sandbox_store_record(inv)
    assert store is not None
    save_host("example", dataclasses.replace(store, host_key=other_key()))
    ctx = RunContext(inv, secrets, target.cloud, target.key_path, Journal.ephemeral("example", "drill", {}), {})
    conn = open_host(prod, target.key_path)
    try:
        with pytest.raises(HostKeyMismatch, match="does not match the pinned key"):
            with store_access(ctx, conn):
                pass
        left = conn.run("ls /run/relaunch 2>/dev/null | grep -c store- || true", hide=True, in_stream=False).stdout.strip()
        assert left in ("", "0"), "store access left its directory behind"
    finally:
        conn.close()
        ctx.close()
    observed("backup: relaunch's connection to the store refused")


@pytest.mark.fault(case=10, expected="production's backup meets a store showing another key: the run fails "
                   "(host key verification), is recorded as failed; the next run with the right pin passes")
def test_the_production_hosts_backup_refuses_a_store_with_another_key(up, site_root, target, observed) -> None:
    install_site(load_site("example", site_root), target.key_path)
    conn = open_host(up.host, target.key_path)
    try:
        original = conn.run(f"cat {STORE_KNOWN_HOSTS}", hide=True, in_stream=False).stdout
        alias = original.split()[0]
        wrong = f"{alias} {other_key()}\n"
        sftp = conn.sftp()
        with sftp.open(STORE_KNOWN_HOSTS, "w") as fh:
            fh.write(wrong.encode())
        try:
            run = conn.run("systemctl start relaunch-backup.service", hide=True, in_stream=False, warn=True, timeout=900)
            status = conn.run("systemctl show -p Result --value relaunch-backup.service; "
                              "journalctl -u relaunch-backup.service -n 80 --no-pager -o cat",
                              hide=True, in_stream=False, warn=True).stdout
        finally:
            with sftp.open(STORE_KNOWN_HOSTS, "w") as fh:
                fh.write(original.encode())
        assert not run.ok, "the backup went through to a store showing another key"
        assert "Host key verification failed" in status or "REMOTE HOST IDENTIFICATION HAS CHANGED" in status, status[-2000:]
        observed("production's backup run failed: Host key verification failed")
        again = conn.run("systemctl start relaunch-backup.service", hide=True, in_stream=False, warn=True, timeout=900)
        assert again.ok, again.stderr
    finally:
        conn.close()
