"""relaunch.sandbox.docker_backend: a snapshot (docker commit) gets the time a large Droplet disk needs."""

from __future__ import annotations

from types import SimpleNamespace

from relaunch.sandbox import docker_backend
from relaunch.sandbox.docker_backend import DockerBackend


def test_snapshot_commits_with_a_long_timeout_and_restores_the_clients() -> None:
    # Found in a sandbox run: committing a golden drill's scratch host (its Docker images on vfs) took more than
    # docker-py's default 60 s on a loaded machine; the read timed out and the snapshot action errored.
    api = SimpleNamespace(timeout=60)
    seen = []

    def commit(**kw):
        seen.append(api.timeout)
        return SimpleNamespace(attrs={"Size": 5})

    client = SimpleNamespace(api=api, containers=SimpleNamespace(get=lambda name: SimpleNamespace(commit=commit)))
    backend = DockerBackend(client=client, network="relaunch-sandbox-t1")
    assert backend.snapshot(7, 9) == 5
    assert seen == [docker_backend.SNAPSHOT_TIMEOUT] and docker_backend.SNAPSHOT_TIMEOUT >= 1800
    assert api.timeout == 60
