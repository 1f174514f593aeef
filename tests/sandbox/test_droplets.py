"""A Droplet's whole life in the sandbox cloud, through relaunch's own adapter and SSH layer.

python-digitalocean (inside ``relaunch.cloud``) creates the Droplet through the simulator;
relaunch connects with Fabric using a host key it made and pinned through user_data;
the Droplet is a real Debian with systemd, cloud-init and room for Docker.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import yaml

from relaunch.cloud import Cloud, Droplet
from relaunch.errors import RelaunchError
from relaunch.remote import HostKey, connect, wait_for_ssh

pytestmark = pytest.mark.sandbox

TAG = "relaunch-test"


def user_data(host_key: HostKey, marker: str) -> str:
    config = {
        **host_key.cloud_config(),
        "write_files": [{"path": "/etc/relaunch-marker", "content": marker + "\n", "permissions": "0644"}],
        "runcmd": [["sh", "-c", f"echo {marker} > /root/runcmd-ran"]],
    }
    return "#cloud-config\n" + yaml.safe_dump(config)


def make_droplet(cloud: Cloud, client_key: tuple[Path, str], name: str, image: str | int = "debian-12-x64"):
    key = cloud.ensure_ssh_key(client_key[1], "relaunch-test")
    host_key = HostKey.generate()
    marker = secrets.token_hex(8)
    droplet = cloud.create_droplet(
        name=name,
        region="fra1",
        size="s-1vcpu-1gb",
        image=image,
        ssh_keys=[key.fingerprint],
        user_data=user_data(host_key, marker),
        tags=[TAG],
        ssh_timeout=180,
    )
    return droplet, host_key, marker


@pytest.fixture(scope="module")
def module_cloud(sandbox_api) -> Iterator[Cloud]:
    with Cloud(token="sandbox-test-token", endpoint=sandbox_api.url, poll_interval=0.2, poll_max_interval=1.0) as c:
        yield c
        c.destroy_droplets_by_tag(TAG)


@pytest.fixture(scope="module")
def web(module_cloud: Cloud, client_key) -> tuple[Droplet, HostKey, str]:
    return make_droplet(module_cloud, client_key, "web-1")


def run(droplet: Droplet, host_key: HostKey, key_path: Path, command: str) -> str:
    conn = connect(droplet.ipv4, host_key.public_line, key_path)
    try:
        wait_for_ssh(conn, timeout=120)
        return conn.run(command, hide=True, timeout=600).stdout.strip()
    finally:
        conn.close()


def test_create_reports_active_droplet_with_public_address(web, module_cloud: Cloud) -> None:
    droplet, _, _ = web
    fresh = module_cloud.get_droplet(droplet.id)
    assert fresh.status == "active"
    assert fresh.ipv4 == droplet.ipv4
    assert TAG in fresh.tags


def test_first_connection_verifies_pinned_host_key_and_system_runs(web, client_key) -> None:
    droplet, host_key, _ = web
    state = run(droplet, host_key, client_key[0], "systemctl is-system-running --wait || true")
    assert state == "running"


def test_cloud_init_final_stage_ran_user_data(web, client_key) -> None:
    droplet, host_key, marker = web
    out = run(
        droplet,
        host_key,
        client_key[0],
        "cloud-init status --wait >/dev/null; cloud-init status; cat /etc/relaunch-marker /root/runcmd-ran",
    )
    assert out.splitlines() == ["status: done", marker, marker]


def test_other_host_key_is_refused(web, client_key) -> None:
    droplet, _, _ = web
    impostor = HostKey.generate()
    conn = connect(droplet.ipv4, impostor.public_line, client_key[0])
    with pytest.raises(RelaunchError, match="does not match the pinned key"):
        wait_for_ssh(conn, timeout=30)


#: Installs Docker (once) and makes a tiny image from busybox, without any registry.
TINY_IMAGE = (
    "set -e; export DEBIAN_FRONTEND=noninteractive;"
    " if ! command -v dockerd >/dev/null || ! command -v busybox >/dev/null; then apt-get update -q >/dev/null;"
    " apt-get install -y -q docker.io busybox-static >/dev/null 2>&1; fi;"
    " docker image inspect tiny >/dev/null 2>&1 || {"
    " mkdir -p /tmp/tiny && cp /bin/busybox /tmp/tiny/ && tar -C /tmp/tiny -c . | docker import - tiny >/dev/null; };"
)


def test_docker_runs_a_container_inside_the_droplet(web, client_key) -> None:
    droplet, host_key, _ = web
    out = run(
        droplet,
        host_key,
        client_key[0],
        TINY_IMAGE + " docker info --format '{{.Driver}}'; docker run --rm tiny /busybox echo hello-from-a-container",
    )
    # overlay2, as on a real Droplet: the Droplet's Docker data is on a volume of its own, not on overlay
    assert out.splitlines()[-2:] == ["overlay2", "hello-from-a-container"]


@pytest.mark.heavy
def test_snapshot_boots_a_second_droplet_with_the_first_ones_files(web, module_cloud: Cloud, client_key,
                                                                   sandbox_backend) -> None:
    droplet, host_key, _ = web
    payload = secrets.token_hex(16)
    run(droplet, host_key, client_key[0], TINY_IMAGE + f" echo {payload} > /root/payload && sync")
    snapshot = module_cloud.snapshot_droplet(droplet.id, "web-1-snap")
    try:
        assert any(s.id == snapshot.id for s in module_cloud.list_snapshots())
        second, second_key, second_marker = make_droplet(module_cloud, client_key, "web-2", image=snapshot.id)
        assert second.ipv4 != droplet.ipv4
        out = run(second, second_key, client_key[0], "cat /root/payload; cloud-init status --wait >/dev/null; "
                  "cat /etc/relaunch-marker; docker run --rm tiny /busybox echo tiny-came-along")
        # the first Droplet's files and Docker images, and the second's own user_data ran as a new instance
        assert out.splitlines() == [payload, second_marker, "tiny-came-along"]
        module_cloud.destroy_droplet(second.id)
    finally:
        module_cloud.delete_snapshot(snapshot.id)
    _wait_until(lambda: not _volume_exists(sandbox_backend.snapshot_docker_volume(snapshot.id)),
                "removal of the snapshot's Docker data")


def _volume_exists(name: str) -> bool:
    try:
        docker.from_env().volumes.get(name)
        return True
    except docker.errors.NotFound:
        return False


def test_destroy_removes_the_container(module_cloud: Cloud, client_key, sandbox_backend) -> None:
    droplet, _, _ = make_droplet(module_cloud, client_key, "short-lived")
    assert sandbox_backend.exists(droplet.id)
    assert _volume_exists(sandbox_backend.docker_volume(droplet.id))
    module_cloud.destroy_droplet(droplet.id)
    assert droplet.id not in {d.id for d in module_cloud.list_droplets()}
    _wait_until(lambda: not sandbox_backend.exists(droplet.id), "container removal")
    names = [c.name for c in docker.from_env().containers.list(all=True)]
    assert sandbox_backend.container_name(droplet.id) not in names
    _wait_until(lambda: not _volume_exists(sandbox_backend.docker_volume(droplet.id)), "removal of its Docker data")


def test_adapter_survives_injected_429s_and_500s(sandbox_api, cloud: Cloud) -> None:
    admin = sandbox_api.url.removesuffix("/v2/") + "/_sandbox/faults"
    auth = {"Authorization": "Bearer sandbox-test-token"}
    requests.post(admin, json={"status": 429, "count": 2, "retry_after": 1, "path_prefix": "/v2/droplets"},
                  headers=auth, timeout=5).raise_for_status()
    requests.post(admin, json={"status": 500, "count": 2, "path_prefix": "/v2/droplets"},
                  headers=auth, timeout=5).raise_for_status()
    try:
        assert isinstance(cloud.list_droplets(), list)
        left = requests.get(admin, headers=auth, timeout=5).json()
        assert not left.get("responses"), left
    finally:
        requests.delete(admin, headers=auth, timeout=5)


def test_create_action_that_errors_is_reported(sandbox_api, cloud: Cloud) -> None:
    admin = sandbox_api.url.removesuffix("/v2/") + "/_sandbox/faults"
    auth = {"Authorization": "Bearer sandbox-test-token"}
    requests.post(admin, json={"droplet_create": "create_error"}, headers=auth, timeout=5).raise_for_status()
    with pytest.raises(RelaunchError, match="errored"):
        cloud.create_droplet(name="doomed", region="fra1", size="s-1vcpu-1gb", image="debian-12-x64", tags=[TAG])


def _wait_until(predicate, what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
