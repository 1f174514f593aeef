"""A package cache (apt-cacher-ng) on the sandbox network, so repeated bootstraps are fast.

Droplets are pointed at it by an apt configuration file the sandbox writes into each
container (a sandbox-only addition; real Droplets fetch from their mirror). Its cache
lives in a labelled volume, so it outlives Droplets and API restarts in one session.
"""

from __future__ import annotations

import logging
import subprocess
import time

import docker
import docker.errors

from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL

log = logging.getLogger(__name__)

NAME = "relaunch-sandbox-aptcache"
VOLUME = "relaunch-sandbox-aptcache"
PORT = 3142
REPOSITORY = "relaunch-sandbox/aptcache"


class AptCache:
    def __init__(self, client: docker.DockerClient, network: str, base_tag: str) -> None:
        self.client = client
        self.network = network
        self.base_tag = base_tag

    @staticmethod
    def apt_config() -> str:
        """Return the apt configuration that sends a Droplet's plain-http fetches through the cache."""
        return f'Acquire::http::Proxy "http://{NAME}:{PORT}";\n'

    def image_tag(self) -> str:
        return f"{REPOSITORY}:{self.base_tag.rsplit(':', 1)[1]}"

    def ensure(self) -> None:
        """Start the cache container unless it runs already (build its image first if needed)."""
        try:
            container = self.client.containers.get(NAME)
            if container.status != "running":
                container.start()
            # One cache serves every sandbox network on this daemon (the user's, tests').
            if self.network not in container.attrs["NetworkSettings"]["Networks"]:
                self.client.networks.get(self.network).connect(container)
            self._wait_ready(container)
            return
        except docker.errors.NotFound:
            pass
        tag = self._ensure_image()
        if not self.client.volumes.list(filters={"name": VOLUME}):
            self.client.volumes.create(VOLUME, labels={LABEL: "aptcache"})
        container = self.client.containers.run(
            tag,
            name=NAME,
            detach=True,
            user="apt-cacher-ng",
            labels={LABEL: "aptcache"},
            network=self.network,
            volumes={VOLUME: {"bind": "/var/cache/apt-cacher-ng", "mode": "rw"}},
            restart_policy={"Name": "unless-stopped"},
        )
        self._wait_ready(container)

    def _ensure_image(self) -> str:
        tag = self.image_tag()
        try:
            self.client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        log.info("building the sandbox package cache image %s", tag)
        builder = self.client.containers.run(
            self.base_tag,
            ["sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q apt-cacher-ng"],
            detach=True,
            labels={LABEL: "build"},
            network=self.network,
        )
        try:
            result = builder.wait(timeout=600)
            if result.get("StatusCode") != 0:
                logs = builder.logs().decode(errors="replace")[-2000:]
                raise RelaunchError(f"installing apt-cacher-ng for the sandbox failed:\n{logs}")
            builder.commit(
                repository=REPOSITORY,
                tag=tag.rsplit(":", 1)[1],
                changes=[
                    'CMD ["/usr/sbin/apt-cacher-ng", "-c", "/etc/apt-cacher-ng", "ForeGround=1", '
                    '"PidFile=/tmp/acng.pid", "SocketPath=/tmp/acng.socket", "LogDir=/tmp"]',
                    f'LABEL {LABEL}="aptcache"',
                ],
            )
        finally:
            builder.remove(force=True)
        return tag

    def _wait_ready(self, container: docker.models.containers.Container, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "running":
                probe = subprocess.run(
                    ["docker", "exec", NAME, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"],
                    capture_output=True,
                    timeout=10,
                )
                if probe.returncode == 0:  # the CLI: exec_run has no timeout
                    return
            time.sleep(0.2)
        raise RelaunchError(f"the sandbox package cache ({NAME}) did not start: {container.logs()[-500:]!r}")
