"""Wait until an SSH server answers on a host: TCP connect and an SSH-2.0 banner.

A Droplet reported "active" may still be booting; this is the cheap check that
sshd is up. Host-key verification is `relaunch.remote`'s job, not this one.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable

from relaunch.errors import RelaunchError

log = logging.getLogger(__name__)

# RFC 4253 §4.2: the server may send other lines before its identification
# string; the identification line is at most 255 bytes.
_MAX_PREAMBLE = 8192


def read_ssh_banner(host: str, port: int = 22, timeout: float = 5.0) -> str:
    """Connect to host:port and return its SSH identification line (e.g. "SSH-2.0-OpenSSH_9.2p1").

    Raise OSError (socket.timeout included) if nothing usable arrives within `timeout`.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buf = b""
        while len(buf) < _MAX_PREAMBLE:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.rstrip(b"\r")
                if line.startswith(b"SSH-"):
                    text = line.decode("ascii", "replace")
                    if line.startswith((b"SSH-2.0-", b"SSH-1.99-")):
                        return text
                    raise OSError(f"server speaks an unsupported protocol: {text[:60]!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for the SSH banner")
            sock.settimeout(left)
            chunk = sock.recv(1024)
            if not chunk:
                raise OSError("connection closed before an SSH banner")
            buf += chunk
    raise OSError("no SSH banner within the first 8 KiB")


def wait_for_ssh(
    host: str,
    port: int = 22,
    *,
    timeout: float = 300.0,
    interval: float = 2.0,
    attempt_timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> str:
    """Poll host:port until it sends an SSH-2.0 banner; return the banner.

    Raise RelaunchError naming the host and the last failure after `timeout` seconds.
    """
    started = monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            banner = read_ssh_banner(host, port, timeout=attempt_timeout)
            log.info("SSH answers on %s:%s (%s) after %d attempt(s)", host, port, banner, attempts)
            return banner
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
            log.debug("SSH not up on %s:%s yet: %s", host, port, last)
        if monotonic() - started + interval > timeout:
            raise RelaunchError(
                f"SSH did not answer on {host}:{port} within {timeout:.0f} s "
                f"({attempts} attempts; last: {last})"
            )
        sleep(interval)
