"""``fab backup --prune``: the off-host retention, run from the operator's machine with the store's full-access key.

Why here and not on the production host: the production host's store key is append-only
(``relaunch.backup.install.authorized_line``: ``rclone serve restic --append-only``), so a
compromised host, or a mistaken command on it, cannot delete its own off-host history.
Forgetting and pruning need delete rights, so they run with other credentials, on the
operator's schedule (a cron line or a timer on the operator's machine calling this task):

- sftp stores: restic on this machine, over SFTP, with ``backups.offsite.ssh_key`` (the
  inventory's key, authorized on the store with full SFTP access: the same key a rebuild
  reads the store with) and ``backups.offsite.known_hosts`` (the store's pinned host key;
  ``StrictHostKeyChecking yes``, never trust on first use);
- s3 stores: restic on this machine with the inventory's access keys.

The policy is the inventory's ``backups.retention``, decided by the one function the host
runner also uses to report what it would forget (:func:`relaunch.backup.runner.retention_decision`):
calendar days and ISO weeks, the newest backup always kept. Only this site's snapshots
(its host name and ``site:<site>`` tag) are considered; a snapshot without a relaunch
backup ID is never forgotten. The snapshots are forgotten by exact ID, then ``restic prune``.

Secrets: the key and the restic password go to 0600 files in a 0700 temporary directory
removed afterwards; restic reads the password as ``RESTIC_PASSWORD_FILE``; s3 access keys
go only into restic's own environment. No secret value reaches argv or a log.

restic 0.14 (Debian 12) cannot wait for a lock: a backup running on the production host
holds a shared lock, which ``forget`` and ``prune`` (exclusive) refuse; they are retried
within ``lock_wait`` seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from relaunch import poll
from relaunch.backup.install import parse_sftp
from relaunch.backup.runner import parse_snapshots, retention_decision, snapshot_query
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.render import SecretLike

log = logging.getLogger(__name__)

#: Seconds one restic command may take (prune of a large repository is the long one).
RESTIC_TIMEOUT = 3600
#: Seconds to keep retrying a command that found the repository locked (a backup running on the host).
LOCK_WAIT = 600
LOCKED = "repository is already locked"
#: Seconds before the first retry of a locked repository (then longer, up to 15 s).
LOCK_POLL_FIRST = 2.0


@dataclass(frozen=True)
class Access:
    """How restic on this machine reaches the store: ``-r``, extra options, environment additions, files to write."""

    repository: str
    options: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, *args: str, restic: str = "restic") -> list[str]:
        return [restic, "-r", self.repository, *self.options, *args]

    def __repr__(self) -> str:  # env may hold s3 keys
        return f"Access({self.repository!r}, options={self.options!r}, env=***)"


def sftp_files(inv: Inventory, workdir: str, private_key: str, alias: str, address: str, host_key: str) -> dict[str, str]:
    """The files of an SFTP access in ``workdir`` (name -> content): key, known_hosts, ssh config."""
    repo = parse_sftp(inv.backups.offsite.repository)  # type: ignore[union-attr]
    config = (f"Host {alias}\n  HostName {address}\n  HostKeyAlias {alias}\n  User {repo.user}\n"
              f"  IdentityFile {workdir}/key\n  IdentitiesOnly yes\n  UserKnownHostsFile {workdir}/known_hosts\n"
              f"  StrictHostKeyChecking yes\n  BatchMode yes\n  ServerAliveInterval 15\n")
    return {"key": private_key if private_key.endswith("\n") else private_key + "\n",
            "known_hosts": f"{alias} {host_key}\n", "config": config}


def sftp_access(inv: Inventory, workdir: str) -> Access:
    """restic's repository and options for an SFTP store reached through ``workdir``'s ssh config (no secret in them)."""
    repo = parse_sftp(inv.backups.offsite.repository)  # type: ignore[union-attr]
    return Access(inv.backups.offsite.repository,  # type: ignore[union-attr]
                  ("-o", f"sftp.command=ssh -F {workdir}/config {repo.user}@{repo.host} -s sftp"))


def missing_for_prune(inv: Inventory) -> list[str]:
    """What the inventory lacks for the operator to forget and prune (empty when it has it)."""
    off = inv.backups.offsite
    if off is None:
        return ["backups.offsite: the site has no off-host store"]
    if off.kind == "sftp" and not (off.ssh_key and off.known_hosts):
        return ["backups.offsite.ssh_key and backups.offsite.known_hosts: the key with full SFTP access to the "
                "store (not the production host's, which is append-only) and the store's pinned host key"]
    return []


@dataclass
class PruneResult:
    """What ``prune_site`` decided and did: ``keep`` (short ID, backup ID, why kept) and ``forget``
    (short ID, backup ID, full snapshot ID) per snapshot, oldest first."""

    repository: str
    keep: list[tuple[str, str | None, tuple[str, ...]]]
    forget: list[tuple[str, str, str]]
    dry_run: bool
    forgotten: bool = False
    pruned: bool = False
    seconds: float = 0.0
    prune_output: str = ""


def decide(snaps: list[dict], retention: Mapping[str, int], now: datetime) -> tuple[list, list]:
    """Split a site's snapshots (``parse_snapshots`` entries) into (keep, forget) by the policy, oldest first.

    A snapshot without a relaunch backup ID is kept (relaunch does not know when it was taken).
    """
    decided = retention_decision(snaps, dict(retention), now)
    by_id = {s["full_id"]: s for s in snaps}
    order = sorted(snaps, key=lambda s: (s.get("id") or "", s["full_id"]))
    keep = [(s["snapshot"], s["id"], tuple(decided.reasons.get(s["full_id"], ("not a relaunch backup",))))
            for s in order if s["full_id"] not in decided.remove]
    forget = [(by_id[f]["snapshot"], by_id[f]["id"], f) for f in sorted(decided.remove, key=lambda f: by_id[f]["id"])]
    return keep, forget


def _run(access: Access, env: Mapping[str, str], args: list[str], what: str, *, lock_wait: float,
         restic: str) -> subprocess.CompletedProcess:
    """Run restic; retry while the repository is locked (within ``lock_wait`` s). Raise RelaunchError on failure."""
    done: subprocess.CompletedProcess | None = None
    for _ in poll.attempts(lock_wait, first=LOCK_POLL_FIRST, cap=15.0):
        try:
            done = subprocess.run(access.argv(*args, restic=restic), env=dict(env), capture_output=True, text=True,
                                  timeout=RESTIC_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RelaunchError(f"off-host store {access.repository}: restic {what} did not finish within "
                                f"{RESTIC_TIMEOUT} s") from None
        if done.returncode == 0 or LOCKED not in done.stderr:
            break
        log.info("restic %s: the repository is locked (a backup running?), trying again", what)
    assert done is not None
    if done.returncode != 0:
        hint = (f" (still locked after {lock_wait:.0f} s: a backup or another prune holds it; `restic list locks` "
                "shows them)" if LOCKED in done.stderr else "")
        raise RelaunchError(f"off-host store {access.repository}: restic {what} failed (exit {done.returncode}){hint}: "
                            f"{done.stderr.strip()[-1500:]}")
    return done


def prune_site(inv: Inventory, secrets: Mapping[str, SecretLike], *, dry_run: bool = False, now: datetime | None = None,
               lock_wait: float = LOCK_WAIT, restic: str = "restic") -> PruneResult:
    """Forget the site's off-host snapshots the retention policy drops, then ``restic prune``; return what happened.

    ``dry_run``: decide and list, change nothing. ``now`` (default: the clock) is the policy's
    reference time. Raise RelaunchError if the inventory lacks the operator's credentials,
    restic is not on this machine, or a restic command fails (its message in it).
    """
    problems = missing_for_prune(inv)
    if problems:
        raise RelaunchError(f"site {inv.site!r}: cannot forget or prune off-host backups: " + "; ".join(problems))
    if shutil.which(restic) is None:
        raise RelaunchError(f"{restic} is not on this machine: the off-host retention runs here "
                            "(`apt-get install restic`, or `bash scripts/setup.sh`)")
    off = inv.backups.offsite
    assert off is not None
    now = now or datetime.now(timezone.utc)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="relaunch-prune-") as workdir:
        os.chmod(workdir, 0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "AWS_"))}
        _write(Path(workdir) / "password", secrets[off.password].reveal())
        env["RESTIC_PASSWORD_FILE"] = f"{workdir}/password"
        if off.kind == "sftp":
            from relaunch.pipeline.store import endpoint_from_known_hosts

            repo = parse_sftp(off.repository)
            end = endpoint_from_known_hosts(off.known_hosts, repo.host)  # type: ignore[arg-type]
            for name, content in sftp_files(inv, workdir, secrets[off.ssh_key].reveal(),  # type: ignore[index]
                                            end.alias, end.address, end.host_key).items():
                _write(Path(workdir) / name, content)
            access = sftp_access(inv, workdir)
        else:
            access = Access(off.repository)
            if off.access_key:
                env["AWS_ACCESS_KEY_ID"] = secrets[off.access_key].reveal()
            if off.secret_key:
                env["AWS_SECRET_ACCESS_KEY"] = secrets[off.secret_key].reveal()
        listed = _run(access, env, ["snapshots", "--json", "--no-lock", *snapshot_query(inv.site)], "snapshots",
                      lock_wait=lock_wait, restic=restic)
        keep, forget = decide(parse_snapshots(listed.stdout, inv.site), inv.backups.retention.model_dump(), now)
        result = PruneResult(off.repository, keep, forget, dry_run)
        if not dry_run:
            if forget:
                _run(access, env, ["forget", *[full for _, _, full in forget]], "forget",
                     lock_wait=lock_wait, restic=restic)
                result.forgotten = True
                log.info("site %s: %d off-host snapshot(s) forgotten by the retention policy", inv.site, len(forget))
            pruned = _run(access, env, ["prune"], "prune", lock_wait=lock_wait, restic=restic)
            result.pruned = True
            result.prune_output = "\n".join(line for line in pruned.stdout.splitlines()
                                            if line.strip().startswith(("this removes", "total prune", "remaining")))
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _write(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)

