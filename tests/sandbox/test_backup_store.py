"""A store production cannot erase (issue 15): production's store key is append-only; the operator forgets and prunes.

On the session's example site: an older install's SFTP key is migrated by ``install_site``; a
backup dated 2020 is made and uploaded by the host's runner; from production, ``restic forget``
of that snapshot fails (403 from rclone's append-only restic server) and so do raw deletes
through the key (an ``rm`` over ssh, an SFTP ``rm``); the snapshot is still listed. Then
``fab backup --prune``'s library call, from this machine with the inventory's full-access key,
forgets exactly that snapshot (the policy drops 2020; everything else is from today) and prunes.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from relaunch.backup import install as inst
from relaunch.backup.install import authorize_store_key, parse_sftp
from relaunch.backup.prune import prune_site
from relaunch.backup.sandbox_store import backup_host_record
from relaunch.backup.site import connect_production, install_site
from relaunch.backup.status import list_backups, read_runs, run_now
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.provision import open_host
from relaunch.sandbox.site import Target

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

OLD_ID = "20200106T000000Z"  # a Monday long ago: backups.retention drops it, nothing else from this session


def sh(conn, command: str, timeout: float = 300):
    return conn.run(command, hide=True, in_stream=False, warn=True, timeout=timeout)


@pytest.fixture(scope="module")
def inv(up, site_root: Path):
    return load_site("example", site_root)


@pytest.fixture(scope="module")
def hosts(up, inv, target: Target):
    conn = connect_production(inv, target.key_path)
    record = backup_host_record(inv)
    assert record is not None
    store = open_host(record, target.key_path)
    yield conn, store
    conn.close()
    store.close()


def wait_idle(conn, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sh(conn, f"systemctl is-active {inst.SERVICE}").stdout.strip() in ("activating", "active", "deactivating"):
        assert time.monotonic() < deadline, "a backup run did not finish"
        time.sleep(0.5)


def offsite_ids(conn, site: str) -> dict[str, str]:
    """backup ID -> full snapshot ID, as production lists the store."""
    listed = list_backups(conn, site)
    assert listed.get("offsite_error") is None, listed
    return {s["id"]: s["full_id"] for s in listed["offsite"] if s["id"]}


def test_production_cannot_erase_its_off_host_history_and_the_operator_prunes(hosts, inv, target: Target) -> None:
    conn, store = hosts
    repo = parse_sftp(inv.backups.offsite.repository)
    install_site(inv, target.key_path)  # idempotent; the host's own store key exists after it
    public = sh(conn, f"cat {inst.STORE_KEY}.pub").stdout.strip()
    authorize_store_key(store, repo.user, public)  # as an older relaunch left it: SFTP, full access
    result = install_site(inv, target.key_path)
    assert result.store_key_authorized and result.store_append_only  # migrated
    keys = sh(store, f"cat ~{repo.user}/.ssh/authorized_keys").stdout
    line = next(k for k in keys.splitlines() if public.split()[1] in k)
    assert line.startswith(f'restrict,command="{inst.APPEND_ONLY_SERVER} {repo.path}" '), line
    config = json.loads(sh(conn, f"cat {inst.CONFIG_PATH}").stdout)["offsite"]
    assert config["repository"].startswith("rclone:") and config["append_only"]

    # a backup dated 2020, uploaded by the host's own runner (append-only: adding works)
    sh(conn, f"systemctl stop {inst.TIMER}")
    try:
        wait_idle(conn)
        if not sh(conn, f"ls {inst.BACKUP_ROOT} | grep -v '^\\.' | tail -1").stdout.strip():
            run_now(conn, inv.site)
        newest = sh(conn, f"ls {inst.BACKUP_ROOT} | grep -v '^\\.' | tail -1").stdout.strip()
        assert sh(conn, f"cp -a {inst.BACKUP_ROOT}/{newest} {inst.BACKUP_ROOT}/{OLD_ID}").ok
        run = run_now(conn, inv.site)
        assert run.ok, run
        assert OLD_ID in [u["id"] for u in run.offsite["uploaded"]]
        assert read_runs(conn)[-1].offsite["retention"]["would_forget"] >= 1  # said, not done
        snapshot = offsite_ids(conn, inv.site)[OLD_ID]

        # from production: restic forget of an existing snapshot fails
        argv = ["restic", "-r", config["repository"], *config["options"], "forget", snapshot]
        forget = sh(conn, f"RESTIC_PASSWORD_FILE={inst.RESTIC_PASSWORD_FILE} RESTIC_CACHE_DIR={inst.RESTIC_CACHE} "
                          + shlex.join(argv), timeout=300)
        assert not forget.ok, forget.stdout
        assert "403 Forbidden" in forget.stderr, forget.stderr[-1500:]
        # ... and so does any raw delete through the key: a shell command, an SFTP rm
        ssh = f"timeout 60 ssh -F {inst.STORE_SSH_CONFIG} {repo.user}@{repo.host}"
        sh(conn, f"{ssh} rm -rf {shlex.quote(repo.path)} </dev/null")  # the forced command runs instead, whatever it says
        sftp = sh(conn, f"printf 'rm {repo.path}/snapshots/{snapshot}\\n' | timeout 60 sftp -F {inst.STORE_SSH_CONFIG} "
                        f"-b - {repo.user}@{repo.host}")
        assert not sftp.ok, sftp.stdout
        assert sh(store, f"test -f {repo.path}/snapshots/{snapshot} && test -f {repo.path}/config").ok
        assert OLD_ID in offsite_ids(conn, inv.site)  # the snapshot is still there

        # the operator, from this machine with backups.offsite.ssh_key: the policy drops exactly the 2020 backup
        dry = prune_site(inv, resolve_all(inv), dry_run=True)
        assert [f[1] for f in dry.forget] == [OLD_ID] and not dry.forgotten
        assert OLD_ID in offsite_ids(conn, inv.site)
        done = prune_site(inv, resolve_all(inv))
        assert done.forgotten and done.pruned and [f[2] for f in done.forget] == [snapshot]
        after = offsite_ids(conn, inv.site)
        assert OLD_ID not in after and run.id in after
        assert not sh(store, f"test -e {repo.path}/snapshots/{snapshot}").ok
        assert run_now(conn, inv.site).ok  # production goes on adding after the prune
    finally:
        sh(conn, f"rm -rf {inst.BACKUP_ROOT}/{OLD_ID}")
        sh(conn, f"systemctl start {inst.TIMER}")
