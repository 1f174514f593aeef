"""``fab backup --install``: put the backup runner, its config and its systemd timer on the production host.

Rendering is pure (:func:`render_backup_files` returns ``RenderedFile`` values, the same
type ``relaunch.render`` makes, so ``relaunch.upload.upload`` writes only what differs and
secret files are 0600 before a byte is in them). :func:`install` then runs the few host
steps: restic from Debian's archive, the host's own SSH key for the off-host store (made
on the host; only its public half leaves it), the store's authorization of that key
(append-only: ``rclone serve restic --append-only`` forced for it, so a compromised or
mistaken production host cannot delete its own off-host history; forgetting and pruning
are the operator's, ``relaunch.backup.prune``), the repository's creation, the timer enabled.

The config (``/etc/relaunch/backup.json``) holds no secret value: the restic password
is the path of a 0600 file, dump commands read database passwords from their 0600
password files at run time. It is 0600 anyway (it maps the host's data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric import Connection

import relaunch
from relaunch import render
from relaunch import webhook as webhook_module
from relaunch.apps import compose_command
from relaunch.backup import retention as retention_module
from relaunch.backup import runner as runner_module
from relaunch.backup.commands import database_specs
from relaunch.errors import RelaunchError
from relaunch.inventory.loader import source_of
from relaunch.inventory.model import Inventory, inside
from relaunch.remote import execute, key_accepted
from relaunch.render import RenderedFile, SecretLike
from relaunch.state import HostRecord
from relaunch.upload import upload

log = logging.getLogger(__name__)

RUNNER_PATH = "/usr/local/lib/relaunch/backup.py"
RETENTION_PATH = "/usr/local/lib/relaunch/relaunch_retention.py"
WEBHOOK_PATH = "/usr/local/lib/relaunch/relaunch_webhook.py"
CONFIG_PATH = "/etc/relaunch/backup.json"
BACKUP_ROOT = "/var/backups/relaunch"
LOCK_PATH = "/run/lock/relaunch-backup.lock"
STATUS_FILE = "/var/lib/relaunch/backup-status.json"
VERIFIED_FILE = "/var/lib/relaunch/backup-verified.json"
SERVICE = "relaunch-backup.service"
TIMER = "relaunch-backup.timer"
UNIT_DIR = "/etc/systemd/system"
STORE_DIR = "/etc/relaunch/backup"
STORE_KEY = f"{STORE_DIR}/id_ed25519"
STORE_SSH_CONFIG = f"{STORE_DIR}/ssh_config"
STORE_KNOWN_HOSTS = f"{STORE_DIR}/known_hosts"
RESTIC_PASSWORD_FILE = f"{render.SECRETS_DIR}/restic.password"
RESTIC_ENV_FILE = f"{render.SECRETS_DIR}/restic.env"
#: The alert webhook's URL (it may hold a secret) and bearer token: the runner posts a failed run.
ALERT_URL_FILE = f"{render.SECRETS_DIR}/alert-webhook.url"
ALERT_TOKEN_FILE = f"{render.SECRETS_DIR}/alert-webhook.token"
RESTIC_CACHE = "/var/cache/relaunch/restic"
#: Dumps and archives a run makes at once (each is mostly waiting on a database or a disk).
PARALLEL_STEPS = 3
#: Local backups kept on the host, of those already off-host, when an off-host store holds the full retention.
LOCAL_KEEP_LAST = 4
#: Below this much free space (percent of its filesystem) the host removes even backups not off-host yet.
MIN_FREE_PERCENT = 10
#: What the store runs for the production host's key (``authorized_keys`` forced command): restic's REST
#: protocol over the SSH channel, append-only (no delete, no overwrite; restic's own locks excepted).
APPEND_ONLY_SERVER = "rclone serve restic --stdio --config=/dev/null --append-only"
#: Seconds the runner leaves itself, under the unit's TimeoutStartSec=, to report a child it stopped.
REPORT_MARGIN = 120

_SFTP_REPO = re.compile(r"^sftp:(?:(?P<user>[^@:/]+)@)?(?P<host>[^:/]+):(?P<path>/.*)$")


@dataclass(frozen=True)
class SftpRepository:
    """An ``sftp:user@host:/path`` restic repository, taken apart."""

    user: str
    host: str
    path: str


def parse_sftp(repository: str) -> SftpRepository:
    """Split ``sftp:user@host:/path``. Raise RelaunchError for any other form (restic's ``sftp://`` URLs included)."""
    match = _SFTP_REPO.match(repository)
    if match is None:
        raise RelaunchError(f"backups.offsite.repository {repository!r}: expected sftp:USER@HOST:/PATH")
    return SftpRepository(match["user"] or "root", match["host"], match["path"])


@dataclass(frozen=True)
class StoreHost:
    """How the production host reaches an SFTP store: address and pinned host key (a sandbox backup Droplet)."""

    alias: str
    address: str
    host_key: str  # public line
    port: int = 22
    #: The host's key is authorized on the store append-only (``rclone serve restic --append-only``): restic
    #: speaks REST through ``ssh`` (its ``rclone:`` backend) instead of SFTP.
    append_only: bool = False


def timer_schedule(interval_minutes: int) -> str | None:
    """The OnCalendar= expression for an interval that divides an hour or a day evenly, else None.

    Calendar times keep backups on the clock (…:00, :15, :30, :45) and let ``Persistent=``
    catch up a run missed while the host was off; other intervals use OnUnitActiveSec=.
    """
    if interval_minutes < 60 and 60 % interval_minutes == 0:
        return "*-*-* *:*:00" if interval_minutes == 1 else f"*-*-* *:00/{interval_minutes}:00"
    if interval_minutes % 60 == 0 and 1440 % interval_minutes == 0:
        return f"*-*-* 00/{interval_minutes // 60}:00:00"
    return None


def unit_timeout_seconds(interval_minutes: int) -> int:
    """TimeoutStartSec= of the backup service: four intervals, at least 5 minutes."""
    return max(300, interval_minutes * 60 * 4)


def run_timeouts(interval_minutes: int) -> dict[str, int]:
    """The runner's deadline per kind of subprocess, each under the unit's own timeout.

    A child that hangs is stopped and reported by the runner itself (the failed step
    named), before systemd would stop the whole unit.
    """
    long = max(60, unit_timeout_seconds(interval_minutes) - REPORT_MARGIN)
    return {"dump": long, "restic": long, "command": min(600, long), "docker": min(120, long)}


def inventory_sha256(inv: Inventory) -> str | None:
    """sha256 of the inventory file the site was loaded from (None for one built in code)."""
    origin = source_of(inv).origin
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest() if origin else None


def offsite_config(inv: Inventory, store: StoreHost | None) -> dict[str, Any] | None:
    """The runner's ``offsite`` section: repository, the password FILE, restic options (no secret values)."""
    off = inv.backups.offsite
    if off is None:
        return None
    section: dict[str, Any] = {
        "repository": off.repository,
        "password_file": RESTIC_PASSWORD_FILE,
        "env_file": RESTIC_ENV_FILE if off.kind == "s3" else None,
        "cache_dir": RESTIC_CACHE,
        "options": [],
    }
    if off.kind == "sftp" and store is not None:
        repo = parse_sftp(off.repository)
        if store.append_only:
            # restic's rclone backend runs this program and speaks REST on its stdin/stdout; the store's forced
            # command (APPEND_ONLY_SERVER) answers, whatever arguments restic adds (ssh sends them, sshd ignores them)
            section["repository"] = f"rclone:{store.alias}:{repo.path}"
            section["options"] = ["-o", f"rclone.program=ssh -F {STORE_SSH_CONFIG} {repo.user}@{store.alias}"]
        else:
            command = f"ssh -F {STORE_SSH_CONFIG} {repo.user}@{store.alias} -s sftp"
            section["options"] = ["-o", f"sftp.command={command}"]
    section["append_only"] = bool(store is not None and store.append_only)
    return section


def backup_config(
    inv: Inventory, compose: list[str], store: StoreHost | None = None, *, root: str = BACKUP_ROOT,
    interval_minutes: int | None = None,
) -> dict[str, Any]:
    """The runner's JSON config for the site (see ``relaunch.backup.runner``); no secret value in it.

    ``interval_minutes`` (default the inventory's) sets the subprocess deadlines under the unit's timeout.
    """
    interval = interval_minutes or inv.backups.interval_minutes
    return {
        "format": 1,
        "site": inv.site,
        "relaunch_version": relaunch.__version__,
        "inventory_sha256": inventory_sha256(inv),
        "root": root,
        "lock": LOCK_PATH,
        "status_file": STATUS_FILE,
        "verified_file": VERIFIED_FILE,
        "retention": inv.backups.retention.model_dump(),
        # with an off-host store, the host keeps only its newest few of those already off-host (the history
        # is there, deduplicated); one not off-host yet stays, down to the free-space floor
        "local_keep_last": LOCAL_KEEP_LAST if inv.backups.offsite is not None else None,
        "min_free_percent": MIN_FREE_PERCENT,
        "timeouts": run_timeouts(interval),
        "parallel": PARALLEL_STEPS,
        # the manifest's deploy.images: what each compose app's services run, by digest
        "compose_apps": [
            {"app": app.name, "services": sorted(app.compose.images) if app.compose else []}
            for app in inv.apps if app.kind == "compose"
        ],
        "databases": database_specs(inv, compose),
        "archives": [
            {"app": app.name, "file": f"{app.name}-files.tar.gz", "paths": app.trees(),  # named volumes too
             "exclude": _dumped_files(inv, app.files)}
            for app in inv.apps if app.trees()
        ],
        "offsite": offsite_config(inv, store),
        "alert": alert_config(inv),
    }


def alert_config(inv: Inventory) -> dict[str, Any] | None:
    """The runner's ``alert`` section: where a failed run is posted (the URL and token by file, never by value)."""
    if inv.alerts is None:
        return None
    return {"site": inv.site, "host": inv.production.droplet_name, "topic": inv.alerts.topic,
            "url_file": ALERT_URL_FILE, "token_file": ALERT_TOKEN_FILE if inv.alerts.token else None}


def _dumped_files(inv: Inventory, trees: list[str]) -> list[str]:
    """SQLite files (and their -wal/-shm/-journal) inside ``trees``: they are dumped consistently, so the
    archive leaves them out (a copy of a live database file is neither consistent nor needed)."""
    out: list[str] = []
    for db in inv.databases:
        if db.engine == "sqlite" and db.path and any(inside(db.path, t) for t in trees):
            out += [db.path, f"{db.path}-wal", f"{db.path}-shm", f"{db.path}-journal"]
    return out


def render_backup_files(
    inv: Inventory,
    secrets: Mapping[str, SecretLike],
    compose: list[str],
    store: StoreHost | None = None,
    *,
    interval_minutes: int | None = None,
    templates_dir: Path = render.TEMPLATES_DIR,
) -> list[RenderedFile]:
    """Every file the backup needs on the production host, sorted by path.

    ``interval_minutes`` overrides the inventory's (tests use 1). The restic password (and
    for s3 the access keys) go only to 0600 files marked secret. Raise RenderError for a
    template problem or an unresolved secret reference.
    """
    interval = interval_minutes or inv.backups.interval_minutes
    env = render.environment(templates_dir)
    values = {
        "site": inv.site,
        "runner_path": RUNNER_PATH,
        "config_path": CONFIG_PATH,
        "interval_minutes": interval,
        "on_calendar": timer_schedule(interval),
        "randomized_delay_seconds": max(1, min(60, interval * 6)),
        "timeout_seconds": unit_timeout_seconds(interval),
    }
    config = backup_config(inv, compose, store, interval_minutes=interval)
    files = [
        RenderedFile(RUNNER_PATH, Path(runner_module.__file__).read_bytes(), 0o755, secret=False),
        RenderedFile(RETENTION_PATH, Path(retention_module.__file__).read_bytes(), 0o644, secret=False),
        RenderedFile(WEBHOOK_PATH, Path(webhook_module.__file__).read_bytes(), 0o644, secret=False),
        RenderedFile(CONFIG_PATH, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(), 0o600, secret=False),
        RenderedFile(f"{UNIT_DIR}/{SERVICE}", render.render_template(env, "backup/relaunch-backup.service.j2", values).encode(), 0o644, False),
        RenderedFile(f"{UNIT_DIR}/{TIMER}", render.render_template(env, "backup/relaunch-backup.timer.j2", values).encode(), 0o644, False),
    ]
    if inv.alerts is not None:
        url = inv.alerts.webhook or _reveal(secrets, inv.alerts.webhook_url or "", "alerts.webhook_url")
        files.append(RenderedFile(ALERT_URL_FILE, (url + "\n").encode(), 0o600, True))
        if inv.alerts.token:
            files.append(RenderedFile(ALERT_TOKEN_FILE, (_reveal(secrets, inv.alerts.token, "alerts.token") + "\n").encode(),
                                      0o600, True))
    off = inv.backups.offsite
    if off is not None:
        files.append(RenderedFile(RESTIC_PASSWORD_FILE, _reveal(secrets, off.password, "backups.offsite.password").encode(), 0o600, True))
        if off.kind == "s3":
            lines = []
            if off.access_key:
                lines.append(f"AWS_ACCESS_KEY_ID={_reveal(secrets, off.access_key, 'backups.offsite.access_key')}")
            if off.secret_key:
                lines.append(f"AWS_SECRET_ACCESS_KEY={_reveal(secrets, off.secret_key, 'backups.offsite.secret_key')}")
            files.append(RenderedFile(RESTIC_ENV_FILE, ("\n".join(lines) + "\n").encode(), 0o600, True))
        if off.kind == "sftp" and store is not None:
            repo = parse_sftp(off.repository)
            ssh = render.render_template(env, "backup/ssh_config.j2", {
                "alias": store.alias, "address": store.address, "user": repo.user, "port": store.port,
                "identity_file": STORE_KEY, "known_hosts": STORE_KNOWN_HOSTS,
            })
            files.append(RenderedFile(STORE_SSH_CONFIG, ssh.encode(), 0o644, False))
            known = " ".join([store.alias, *store.host_key.split()[:2]]) + "\n"
            files.append(RenderedFile(STORE_KNOWN_HOSTS, known.encode(), 0o644, False))
    return sorted(files, key=lambda f: f.path)


def _reveal(secrets: Mapping[str, SecretLike], ref: str, what: str) -> str:
    try:
        return secrets[ref].reveal()
    except KeyError:
        raise render.RenderError(f"{what}: secret {ref!r} was not resolved") from None


@dataclass
class InstallResult:
    """What ``install`` changed: files written, whether restic was installed, the timer's next run."""

    files_written: list[str] = field(default_factory=list)
    restic_installed: bool = False
    store_key_authorized: bool = False
    #: The host's store key is append-only there (it can add snapshots, never delete or overwrite any).
    store_append_only: bool = False
    repository_created: bool = False
    next_run: str = ""
    #: A store relaunch has no login on (``backups.offsite.append_only_key``): the line its user adds to the
    #: store user's ``authorized_keys`` (public: the key's public half and the forced command).
    store_line: str | None = None


def _sh(conn: Connection, script: str, what: str, timeout: float = 600) -> str:
    run = execute(conn, script, timeout=timeout, what=what)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: {what} failed (exit {run.exited}): {(run.stdout + run.stderr).strip()[-1500:]}")
    return run.stdout


def install(
    conn: Connection,
    inv: Inventory,
    secrets: Mapping[str, SecretLike],
    store: HostRecord | None = None,
    store_conn: Connection | None = None,
    *,
    interval_minutes: int | None = None,
    store_host: StoreHost | None = None,
    store_key: SecretLike | None = None,
) -> InstallResult:
    """Install (or update) the backup on the production host behind ``conn``; idempotent.

    ``store``/``store_conn``: the SFTP store host (its record, with the pinned host key, and
    a root connection to it), for authorizing this host's store key there, append-only
    (:func:`authorized_line`; an older install's SFTP key is migrated): the host adds
    snapshots and can delete none; ``fab backup --prune`` forgets and prunes with the
    operator's key (``relaunch.backup.prune``). Without them,
    ``store_host`` (where the store answers and its pinned key, e.g. from the inventory's
    ``backups.offsite.known_hosts``) and ``store_key`` (a private key already authorized
    there, e.g. ``backups.offsite.ssh_key``) set the host up to reach it; with none of
    these the SSH setup of an SFTP store is the user's (root's own ~/.ssh). Raise
    RelaunchError naming the step that failed.
    """
    result = InstallResult()
    compose = compose_command(conn)
    off = inv.backups.offsite
    if off is not None and off.kind == "sftp" and store is not None:
        # relaunch authorizes the host's key on the store itself, so it can make it append-only
        store_host = StoreHost(alias=parse_sftp(off.repository).host, address=store.ipv4, host_key=store.host_key,
                               append_only=store_conn is not None)
    elif off is None or off.kind != "sftp":
        store_host = None
    if store_host is not None and store_host.append_only and store_conn is None and store_key is not None:
        _check_own_store(inv, secrets, store_host, store_key)  # before anything changes on the host
    files = render_backup_files(inv, secrets, compose, store_host, interval_minutes=interval_minutes)
    if store_host is not None and store_key is not None:
        key_text = store_key.reveal()
        files.append(RenderedFile(STORE_KEY, (key_text if key_text.endswith("\n") else key_text + "\n").encode(),
                                  0o600, True))
    result.files_written = upload(conn, files)
    if off is not None:
        out = _sh(conn, (
            "if ! command -v restic >/dev/null; then "
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends restic openssh-client >/dev/null "
            "&& echo installed; fi"
        ), "installing restic")
        result.restic_installed = "installed" in out
    if store_host is not None:
        public = _host_store_key(conn)
        if store_host.append_only and _blob(public) in _operator_blobs(inv, secrets):
            # the host holds the operator's full-access key (a rebuild gave it backups.offsite.ssh_key): it gets
            # a key of its own, which the store can restrict without taking the operator's access away
            _sh(conn, f"rm -f {shlex.quote(STORE_KEY)} {shlex.quote(STORE_KEY + '.pub')}", "replacing the host's store key")
            public = _host_store_key(conn)
        if store_conn is not None:
            repo = parse_sftp(off.repository)  # type: ignore[union-attr]
            result.store_key_authorized = authorize_store_key(
                store_conn, repo.user, public, append_only_repo=repo.path if store_host.append_only else None)
        elif store_host.append_only:  # the user's own store: the line is theirs to add
            result.store_line = authorized_line(public, append_only_repo=parse_sftp(off.repository).path)  # type: ignore[union-attr]
        result.store_append_only = store_host.append_only
    if off is not None:
        try:
            out = _sh(conn, f"python3 {shlex.quote(RUNNER_PATH)} --config {shlex.quote(CONFIG_PATH)} init-offsite",
                      "creating the restic repository", timeout=300)
        except RelaunchError as exc:
            if result.store_line is None:
                raise
            raise RelaunchError(f"{exc}\nThe store took production's append-only key but did not answer as rclone's "
                                f"restic server: is rclone installed there (`apt-get install rclone`), and is the "
                                f"key's line exactly:\n{result.store_line}") from None
        result.repository_created = "created" in out
    if any(f.startswith(UNIT_DIR) for f in result.files_written):
        _sh(conn, "systemctl daemon-reload", "systemctl daemon-reload")
    _sh(conn, f"systemctl enable --quiet {TIMER} && systemctl restart {TIMER}", f"enabling {TIMER}")
    # systemd computes the next elapse a moment after the timer starts: ask for up to 5 s
    result.next_run = _sh(
        conn,
        f"for _ in $(seq 50); do v=$(systemctl show -P NextElapseUSecRealtime {TIMER}); "
        f'[ -n "$v" ] && break; sleep 0.1; done; echo "$v"',
        "reading the timer",
    ).strip()
    log.info("%s: backup installed (%d file(s) written), next run %s", conn.host, len(result.files_written), result.next_run)
    return result


def _check_own_store(inv: Inventory, secrets: Mapping[str, SecretLike], store: StoreHost, key: SecretLike) -> None:
    """A store relaunch has no login on, reached with ``backups.offsite.append_only_key``: it must be another key
    than the operator's, and the store must take it already (the user added the line); else say the line to add."""
    off = inv.backups.offsite
    assert off is not None
    key_text = key.reveal()
    try:
        public = public_line_of(key_text)
    except ValueError:
        raise RelaunchError("backups.offsite.append_only_key: not an unencrypted OpenSSH private key") from None
    if _blob(public) in _operator_blobs(inv, secrets):
        raise RelaunchError("backups.offsite.append_only_key holds the same key as backups.offsite.ssh_key: give "
                            "production a key of its own (ssh-keygen -t ed25519 -N ''), authorized append-only on the store")
    repo = parse_sftp(off.repository)
    if not key_accepted(store.address, store.host_key, repo.user, key_text, port=store.port):
        line = authorized_line(public, append_only_repo=repo.path)
        raise RelaunchError(
            f"the store {repo.host} ({store.address}) does not take backups.offsite.append_only_key for {repo.user!r} "
            f"yet; nothing was changed on the production host. On the store, as root: `apt-get install rclone`, and "
            f"add this line to ~{repo.user}/.ssh/authorized_keys:\n{line}\nthen run `fab backup --install` again.")


def _host_store_key(conn: Connection) -> str:
    """The public line of the production host's own key for the store, made on the host if it has none."""
    key = shlex.quote(STORE_KEY)
    return _sh(conn, (
        f"install -d -m 0700 {shlex.quote(STORE_DIR)}; "
        f"[ -f {key} ] || ssh-keygen -q -t ed25519 -N '' -C relaunch-backup@$(hostname) -f {key}; "
        # always from the private key: one given by the inventory (or replacing an earlier one) has no .pub, or a stale one
        f"ssh-keygen -y -f {key} > {key}.pub.new && mv -f {key}.pub.new {key}.pub; cat {key}.pub"
    ), "making the host's key for the off-host store").strip()


def _blob(public_line: str) -> str:
    words = public_line.split()
    return words[1] if len(words) > 1 else ""


def _operator_blobs(inv: Inventory, secrets: Mapping[str, SecretLike]) -> set[str]:
    """The public blob of the inventory's full-access store key (``backups.offsite.ssh_key``), if it can be read."""
    off = inv.backups.offsite
    if off is None or not off.ssh_key or off.ssh_key not in secrets:
        return set()
    try:
        return {_blob(public_line_of(secrets[off.ssh_key].reveal()))}
    except ValueError:
        return set()


def public_line_of(private_openssh: str) -> str:
    """``ssh-ed25519 AAAA...`` of an OpenSSH private key (unencrypted). Raise ValueError if it is not one."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def authorized_line(public_line: str, *, read_only: bool = False, append_only_repo: str | None = None,
                    comment: str = "relaunch-backup") -> str:
    """The store's ``authorized_keys`` line for ``public_line``: restricted, forced to one server.

    ``restrict`` (no shell, no forwarding, no pty) and a forced command, so the key reaches the
    repository and nothing else, whatever command the client asks for:

    - default: the SFTP server (full access: what the operator's key uses for ``forget``/``prune``);
    - ``read_only``: the SFTP server with ``-R`` (every write refused), for a host that only restores;
    - ``append_only_repo`` (the repository's path on the store): ``rclone serve restic --append-only``
      on that path, restic's REST protocol over the SSH channel: new files only, no delete, no
      overwrite (restic's lock files excepted), for the production host.

    Raise RelaunchError for a public key that is not one, or a path that cannot be written into
    the line safely (it is read by sshd, between double quotes, then by the user's shell).
    """
    words = public_line.split()
    if len(words) < 2 or not words[0].startswith("ssh-"):
        raise RelaunchError(f"the store key is not an SSH public key: {public_line[:40]!r}")
    if append_only_repo is not None:
        if not append_only_repo.startswith("/") or any(c in append_only_repo for c in '"\'\\\n\r') \
                or not append_only_repo.isprintable():
            raise RelaunchError(f"backups.offsite.repository path {append_only_repo!r}: expected an absolute path "
                                "without quotes, backslashes or control characters (it goes into the store's "
                                "authorized_keys)")
        server = f"{APPEND_ONLY_SERVER} {shlex.quote(append_only_repo)}"
    else:
        server = "/usr/lib/openssh/sftp-server -R" if read_only else "/usr/lib/openssh/sftp-server"
    return f'restrict,command="{server}" {words[0]} {words[1]} {comment}'


def authorize_store_key(store_conn: Connection, user: str, public_line: str, *, read_only: bool = False,
                        append_only_repo: str | None = None, comment: str = "relaunch-backup") -> bool:
    """Let ``public_line`` reach the store's ``user`` as :func:`authorized_line` says; return True if that changed anything.

    A line already there for the same key with other options (an SFTP key of an older install
    that must become append-only, say) is replaced, so running this again migrates. With
    ``append_only_repo`` rclone is installed on the store first (Debian's package) if missing.
    """
    line = authorized_line(public_line, read_only=read_only, append_only_repo=append_only_repo, comment=comment)
    blob = public_line.split()[1]
    u = shlex.quote(user)
    if append_only_repo is not None:
        _sh(store_conn, (
            "command -v rclone >/dev/null && exit 0; export DEBIAN_FRONTEND=noninteractive; "
            "get() { apt-get install -y -q --no-install-recommends rclone >/dev/null; }; "
            "get || { apt-get update -q >/dev/null && get; }"
        ), "installing rclone on the store")
    script = (
        f"set -e; umask 077; h=$(getent passwd {u} | cut -d: -f6); "
        f'install -d -m 0700 -o {u} -g {u} "$h/.ssh"; '
        f'f="$h/.ssh/authorized_keys"; touch "$f"; chown {u}: "$f"; chmod 0600 "$f"; '
        f'if grep -qxF {shlex.quote(line)} "$f"; then echo present; '
        f'elif grep -qF {shlex.quote(blob)} "$f"; then '
        f'{{ grep -vF {shlex.quote(blob)} "$f" || true; printf "%s\\n" {shlex.quote(line)}; }} > "$f.new"; '
        f'chown {u}: "$f.new"; mv -f "$f.new" "$f"; echo replaced; '
        f'else printf "%s\\n" {shlex.quote(line)} >> "$f"; echo added; fi'
    )
    out = _sh(store_conn, script, f"authorizing a key for {user} on the store")
    return "added" in out or "replaced" in out
