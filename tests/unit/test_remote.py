import stat

import paramiko
import pytest

from relaunch.errors import RelaunchError
from relaunch.remote import HostKey, connect, ensure_client_key


def test_hostkey_generate_gives_matching_halves() -> None:
    key = HostKey.generate()
    private = paramiko.Ed25519Key.from_private_key(__import__("io").StringIO(key.private_openssh))
    assert f"{private.get_name()} {private.get_base64()}" == key.public_line


def test_hostkey_cloud_config_installs_only_the_pinned_key() -> None:
    key = HostKey.generate()
    config = key.cloud_config()
    assert config["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public_line}
    assert config["ssh_genkeytypes"] == []
    assert config["ssh_deletekeys"] is True


def test_hostkey_repr_hides_the_private_half() -> None:
    key = HostKey.generate()
    assert "PRIVATE" not in repr(key)
    assert key.fingerprint() in repr(key)


def test_ensure_client_key_creates_0600_once(tmp_path) -> None:
    path = tmp_path / "k" / "id_ed25519"
    first = ensure_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.startswith("ssh-ed25519 ")
    assert ensure_client_key(path) == first


def test_ensure_client_key_refuses_a_key_others_can_read(tmp_path) -> None:
    path = tmp_path / "id_ed25519"
    ensure_client_key(path)
    path.chmod(0o644)
    with pytest.raises(RelaunchError, match="readable by group or others"):
        ensure_client_key(path)


def test_connect_pins_the_key_and_rejects_unknown_ones(tmp_path) -> None:
    path = tmp_path / "id_ed25519"
    ensure_client_key(path)
    key = HostKey.generate()
    conn = connect("192.0.2.10", key.public_line, path)
    client = conn.client
    assert isinstance(client._policy, paramiko.RejectPolicy)
    assert client.get_host_keys().lookup("192.0.2.10")["ssh-ed25519"].get_base64() == key.public_line.split()[1]
    assert len(client._system_host_keys) == 0
    assert not conn.is_connected  # nothing opened: connections are lazy


def test_connect_names_nonstandard_ports_like_known_hosts(tmp_path) -> None:
    path = tmp_path / "id_ed25519"
    ensure_client_key(path)
    key = HostKey.generate()
    conn = connect("192.0.2.10", key.public_line, path, port=2222)
    assert conn.client.get_host_keys().lookup("[192.0.2.10]:2222") is not None
