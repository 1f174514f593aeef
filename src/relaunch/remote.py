"""SSH to the hosts relaunch builds: keys made locally, host keys pinned, never trust-on-first-use.

A new Droplet's host key is generated here and handed to cloud-init in its user_data,
so the very first connection is verified against a key we already know. Connections are
Fabric ``Connection`` objects whose paramiko client rejects any host key but the pinned
one and ignores the user's own ~/.ssh (known_hosts, config, agent).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, UnexpectedExit
from invoke.runners import Result

from relaunch.errors import RelaunchError
from relaunch.poll import attempts

log = logging.getLogger(__name__)

#: What a command raises when its connection (or the reconnect Fabric makes for it) failed, the transport
#: maybe still open: sshd busy after its sessions were killed answers a reconnect late (AuthenticationException:
#: "Authentication timeout.", "Error reading SSH protocol banner"), or not at all; a dead socket.
CONNECTION_ERRORS = (paramiko.SSHException, paramiko.ssh_exception.NoValidConnectionsError, ConnectionError,
                     TimeoutError, EOFError, socket.timeout)


class HostKeyMismatch(RelaunchError):
    """A host showed a key other than the pinned one: an attack or a wrong address, never a slow boot."""


@dataclass(frozen=True)
class HostKey:
    """An ed25519 SSH host key made locally for a host that does not exist yet."""

    private_openssh: str
    public_line: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls) -> HostKey:
        private, public = new_ed25519()
        return cls(private_openssh=private.decode(), public_line=public)

    def paramiko_key(self) -> paramiko.PKey:
        return public_key(self.public_line)

    def cloud_config(self) -> dict:
        """Return the cloud-config keys that install this as the host's only host key.

        ``ssh_genkeytypes: []`` keeps cloud-init from adding other, unpinned key types.
        """
        return {
            "ssh_deletekeys": True,
            "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": self.private_openssh, "ed25519_public": self.public_line},
        }

    def __repr__(self) -> str:  # the private half must never reach a log
        return f"HostKey({self.public_line.split()[0]} {self.fingerprint()})"

    def fingerprint(self) -> str:
        return self.paramiko_key().fingerprint


def ensure_client_key(path: Path) -> str:
    """Make an ed25519 login key at ``path`` (mode 0600) unless one exists; return its public line."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private, public = new_ed25519()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
        path.with_suffix(".pub").write_text(public + " relaunch\n")
    mode = path.stat().st_mode & 0o077
    if mode:
        raise RelaunchError(f"{path}: private key is readable by group or others (chmod 600 {path})")
    return _public_line(path)


