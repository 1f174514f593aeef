"""``fab adopt``: pin the host key of a production server relaunch did not build, after the user confirmed it.

Most production servers were set up by hand. Relaunch never trusts a key on first use:
:func:`scan` fetches the key the server at ``production.address`` shows (its SHA256
fingerprint, as ``ssh-keygen -lf`` prints it) without logging in; :func:`pin` records it
only when the fingerprint the user confirmed (typed, or given as ``--fingerprint``) is
exactly that one. From then on every command reaches the host as it reaches one relaunch
built: the record has role ``production`` and ``adopted`` set.

Then the login is checked: ``production.user`` must be root or a sudoer with NOPASSWD (every
command then runs through ``sudo -n``, see :class:`relaunch.remote.SudoConnection`); the
record keeps the user, so every later command logs in the same way.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.remote import check_root, connect, handshake, wait_for_ssh
from relaunch.state import HostRecord, save_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScannedKey:
    address: str
    port: int
    public_line: str  # "ssh-ed25519 AAAA..."

    @property
    def fingerprint(self) -> str:
        return sha256_fingerprint(self.public_line)


def sha256_fingerprint(public_line: str) -> str:
    """``SHA256:...`` of an OpenSSH public key line, as ``ssh-keygen -lf`` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def scan(address: str, port: int = 22, timeout: float = 15) -> ScannedKey:
    """Fetch the host key the server shows (ed25519 preferred), without authenticating. Raise RelaunchError if it does not answer."""
    transport = handshake(address, port, timeout, prefer=("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512",
                                                          "rsa-sha2-256"))
    try:
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    return ScannedKey(address, port, f"{key.get_name()} {key.get_base64()}")


def host_name(inv: Inventory) -> str:
    """The name the adopted production host is recorded under."""
    return inv.production.droplet_name or f"{inv.site}-production"


def pin(inv: Inventory, scanned: ScannedKey, confirmed: str, key_path: Path, timeout: float = 30) -> HostRecord:
    """Record ``scanned`` as the site's production host if ``confirmed`` is its fingerprint; check the login works.

    Raise RelaunchError (nothing recorded) when the fingerprints differ, when the login with
    ``key_path`` fails, or when the login user is neither root nor a sudoer with NOPASSWD.
    """
    if confirmed.strip() != scanned.fingerprint:
        raise RelaunchError(f"the confirmed fingerprint {confirmed.strip()!r} is not the one {scanned.address} shows "
                            f"({scanned.fingerprint}); nothing was pinned")
    user = inv.production.user
    conn = connect(scanned.address, scanned.public_line, key_path, user=user, port=scanned.port)
    try:
        wait_for_ssh(conn, timeout=timeout)
        check_root(conn, "production.user")
    finally:
        conn.close()
    record = HostRecord(name=host_name(inv), role="production", droplet_id=0, ipv4=scanned.address,
                        host_key=scanned.public_line,
                        created_at=datetime.now(UTC).isoformat(timespec="seconds"), adopted=True, user=user)
    save_host(inv.site, record)
    log.info("pinned %s's host key %s for site %s", scanned.address, scanned.fingerprint, inv.site)
    return record
