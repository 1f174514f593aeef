"""Host to host: the new host pulls databases and file trees straight from the old one, then both are checked.

Why the new host pulls, over a link of its own, and nothing passes through here: the
operator's machine may sit behind a slow home line, while the two hosts share a data
centre's network. So the new host gets temporary SSH access to the old host
(:func:`link`) and runs the copies itself (``ssh old 'dump' > file``, ``rsync old:tree/
tree/``); this machine only starts them and reads progress lines and results.

The link, and why it is safe to leave lying around by accident:

- its key is made here, in memory, for this one link; the private half is written only
  on the new host, under ``/run/relaunch/link-<token>`` (0700; /run is a tmpfs, so it
  never reaches a disk and is gone at the next boot);
- the public half goes into the old host's ``~/.ssh/authorized_keys`` with
  ``from="<the new host's addresses>"``, ``restrict`` (no forwarding, no pty) and an
  ``expiry-time`` (``lifetime``, default 12 h, in the old host's own clock), so a key a
  crash left behind stops working by itself, and a unique comment by which it is removed;
- the new host trusts only the old host's PINNED key (``known_hosts`` in the link
  directory, under a fixed ``HostKeyAlias``, ``StrictHostKeyChecking=yes``; the new
  host's own ssh config and known_hosts are ignored with ``-F none``);
- on leaving the ``with`` block (also on failure and Ctrl-C) the key line is removed
  from the old host, every process on the new host still using the link is ended (an
  open SSH session outlives its key's removal), and the directory is removed.

Dumps (:func:`pull_dump`, :func:`pull_dump_into`) run as one bash pipeline on the new
host, ``ssh old 'dump' | relay | > file`` (or ``| restore``), under ``pipefail``; the relay
(stdlib python3) counts and hashes the bytes on the way and reports progress. Each side's
exit status and stderr tail come back separately, so an error names the host that failed.

Trees (:func:`pull_tree`) are copied by rsync running on the new host (``-aHAX
--numeric-ids --delete``: owners by number, modes, hard links, ACLs, xattrs, symlinks as
symlinks, files gone from the source removed). ``--partial-dir`` keeps an interrupted
file's part aside, and the next run uses it as the basis, so only what is missing
crosses again; the part never sits under the file's real name.

Verification (:func:`tree_listing`, :func:`archive_listing`, :func:`compare_listings`):
a small stdlib python3 script runs ON each host and prints one JSON line per entry (type,
size, mode, owner, sha256 of every file or a symlink's target, hard-link group); only
those lines come here. An archive written by the backup runner (``tar.gz``, PAX, paths
without the leading ``/``) is listed the same way, so a tree restored from a backup is
checked against the archive it came from. Listings taken while the source's apps still
write will differ: freeze writers first.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import paramiko
from fabric import Connection

from relaunch.databases.base import RemoteCommand
from relaunch.databases.runner import Tail, open_channel
from relaunch.errors import RelaunchError
from relaunch.remote import new_ed25519, public_key

log = logging.getLogger(__name__)

#: Where link directories live on the new host (a tmpfs: private keys never reach a disk).
LINK_ROOT = "/run/relaunch"
#: The name the old host's pinned key is filed under in the link's known_hosts.
HOST_ALIAS = "relaunch-old-host"
#: Seconds after which the old host refuses the link's key even if nobody removed it.
KEY_LIFETIME = 12 * 3600
#: rsync keeps an interrupted file's part here (inside its directory) until the next run.
PARTIAL_DIR = ".rsync-partial"
#: Interfaces whose addresses are never the new host's own address as the old host sees it.
_VIRTUAL_IFACES = ("docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "lo")
#: Bytes of a command's stdout kept when it is read line by line (rsync's summary is at the end).
_OUT_TAIL = 64 * 1024

Progress = Callable[[int, "int | None"], None]


# --------------------------------------------------------------------------- the link


@dataclass(frozen=True)
class Link:
    """The new host's temporary SSH access to the old host (valid inside :func:`link`).

    ``address``: the old host as the new host reaches it (IPv4, IPv6 without brackets, or
    a name). ``user``: the login user there; anything but root runs commands through
    ``sudo -n``. ``directory``: ``/run/relaunch/link-<token>`` on the new host, holding
    ``id`` (the private key, 0600) and ``known_hosts`` (the old host's pinned key).
    ``token``: the unique comment of the key's line in the old host's authorized_keys.
    """

    address: str
    user: str
    port: int
    directory: str
    token: str

    def __post_init__(self) -> None:
        # These reach ssh's and rsync's argument parsers: nothing that could read as an option
        # or be split apart.
        for what, value in (("address", self.address), ("user", self.user), ("directory", self.directory)):
            if not value or value.startswith("-") or re.search(r"[\s'\"\\@]", value):
                raise RelaunchError(f"link {what} {value!r} is not usable in an ssh command line")
        if not self.directory.startswith(f"{LINK_ROOT}/link-"):
            raise RelaunchError(f"link directory {self.directory!r} is not under {LINK_ROOT}/")

    @property
    def sudo(self) -> bool:
        return self.user != "root"

    def ssh_options(self) -> list[str]:
        """Return ``ssh`` and every option of the link, without the destination (rsync's ``-e``)."""
        d = self.directory
        return [
            "ssh", "-F", "none",  # the new host's own ssh config plays no part
            "-i", f"{d}/id", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"HostKeyAlias={HOST_ALIAS}", "-o", "CheckHostIP=no", "-o", "UpdateHostKeys=no",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
            "-p", str(self.port),
        ]  # fmt: skip

    def ssh_argv(self) -> list[str]:
        """Return the argv that opens the link from the new host (a remote command line may follow)."""
        return [*self.ssh_options(), f"{self.user}@{self.address}"]

    def remote(self, argv: Sequence[str]) -> str:
        """Return the command line the old host's shell runs for ``argv`` (every value quoted; sudo when not root)."""
        line = shlex.join(argv)
        return f"sudo -n {line}" if self.sudo else line

    def command(self, argv: Sequence[str]) -> list[str]:
        """Return the argv that runs ``argv`` on the old host, to be run on the new host."""
        return [*self.ssh_argv(), self.remote(argv)]

    def rsync_source(self, path: str) -> str:
        """Return rsync's ``user@host:path/`` for a tree on the old host (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}:{path}/"


def authorized_line(public: str, token: str, sources: Sequence[str]) -> str:
    """Return the authorized_keys line (without expiry) for a link key usable only from ``sources``.

    Raise RelaunchError if there is no source or one is not a plain address or host pattern.
    """
    if not sources:
        raise RelaunchError("a link key needs at least one address the new host connects from")
    for s in sources:
        if not re.fullmatch(r"[0-9A-Za-z.:*?/_-]+", s):
            raise RelaunchError(f"{s!r} is not an address an authorized_keys from= list can hold")
    return f'from="{",".join(sources)}",restrict {public} {token}'


def own_addresses(ip_output: str) -> list[str]:
    """Given ``ip -o addr show scope global``, return the host's addresses on real interfaces, IPv4 first.

    Docker bridges, veths and other virtual interfaces are left out: the old host never
    sees the new one come from those.
    """
    v4: list[str] = []
    v6: list[str] = []
    for line in ip_output.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("inet", "inet6"):
            continue
        iface = fields[1].split("@")[0]
        if iface.startswith(_VIRTUAL_IFACES):
            continue
        addr = fields[3].split("/")[0]
        (v4 if fields[2] == "inet" else v6).append(addr)
    return list(dict.fromkeys(v4 + v6))


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _pins(host_key: str) -> list[str]:
    """Return the known_hosts lines for the old host's pinned key(s). Raise RelaunchError if one is not a key."""
    lines = []
    for raw in host_key.strip().splitlines():
        if not raw.strip():
            continue
        try:
            key = public_key(raw)
        except Exception as exc:  # noqa: BLE001 - paramiko raises many types for a bad key
            raise RelaunchError(f"the old host's pinned key is not an SSH public key line: {raw[:40]!r}...") from exc
        lines.append(f"{HOST_ALIAS} {key.get_name()} {key.get_base64()}")
    if not lines:
        raise RelaunchError("no pinned host key for the old host: adopt it first (fab adopt)")
    return lines


# $1 the root, $2 the link directory, then the known_hosts lines; the private key on stdin.
_MAKE_DIR = r"""
set -eu
umask 077
mkdir -p -m 700 -- "$1"
mkdir -m 700 -- "$2"
cat > "$2/id"
d=$2
shift 2
printf '%s\n' "$@" > "$d/known_hosts"
"""

_AUTHORIZE = r"""
set -eu
umask 077
exp=$(date -d "+$2 seconds" +%Y%m%d%H%M)
mkdir -p -m 700 "$HOME/.ssh"
f="$HOME/.ssh/authorized_keys"
if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then printf '\n' >> "$f"; fi
printf 'expiry-time="%s",%s\n' "$exp" "$1" >> "$f"
echo relaunch-authorized
"""

# Remove every line of ~/.ssh/authorized_keys that carries the token as a field; keep the
# file's mode and owner; print how many went.
_REVOKE = r"""
import os, sys, tempfile
token = sys.argv[1].encode()
path = os.path.realpath(os.path.expanduser("~/.ssh/authorized_keys"))
try:
    with open(path, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
except FileNotFoundError:
    print("relaunch-revoked 0")
    sys.exit(0)
keep = [l for l in lines if token not in l.split()]
if len(keep) != len(lines):
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".authorized_keys.")
    try:
        os.fchmod(fd, st.st_mode & 0o7777)
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            os.fchown(fd, st.st_uid, st.st_gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
print("relaunch-revoked", len(lines) - len(keep))
"""

# End every process whose command line names the link directory (ssh, rsync, the pull
# scripts), then remove the directory; print how many processes were ended.
_CLOSE_DIR = r"""
import os, shutil, signal, sys, time
d = sys.argv[1].encode()
me = os.getpid()
def users():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != me:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if d in fh.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out
ended = users()
for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
    for pid in users():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while users() and time.monotonic() < deadline:
        time.sleep(0.05)
shutil.rmtree(d, ignore_errors=True)
if os.path.exists(d):
    sys.exit("could not remove " + d.decode())
print("relaunch-closed", len(ended))
"""


def _must(conn: Connection, cmd: RemoteCommand, stdin: bytes | None = None, as_login: bool = False) -> str:
    res = _exec(conn, cmd, stdin, as_login=as_login)
    if res.status != 0:
        raise RelaunchError(f"{conn.host}: {cmd.description} failed (exit {res.status}): {res.err or '-'}")
    return res.out.decode("utf-8", "replace")


def _make_dir(dst: Connection, directory: str, private: bytes, pins: list[str]) -> None:
    if dst.user != "root":
        raise RelaunchError(f"{dst.host}: the new host is reached as {dst.user}; relaunch needs root there")
    cmd = RemoteCommand(("sh", "-c", _MAKE_DIR, "sh", LINK_ROOT, directory, *pins), "make the link directory")
    _must(dst, cmd, stdin=private)


def _authorize(src: Connection, line: str, lifetime: int) -> None:
    # as the login user: the key goes into HIS authorized_keys (sudo would make $HOME root's)
    out = _must(src, RemoteCommand(("sh", "-c", _AUTHORIZE, "sh", line, str(int(lifetime))), "authorize the link key"),
                as_login=True)
    if "relaunch-authorized" not in out:
        raise RelaunchError(f"{src.host}: adding the link key to authorized_keys gave no answer")


def _revoke(src: Connection, token: str) -> int:
    out = _must(src, RemoteCommand(("python3", "-", token), "remove the link key"), stdin=_REVOKE.encode(), as_login=True)
    return int(out.split()[-1]) if out.startswith("relaunch-revoked") else 0


def _close_dir(dst: Connection, directory: str) -> int:
    out = _must(dst, RemoteCommand(("python3", "-", directory), "close the link directory"), stdin=_CLOSE_DIR.encode())
    return int(out.split()[-1]) if out.startswith("relaunch-closed") else 0


def _new_host_addresses(dst: Connection) -> list[str]:
    res = _exec(dst, RemoteCommand(("ip", "-o", "addr", "show", "scope", "global"), "list addresses"))
    found = own_addresses(res.out.decode("utf-8", "replace")) if res.status == 0 else []
    if not found:  # no iproute2: every address the host has
        res = _exec(dst, RemoteCommand(("hostname", "-I"), "list addresses"))
        found = [a for a in res.out.decode().split() if not a.startswith(("fe80:", "169.254."))]
    ip = _ip_literal(dst.host)
    return list(dict.fromkeys(([ip] if ip else []) + found))


def _probe(ln: Link, dst: Connection, sources: Sequence[str]) -> None:
    res = _exec(dst, RemoteCommand(tuple(ln.command(["true"])), "probe the link"))
    if res.status == 0:
        return
    where = f"{dst.host} (new host) -> {ln.user}@{ln.address}:{ln.port} (old host)"
    err = res.err or "-"
    if "Host key verification failed" in err or "IDENTIFICATION HAS CHANGED" in err:
        raise RelaunchError(
            f"{where}: the old host's SSH key is not the pinned one; refusing to copy from it "
            f"(a wrong address, or not the host relaunch adopted): {err}"
        )
    if "Permission denied" in err:
        raise RelaunchError(
            f"{where}: the old host refused the link key: it sees the new host come from another address than "
            f"{', '.join(sources)} (pass dst_addresses), or its sshd reads keys from elsewhere than "
            f"~{ln.user}/.ssh/authorized_keys: {err}"
        )
    if ln.sudo and ("password is required" in err or "sudo:" in err):
        raise RelaunchError(f"{where}: {ln.user} needs passwordless sudo on the old host (or connect as root): {err}")
    raise RelaunchError(f"{where}: ssh failed (exit {res.status}): {err}")


@contextmanager
def link(
    src: Connection,
    src_host_key: str,
    dst: Connection,
    src_address: str | None = None,
    dst_addresses: Sequence[str] | None = None,
    lifetime: int = KEY_LIFETIME,
    probe: bool = True,
) -> Iterator[Link]:
    """Give the new host (``dst``) SSH access to the old host (``src``) for the ``with`` block; yield the :class:`Link`.

    ``src_host_key``: the old host's pinned public key line(s), the only key the new host
    will accept. ``src_address``: the old host as the new host reaches it (default
    ``src.host``, e.g. its private VPC address instead). ``dst_addresses``: where the old
    host sees the new host's connections come from (default: the new host's own addresses
    on real interfaces, and ``dst.host``). ``src`` logs in as ``src.user`` (root, or a
    passwordless sudoer); ``dst`` must be root.

    The key pair is made here in memory; the private half is written only on ``dst``
    (under ``/run/relaunch``), the public half appended to ``src``'s authorized_keys (see
    the module docstring). ``probe`` tries the link once before yielding. On leaving
    (also on failure or KeyboardInterrupt) the key is removed from ``src`` and the
    directory and every process using it from ``dst``. Raise RelaunchError if setting up
    fails (everything done so far undone first), if the old host's key is not the pinned
    one, or, after a block that succeeded, if clean-up left something behind (named).
    """
    pins = _pins(src_host_key)
    address = (src_address or src.host).strip("[]")
    token = f"relaunch-link-{secrets.token_hex(8)}"
    ln = Link(address=address, user=src.user, port=int(src.port or 22),
              directory=f"{LINK_ROOT}/link-{token.rsplit('-', 1)[1]}", token=token)
    undo: list[tuple[str, Callable[[], object]]] = []
    try:
        private, public = new_ed25519()
        undo.append((f"{dst.host}: the link directory {ln.directory} (rm -rf it)",
                     lambda: _close_dir(dst, ln.directory)))
        _make_dir(dst, ln.directory, private, pins)
        del private
        sources = list(dst_addresses) if dst_addresses else _new_host_addresses(dst)
        line = authorized_line(public, token, sources)
        undo.append((f"{src.host}: the key {token} in ~{src.user}/.ssh/authorized_keys (delete its line)",
                     lambda: _revoke(src, token)))
        _authorize(src, line, lifetime)
        log.info("link %s: %s may ssh to %s@%s from %s until it closes", token, dst.host, src.user, address,
                 ", ".join(sources))
        if probe:
            _probe(ln, dst, sources)
    except BaseException:
        _undo(undo, quiet=True)
        raise
    try:
        yield ln
    except BaseException:
        _undo(undo, quiet=True)
        raise
    _undo(undo, quiet=False)


def _undo(steps: list[tuple[str, Callable[[], object]]], quiet: bool) -> None:
    """Run the clean-up steps newest first, every one of them even if one fails or Ctrl-C comes.

    ``quiet``: an exception is already on its way (log what was left); otherwise raise
    RelaunchError naming what was left behind. A KeyboardInterrupt during clean-up is
    re-raised once every step was tried.
    """
    left: list[str] = []
    interrupted: BaseException | None = None
    for what, step in reversed(steps):
        try:
            step()
        except KeyboardInterrupt as exc:
            interrupted = exc
            left.append(what)
        except Exception as exc:  # noqa: BLE001 - each step is tried; the failures are reported together
            log.error("link clean-up failed: %s: %s", what, exc)
            left.append(f"{what}: {exc}")
    steps.clear()
    if interrupted is not None:
        log.error("link clean-up interrupted; left: %s", "; ".join(left))
        raise interrupted
    if left and not quiet:
        raise RelaunchError("the host-to-host link was not fully removed; do it by hand:\n  " + "\n  ".join(left))


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Result:
    status: int
    out: bytes
    err: str


def _exec(conn: Connection, cmd: RemoteCommand, stdin: bytes | None = None,
          on_line: Callable[[str], None] | None = None, as_login: bool = False) -> _Result:
    """Run ``cmd`` on ``conn``'s host; return its exit status, stdout and stderr tail (never raises on exit status).

    With ``on_line`` each stdout line (split at ``\\n`` and ``\\r``: rsync's progress) is
    handed over as it comes and only the last 64 KiB of stdout are kept.
    Raise RelaunchError if the connection breaks.
    """
    channel = open_channel(conn, cmd, as_login=as_login)
    err = Tail(channel.recv_stderr, "stderr")
    out = bytearray()
    pending = b""
    try:
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        while True:
            data = channel.recv(65536)
            if not data:
                break
            out += data
            if on_line is None:
                continue
            del out[:-_OUT_TAIL]
            *lines, pending = re.split(rb"[\r\n]", pending + data)
            for line in lines:
                if line.strip():
                    on_line(line.decode("utf-8", "replace"))
        if on_line is not None and pending.strip():
            on_line(pending.decode("utf-8", "replace"))
        status = channel.recv_exit_status()
    except (OSError, socket.timeout, paramiko.SSHException) as exc:
        raise RelaunchError(f"{conn.host}: {cmd.description or 'a command'}: the connection broke ({exc}); "
                            f"stderr: {err.text(1) or '-'}") from exc
    finally:
        channel.close()
    return _Result(status, bytes(out), err.text())


# A background ticker keeps the operator's channel from looking idle while a dump or a
# restore works quietly for minutes (its sleep does not hold fd 3, so the channel ends
# as soon as the script does).
_PRELUDE = r"""
set -u
exec 3>&1
( exec </dev/null >/dev/null 2>&1; while sleep 15 3>&-; do echo relaunch-alive >&3; done ) &
ticker=$!
"""

# Copies stdin to stdout, counting and hashing; progress lines on fd 3 (the operator's
# channel); its total and sha256 as the last line there. With a file argument every byte
# also goes into that file (0600), written first: when the reader of stdout ends early
# (a restore that failed), the file still gets the whole dump and the relay goes on.
_RELAY = r"""
import hashlib, os, sys, time
h = hashlib.sha256()
n = 0
last = time.monotonic()
tee = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if len(sys.argv) > 1 else None
out = 1
def put(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
while True:
    data = os.read(0, 1 << 20)
    if not data:
        break
    h.update(data)
    n += len(data)
    if tee is not None:
        put(tee, data)
    if out is not None:
        try:
            put(out, data)
        except BrokenPipeError:
            if tee is None:
                raise
            out = None
            os.close(1)
    now = time.monotonic()
    if now - last >= 1:
        os.write(3, b"relaunch-progress %d\n" % n)
        last = now
if tee is not None:
    os.close(tee)
os.write(3, b"relaunch-relay %d %s\n" % (n, h.hexdigest().encode()))
"""

# $1 mode (file|pipe|tee), $2 target file (file and tee modes), $3 link directory, $4 the relay,
# $5 how many of the remaining arguments are the ssh argv; then the restore argv (pipe and tee).
# tee: the dump goes into the file AND into the restore; the file is kept when the dump
# and the relay succeeded, whatever the restore did (its status is reported apart).
_PULL = _PRELUDE + r"""
mode=$1 target=$2 linkdir=$3 relay=$4 n=$5
shift 5
ssh=("${@:1:n}")
restore=("${@:n+1}")
work=$(mktemp -d "$linkdir/pull.XXXXXX") || exit 1
trap 'kill "$ticker" 2>/dev/null; rm -rf -- "$work"' EXIT
if [ "$mode" = file ]; then
  umask 077
  "${ssh[@]}" </dev/null 2>"$work/src" | python3 -c "$relay" 2>"$work/relay" >"$target.part"
  st=("${PIPESTATUS[@]}" 0)
elif [ "$mode" = tee ]; then
  "${ssh[@]}" </dev/null 2>"$work/src" | python3 -c "$relay" "$target.part" 2>"$work/relay" | "${restore[@]}" >"$work/dst" 2>&1
  st=("${PIPESTATUS[@]}")
else
  "${ssh[@]}" </dev/null 2>"$work/src" | python3 -c "$relay" 2>"$work/relay" | "${restore[@]}" >"$work/dst" 2>&1
  st=("${PIPESTATUS[@]}")
fi
echo "relaunch-status ${st[0]} ${st[1]} ${st[2]}"
for side in src relay dst; do
  if [ -s "$work/$side" ]; then printf '@@relaunch %s\n' "$side" >&2; tail -c 1500 "$work/$side" >&2; echo >&2; fi
done
if [ "${st[0]}" = 0 ] && [ "${st[1]}" = 0 ] && { [ "${st[2]}" = 0 ] || [ "$mode" = tee ]; }; then
  if [ "$mode" != pipe ]; then mv -f -- "$target.part" "$target" || exit 1; fi
  exit 0
fi
if [ "$mode" != pipe ]; then rm -f -- "$target.part"; fi
exit 1
"""


@dataclass(frozen=True)
class Pulled:
    """What a dump pull moved: bytes, their sha256 (hex), seconds.

    For a pull into a file and a restore at once (:func:`pull_dump_restoring`):
    ``restored`` says whether the restore succeeded, ``restore_error`` why not (None otherwise).
    """

    bytes: int
    sha256: str
    seconds: float
    restored: bool | None = None
    restore_error: str = ""


def _sides(err: str) -> dict[str, str]:
    """Split the pull script's stderr into its sides' tails (``@@relaunch src`` / ``relay`` / ``dst``)."""
    parts = re.split(r"^@@relaunch (\w+)\n", err, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def _pull(ln: Link, src_cmd: RemoteCommand, dst: Connection, mode: str, target: str,
          dst_cmd: RemoteCommand | None, progress: Progress | None) -> Pulled:
    what = src_cmd.description or src_cmd.shell()
    ssh = ln.command(src_cmd.argv)
    restore = dst_cmd.argv if dst_cmd else ()
    cmd = RemoteCommand(("bash", "-c", _PULL, "pull", mode, target, ln.directory, _RELAY, str(len(ssh)), *ssh, *restore),
                        f"pull {what} from {ln.address}")
    result: dict[str, list[str]] = {}

    def line(text: str) -> None:
        word, _, rest = text.partition(" ")
        if word == "relaunch-progress" and progress:
            progress(int(rest), None)
        elif word in ("relaunch-status", "relaunch-relay"):
            result[word] = rest.split()

    started = time.monotonic()
    res = _exec(dst, cmd, on_line=line)
    seconds = time.monotonic() - started
    st = result.get("relaunch-status")
    relay = result.get("relaunch-relay")
    into = f" into {dst_cmd.description or dst_cmd.shell()}" if dst_cmd else f" into {target}"
    tails = _sides(res.err)
    if res.status == 0 and st and relay:
        size, sha = int(relay[0]), relay[1]
        log.info("%s: pulled %s from %s%s: %d bytes in %.1f s", dst.host, what, ln.address, into, size, seconds)
        if progress:
            progress(size, size)
        if mode != "tee":
            return Pulled(size, sha, seconds)
        if st[2] == "0":
            return Pulled(size, sha, seconds, restored=True)
        return Pulled(size, sha, seconds, restored=False, restore_error=(
            f"new host {dst.host}: {dst_cmd.description or dst_cmd.shell()} exit {st[2]}: {tails.get('dst') or '-'}"))
    if not st:
        raise RelaunchError(f"{dst.host} (new host): pulling {what} from {ln.address} (old host){into} failed "
                            f"(exit {res.status}): {res.err or '-'}")
    src_status, relay_status, dst_status = st
    moved = f" after {relay[0]} bytes" if relay else ""
    lines = [f"pulling {what} from the old host {ln.address} to the new host {dst.host}{into} failed{moved}:"]
    if src_status == "255":
        lines.append(f"  ssh {dst.host} -> {ln.address} failed (exit 255): {tails.get('src') or '-'}")
    else:
        lines.append(f"  old host {ln.address}: {what} exit {src_status}: {tails.get('src') or '-'}")
    if dst_cmd is not None:
        lines.append(f"  new host {dst.host}: {dst_cmd.description or dst_cmd.shell()} exit {dst_status}: "
                     f"{tails.get('dst') or '-'}")
    elif relay_status != "0":
        lines.append(f"  new host {dst.host}: writing {target} failed: {tails.get('relay') or '-'}")
    raise RelaunchError("\n".join(lines))


def pull_dump(ln: Link, src_cmd: RemoteCommand, dst: Connection, dst_path: str,
              progress: Progress | None = None) -> Pulled:
    """On the new host, run ``src_cmd`` on the old host through the link with its stdout into ``dst_path``.

    The file is written as ``dst_path.part`` (0600) and renamed into place only when the
    dump succeeded; size and sha256 are computed on the new host on the way. Nothing
    passes through this machine. ``progress(bytes_so_far, None)`` is called about once a
    second (and ``(total, total)`` at the end). Raise RelaunchError naming the host that
    failed, with its exit status and stderr tail; no file (and no ``.part``) is left then.
    """
    if not dst_path.startswith("/") or dst_path.endswith("/"):
        raise RelaunchError(f"dump target {dst_path!r} must be an absolute file path")
    return _pull(ln, src_cmd, dst, "file", dst_path, None, progress)


def pull_dump_into(ln: Link, src_cmd: RemoteCommand, dst: Connection, dst_cmd: RemoteCommand,
                   progress: Progress | None = None) -> Pulled:
    """On the new host, pipe ``src_cmd`` (run on the old host through the link) straight into ``dst_cmd``.

    ``ssh old 'src_cmd' | relay | dst_cmd`` under ``pipefail``; bytes and sha256 of what
    went in are counted on the way. Raise RelaunchError naming each side's exit status
    and stderr tail if either fails; the restore may then have applied part of the dump
    (restore into an empty database and drop it before trying again).
    """
    return _pull(ln, src_cmd, dst, "pipe", "-", dst_cmd, progress)


def pull_dump_restoring(ln: Link, src_cmd: RemoteCommand, dst: Connection, dst_path: str, dst_cmd: RemoteCommand,
                        progress: Progress | None = None) -> Pulled:
    """As :func:`pull_dump`, and every byte also goes into ``dst_cmd`` (a restore) as it arrives.

    The dump file is the result that counts: it is kept whenever the dump itself succeeded,
    also when the restore failed or stopped reading (then the rest of the dump still goes
    into the file); ``Pulled.restored`` and ``Pulled.restore_error`` say how the restore
    ended, so the caller can restore from the file instead. A failed dump raises
    RelaunchError as :func:`pull_dump` does (no file is left; the restore may have applied
    part of it: drop the database before using it).
    """
    if not dst_path.startswith("/") or dst_path.endswith("/"):
        raise RelaunchError(f"dump target {dst_path!r} must be an absolute file path")
    return _pull(ln, src_cmd, dst, "tee", dst_path, dst_cmd, progress)


# --------------------------------------------------------------------------- trees


@dataclass(frozen=True)
class TreeCopy:
    """One tree copied by rsync: files and bytes in the tree, what crossed, what was reused, how long.

    ``files``/``bytes``: regular files in the source tree and their total size.
    ``transferred``: files rsync had to (re)send. ``literal``: bytes that crossed as new
    data; ``matched``: bytes rsync rebuilt from what the new host already held (a resumed
    file's part, an unchanged block).
    """

    path: str
    files: int
    bytes: int
    transferred: int
    literal: int
    matched: int
    seconds: float


_STATS = {
    "files": r"^Number of files: [\d,]+ \(reg: ([\d,]+)",
    "bytes": r"^Total file size: ([\d,]+)",
    "transferred": r"^Number of regular files transferred: ([\d,]+)",
    "literal": r"^Literal data: ([\d,]+)",
    "matched": r"^Matched data: ([\d,]+)",
}


def parse_rsync_stats(text: str) -> dict[str, int]:
    """Given rsync's ``--stats`` output, return files, bytes, transferred, literal, matched (0 when absent)."""
    out = {}
    for key, pattern in _STATS.items():
        m = re.search(pattern, text, flags=re.M)
        out[key] = int(m.group(1).replace(",", "")) if m else 0
    return out


def parse_rsync_progress(line: str) -> tuple[int, int | None] | None:
    """Given one ``--info=progress2`` line, return (bytes done, estimated total or None); None if it is not one.

    The total is estimated from the percentage once rsync knows the whole file list
    (``to-chk``); while it still scans (``ir-chk``) the percentage means little.
    """
    m = re.match(r"^\s*([\d,]+)\s+(\d+)%\s", line)
    if not m:
        return None
    done = int(m.group(1).replace(",", ""))
    pct = int(m.group(2))
    total = done * 100 // pct if pct and "ir-chk" not in line else None
    return done, total


def _check_tree_path(path: str) -> str:
    norm = "/" + "/".join(p for p in path.split("/") if p)
    if not path.startswith("/") or norm == "/" or any(p in (".", "..") for p in norm.split("/")):
        raise RelaunchError(f"{path!r}: a tree must be an absolute path below / (no '.' or '..')")
    if re.search(r"[\n\r]", path):
        raise RelaunchError(f"{path!r}: a tree's own path cannot hold a line break")
    return norm


# $1 the tree, $2 how many of the following arguments are the check's ssh argv; then rsync's argv.
_TREE = _PRELUDE + r"""
trap 'kill "$ticker" 2>/dev/null' EXIT
path=$1 n=$2
shift 2
"${@:1:n}" </dev/null
rc=$?
echo "relaunch-check $rc"
[ "$rc" = 0 ] || exit 1
shift "$n"
mkdir -p -- "$(dirname -- "$path")" || exit 1
LC_ALL=C "$@" </dev/null
rc=$?
echo "relaunch-rsync $rc"
exit "$rc"
"""

# Run on the old host: 3 when the tree is not a directory there, 4 when rsync is missing.
_SOURCE_CHECK = 'test -d "$1" || exit 3; command -v rsync >/dev/null 2>&1 || exit 4'


def rsync_exclude(path: str, exclude: Sequence[str]) -> list[str]:
    """Return rsync's ``--exclude`` options for the absolute paths in ``exclude`` that lie inside tree ``path``.

    Each is anchored at the tree's root (``/rel``), so it matches that one path only; rsync's
    wildcard characters in a name are escaped. Paths outside the tree are ignored.
    """
    root = _check_tree_path(path)
    out = []
    for p in exclude:
        if not p.startswith(root + "/"):
            continue
        rel = p[len(root):]
        if re.search(r"[*?\[\\]", rel):  # rsync reads backslashes as escapes only when a wildcard is present
            rel = re.sub(r"([*?\[\\])", r"\\\1", rel)
        out.append(f"--exclude={rel}")
    return out


def rsync_argv(ln: Link, path: str, bwlimit: int | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Return the rsync argv the new host runs to pull ``path`` from the old host into the same path.

    ``exclude``: absolute paths inside the tree that are not copied (nor deleted on the new
    host: rsync's ``--delete`` spares excluded paths), e.g. SQLite files that come with their dump.
    """
    argv = [
        "rsync", "-aHAX", "--numeric-ids", "--delete", f"--partial-dir={PARTIAL_DIR}",
        # rsync skips a file whose size and mtime match; at its default whole-second precision a
        # file the new host already holds, written in the same second as the source with the same
        # size but other content, would be kept: compare nanoseconds (receiver rsync >= 3.1.3)
        "--modify-window=-1",
        "--info=progress2", "--stats", "--no-human-readable",
        "-e", shlex.join(ln.ssh_options()),
    ]  # fmt: skip
    if ln.sudo:
        argv.append("--rsync-path=sudo -n rsync")
    if bwlimit:
        argv.append(f"--bwlimit={int(bwlimit)}")
    argv += rsync_exclude(path, exclude)
    return [*argv, ln.rsync_source(path), f"{path}/"]


def pull_tree(ln: Link, path: str, dst: Connection, progress: Progress | None = None,
              bwlimit: int | None = None, exclude: Sequence[str] = ()) -> TreeCopy:
    """On the new host, make tree ``path`` the same as ``path`` on the old host (rsync through the link).

    Owners and groups by number, modes, times, symlinks, hard links, ACLs and xattrs are
    kept; files the source does not have are deleted from the copy. A run interrupted
    part-way (Ctrl-C, a broken link) continues where it stopped the next time: the
    interrupted file's part waits in ``.rsync-partial`` and is reused. ``progress(bytes
    done, estimated total or None)`` follows rsync's overall progress. ``bwlimit``:
    KiB/s, to spare the old host's network. ``exclude``: absolute paths inside the tree left
    out (see :func:`rsync_argv`). rsync exit 24 (files vanished while copying:
    the source is still being written) is logged, not raised. Raise RelaunchError if
    ``path`` is not a directory on the old host, rsync is missing there, or rsync fails
    (its exit status and stderr tail).
    """
    path = _check_tree_path(path)
    check = ln.command(["sh", "-c", _SOURCE_CHECK, "sh", path])
    rsync = rsync_argv(ln, path, bwlimit, exclude)
    cmd = RemoteCommand(("bash", "-c", _TREE, "pull-tree", path, str(len(check)), *check, *rsync),
                        f"rsync {path} from {ln.address}")
    codes: dict[str, int] = {}

    def line(text: str) -> None:
        word, _, rest = text.partition(" ")
        if word in ("relaunch-check", "relaunch-rsync"):
            codes[word] = int(rest)
        elif progress and (p := parse_rsync_progress(text)):
            progress(*p)

    started = time.monotonic()
    res = _exec(dst, cmd, on_line=line)
    seconds = time.monotonic() - started
    where = f"copying {path} from the old host {ln.address} to the new host {dst.host}"
    check_rc = codes.get("relaunch-check")
    if check_rc != 0:
        reason = {
            3: f"{path} is not a directory on the old host",
            4: "rsync is not installed on the old host (apt-get install rsync there)",
            255: f"ssh {dst.host} -> {ln.address} failed: {res.err or '-'}",
        }.get(check_rc, f"checking the source failed (exit {check_rc}): {res.err or '-'}")  # type: ignore[arg-type]
        raise RelaunchError(f"{where}: {reason}")
    rc = codes.get("relaunch-rsync", res.status)
    if rc == 24:
        log.warning("%s: some files vanished on the old host while copying (it is still being written)", where)
    elif rc != 0 or res.status not in (0, 24):
        if rc in (20, 30, 35, -1):  # a signal, a timeout, or the script itself ended (the link closed)
            raise RelaunchError(f"{where}: interrupted (run it again: it continues where it stopped): {res.err or '-'}")
        raise RelaunchError(f"{where}: rsync failed (exit {rc}): {res.err or '-'}")
    stats = parse_rsync_stats(res.out.decode("utf-8", "replace"))
    copy = TreeCopy(path=path, seconds=seconds, **stats)
    log.info("%s: %s: %d files (%d sent), %d bytes (%d new, %d reused) in %.1f s", dst.host, path, copy.files,
             copy.transferred, copy.bytes, copy.literal, copy.matched, seconds)
    return copy


# --------------------------------------------------------------------------- listings


class Entry(NamedTuple):
    """One entry of a tree: what :func:`compare_listings` compares.

    ``type``: f(ile) d(irectory) l(ink) p(ipe) s(ocket) b/c (device). ``size``: bytes of a
    file, 0 otherwise. ``mode``: permission bits (incl. setuid/setgid/sticky). ``content``:
    a file's sha256 (None when not hashed: see ``sample``), a symlink's target, a device's
    ``major:minor``, else "". ``hardlink``: for a file hard-linked to others in the same
    tree, the first (sorted) path of its group, else "".
    """

    type: str
    size: int
    mode: int
    uid: int
    gid: int
    content: str | None
    hardlink: str


#: Relative path ("." for the tree's root) -> Entry.
Listing = dict[str, Entry]

# python3 - ROOT SAMPLE [EXCLUDE...]: one JSON line per entry,
# [path, type, size, mode, uid, gid, content, inode-key], then "relaunch-done N".
# SAMPLE: -1 (hash every file), N (the N files with the smallest sha256 of their path), or
# "auto:SEED:ABOVE:BUDGET" (every file while the tree's files total at most ABOVE bytes; above,
# files in the order of sha256(SEED + path) until BUDGET bytes are hashed).
_TREE_LISTING = r"""
import hashlib, json, os, stat, sys
root = os.path.normpath(os.fsencode(sys.argv[1]))
spec = sys.argv[2]
seed, above, budget = b"", -1, -1
if spec.startswith("auto:"):
    _, seed, above, budget = spec.split(":", 3)
    seed, above, budget, sample = os.fsencode(seed), int(above), int(budget), -1
else:
    sample = int(spec)
exclude = {os.path.normpath(os.fsencode(p)) for p in sys.argv[3:]}
try:
    st = os.lstat(root)
except FileNotFoundError:
    sys.exit("relaunch-missing: no such directory")
if not stat.S_ISDIR(st.st_mode):
    sys.exit("relaunch-missing: not a directory")
KIND = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
        stat.S_IFSOCK: "s", stat.S_IFBLK: "b", stat.S_IFCHR: "c"}
entries = [(b".", root, st)]
stack = [(root, b"")]
while stack:
    d, rel = stack.pop()
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        continue
    for name in names:
        full = os.path.join(d, name)
        if full in exclude:
            continue
        try:
            s = os.lstat(full)
        except FileNotFoundError:
            continue
        r = rel + name
        entries.append((r, full, s))
        if stat.S_ISDIR(s.st_mode):
            stack.append((full, r + b"/"))
files = [(r, s.st_size) for r, _, s in entries if stat.S_ISREG(s.st_mode)]
hash_all = sample < 0 and (above < 0 or sum(size for _, size in files) <= above)
chosen = set()
if not hash_all:
    order = sorted(files, key=lambda f: hashlib.sha256(seed + f[0]).digest())
    if sample >= 0:
        chosen = {r for r, _ in order[:sample]}
    else:
        hashed = 0
        for r, size in order:
            if hashed >= budget:
                break
            chosen.add(r)
            hashed += size
out = sys.stdout
for r, full, s in entries:
    kind = KIND.get(stat.S_IFMT(s.st_mode), "?")
    size, content, inode = 0, "", None
    if kind == "f":
        size = s.st_size
        content = None
        if hash_all or r in chosen:
            h = hashlib.sha256()
            try:
                with open(full, "rb") as fh:
                    while True:
                        block = fh.read(1 << 20)
                        if not block:
                            break
                        h.update(block)
                content = h.hexdigest()
            except OSError as exc:
                content = "unreadable: " + exc.strerror
        if s.st_nlink > 1:
            inode = "%d:%d" % (s.st_dev, s.st_ino)
    elif kind == "l":
        content = os.fsdecode(os.readlink(full))
    elif kind in "bc":
        content = "%d:%d" % (os.major(s.st_rdev), os.minor(s.st_rdev))
    out.write(json.dumps([os.fsdecode(r), kind, size, stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid, content, inode]) + "\n")
out.write("relaunch-done %d\n" % len(entries))
"""

# python3 - ARCHIVE TREE...: one JSON line per member inside one of the trees,
# [tree index, path, type, size, mode, uid, gid, content, inode-key], then "relaunch-done N".
# Trees are given as the archive stores them: without the leading '/'.
_ARCHIVE_LISTING = r"""
import hashlib, json, posixpath, sys, tarfile
archive = sys.argv[1]
trees = [posixpath.normpath(t.strip("/")) for t in sys.argv[2:]]
seen = {}
count = 0
def tree_of(name):
    for i, t in enumerate(trees):
        if name == t or name.startswith(t + "/"):
            return i, "." if name == t else name[len(t) + 1:]
    return None, None
try:
    tar = tarfile.open(archive, "r|*")
except (OSError, tarfile.TarError) as exc:
    sys.exit("relaunch-unreadable: %s" % exc)
with tar:
    for m in tar:
        name = posixpath.normpath(m.name.lstrip("/"))
        i, rel = tree_of(name)
        if i is None:
            continue
        size, content, inode = 0, "", None
        if m.isreg():
            kind, size, inode = "f", m.size, name
            h = hashlib.sha256()
            fh = tar.extractfile(m)
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                h.update(block)
            content = h.hexdigest()
            seen[name] = (size, content)
        elif m.islnk():
            target = posixpath.normpath(m.linkname.lstrip("/"))
            kind, inode = "f", target
            size, content = seen.get(target, (0, "hard link to a member not in the trees: " + target))
        elif m.isdir():
            kind = "d"
        elif m.issym():
            kind, content = "l", m.linkname
        elif m.ischr() or m.isblk():
            kind, content = ("c" if m.ischr() else "b"), "%d:%d" % (m.devmajor, m.devminor)
        elif m.isfifo():
            kind = "p"
        else:
            kind = "?"
        count += 1
        print(json.dumps([i, rel, kind, size, m.mode & 0o7777, m.uid, m.gid, content, inode]))
print("relaunch-done %d" % count)
"""


def _listing(rows: Iterable[list]) -> Listing:
    """Given rows [path, type, size, mode, uid, gid, content, inode-key], return the Listing (hard-link groups resolved)."""
    rows = list(rows)
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row[7] is not None:
            groups.setdefault(row[7], []).append(row[0])
    first = {key: min(paths) for key, paths in groups.items() if len(paths) > 1}
    return {
        row[0]: Entry(row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]), row[6], first.get(row[7], ""))
        for row in rows
    }


def _json_rows(conn: Connection, out: bytes, what: str) -> list[list]:
    rows = []
    done = False
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        if line.startswith("relaunch-done"):
            done = True
        elif line:
            rows.append(json.loads(line))
    if not done:
        raise RelaunchError(f"{conn.host}: {what}: the listing ended early")
    return rows


@dataclass(frozen=True)
class Sampling:
    """Very large trees: above ``above`` bytes of files, hash only a seeded sample of about ``budget`` bytes.

    The files are taken in the order of sha256(``seed`` + path), so two hosts holding the same
    tree hash the same files, and runs with other seeds (each rebuild or drill its own) hash
    other ones. Every file's type, size, mode and owner is still compared.
    """

    seed: str
    above: int = 8 * 1024**3
    budget: int = 512 * 1024**2

    def __post_init__(self) -> None:
        if ":" in self.seed or not self.seed.isprintable():
            raise RelaunchError(f"sampling seed {self.seed!r}: printable, without ':'")

    def arg(self) -> str:
        return f"auto:{self.seed}:{int(self.above)}:{int(self.budget)}"

    def describe(self, listing: Listing) -> str:
        """How the files of ``listing`` were checked, for the report."""
        files = [e for e in listing.values() if e.type == "f"]
        hashed = [e for e in files if e.content is not None]
        if len(hashed) == len(files):
            return "every file hashed"
        total, part = sum(e.size for e in files), sum(e.size for e in hashed)
        return (f"seeded sample (tree above {_gib(self.above)}): {len(hashed)} of {len(files)} files, {part} of {total} "
                f"bytes hashed (seed {self.seed}); every file's type, size, mode and owner compared")


def _gib(n: int) -> str:
    return f"{n / 1024**3:g} GiB" if n >= 1024**3 else f"{n} bytes"


def tree_listing(conn: Connection, path: str, sample: int | Sampling | None = None,
                 exclude: Sequence[str] = ()) -> Listing:
    """Return the listing of tree ``path`` on ``conn``'s host, computed there (only the listing comes here).

    Every file is hashed (sha256), or with ``sample`` only that many, the same ones on
    any host holding the same paths (those with the smallest sha256 of their path), or with a
    :class:`Sampling` every file unless the tree is very large, then a seeded sample; the
    others have ``content`` None, which :func:`compare_listings` does not compare.
    ``exclude``: absolute paths left out (what a backup archive leaves out, e.g. SQLite
    files dumped on their own). Symlinks are listed, never followed. Raise RelaunchError
    if ``path`` is not a directory there.
    """
    path = _check_tree_path(path)
    spec = sample.arg() if isinstance(sample, Sampling) else str(-1 if sample is None else int(sample))
    cmd = RemoteCommand(("python3", "-", path, spec, *exclude), f"list {path}")
    res = _exec(conn, cmd, stdin=_TREE_LISTING.encode())
    if res.status != 0:
        if "relaunch-missing" in res.err:
            raise RelaunchError(f"{conn.host}: {path} is not a directory there")
        raise RelaunchError(f"{conn.host}: listing {path} failed (exit {res.status}): {res.err or '-'}")
    return _listing(_json_rows(conn, res.out, f"listing {path}"))


def archive_listing(conn: Connection, archive_path: str, paths: Sequence[str]) -> dict[str, Listing]:
    """Return, for each tree in ``paths``, its listing as stored in the tar archive ``archive_path`` on ``conn``'s host.

    The archive is read there (any compression tarfile knows; the backup runner writes
    ``tar.gz`` with member names without the leading '/'); file contents are hashed
    there. Hard-link members take their target's size and hash. Keys are the paths as
    given. Raise RelaunchError if the archive cannot be read or a tree is not in it.
    """
    trees = [_check_tree_path(p) for p in paths]
    cmd = RemoteCommand(("python3", "-", archive_path, *trees), f"list archive {archive_path}")
    res = _exec(conn, cmd, stdin=_ARCHIVE_LISTING.encode())
    if res.status != 0:
        raise RelaunchError(f"{conn.host}: listing archive {archive_path} failed (exit {res.status}): {res.err or '-'}")
    return archive_listings_from_rows(_json_rows(conn, res.out, f"listing archive {archive_path}"), paths, archive_path)


def archive_listings_from_rows(rows: list[list], paths: Sequence[str], archive_path: str) -> dict[str, Listing]:
    """Given the archive script's rows [tree index, ...], return each tree's Listing. Raise if a tree is absent."""
    per: dict[int, list[list]] = {i: [] for i in range(len(paths))}
    for row in rows:
        per[int(row[0])].append(row[1:])
    out: dict[str, Listing] = {}
    for i, p in enumerate(paths):
        listing = _listing(per[i])
        if "." not in listing:
            raise RelaunchError(f"{archive_path}: tree {p} is not in the archive")
        out[p] = listing
    return out


def _show(path: str) -> str:
    return path if path.isprintable() and path.strip() == path and path else repr(path)


def _differences(want: Entry, got: Entry) -> list[str]:
    out = []
    if want.type != got.type:
        return [f"type {want.type} != {got.type}"]
    if want.size != got.size:
        out.append(f"size {want.size} != {got.size}")
    if want.mode != got.mode:
        out.append(f"mode {want.mode:04o} != {got.mode:04o}")
    if (want.uid, want.gid) != (got.uid, got.gid):
        out.append(f"owner {want.uid}:{want.gid} != {got.uid}:{got.gid}")
    if want.content is not None and got.content is not None and want.content != got.content:
        if want.type == "f":
            out.append(f"sha256 {want.content[:12]} != {got.content[:12]}")
        else:
            out.append(f"target {want.content!r} != {got.content!r}")
    if want.hardlink != got.hardlink:
        a = f"linked with {_show(want.hardlink)}" if want.hardlink else "not hard-linked"
        b = f"linked with {_show(got.hardlink)}" if got.hardlink else "not hard-linked"
        out.append(f"hard link: {a} != {b}")
    return out


def compare_listings(expected: Listing, actual: Listing, limit: int = 20) -> list[str]:
    """Return how ``actual`` differs from ``expected``, one human line each (sorted by path); [] when they match.

    ``missing: P``, ``extra: P``, ``differs: P (size 10 != 12, mode 0644 != 0600, ...)``;
    a file's content is compared only when both sides hashed it. At most ``limit``
    lines, then one ``... and N more``.
    """
    lines: list[str] = []
    for p in sorted(expected.keys() | actual.keys()):
        if p not in actual:
            lines.append(f"missing: {_show(p)}")
        elif p not in expected:
            lines.append(f"extra: {_show(p)}")
        elif diffs := _differences(expected[p], actual[p]):
            lines.append(f"differs: {_show(p)} ({', '.join(diffs)})")
    if len(lines) > limit:
        return [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def verify_tree(src: Connection, dst: Connection, path: str, exclude: Sequence[str] = (),
                limit: int = 20) -> list[str]:
    """List tree ``path`` on both hosts at once and return :func:`compare_listings` (source expected); [] when equal."""
    found: dict[str, Listing] = {}
    failed: list[BaseException] = []

    def take_dst() -> None:
        try:
            found["dst"] = tree_listing(dst, path, exclude=exclude)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            failed.append(exc)

    other = threading.Thread(target=take_dst, name="listing-dst", daemon=True)
    other.start()
    expected = tree_listing(src, path, exclude=exclude)
    other.join()
    if failed:
        raise failed[0]
    return compare_listings(expected, found["dst"], limit)
