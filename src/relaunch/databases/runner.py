"""Run database commands over SSH: into a file on the host, or piped from one host into another.

The thin runner for the commands the engine modules plan. Dumps never pass through this
machine's memory or disk as a whole: :func:`run_to_file` writes and hashes on the host,
:func:`stream` moves a dump between two SSH channels one bounded chunk at a time.

Every command runs on its own paramiko channel (``exec_command(shlex.join(argv))``),
as root (the connection's user, or through sudo for a sudoer), with no pseudo-terminal. Every wait on a channel is
bounded (``IDLE_TIMEOUT`` without progress; the exit status too: paramiko's
``recv_exit_status`` would wait forever for a host that stopped answering).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paramiko
from fabric import Connection

from relaunch.databases.base import RemoteCommand
from relaunch.errors import RelaunchError
from relaunch.remote import root_line

log = logging.getLogger(__name__)

#: Bytes read from the dump side and written to the restore side at a time.
CHUNK = 256 * 1024
#: Bytes of each side's stderr kept for error messages.
TAIL = 4000
#: Seconds without any progress after which a command is given up on.
IDLE_TIMEOUT = 600.0


@dataclass(frozen=True)
class StreamResult:
    """What went from the dump into the restore: bytes, their SHA-256 (hex), and how long it took."""

    bytes: int
    sha256: str
    seconds: float


class Tail:
    """Drains one stream of a channel in a thread, keeping only its last TAIL bytes."""

    def __init__(self, read: Callable[[int], bytes], name: str) -> None:
        self._read = read
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                data = self._read(65536)
                if not data:
                    return
                self._chunks.append(data)
                self._size += len(data)
                while self._size - len(self._chunks[0]) >= TAIL:
                    self._size -= len(self._chunks.popleft())
        except (OSError, EOFError, socket.timeout, paramiko.SSHException):
            return

    def text(self, wait: float = 5.0) -> str:
        self._thread.join(wait)
        return b"".join(self._chunks)[-TAIL:].decode("utf-8", "replace").strip()


def open_channel(conn: Connection, cmd: RemoteCommand | str, as_login: bool = False) -> paramiko.Channel:
    """Start ``cmd`` on a new channel of ``conn`` (opened if needed), as root (through sudo for a sudoer's
    connection, see :class:`relaunch.remote.SudoConnection`), or ``as_login`` as the login user."""
    if not conn.is_connected:
        conn.open()
    transport = conn.client.get_transport()
    if transport is None or not transport.is_active():
        raise RelaunchError(f"{conn.host}: the SSH connection is not open")
    channel = transport.open_session()
    channel.settimeout(IDLE_TIMEOUT)
    line = cmd.shell() if isinstance(cmd, RemoteCommand) else cmd
    if not as_login:
        line = root_line(conn, line)
    log.debug("%s: %s", conn.host, line)
    channel.exec_command(line)
    return channel


def _exit_status(channel: paramiko.Channel, timeout: float | None = None) -> int:
    """The command's exit status, waited for at most ``timeout`` seconds (paramiko's own wait has no bound).

    Raise socket.timeout (an OSError, as a channel read that times out) if none came.
    """
    timeout = IDLE_TIMEOUT if timeout is None else timeout
    if not channel.status_event.wait(timeout):
        raise socket.timeout(f"no exit status within {timeout:.0f} s")
    return channel.exit_status


def _what(cmd: RemoteCommand) -> str:
    return cmd.description or cmd.shell()


def run(conn: Connection, cmd: RemoteCommand, stdin: bytes | None = None) -> bytes:
    """Run ``cmd`` on ``conn``'s host with ``stdin`` (or none); return its stdout.

    For small outputs (queries, checks): stdout is kept in memory. Raise RelaunchError
    with the exit status and the stderr tail if the command fails.
    """
    channel = open_channel(conn, cmd)
    err = Tail(channel.recv_stderr, "stderr")
    try:
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out = bytearray()
        while True:
            data = channel.recv(65536)
            if not data:
                break
            out += data
        status = _exit_status(channel)
    except (OSError, socket.timeout, paramiko.SSHException) as exc:
        raise RelaunchError(f"{conn.host}: {_what(cmd)}: {exc}; stderr: {err.text(1)}") from exc
    finally:
        channel.close()
    if status != 0:
        raise RelaunchError(f"{conn.host}: {_what(cmd)} failed (exit {status}): {err.text()}")
    return bytes(out)


# $0 is the target path, "$@" the command. The dump goes to a 0600 file beside the
# target and is renamed into place only once complete, so a failed dump never leaves a
# file that looks finished.
_TO_FILE = r"""
umask 077
tmp="$0.part"
"$@" < /dev/null > "$tmp" || { rc=$?; rm -f -- "$tmp"; exit "$rc"; }
sum=$(sha256sum < "$tmp") || exit 1
size=$(stat -c %s -- "$tmp") || exit 1
mv -f -- "$tmp" "$0" || exit 1
printf 'relaunch-dump %s %s\n' "$size" "${sum%% *}"
"""

_FROM_FILE = r"""exec "$@" < "$0" """


def run_to_file(conn: Connection, cmd: RemoteCommand, remote_path: str) -> tuple[int, str]:
    """Run the dump ``cmd`` on the host with its stdout into ``remote_path`` ON THE HOST; return (bytes, sha256).

    The file is written as ``remote_path.part`` (mode 0600) and renamed when the command
    succeeded; it is hashed there with ``sha256sum``. Nothing of the dump passes through
    this machine. Raise RelaunchError (exit status, stderr tail) if the command fails; no
    file is left then.
    """
    wrapper = RemoteCommand(("sh", "-c", _TO_FILE, remote_path, *cmd.argv), cmd.description)
    out = run(conn, wrapper).decode("utf-8", "replace").split()
    if len(out) != 3 or out[0] != "relaunch-dump":
        raise RelaunchError(f"{conn.host}: {_what(cmd)}: unexpected answer from the host: {' '.join(out)[:200]!r}")
    log.info("%s: %s -> %s (%s bytes)", conn.host, _what(cmd), remote_path, out[1])
    return int(out[1]), out[2]


def run_from_file(conn: Connection, cmd: RemoteCommand, remote_path: str) -> None:
    """Run the restore ``cmd`` on the host with ``remote_path`` (a file on the host) as its stdin.

    Raise RelaunchError (exit status, stderr tail) if it fails.
    """
    run(conn, RemoteCommand(("sh", "-c", _FROM_FILE, remote_path, *cmd.argv), cmd.description))


def stream(
    src_conn: Connection, src_cmd: RemoteCommand, dst_conn: Connection, dst_cmd: RemoteCommand, chunk: int = CHUNK
) -> StreamResult:
    """Pipe ``src_cmd``'s stdout on one host into ``dst_cmd``'s stdin on another (or the same); return what moved.

    Two SSH channels; one chunk of at most ``chunk`` bytes in flight at a time (the
    restore side's flow control slows the dump side down), hashed on the way. Both
    commands' stderr (and the restore side's stdout) are drained in the background and
    their tails kept. Raise RelaunchError with both sides' exit statuses and stderr tails
    if either side fails or the pipe breaks; the other side is then stopped (its channel
    closed).
    """
    started = time.monotonic()
    src = open_channel(src_conn, src_cmd)
    src_err = Tail(src.recv_stderr, "src-stderr")
    try:
        dst = open_channel(dst_conn, dst_cmd)
    except BaseException:
        src.close()
        raise
    dst_err = Tail(dst.recv_stderr, "dst-stderr")
    dst_out = Tail(dst.recv, "dst-stdout")
    digest = hashlib.sha256()
    total = 0
    broken: str | None = None
    try:
        while True:
            data = src.recv(chunk)
            if not data:
                break
            digest.update(data)
            total += len(data)
            try:
                dst.sendall(data)
            except (OSError, socket.timeout, paramiko.SSHException) as exc:
                broken = f"the restore side stopped reading after {total} bytes ({exc})"
                break
        if broken is None:
            dst.shutdown_write()
        else:
            src.close()  # the dump gets SIGPIPE / EOF and ends
        src_status = _exit_status(src) if broken is None else -1
        dst_status = _exit_status(dst)
    except (OSError, socket.timeout, paramiko.SSHException) as exc:
        src.close()
        dst.close()
        raise RelaunchError(
            f"streaming {_what(src_cmd)} into {_what(dst_cmd)} broke after {total} bytes: {exc}\n"
            f"  {src_conn.host} (dump) stderr: {src_err.text(1) or '-'}\n"
            f"  {dst_conn.host} (restore) stderr: {dst_err.text(1) or '-'}"
        ) from exc
    finally:
        src.close()
    dst.close()
    seconds = time.monotonic() - started
    if broken or src_status != 0 or dst_status != 0:
        raise RelaunchError(
            f"streaming {_what(src_cmd)} into {_what(dst_cmd)} failed after {total} bytes"
            + (f" ({broken})" if broken else "")
            + f":\n  {src_conn.host} (dump) {'stopped' if broken else f'exit {src_status}'}: {src_err.text() or '-'}"
            + f"\n  {dst_conn.host} (restore) exit {dst_status}: {(dst_err.text() + ' ' + dst_out.text(1)).strip() or '-'}"
        )
    log.info("streamed %d bytes in %.2f s: %s -> %s", total, seconds, _what(src_cmd), _what(dst_cmd))
    return StreamResult(bytes=total, sha256=digest.hexdigest(), seconds=seconds)


class Session:
    """A long-running command fed line by line (an SQL client holding a lock or a snapshot open).

    ``send`` writes to its stdin; ``expect`` reads stdout up to a line starting with a
    marker; ``close`` ends its stdin (the client exits, its transaction ends) and waits.
    """

    def __init__(self, conn: Connection, cmd: RemoteCommand) -> None:
        self.conn = conn
        self.cmd = cmd
        self.channel = open_channel(conn, cmd)
        self.err = Tail(self.channel.recv_stderr, "session-stderr")
        self._buf = b""

    def send(self, text: str) -> None:
        self.channel.sendall(text.encode())

    def expect(self, marker: str, timeout: float = 60.0) -> str:
        """Return the rest of the first stdout line that starts with ``marker``. Raise RelaunchError on EOF or timeout."""
        deadline = time.monotonic() + timeout
        want = marker.encode()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(want):
                    return line[len(want):].decode("utf-8", "replace")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RelaunchError(f"{self.conn.host}: {_what(self.cmd)}: no answer within {timeout:.0f} s: {self.err.text(0.5)}")
            self.channel.settimeout(left)
            try:
                data = self.channel.recv(65536)
            except socket.timeout:
                continue
            if not data:
                try:
                    status: int | str = _exit_status(self.channel, 30)
                except socket.timeout:
                    status = "unknown"
                raise RelaunchError(f"{self.conn.host}: {_what(self.cmd)} ended (exit {status}): {self.err.text()}")
            self._buf += data

    def close(self) -> int:
        """End the session's stdin and return its exit status (the channel is closed either way)."""
        try:
            self.channel.shutdown_write()
            self.channel.settimeout(IDLE_TIMEOUT)
            while self.channel.recv(65536):
                pass
            return _exit_status(self.channel)
        except (OSError, socket.timeout, paramiko.SSHException):
            return -1
        finally:
            self.channel.close()

