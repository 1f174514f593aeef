"""The sandbox API as a background service, as the tasks run it."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from relaunch.cloud import Cloud
from relaunch.dns.authoritative import query
from relaunch.sandbox import service

pytestmark = pytest.mark.sandbox


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "tok-" + secrets.token_hex(12)
    monkeypatch.setenv("RELAUNCH_SANDBOX_TOKEN", value)
    return value


def test_service_is_idempotent_keeps_its_token_secret_and_keeps_droplets_across_restarts(
    tmp_path: Path, token: str, sandbox_backend
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = service.start(state, network=sandbox_backend.network, timeout=300)
    try:
        assert service.start(state, network=sandbox_backend.network).pid == first.pid
        assert first.dns_port and service.running(state).dns_port == first.dns_port
        assert query("example.org", "A", "127.0.0.1", first.dns_port).rcode == "REFUSED"  # it answers
        cmdline = Path(f"/proc/{first.pid}/cmdline").read_bytes().decode()
        assert token not in cmdline

        with Cloud(token=token, endpoint=first.url, poll_interval=0.2, poll_max_interval=1.0) as cloud:
            droplet = cloud.create_droplet(
                name="survivor", region="ams3", size="s-1vcpu-1gb", image="debian-12-x64", ssh_timeout=None
            )
        assert service.stop(state)
        assert service.running(state) is None

        second = service.start(state, network=sandbox_backend.network, timeout=300)
        assert second.pid != first.pid
        with Cloud(token=token, endpoint=second.url) as cloud:
            again = cloud.get_droplet(droplet.id)
            assert (again.status, again.ipv4) == ("active", droplet.ipv4)
            assert sandbox_backend.is_running(droplet.id)
            cloud.destroy_droplet(droplet.id)
    finally:
        service.stop(state)
    assert token not in (state / "api.log").read_text()


def test_start_reports_a_service_that_dies(tmp_path: Path, token: str, sandbox_backend) -> None:
    from relaunch.errors import RelaunchError

    state = tmp_path / "state"
    state.mkdir()
    (state / "cloud.sqlite3").write_text("this is not a database")
    with pytest.raises(RelaunchError, match="sandbox API exited"):
        service.start(state, network=sandbox_backend.network, timeout=120)
