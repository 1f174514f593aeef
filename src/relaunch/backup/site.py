"""A site's backups from the control machine: which hosts, which key, and the install as one call.

The production host is found by its record (role production, else ``production.droplet_name``) with the
host key relaunch pinned when it made it (``relaunch.state.load_hosts``); nothing is
trusted on first use. The login key is ``provider.ssh_key`` or, for a sandbox site, the
sandbox's own key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fabric import Connection

from relaunch.backup.install import InstallResult, StoreHost, install, parse_sftp
from relaunch.backup.sandbox_store import backup_host_record
from relaunch.cloud.local import login_key_path
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.store import endpoint_from_known_hosts
from relaunch.provision import open_host
from relaunch.state import production_record

log = logging.getLogger(__name__)


def login_key(inv: Inventory) -> Path:
    """The private key relaunch logs in to the site's hosts with."""
    if inv.provider.ssh_key:
        return Path(inv.provider.ssh_key).expanduser()
    return login_key_path()


def own_store_access(inv: Inventory, secrets: Mapping[str, Any]) -> dict[str, Any]:
    """How a host reaches an SFTP store relaunch has no login on: ``store_host`` and ``store_key`` for ``install``.

    With ``backups.offsite.append_only_key``: through rclone's append-only restic server, with
    that key (the user authorized it so on the store); else with ``ssh_key`` (full access, what
    the user authorized); both need ``known_hosts``. Empty when the inventory names neither.
    """
    off = inv.backups.offsite
    if off is None or off.kind != "sftp" or not off.known_hosts or not (off.append_only_key or off.ssh_key):
        return {}
    end = endpoint_from_known_hosts(off.known_hosts, parse_sftp(off.repository).host)
    if off.append_only_key:
        return {"store_host": StoreHost(end.alias, end.address, end.host_key, append_only=True),
                "store_key": secrets[off.append_only_key]}
    return {"store_host": StoreHost(end.alias, end.address, end.host_key), "store_key": secrets[off.ssh_key]}


def connect_production(inv: Inventory, key_path: Path | None = None, timeout: float = 60) -> Connection:
    """Open a pinned connection to the site's production host.

    That is the host whose record has role production (a rebuild hands the role on), else
    the one named ``production.droplet_name``. Raise RelaunchError if relaunch has no record
    of it (it did not make it and it was not adopted).
    """
    name = inv.production.droplet_name
    record = production_record(inv.site, name)
    if record is None:
        raise RelaunchError(
            f"site {inv.site!r}: relaunch has no pinned host key for production host {name!r} "
            f"(was it made with `fab sandbox-up --site {inv.site}`?)"
        )
    return open_host(record, key_path or login_key(inv), timeout=timeout)


def install_site(inv: Inventory, key_path: Path | None = None, interval_minutes: int | None = None) -> InstallResult:
    """Install the backup on the site's production host, and authorize it on the sandbox store host if there is one.

    Without a store host relaunch can log in to (a clean operator machine, a host set up by
    hand), an SFTP store is reached with the inventory's ``backups.offsite.ssh_key`` and
    ``known_hosts``, as a rebuild's new host does.
    """
    key = key_path or login_key(inv)
    secrets = resolve_all(inv)
    store = backup_host_record(inv)
    extra = own_store_access(inv, secrets) if store is None else {}
    conn = connect_production(inv, key)
    store_conn = open_host(store, key) if store is not None else None
    try:
        return install(conn, inv, secrets, store, store_conn, interval_minutes=interval_minutes, **extra)
    finally:
        conn.close()
        if store_conn is not None:
            store_conn.close()
