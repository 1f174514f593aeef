"""Sandbox tests: a real sandbox cloud (API on loopback, Droplets as Debian containers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relaunch.cloud import Cloud
from relaunch.sandbox.api import ServerHandle, start_server

TOKEN = "sandbox-test-token"

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="session")
def sandbox_api(tmp_path_factory: pytest.TempPathFactory, sandbox_backend: object) -> Iterator[ServerHandle]:
    """One simulator for the session (documented rate limits raised: tests poll a lot)."""
    handle = start_server(
        tmp_path_factory.mktemp("cloud"), sandbox_backend, TOKEN, per_hour=1_000_000, per_minute=1_000_000
    )
    yield handle
    handle.close()


@pytest.fixture
def cloud(sandbox_api: ServerHandle) -> Iterator[Cloud]:
    """The relaunch cloud adapter pointed at the session's sandbox; droplets it made are destroyed after."""
    with Cloud(token=TOKEN, endpoint=sandbox_api.url, timeout=30, poll_interval=0.2, poll_max_interval=1.0) as c:
        before = {d.id for d in c.list_droplets()}
        yield c
        for droplet in c.list_droplets():
            if droplet.id not in before:
                c.destroy_droplet(droplet.id)
