"""A production host reached as a passwordless sudoer: every command runs as root through `sudo -n`.

The wrapping is tested where it happens (Fabric's run, the channel runner, uploads, the
link's key in the login user's own authorized_keys) with fakes; the sandbox test
(tests/sandbox/test_rebuild_adopted.py) runs it on a real host.
"""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest
from fabric import Connection

from relaunch import transfer, upload
from relaunch.databases import runner
from relaunch.databases.base import RemoteCommand
from relaunch.remote import HostKey, NotRoot, SudoConnection, check_root, connect, ensure_client_key, root_line
from relaunch.state import HostRecord


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "id_ed25519"
    ensure_client_key(path)
    return path, HostKey.generate().public_line


def test_connect_gives_a_sudo_connection_for_any_user_but_root(key) -> None:
    path, host_key = key
    assert type(connect("192.0.2.10", host_key, path)) is Connection
    sudoer = connect("192.0.2.10", host_key, path, user="admin")
    assert isinstance(sudoer, SudoConnection) and sudoer.user == "admin"


def test_sudo_connection_run_wraps_every_command_and_run_as_login_does_not(key, monkeypatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(Connection, "run", lambda self, command, **kw: seen.append(command))
    conn = connect("192.0.2.10", key[1], key[0], user="admin")
    conn.run("systemctl stop 'my app'; echo $HOME")
    conn.run_as_login("cat ~/.ssh/authorized_keys")
    assert seen[0] == "sudo -n -- bash -c " + shlex.quote("systemctl stop 'my app'; echo $HOME")
    assert shlex.split(seen[0])[-1] == "systemctl stop 'my app'; echo $HOME"  # the line arrives whole
    assert seen[1] == "cat ~/.ssh/authorized_keys"


def test_root_line_leaves_a_root_connection_alone(key) -> None:
    root = connect("192.0.2.10", key[1], key[0])
    assert root_line(root, "id -u") == "id -u"


class _Channel:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def settimeout(self, t: float) -> None:
        pass

    def exec_command(self, line: str) -> None:
        self.lines.append(line)


def test_the_channel_runner_runs_as_root_through_sudo_unless_as_login(key, monkeypatch) -> None:
    lines: list[str] = []
    conn = connect("192.0.2.10", key[1], key[0], user="admin")
    monkeypatch.setattr(SudoConnection, "is_connected", True)
    transport = SimpleNamespace(is_active=lambda: True, open_session=lambda: _Channel(lines))
    monkeypatch.setattr(conn.client, "get_transport", lambda: transport)
    runner.open_channel(conn, RemoteCommand(("pg_dump", "-Fc", "blog"), "dump"))
    runner.open_channel(conn, RemoteCommand(("sh", "-c", "echo $HOME"), "home"), as_login=True)
    assert lines[0] == "sudo -n -- bash -c " + shlex.quote("pg_dump -Fc blog")
    assert lines[1] == "sh -c 'echo $HOME'"


def test_the_link_key_goes_into_the_login_users_own_authorized_keys(monkeypatch) -> None:
    calls: list[tuple[str, bool]] = []

    def fake_exec(conn, cmd, stdin=None, on_line=None, as_login=False):
        calls.append((cmd.description, as_login))
        return transfer._Result(0, b"relaunch-authorized\nrelaunch-revoked 1\n", "")

    monkeypatch.setattr(transfer, "_exec", fake_exec)
    src = SimpleNamespace(host="old", user="admin")
    transfer._authorize(src, "restrict ssh-ed25519 AAAA token", 60)
    transfer._revoke(src, "token")
    assert calls == [("authorize the link key", True), ("remove the link key", True)]


def test_upload_through_sudo_sends_the_content_on_stdin_never_over_sftp(key, monkeypatch) -> None:
    conn = connect("192.0.2.10", key[1], key[0], user="admin")
    monkeypatch.setattr(upload, "remote_state", lambda c, paths: {})
    monkeypatch.setattr(upload, "execute", lambda *a, **kw: SimpleNamespace(ok=True, stdout=""))
    monkeypatch.setattr(upload, "sftp", lambda *a, **kw: pytest.fail("SFTP writes as the login user"))
    sent: list[tuple[tuple[str, ...], bytes]] = []
    monkeypatch.setattr(upload, "run_command", lambda c, cmd, stdin=None: sent.append((cmd.argv, stdin)) or b"")
    f = SimpleNamespace(path="/etc/relaunch/backup.json", content=b"{\"secret\": 1}\n", mode=0o600, secret=True)
    assert upload.upload(conn, [f]) == ["/etc/relaunch/backup.json"]
    (argv, stdin), = sent
    assert argv[:2] == ("sh", "-c") and argv[-2:] == ("/etc/relaunch/backup.json", "600")
    assert "umask 077" in argv[2] and argv[2].index("chmod") < argv[2].index("cat >")
    assert stdin == f.content


def _result(ok: bool, out: str = "", err: str = "") -> SimpleNamespace:
    return SimpleNamespace(ok=ok, stdout=out, stderr=err)


def test_check_root_accepts_root_and_a_nopasswd_sudoer(key, monkeypatch) -> None:
    monkeypatch.setattr(Connection, "run", lambda self, command, **kw: _result(True, "0\n"))
    check_root(connect("192.0.2.10", key[1], key[0]), "production.user")
    check_root(connect("192.0.2.10", key[1], key[0], user="admin"), "production.user")


def test_check_root_names_the_sudoers_line_for_a_sudoer_that_needs_a_password(key, monkeypatch) -> None:
    monkeypatch.setattr(Connection, "run",
                        lambda self, command, **kw: _result(False, err="sudo: a password is required\n"))
    with pytest.raises(NotRoot, match=r"admin@192.0.2.10 cannot run commands as root without a password.*"
                                      r"admin ALL=\(ALL\) NOPASSWD: ALL"):
        check_root(connect("192.0.2.10", key[1], key[0], user="admin"), "production.user")


def test_a_host_record_keeps_its_login_user_and_old_records_mean_root() -> None:
    old = HostRecord(name="p", role="production", droplet_id=0, ipv4="192.0.2.10", host_key="k", created_at="t")
    assert old.user == "root"
    assert HostRecord(**{**old.__dict__, "user": "admin"}).user == "admin"
