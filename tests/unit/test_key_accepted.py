"""remote.key_accepted against an SSH server on 127.0.0.1 (paramiko's, in this process): yes, no, and a host key
other than the pinned one refused before any key is offered."""

from __future__ import annotations

import io
import socket
import threading

import paramiko
import pytest

from relaunch.remote import HostKeyMismatch, key_accepted, new_ed25519


class Server(paramiko.ServerInterface):
    def __init__(self, allowed: str, offered: list[str]) -> None:
        self.allowed, self.offered = allowed, offered

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.offered.append(username)
        ok = username == "restic" and f"{key.get_name()} {key.get_base64()}" == self.allowed
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:  # no session is ever asked for
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


@pytest.fixture
def sshd():
    host_private, host_public = new_ed25519()
    user_private, user_public = new_ed25519()
    offered: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            t = paramiko.Transport(sock)
            t.add_server_key(paramiko.Ed25519Key.from_private_key(io.StringIO(host_private.decode())))
            t.start_server(server=Server(user_public, offered))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"port": listener.getsockname()[1], "host_key": host_public, "user_key": user_private.decode(),
           "offered": offered}
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_the_authorized_key_is_accepted_another_is_not(sshd) -> None:
    assert key_accepted("127.0.0.1", sshd["host_key"], "restic", sshd["user_key"], port=sshd["port"]) is True
    other, _ = new_ed25519()
    assert key_accepted("127.0.0.1", sshd["host_key"], "restic", other.decode(), port=sshd["port"]) is False


def test_another_host_key_is_refused_before_the_key_is_offered(sshd) -> None:
    _, wrong = new_ed25519()
    with pytest.raises(HostKeyMismatch):
        key_accepted("127.0.0.1", wrong, "restic", sshd["user_key"], port=sshd["port"])
    assert sshd["offered"] == []
