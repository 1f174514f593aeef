"""provision: a host's record (with its pinned key) exists before the Droplet is asked for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from relaunch.cloud import Droplet, SshKey
from relaunch.inventory import load_site
from relaunch.provision import create_host, known_host
from relaunch.remote import HostKey
from relaunch.state import load_hosts

REPO = Path(__file__).resolve().parents[2]


class CrashingCloud:
    """A cloud whose create call is interrupted after the API accepted it (a crash, Ctrl-C)."""

    def __init__(self) -> None:
        self.user_data: str | None = None

    def ensure_ssh_key(self, public_key: str, name: str) -> SshKey:
        return SshKey(1, "aa:bb", name)

    def create_droplet(self, **kwargs):
        self.user_data = kwargs["user_data"]
        raise KeyboardInterrupt


@pytest.fixture
def inv(tmp_path: Path):
    (tmp_path / "inventory").mkdir()
    shutil.copy(REPO / "inventory" / "example.yml", tmp_path / "inventory" / "example.yml")
    return load_site("example", tmp_path)


def test_a_crash_while_creating_leaves_a_record_that_completes_the_droplet_it_made(inv) -> None:
    cloud = CrashingCloud()
    made: list[HostKey] = []

    def user_data(host_key: HostKey) -> str:
        made.append(host_key)
        return "#cloud-config\n"

    with pytest.raises(KeyboardInterrupt):
        create_host(cloud, inv, "example-new", "rebuild", "ssh-ed25519 AAAA", user_data)
    pending = load_hosts("example")["example-new"]
    assert pending.droplet_id == 0 and pending.ipv4 == "" and pending.host_key == made[0].public_line
    # the Droplet exists after all: the next run finds it and knows its key
    droplet = Droplet(42, "example-new", "active", "10.0.0.7", "fra1", ("relaunch-example",), None, "fd00::7")
    record = known_host(inv, droplet)
    assert (record.droplet_id, record.ipv4, record.host_key) == (42, "10.0.0.7", made[0].public_line)
    assert load_hosts("example")["example-new"].droplet_id == 42
