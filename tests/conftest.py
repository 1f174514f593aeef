"""Fixtures shared by every test layer.

The sandbox fixtures give a test session its own sandbox network (Droplet containers,
snapshots, package cache, image registry) on the local Docker daemon and remove all of
it at the end, also on failure and Ctrl-C (pytest runs session teardown on
KeyboardInterrupt). Only the base images are shared: they are caches, not state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _keep_user_state_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's ~/.ssh, relaunch state or sandbox state.

    Session-scoped (and autouse) so it is in place before any module- or session-scoped
    fixture runs: a broader fixture is set up before narrower ones.
    """
    base = tmp_path_factory.getbasetemp()
    home = base / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.delenv("SSH_AUTH_SOCK", raising=False)
        mp.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
        mp.delenv("DIGITALOCEAN_END_POINT", raising=False)
        mp.setenv("RELAUNCH_SANDBOX_DIR", str(base / "sandbox-state"))
        mp.setenv("RELAUNCH_STATE_DIR", str(base / "relaunch-state"))
        yield


def _network_name() -> str:
    return f"relaunch-sandbox-t{os.getpid()}"


@pytest.fixture(scope="session")
def sandbox_backend() -> Iterator[object]:
    """The real Droplet backend on a network of this session's own; everything removed after."""
    from relaunch.sandbox.docker_backend import DockerBackend, remove_everything

    # Everything of this sandbox, its package cache and registry included, carries its
    # network's label, and goes with it.
    backend = DockerBackend(network=_network_name())

    def clean_up() -> None:
        remove_everything(network=backend.network)

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
