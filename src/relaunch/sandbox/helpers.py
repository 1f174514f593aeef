"""Helper services of a sandbox network (package cache, image registry): built and started alike.

Each is a Debian package installed on the base image and committed once as an image,
then run as one container per sandbox network, reachable there under a fixed alias, with
its data in a volume of that network (all labelled with the network, so they go with it).
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
from dataclasses import dataclass, field

import docker
import docker.errors

from relaunch.errors import RelaunchError
from relaunch.poll import attempts
from relaunch.sandbox import LABEL, NETWORK_LABEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HelperSpec:
    """What a helper service is: its package, how it runs, where it keeps its data."""

    kind: str  # "aptcache", "registry": label value and name suffix
    repository: str  # image repository of the built image
    packages: list[str]
    cmd: list[str]
    user: str
    data_dir: str  # mounted from the network's volume
    alias: str  # its name on the sandbox network
    files: dict[str, str] = field(default_factory=dict)  # written into the image
    ports: list[int] = field(default_factory=list)  # published on 127.0.0.1, host port picked by Docker


def ensure_image(client: docker.DockerClient, spec: HelperSpec, base_tag: str, network: str) -> str:
    """Build the helper's image from the base image unless it exists; return its tag."""
    tag = f"{spec.repository}:{base_tag.rsplit(':', 1)[1]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    log.info("building the sandbox %s image %s", spec.kind, tag)
    install = (
        "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        + " ".join(spec.packages)
        + " && apt-get clean"
    )
    builder = client.containers.run(
        base_tag, ["sh", "-c", install], detach=True, labels={LABEL: "build", NETWORK_LABEL: network}, network=network
    )
    try:
        result = builder.wait(timeout=600)
        if result.get("StatusCode") != 0:
            logs = builder.logs().decode(errors="replace")[-2000:]
            raise RelaunchError(f"installing {' '.join(spec.packages)} for the sandbox {spec.kind} failed:\n{logs}")
        if spec.files:
            builder.put_archive("/", tar_files(spec.files))
        cmd = ", ".join(f'"{part}"' for part in spec.cmd)
        builder.commit(
            repository=spec.repository,
            tag=tag.rsplit(":", 1)[1],
            changes=[f"CMD [{cmd}]", f'LABEL {LABEL}="{spec.kind}"'],
        )
    finally:
        builder.remove(force=True)
    return tag


def ensure_container(
    client: docker.DockerClient, spec: HelperSpec, base_tag: str, network: str
) -> docker.models.containers.Container:
    """Start the network's container of this helper unless it runs; return it (maybe still starting)."""
    name = f"{network}-{spec.kind}"
    try:
        container = client.containers.get(name)
        if container.status != "running":
            container.start()
        return container
    except docker.errors.NotFound:
        pass
    tag = ensure_image(client, spec, base_tag, network)
    labels = {LABEL: spec.kind, NETWORK_LABEL: network}
    volume = f"{network}-{spec.kind}"
    if not client.volumes.list(filters={"name": volume}):
        client.volumes.create(volume, labels=labels)
    api = client.api
    created = api.create_container(
        tag,
        name=name,
        user=spec.user,
        labels=labels,
        ports=list(spec.ports),
        host_config=api.create_host_config(
            binds={volume: {"bind": spec.data_dir, "mode": "rw"}},
            port_bindings={port: ("127.0.0.1", None) for port in spec.ports},
            restart_policy={"Name": "unless-stopped"},
        ),
        networking_config=api.create_networking_config({network: api.create_endpoint_config(aliases=[spec.alias])}),
    )
    api.start(created["Id"])
    return client.containers.get(created["Id"])


def wait_until(check, what: str, timeout: float = 30) -> object:
    """Poll ``check()`` until it returns something truthy; return that. Raise RelaunchError naming ``what``."""
    for _ in attempts(timeout, first=0.2, factor=1.0):
        found = check()
        if found:
            return found
    raise RelaunchError(f"{what} did not become ready in {timeout:.0f} s")


def tar_files(files: dict[str, str], mode: int = 0o644) -> bytes:
    """Return an uncompressed tar of ``files`` (absolute path -> text), each with ``mode``, for put_archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
