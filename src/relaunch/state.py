"""Where relaunch keeps what it must remember between runs (hosts it built, pinned keys)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import dataclasses
from dataclasses import asdict, dataclass
from collections.abc import Iterator
from pathlib import Path


def state_dir() -> Path:
    """Return relaunch's state directory (``RELAUNCH_STATE_DIR``, else ~/.local/state/relaunch), mode 0700."""
    env = os.environ.get("RELAUNCH_STATE_DIR")
    base = Path(env) if env else Path.home() / ".local" / "state" / "relaunch"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def site_dir(site: str) -> Path:
    path = state_dir() / "sites" / site
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


#: Roles of hosts built to serve the site (what ``dns-switch --to new`` may pick). The others:
#: ``production``, ``backup`` (the sandbox's off-host store) and ``drill`` (a drill's scratch host).
SERVING_ROLES = ("rebuild", "spare")
DRILL_ROLE = "drill"
#: The tag a drill's scratch Droplets carry: they answer health checks with a backup's (stale) data.
DRILL_TAG = "relaunch-drill"


@dataclass(frozen=True)
class HostRecord:
    """A host relaunch built, and the host key it pinned for it."""

    name: str
    role: str  # production, rebuild, spare, backup, drill, retired; droplet_id 0 and no ipv4: pending creation
    droplet_id: int
    ipv4: str
    host_key: str  # public line, "ssh-ed25519 AAAA..."
    created_at: str
    ipv6: str | None = None  # when the site has AAAA records (the Droplet is made with IPv6)
    adopted: bool = False  # a host relaunch did not build, pinned by `fab adopt` after the user confirmed its key
    user: str = "root"  # who relaunch logs in as: root, or (an adopted host) a sudoer with NOPASSWD


def load_hosts(site: str) -> dict[str, HostRecord]:
    path = site_dir(site) / "hosts.json"
    if not path.exists():
        return {}
    return {name: HostRecord(**rec) for name, rec in json.loads(path.read_text()).items()}


def save_host(site: str, record: HostRecord) -> None:
    """Record a host (replacing one of the same name); the file is replaced atomically."""
    hosts = load_hosts(site)
    hosts[record.name] = record
    write_json_atomic(site_dir(site) / "hosts.json", {n: asdict(r) for n, r in hosts.items()})


def forget_host(site: str, name: str) -> None:
    hosts = load_hosts(site)
    if hosts.pop(name, None) is not None:
        write_json_atomic(site_dir(site) / "hosts.json", {n: asdict(r) for n, r in hosts.items()})


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` (mode 0600) with :func:`write_atomic`."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode(), 0o600)


def make_private_dirs(directory: Path) -> None:
    """Make ``directory`` and every missing parent with mode 0700 (whatever the umask); leave existing ones alone."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700)
        os.chmod(d, 0o700)  # the umask may have narrowed it; never widened


def write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Write ``content`` to ``path`` with ``mode``: temporary file (0600 while written), fsync, rename.

    A crash leaves either the old file or the new one, never half of one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def production_record(site: str, droplet_name: str | None) -> HostRecord | None:
    """The site's production host as relaunch knows it: the newest record with role ``production``
    (a rebuild hands the role on), else the one named ``droplet_name``; None if there is none."""
    hosts = load_hosts(site)
    current = sorted((h for h in hosts.values() if h.role == "production" and h.ipv4), key=lambda h: h.created_at)
    if current:
        return current[-1]
    return hosts.get(droplet_name or "")


def set_role(site: str, name: str, role: str) -> None:
    """Change the recorded role of host ``name`` (production, retired, ...)."""
    hosts = load_hosts(site)
    if name in hosts:
        save_host(site, dataclasses.replace(hosts[name], role=role))


class Locked(Exception):
    """Raised by :func:`pid_lock` when another process holds the lock; ``holder`` is its pid ("?" if unknown)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextlib.contextmanager
def pid_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on ``path`` (0600; released when the process dies) with our pid in it.

    Raise :class:`Locked` at once (no waiting) when another process holds it; callers turn
    that into their own refusal, naming the holder.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(os.pread(fd, 64, 0).decode(errors="replace").strip() or "?") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