def new_ed25519() -> tuple[bytes, str]:
    """Return a new ed25519 key: (private key in OpenSSH PEM, public line "ssh-ed25519 AAAA...")."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def public_key(line: str) -> paramiko.PKey:
    """Return the paramiko key of an OpenSSH public line ("ssh-ed25519 AAAA... [comment]")."""
    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


def key_accepted(host: str, host_key: str, user: str, private_openssh: str, *, port: int = 22,
                 timeout: float = 15) -> bool:
    """Whether ``host``, showing exactly ``host_key``, lets ``user`` in with ``private_openssh``; nothing runs there.

    Only the SSH handshake and the public-key authentication: no session is opened, so a
    key with a forced command is checked without running it. Raise HostKeyMismatch when
    the host shows another key, RelaunchError when it cannot be reached or the key is unreadable.
    """
    key = None
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key = kind.from_private_key(io.StringIO(private_openssh))
            break
        except (paramiko.SSHException, ValueError):
            continue
    if key is None:
        raise RelaunchError("not an unencrypted OpenSSH private key (ed25519, ecdsa or rsa)")
    pinned = public_key(host_key)
    transport = handshake(host, port, timeout)
    try:
        shown = transport.get_remote_server_key()
        if shown.get_name() != pinned.get_name() or shown.asbytes() != pinned.asbytes():
            raise HostKeyMismatch(f"{host}: SSH host key does not match the pinned key (got {shown.get_name()} "
                                  f"{shown.fingerprint})")
        try:
            transport.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            return False
        return transport.is_authenticated()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RelaunchError(f"{host}:{port}: the SSH handshake failed ({exc})") from None
    finally:
        transport.close()


def handshake(host: str, port: int = 22, timeout: float = 15, prefer: tuple[str, ...] = ()) -> paramiko.Transport:
    """An SSH transport to ``host`` with the key exchange done and nobody authenticated; the caller closes it.

    ``prefer``: host key types asked for first. Raise RelaunchError when nothing answers or the handshake fails.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise RelaunchError(f"{host}:{port}: no SSH server answers ({exc})") from None
    transport = paramiko.Transport(sock)
    try:
        if prefer:
            opts = transport.get_security_options()
            first = [k for k in prefer if k in opts.key_types]
            opts.key_types = first + [k for k in opts.key_types if k not in first]
        transport.start_client(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise RelaunchError(f"{host}:{port}: the SSH handshake failed ({exc})") from None
    return transport


def _public_line(path: Path) -> str:
    key = paramiko.Ed25519Key.from_private_key_file(str(path))
    return f"{key.get_name()} {key.get_base64()}"


def connect(
    host: str,
    host_key: str,
    key_filename: Path,
    user: str = "root",
    port: int = 22,
    connect_timeout: float = 15,
) -> Connection:
    """Return a lazily opened Fabric connection to ``host`` that accepts only ``host_key``.

    A ``user`` other than root gives a :class:`SudoConnection`: every command runs as root
    through ``sudo -n`` (a passwordless sudoer; :func:`check_root` says when it is not).

    ``host_key`` is the pinned public line ("ssh-ed25519 AAAA..."). Any other key the
    server shows makes the connection fail (paramiko's BadHostKeyException or
    SSHException), whatever is in ~/.ssh/known_hosts.
    """
    config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": False, "in_stream": False}})
    cls = Connection if user == "root" else SudoConnection
    conn = cls(
        host=host,
        user=user,
        port=port,
        config=config,
        connect_timeout=connect_timeout,
        connect_kwargs={
            "key_filename": str(key_filename),
            "allow_agent": False,
            "look_for_keys": False,
            "banner_timeout": connect_timeout,
            "auth_timeout": connect_timeout,
        },
    )
    client = conn.client
    # Fabric loads ~/.ssh/known_hosts and auto-adds unknown keys; relaunch does neither.
    client._system_host_keys = paramiko.HostKeys()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    pinned = public_key(host_key)
    name = host if port == 22 else f"[{host}]:{port}"
    client.get_host_keys().add(name, pinned.get_name(), pinned)
    return conn


class NotRoot(RelaunchError):
    """The login user cannot run commands as root (not root, and not a sudoer with NOPASSWD)."""


class SudoConnection(Connection):
    """A connection as a passwordless sudoer (a production host set up by hand, root login off).

    relaunch's commands need root on every host; here each runs as root through
    ``sudo -n -- bash -c LINE`` (:func:`root_line`): :meth:`run` wraps it, and so does the
    channel runner of :mod:`relaunch.databases.runner`. ``-n``: never a password prompt, a
    sudoer without NOPASSWD fails at once with sudo's own message. sudo resets the
    environment (HOME is root's), so a command that must act as the login user himself (a
    key in his own ``~/.ssh/authorized_keys``) uses :meth:`run_as_login`. SFTP still writes
    as the login user: :mod:`relaunch.upload` sends file contents through a command instead.
    """

    def run(self, command: str, **kwargs: object) -> Result:  # type: ignore[override]
        return super().run(root_line(self, command), **kwargs)

    def run_as_login(self, command: str, **kwargs: object) -> Result:
        """Run ``command`` as the login user (no sudo)."""
        return super().run(command, **kwargs)


def needs_sudo(conn: Connection) -> bool:
    """Whether ``conn``'s commands go through sudo (its user is not root)."""
    return isinstance(conn, SudoConnection)


def root_line(conn: Connection, line: str) -> str:
    """The shell line that runs ``line`` as root on ``conn``'s host: itself for root, through ``sudo -n`` for a sudoer."""
    if needs_sudo(conn):
        return "sudo -n -- bash -c " + shlex.quote(line)
    return line


def check_root(conn: Connection, what: str) -> None:
    """Check that relaunch's commands run as root on ``conn``'s host (root, or a sudoer with NOPASSWD).

    Raise :class:`NotRoot` naming the user, the host and the sudoers line to add when they do not.
    """
    try:
        res = conn.run("id -u", warn=True, hide=True, in_stream=False, timeout=QUICK_TIMEOUT)
    except CommandTimedOut:
        raise RelaunchError(f"{what}: {conn.host}: `id -u` did not answer within {QUICK_TIMEOUT:.0f} s") from None
    if res.ok and res.stdout.strip() == "0":
        return
    said = (res.stderr or res.stdout).strip()[-300:]
    if needs_sudo(conn):
        raise NotRoot(
            f"{what}: {conn.user}@{conn.host} cannot run commands as root without a password ({said or 'sudo -n failed'}); "
            f"relaunch needs root or a sudoer with NOPASSWD: add `{conn.user} ALL=(ALL) NOPASSWD: ALL` to "
            f"/etc/sudoers.d/relaunch on that host (visudo -f), or log in as root")
    raise NotRoot(f"{what}: {conn.user}@{conn.host} is not root (uid {res.stdout.strip() or '?'}: {said})")


def wait_for_ssh(conn: Connection, timeout: float = 180) -> float:
    """Open ``conn``, retrying while the host is still booting; return the seconds it took.

    A host key that does not match the pinned one fails at once (no retry): that is an
    attack or a wrong address, not a slow boot. Raise RelaunchError on timeout.
    """
    started = time.monotonic()
    last: Exception | None = None
    for _ in attempts(timeout, first=0.2, cap=2.0):
        try:
            conn.open()
            return time.monotonic() - started
        except paramiko.BadHostKeyException as exc:
            raise HostKeyMismatch(
                f"{conn.host}: SSH host key does not match the pinned key (got {exc.key.get_name()} "
                f"{exc.key.fingerprint}); refusing to connect"
            ) from exc
        except paramiko.AuthenticationException as exc:
            # Keys are installed by cloud-init a little after sshd starts: keep trying.
            last = exc
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            if "not found in known_hosts" in str(exc):
                raise RelaunchError(f"{conn.host}: server offered no pinned host key type ({exc})") from exc
            last = exc
        conn.close()
    raise RelaunchError(f"{conn.host}: SSH did not answer within {timeout:.0f} s (last error: {last})")


#: Seconds a short remote command (a cat, a systemctl query, a mkdir) may take.
QUICK_TIMEOUT = 60.0


def execute(conn: Connection, command: str, *, timeout: float, what: str, warn: bool = True) -> Result:
    """Run the shell ``command`` on ``conn``'s host (output hidden, no stdin), for at most ``timeout`` seconds.

    Return Fabric's Result (with ``warn``, whatever the exit status). Raise RelaunchError
    naming the host and ``what`` if it runs longer (it is stopped: a dead network or a hung
    host never blocks relaunch), or, without ``warn``, if it exits non-zero.
    """
    try:
        return conn.run(command, hide=True, in_stream=False, warn=warn, timeout=timeout)
    except CommandTimedOut:
        raise RelaunchError(
            f"{conn.host}: {what} did not finish within {timeout:.0f} s and was given up "
            "(is the host overloaded, or the network to it down?)"
        ) from None
    except UnexpectedExit as exc:
        out = (exc.result.stdout + exc.result.stderr).strip()[-1500:]
        raise RelaunchError(f"{conn.host}: {what} failed (exit {exc.result.exited}): {out}") from None


def sftp(conn: Connection, timeout: float = QUICK_TIMEOUT) -> paramiko.SFTPClient:
    """``conn``'s SFTP session, each of its reads and writes bounded by ``timeout`` seconds (socket.timeout, an OSError)."""
    client = conn.sftp()
    client.get_channel().settimeout(timeout)
    return client
