"""Giving a new host read access to the site's off-host store, from this machine, for one step.

A rebuild from backup must work when production is gone and this machine is a new
laptop: everything comes from the inventory. For an SFTP store that is
``backups.offsite.ssh_key`` (a key authorized on the store) and ``backups.offsite.known_hosts``
(its pinned host key, and the address to reach it at). Without them, a site whose store
is the sandbox's backup Droplet recorded in this machine's state gets a temporary key of
its own, authorized there for the step (SFTP only, read-only: ``sftp-server -R``; restic
reads with ``--no-lock``) and removed afterwards; a site whose store relaunch can log in
to always gets that one, so a drill's scratch host can never write, forget or prune.

On the new host the key, known_hosts and ssh config live in a 0700 directory under /run
(memory), removed when the step ends; the restic password travels as a 0600 file
(:mod:`relaunch.backup.offsite`). Nothing is left behind that could write to the store.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fabric import Connection

from relaunch.backup.install import authorize_store_key, parse_sftp
from relaunch.backup.offsite import Repository
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.pipeline.context import RunContext
from relaunch.provision import open_host
from relaunch.remote import HostKey
from relaunch.state import load_hosts

log = logging.getLogger(__name__)

#: The sandbox's backup Droplet's role in hosts.json (relaunch.backup.sandbox_store).
BACKUP_ROLE = "backup"


@dataclass(frozen=True)
class StoreEndpoint:
    """Where an SFTP store answers: the repository's host name, the address to dial, its pinned key line."""

    alias: str
    address: str
    host_key: str


def endpoint_from_known_hosts(path: str, alias: str) -> StoreEndpoint:
    """Read a known_hosts file's first line for ``alias``: ``name[,address] keytype key``.

    Raise RelaunchError naming the file when it is missing, unreadable or holds no key for the alias.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise RelaunchError(f"backups.offsite.known_hosts: cannot read {path} ({exc.strerror})") from None
    for line in lines:
        words = line.split()
        if len(words) < 3 or line.lstrip().startswith("#"):
            continue
        names = words[0].split(",")
        if alias not in names:
            continue
        literal = [n for n in names if _is_address(n)]
        return StoreEndpoint(alias, literal[0] if literal else alias, f"{words[1]} {words[2]}")
    raise RelaunchError(f"backups.offsite.known_hosts: {path} has no key for {alias!r} (expected '{alias}[,ADDRESS] ssh-ed25519 AAAA...')")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def missing_for_backup(inv: Inventory) -> list[str]:
    """What a rebuild from backup lacks to read the store (empty when it can); for preflight."""
    off = inv.backups.offsite
    if off is None:
        return ["backups.offsite: the site has no off-host store, so there is no backup a new host could fetch"]
    if off.kind != "sftp":
        return [f"backups.offsite.kind {off.kind!r}: a rebuild from backup reads sftp stores only (s3: not yet)"]
    if off.ssh_key and off.known_hosts:
        return []
    if sandbox_store_record(inv) is not None:
        return []
    return ["backups.offsite.ssh_key and backups.offsite.known_hosts: a key authorized on the store and its pinned "
            "host key, so a new host can read it without production or this machine's state"]


def sandbox_store_record(inv: Inventory):
    record = load_hosts(inv.site).get(f"{inv.site}-backup")
    return record if record is not None and record.role == BACKUP_ROLE and record.ipv4 else None


@contextlib.contextmanager
def store_access(ctx: RunContext, conn: Connection) -> Iterator[Repository]:
    """Give ``conn``'s host read access to the site's store for the ``with``; yield the restic repository there."""
    inv = ctx.inv
    problems = missing_for_backup(inv)
    if problems:
        raise RelaunchError(f"site {inv.site!r} cannot be rebuilt from backup: " + "; ".join(problems))
    off = inv.backups.offsite
    assert off is not None
    repo = parse_sftp(off.repository)
    run_dir = f"/run/relaunch/store-{uuid.uuid4().hex[:8]}"
    temporary: tuple[Connection, str] | None = None
    record = sandbox_store_record(inv)
    read_only = record is not None
    if record is not None:
        # relaunch can log in to the store: a key of this step's own, read-only (sftp-server -R), removed after
        endpoint = StoreEndpoint(repo.host, record.ipv4, record.host_key)
        key = HostKey.generate()  # an ed25519 pair made here; used as a client key, not a host key
        private = key.private_openssh
        store_conn = open_host(record, ctx.key_path, timeout=60)
        authorize_store_key(store_conn, repo.user, key.public_line, read_only=True, comment="relaunch-read-only")
        temporary = (store_conn, key.public_line.split()[1])
    else:
        endpoint = endpoint_from_known_hosts(off.known_hosts, repo.host)  # type: ignore[arg-type]
        private = ctx.secrets[off.ssh_key].reveal()  # type: ignore[index]
    _install_restic(conn)
    q = shlex.quote
    config = (f"Host {endpoint.alias}\n  HostName {endpoint.address}\n  HostKeyAlias {endpoint.alias}\n  User {repo.user}\n"
              f"  IdentityFile {run_dir}/key\n"
              f"  IdentitiesOnly yes\n  UserKnownHostsFile {run_dir}/known_hosts\n  StrictHostKeyChecking yes\n"
              f"  BatchMode yes\n  ServerAliveInterval 15\n")
    known = f"{endpoint.alias} {endpoint.host_key}\n"
    try:
        conn.run(f"umask 077; install -d -m 0700 {q(run_dir)}", hide=True, in_stream=False, timeout=30)
        sftp = conn.sftp()
        for name, content in (("key", private if private.endswith("\n") else private + "\n"), ("known_hosts", known),
                              ("config", config)):
            with sftp.open(f"{run_dir}/{name}", "w") as fh:
                fh.chmod(0o600)
                fh.write(content.encode())
        yield Repository(off.repository, ctx.secrets[off.password],
                         ("-o", f"sftp.command=ssh -F {run_dir}/config {repo.user}@{endpoint.alias} -s sftp",
                          *(["--no-lock"] if read_only else [])))
    finally:
        conn.run(f"rm -rf -- {q(run_dir)}", hide=True, in_stream=False, warn=True, timeout=30)
        if temporary is not None:
            store_conn, blob = temporary
            with contextlib.suppress(Exception):
                store_conn.run(
                    f"h=$(getent passwd {q(repo.user)} | cut -d: -f6); f=\"$h/.ssh/authorized_keys\"; "
                    f"grep -vF {q(blob)} \"$f\" > \"$f.new\" || true; cat \"$f.new\" > \"$f\"; rm -f \"$f.new\"",
                    hide=True, in_stream=False, warn=True, timeout=30)
            store_conn.close()


def _install_restic(conn: Connection) -> None:
    run = conn.run(
        "command -v restic >/dev/null && command -v ssh >/dev/null && exit 0; export DEBIAN_FRONTEND=noninteractive; "
        "install() { apt-get install -y -q --no-install-recommends restic openssh-client >/dev/null; }; "
        "install || { apt-get update -q >/dev/null && install; }",
        warn=True, hide=True, in_stream=False, timeout=900,
    )
    if not run.ok:
        raise RelaunchError(f"{conn.host}: installing restic failed: {(run.stdout + run.stderr).strip()[-800:]}")
