"""Which checkout, with which secrets, a sandbox site was brought up from.

Every clone of relaunch on a machine shares one sandbox (its state is
``relaunch.sandbox.state_dir()``, one per user), but each clone makes its own secrets
beside its inventory (``secrets/<site>/``). Bringing a site up from a second clone would
render that clone's new passwords into the host's env files while the databases there
keep the first ones: every app then fails, and only after the health checks' long wait.

So the first bring-up of a site claims it: it records, in the sandbox's state, the
inventory file it came from and a salted hash (HMAC-SHA256 under a random salt) of the
site's secret values. A later bring-up whose secret values differ (another checkout, or
this one with its secret files remade) stops at once, before the sandbox or the host is
touched, saying which checkout owns the site and what to do. Same values from another
checkout (its secret files copied over) are fine: the host would get the same passwords.
``fab sandbox-down`` removes the sandbox's state, the claims with it.

The TLS key is left out of the hash: the sandbox remakes its certificate and key when they
no longer fit (names, expiry), and every bring-up installs the current pair, so a new key
breaks nothing on the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets as _random
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relaunch.errors import RelaunchError
from relaunch.inventory.loader import source_of
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import Secrets
from relaunch.sandbox import state_dir
from relaunch.state import make_private_dirs, write_json_atomic

log = logging.getLogger(__name__)

CLAIMS = "site-claims"


def claim_path(site: str) -> Path:
    """Where the sandbox records who brought ``site`` up: ``<sandbox state>/site-claims/<site>.json``."""
    return state_dir() / CLAIMS / f"{site}.json"


def secrets_digest(inv: Inventory, secrets: Secrets, salt: bytes) -> str:
    """Return the salted hash of the site's secret values that reach its host (the TLS key aside)."""
    tls_key = inv.proxy.tls.key if inv.proxy.tls is not None else None
    mac = hmac.new(salt, digestmod=hashlib.sha256)
    for ref in sorted(r for r in secrets if r != tls_key):
        for part in (ref, secrets[ref].reveal()):
            data = part.encode()
            mac.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no two lists hash alike
    return mac.hexdigest()


def each_secret_digest(inv: Inventory, secrets: Secrets, salt: bytes) -> dict[str, str]:
    """Return ref -> the salted hash of that secret's value, for every secret of the site (the TLS key aside)."""
    tls_key = inv.proxy.tls.key if inv.proxy.tls is not None else None
    out: dict[str, str] = {}
    for ref in sorted(r for r in secrets if r != tls_key):
        mac = hmac.new(salt, digestmod=hashlib.sha256)
        for part in (ref, secrets[ref].reveal()):
            data = part.encode()
            mac.update(len(data).to_bytes(8, "big") + data)
        out[ref] = mac.hexdigest()
    return out


def claim(inv: Inventory, secrets: Secrets) -> None:
    """Claim the sandbox site ``inv.site`` for this checkout and these secrets, or refuse.

    The first call for a site records the claim (0600, no secret value in it). A later call
    with the same secret values returns; with other values it raises RelaunchError naming
    the checkout that owns the site, having changed nothing. A secret the site did not have
    when it was claimed (the inventory grew: a new database, an app's new secret_env) is no
    conflict: it is added to the claim, and its value holds from then on.
    """
    path = claim_path(inv.site)
    here = _inventory_file(inv)
    if not path.exists():
        salt = _random.token_bytes(16)
        record = {"site": inv.site, "inventory": here, "salt": salt.hex(),
                  "secrets_hmac_sha256": secrets_digest(inv, secrets, salt),
                  "secrets": each_secret_digest(inv, secrets, salt),
                  "claimed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if _create_exclusive(path, record):
            log.info("sandbox site %s claimed for %s", inv.site, here)
            return
    record = _read(path)
    salt = bytes.fromhex(record["salt"])
    digest = secrets_digest(inv, secrets, salt)
    if hmac.compare_digest(digest, record["secrets_hmac_sha256"]):
        return
    known = record.get("secrets")
    if isinstance(known, dict):
        now = each_secret_digest(inv, secrets, salt)
        if all(hmac.compare_digest(now[ref], str(known[ref])) for ref in now if ref in known):
            added = sorted(set(now) - set(known))
            record.update(secrets={**known, **now}, secrets_hmac_sha256=digest)
            write_json_atomic(path, record)
            log.info("sandbox site %s: the claim now holds the new secret(s) %s", inv.site, ", ".join(added) or "-")
            return
    owner = record.get("inventory") or "?"
    since = record.get("claimed_at") or "?"
    if owner == here:
        why = (f"from this checkout ({here}) with other secret values than now (its secret files were "
               "remade since?)")
        fix = "put the secret files it was made with back"
    else:
        why = f"from another checkout ({owner}) or with other secrets than this one's ({here})"
        fix = "run sandbox-up from that checkout (or copy its secret files here)"
    raise RelaunchError(
        f"sandbox site {inv.site!r} was brought up {why}, on {since}: its databases keep the passwords of that "
        f"bring-up, so going on would break every app. Nothing was changed. To go on, {fix}; or remove the "
        f"sandbox with `fab sandbox-down` (every sandbox Droplet goes) and bring the site up afresh."
    )


def _inventory_file(inv: Inventory) -> str:
    origin = source_of(inv).origin
    return str(origin) if origin is not None else "?"


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` to ``path`` whole, only if no file is there (two bring-ups at once: one wins)."""
    make_private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if the file exists: never overwrites another claim
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
        bytes.fromhex(record["salt"])
        str(record["secrets_hmac_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RelaunchError(f"{path}: unreadable sandbox site claim ({exc}); remove it only if no other checkout "
                            "brought this site up, or start afresh with `fab sandbox-down`") from None
    return record
