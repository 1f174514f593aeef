"""What the sandbox tasks do: bring the sandbox cloud up, describe it, tear it down."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from relaunch.cloud import Cloud, Droplet
from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL, service
from relaunch.sandbox import state_dir as default_state_dir
from relaunch.sandbox.aptcache import AptCache
from relaunch.sandbox.docker_backend import NETWORK, DockerBackend, remove_everything
from relaunch.sandbox.image import REPOSITORY as BASE_REPOSITORY
from relaunch.sandbox.image import image_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropletRow:
    id: int
    name: str
    status: str
    ipv4: str | None
    tags: tuple[str, ...]
    machine: str  # the container's state: running, exited, missing
    ipv6: str | None = None


@dataclass
class SandboxStatus:
    api: service.Service | None
    base_image: str
    base_image_present: bool
    package_cache: str  # running, stopped, absent
    droplets: list[DropletRow] = field(default_factory=list)
    stray_containers: list[str] = field(default_factory=list)


def _docker() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise RelaunchError(f"cannot reach the Docker daemon (is dockerd running?): {exc}") from exc


def up(progress: Callable[[str], None] | None = None, state: Path | None = None) -> service.Service:
    """Build the image if needed, create the network and package cache, start the API; idempotent."""
    say = progress or (lambda msg: log.info("%s", msg))
    state = state or default_state_dir()
    current = service.running(state)
    if current:
        say(f"sandbox API already running on {current.url}")
        return current
    _docker()
    say("preparing the base image, the network and the package cache")
    DockerBackend().prepare()
    say("starting the sandbox API")
    return service.start(state)


def sandbox_cloud(svc: service.Service) -> Cloud:
    """Return the cloud adapter pointed at a running sandbox."""
    return Cloud(token=service.sandbox_token(), endpoint=svc.url, poll_interval=0.2, poll_max_interval=2.0)


def status(state: Path | None = None) -> SandboxStatus:
    """Describe the sandbox: API, base image, package cache, Droplets and their machines."""
    client = _docker()
    state = state or default_state_dir()
    svc = service.running(state)
    tag = image_tag()
    try:
        client.images.get(tag)
        present = True
    except docker.errors.ImageNotFound:
        present = False
    try:
        name = AptCache(client, NETWORK, tag).name
        cache = "running" if client.containers.get(name).status == "running" else "stopped"
    except docker.errors.NotFound:
        cache = "absent"
    backend = DockerBackend(client=client, apt_cache=False)
    machines = {c.name: c.status for c in backend.droplet_containers()}
    result = SandboxStatus(api=svc, base_image=tag, base_image_present=present, package_cache=cache)
    droplets: list[Droplet] = []
    if svc:
        with sandbox_cloud(svc) as cloud:
            droplets = cloud.list_droplets()
    for d in droplets:
        name = backend.container_name(d.id)
        result.droplets.append(
            DropletRow(d.id, d.name, d.status, d.ipv4, tuple(d.tags), machines.pop(name, "missing"), d.ipv6)
        )
    result.stray_containers = sorted(machines)
    return result


def down(state: Path | None = None, images: bool = False) -> dict[str, int]:
    """Stop the API and remove everything labelled ``relaunch.sandbox``, and the cloud's state.

    The base image stays (it takes a minute to build) unless ``images``. Return counts.
    """
    client = _docker()
    state = state or default_state_dir()
    service.stop(state)
    counts = remove_everything(client)
    if images:
        removed = 0
        for image in client.images.list(filters={"label": LABEL}):
            client.images.remove(image.id, force=True)
            removed += 1
        counts["images"] = removed
    # The Droplets are gone, so the cloud's memory of them must go too.
    for item in state.iterdir() if state.exists() else []:
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
    return counts


__all__ = ["BASE_REPOSITORY", "NETWORK", "DropletRow", "SandboxStatus", "down", "sandbox_cloud", "status", "up"]
