"""Make a new host for a site: a Droplet whose first SSH connection is already verified."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from fabric import Connection

from relaunch.cloud import Cloud, Droplet
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.remote import HostKey, connect, wait_for_ssh
from relaunch.state import HostRecord, load_hosts, save_host, site_dir

log = logging.getLogger(__name__)

#: Seconds a new Droplet gets to finish its create action and become active with a public IPv4
#: (DigitalOcean's usually take under a minute); beyond that the create is a hard failure.
CREATE_TIMEOUT = 600.0


def site_droplets(cloud: Cloud, inv: Inventory) -> list[Droplet]:
    """Return the site's Droplets: those carrying its first tag (all Droplets if it has none)."""
    tag = inv.provider.tags[0] if inv.provider.tags else None
    return cloud.list_droplets(tag)


def find_droplet(cloud: Cloud, inv: Inventory, name: str) -> Droplet | None:
    """Return the site's Droplet called ``name`` (looked up among the site's tags), or None."""
    matches = [d for d in site_droplets(cloud, inv) if d.name == name]
    if len(matches) > 1:
        ids = ", ".join(str(d.id) for d in matches)
        raise RelaunchError(f"{len(matches)} Droplets are called {name!r} ({ids}); relaunch cannot tell which is meant")
    return matches[0] if matches else None


def wants_ipv6(inv: Inventory) -> bool:
    """Whether the site's hosts need IPv6: it has AAAA records to point at them."""
    return any(r.type == "AAAA" for r in inv.dns.records)


def create_host(
    cloud: Cloud,
    inv: Inventory,
    name: str,
    role: str,
    client_public_key: str,
    user_data: Callable[[HostKey], str],
    ssh_timeout: float = 300,
    requested: Callable[[int], None] | None = None,
) -> HostRecord:
    """Create Droplet ``name`` with a host key made here and pinned through ``user_data(host_key)``.

    ``requested`` is called with the Droplet's id once the cloud accepted the request (see
    :meth:`relaunch.cloud.Cloud.create_droplet`).

    The record (with the public host key) is saved before the Droplet is even asked for,
    keyed by name (``droplet_id`` 0: pending), and completed once it exists, so a crash
    cannot leave a host relaunch cannot verify (:func:`known_host` completes a pending one).
    """
    host_key = HostKey.generate()
    key = cloud.ensure_ssh_key(client_public_key, f"relaunch-{inv.site}")
    # Pending until the Droplet exists: a crash from here on leaves a Droplet whose key is known.
    pending = HostRecord(name=name, role=role, droplet_id=0, ipv4="", host_key=host_key.public_line,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    save_host(inv.site, pending)
    droplet = cloud.create_droplet(
        name=name,
        region=inv.provider.region,
        size=inv.provider.size,
        image=inv.provider.image,
        ssh_keys=[key.fingerprint],
        user_data=user_data(host_key),
        tags=list(inv.provider.tags),
        ipv6=wants_ipv6(inv),
        timeout=CREATE_TIMEOUT,
        ssh_timeout=ssh_timeout,
        requested=requested,
    )
    if not droplet.ipv4:
        raise RelaunchError(f"Droplet {name} ({droplet.id}) is active but has no public IPv4")
    record = dataclasses.replace(pending, droplet_id=droplet.id, ipv4=droplet.ipv4, ipv6=droplet.ipv6)
    save_host(inv.site, record)
    log.info("created %s (%s) at %s, host key %s", name, droplet.id, droplet.ipv4, host_key.fingerprint())
    return record


def known_host(inv: Inventory, droplet: Droplet) -> HostRecord:
    """Return the saved record of an existing Droplet; raise if relaunch did not build it."""
    record = load_hosts(inv.site).get(droplet.name)
    if record is not None and record.droplet_id == 0 and not record.ipv4 and droplet.ipv4:
        # made by a run that stopped between asking for the Droplet and recording it: its key is ours
        record = dataclasses.replace(record, droplet_id=droplet.id, ipv4=droplet.ipv4, ipv6=droplet.ipv6)
        save_host(inv.site, record)
        log.info("completed the pending record of %s (%s)", droplet.name, droplet.id)
    if record is None or record.droplet_id != droplet.id:
        where = site_dir(inv.site) / "hosts.json"
        known = f"it knows Droplet {record.droplet_id} by that name" if record else "it knows none by that name"
        raise RelaunchError(
            f"Droplet {droplet.name} ({droplet.id}) exists but relaunch has no pinned host key for it in {where} "
            f"({known}); it will not connect unverified (destroy it, or record its host key)"
        )
    if record.ipv4 != droplet.ipv4:
        raise RelaunchError(f"Droplet {droplet.name} moved from {record.ipv4} to {droplet.ipv4}; refusing to guess")
    if record.ipv6 != droplet.ipv6:
        if record.ipv6 is not None:
            raise RelaunchError(f"Droplet {droplet.name} moved from {record.ipv6} to {droplet.ipv6}; refusing to guess")
        record = dataclasses.replace(record, ipv6=droplet.ipv6)  # recorded before relaunch kept IPv6 addresses
        save_host(inv.site, record)
    return record


def host_addresses(inv: Inventory, record: HostRecord) -> list[str]:
    """Where the site's users reach ``record``: its IPv4, and its IPv6 (bracketed) when the site has AAAA records."""
    return [record.ipv4] + ([f"[{record.ipv6}]"] if wants_ipv6(inv) and record.ipv6 else [])


def open_host(record: HostRecord, key_filename: Path, timeout: float = 180) -> Connection:
    """Connect to a recorded host, verifying its pinned key; wait while it boots."""
    conn = connect(record.ipv4, record.host_key, key_filename, user=record.user)
    wait_for_ssh(conn, timeout=timeout)
    return conn
