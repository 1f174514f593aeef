"""The sandbox's off-host store: a "backup" Droplet holding the site's restic repository over SFTP.

``fab sandbox-up --site NAME`` calls :func:`ensure_backup_host` so that a sandbox site has
somewhere to copy its backups that is not its production host. The Droplet is made like
any relaunch host (host key made here and pinned through cloud-init), gets a ``restic``
system user (the repository's owner; the production host's own key is authorized for
it by ``fab backup --install``, append-only through rclone's restic server; the inventory's
``backups.offsite.ssh_key``, the operator's, gets full SFTP access for ``fab backup --prune``),
restic and rclone, so a backup can also be restored right there without the production host.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from pathlib import Path

from relaunch.backup.install import authorize_store_key, parse_sftp
from relaunch.bootstrap import wait_for_cloud_init
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import file_reference_path
from relaunch.provision import create_host, find_droplet, known_host, open_host
from relaunch.remote import ensure_client_key
from relaunch.render import RenderContext, render_user_data
from relaunch.state import HostRecord, load_hosts, make_private_dirs, write_atomic

log = logging.getLogger(__name__)

ROLE = "backup"


def backup_host_name(inv: Inventory) -> str:
    """The sandbox backup Droplet's name: ``<site>-backup``."""
    return f"{inv.site}-backup"


def backup_host_record(inv: Inventory) -> HostRecord | None:
    """The recorded backup Droplet of a sandbox site (with its pinned host key), or None."""
    record = load_hosts(inv.site).get(backup_host_name(inv))
    return record if record is not None and record.role == ROLE else None


def ensure_backup_host(target, inv: Inventory) -> HostRecord | None:
    """Create (or find) the site's backup Droplet on ``target`` (a ``relaunch.sandbox.site.Target``) and prepare it.

    Return its record, or None when the site has no SFTP off-host store (nothing to do).
    Idempotent. Raise RelaunchError if the Droplet cannot be made or prepared.
    """
    off = inv.backups.offsite
    if off is None or off.kind != "sftp":
        return None
    repo = parse_sftp(off.repository)
    name = backup_host_name(inv)
    public = ensure_client_key(target.key_path)
    droplet = find_droplet(target.cloud, inv, name)
    if droplet is not None:
        record = known_host(inv, droplet)
    else:
        log.info("creating the backup Droplet %s", name)
        record = create_host(
            target.cloud, inv, name, ROLE, public,
            lambda hk: render_user_data(RenderContext(
                inventory=inv, sandbox=True, host_key=hk, authorized_keys=[public], hostname=name)),
        )
    conn = open_host(record, target.key_path)
    try:
        wait_for_cloud_init(conn)
        user, home = shlex.quote(repo.user), shlex.quote(posixpath.dirname(repo.path.rstrip("/")) or "/")
        script = (
            "set -e; "
            "missing=; for p in restic openssh-sftp-server rclone; do dpkg -s $p >/dev/null 2>&1 || missing=\"$missing $p\"; done; "
            "if [ -n \"$missing\" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null; fi; "
            f"id -u {user} >/dev/null 2>&1 || useradd --system --create-home --shell /bin/sh {user}; "
            f"install -d -m 0700 -o {user} -g {user} {home}"
        )
        run = conn.run(script, warn=True, hide=True, in_stream=False, timeout=900)
        if not run.ok:
            raise RelaunchError(f"backup host {name}: preparing it failed: {(run.stdout + run.stderr).strip()[-1500:]}")
        _operator_access(conn, inv, repo.user, repo.host, record)
    finally:
        conn.close()
    log.info("backup host %s ready at %s (repository %s)", name, record.ipv4, off.repository)
    return record


def _operator_access(conn, inv: Inventory, user: str, alias: str, record: HostRecord) -> None:
    """Authorize the inventory's ``backups.offsite.ssh_key`` on the store (SFTP only) and pin the store in its
    ``known_hosts`` file: what a rebuild from backup needs on a machine with no state of relaunch's."""
    off = inv.backups.offsite
    if off is None or not off.ssh_key or not off.ssh_key.startswith("file:") or not off.known_hosts:
        return
    key_path = file_reference_path(inv, off.ssh_key)
    authorize_store_key(conn, user, ensure_client_key(key_path), comment="relaunch-operator")
    known = Path(off.known_hosts)
    make_private_dirs(known.parent)
    write_atomic(known, f"{alias},{record.ipv4} {record.host_key}\n".encode(), 0o644)
