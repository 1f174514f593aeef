"""relaunch.sandbox.docker_backend: a snapshot is the machine committed plus its Docker data copied, the machine paused."""

from __future__ import annotations

from types import SimpleNamespace

import docker.errors
import pytest

from relaunch.sandbox import docker_backend
from relaunch.sandbox.backend import BackendError
from relaunch.sandbox.docker_backend import DockerBackend


class FakeClient:
    """What DockerBackend.snapshot uses of docker-py, recording the order of events."""

    def __init__(self, copy_status: int = 0) -> None:
        self.api = SimpleNamespace(timeout=60)
        self.events: list[str] = []
        self.volume_names: set[str] = set()
        self.copy_status = copy_status
        machine = SimpleNamespace(
            status="running",
            pause=lambda: self.events.append("pause"),
            unpause=lambda: self.events.append("unpause"),
            commit=self._commit,
        )
        self.containers = SimpleNamespace(get=lambda name: machine, create=self._create)
        self.volumes = SimpleNamespace(get=self._volume, create=self._volume_create)
        self.images = SimpleNamespace(get=lambda ref: None, remove=lambda ref, force: self.events.append(f"rm-image {ref}"))

    def _commit(self, **kw):
        self.events.append(f"commit pause={kw['pause']} timeout={self.api.timeout}")
        return SimpleNamespace(attrs={"Size": 5})

    def _volume(self, name):
        if name not in self.volume_names:
            raise docker.errors.NotFound(name)
        return SimpleNamespace(remove=lambda force: (self.events.append(f"rm-volume {name}"), self.volume_names.discard(name)))

    def _volume_create(self, name, labels):
        self.events.append(f"volume {name}")
        self.volume_names.add(name)

    def _create(self, image, command, **kw):
        binds = {v["bind"]: k for k, v in kw["volumes"].items()}
        self.events.append(f"copy {binds['/from']} -> {binds['/to']}")
        status = self.copy_status
        return SimpleNamespace(start=lambda: None, wait=lambda timeout: {"StatusCode": status},
                               logs=lambda: b"cp: cannot copy\n" if status else b"1000\n", remove=lambda force: None)


def backend(client: FakeClient) -> DockerBackend:
    b = DockerBackend(client=client, network="relaunch-sandbox-t1")  # type: ignore[arg-type]
    b._base_tag = "base:1"
    return b


def test_snapshot_commits_and_copies_the_docker_data_while_the_machine_is_paused() -> None:
    # Found in a sandbox run: committing a golden drill's scratch host took more than docker-py's
    # default 60 s on a loaded machine; the read timed out and the snapshot action errored.
    client = FakeClient()
    assert backend(client).snapshot(7, 9) == 5 + 1000
    assert client.events == [
        "pause",
        f"commit pause=False timeout={docker_backend.SNAPSHOT_TIMEOUT}",
        "volume relaunch-sandbox-t1-snapshot-9-docker",
        "copy relaunch-sandbox-t1-droplet-7-docker -> relaunch-sandbox-t1-snapshot-9-docker",
        "unpause",
    ]
    assert docker_backend.SNAPSHOT_TIMEOUT >= 1800 and client.api.timeout == 60


def test_a_failed_copy_fails_the_snapshot_removes_its_parts_and_resumes_the_machine() -> None:
    client = FakeClient(copy_status=1)
    with pytest.raises(BackendError, match="cp: cannot copy"):
        backend(client).snapshot(7, 9)
    assert client.events[-3:] == ["rm-image relaunch-sandbox-t1-snapshot:9",
                                  "rm-volume relaunch-sandbox-t1-snapshot-9-docker", "unpause"]
    assert not client.volume_names and client.api.timeout == 60
