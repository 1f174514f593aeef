"""wait_for_ssh against small TCP servers on 127.0.0.1 (no real sshd needed)."""

from __future__ import annotations

import socket
import threading

import pytest

from relaunch.cloud import read_ssh_banner, wait_for_ssh
from relaunch.errors import RelaunchError


def serve_once(payload: bytes, *, close_early: bool = False):
    """Listen on 127.0.0.1:0; send `payload` to each client; return (port, stop)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(5)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                if payload:
                    conn.sendall(payload)
                if not close_early:
                    try:
                        conn.recv(10)  # hold the connection until the client closes it
                    except OSError:
                        pass

    threading.Thread(target=run, daemon=True).start()

    def close():
        stop.set()
        srv.close()

    return srv.getsockname()[1], close


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_read_ssh_banner_skips_preamble_lines():
    port, close = serve_once(b"Welcome\r\nnotice: x\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    try:
        assert read_ssh_banner("127.0.0.1", port, timeout=2) == "SSH-2.0-OpenSSH_9.2p1 Debian-2"
    finally:
        close()


@pytest.mark.parametrize(
    ("payload", "close_early", "match"),
    [(b"SSH-1.5-old\r\n", False, "unsupported"), (b"HTTP/1.1 400\r\n", True, "closed before"),
     (b"", False, "timed out")],
)
def test_read_ssh_banner_rejects_non_ssh(payload, close_early, match):
    port, close = serve_once(payload, close_early=close_early)
    try:
        with pytest.raises(OSError, match=match):
            read_ssh_banner("127.0.0.1", port, timeout=0.3)
    finally:
        close()


def test_wait_for_ssh_polls_until_the_server_comes_up():
    port = free_port()
    started = {}
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        if len(sleeps) == 2:  # sshd "boots" after two refused attempts
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", port))
            srv.listen()
            started["srv"] = srv

            def run():
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(b"SSH-2.0-Sandbox\r\n")
                    conn.recv(10)

            threading.Thread(target=run, daemon=True).start()

    try:
        banner = wait_for_ssh("127.0.0.1", port, timeout=60, interval=2, sleep=sleep, monotonic=lambda: 2.0 * len(sleeps))
    finally:
        if "srv" in started:
            started["srv"].close()
    assert banner == "SSH-2.0-Sandbox" and sleeps == [2, 2]


def test_wait_for_ssh_is_bounded_and_says_why():
    port = free_port()
    sleeps = []
    with pytest.raises(RelaunchError, match=rf"SSH did not answer on 127.0.0.1:{port} within 10 s .*Connection"):
        wait_for_ssh("127.0.0.1", port, timeout=10, interval=3, sleep=sleeps.append,
                     monotonic=lambda: 3.0 * len(sleeps))
    assert sleeps == [3, 3, 3]
