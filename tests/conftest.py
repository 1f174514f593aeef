"""Fixtures shared by every test layer.

The sandbox fixtures give a test session its own sandbox network (Droplet containers,
snapshots) on the local Docker daemon and remove all of it at the end, also on failure
and Ctrl-C (pytest runs session teardown on KeyboardInterrupt). The base image, the
package cache and the image registry are shared with the user's sandbox: they are
caches, not state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _keep_user_ssh_out(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read the user's ~/.ssh (config, known_hosts, keys) or their sandbox state."""
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_END_POINT", raising=False)
    monkeypatch.setenv("RELAUNCH_SANDBOX_DIR", str(tmp_path_factory.getbasetemp() / "sandbox-state"))


def _network_name() -> str:
    return f"relaunch-sandbox-t{os.getpid()}"


@pytest.fixture(scope="session")
def sandbox_backend() -> Iterator[object]:
    """The real Droplet backend on a network of this session's own; everything removed after."""
    import docker

    from relaunch.sandbox import aptcache, registry
    from relaunch.sandbox.docker_backend import DockerBackend, remove_everything

    client = docker.from_env()
    # The package cache and the image registry are shared helpers: a session that
    # started one removes it (and its volume) at the end; one it found running stays.
    helpers = [h for h in (aptcache, registry) if not client.containers.list(all=True, filters={"name": f"^{h.NAME}$"})]
    backend = DockerBackend(network=_network_name())

    def clean_up() -> None:
        remove_everything(network=backend.network)
        for helper in helpers:
            for container in client.containers.list(all=True, filters={"name": f"^{helper.NAME}$"}):
                container.remove(force=True)
            for volume in client.volumes.list(filters={"name": helper.VOLUME}):
                volume.remove(force=True)

    try:
        backend.prepare()
    except BaseException:
        clean_up()
        raise
    yield backend
    clean_up()


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An ed25519 login key for root on sandbox Droplets: (private key path, public line)."""
    from relaunch.remote import ensure_client_key

    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    return path, ensure_client_key(path)
