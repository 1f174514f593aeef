"""A package cache (apt-cacher-ng) on a sandbox network, so repeated bootstraps are fast.

Each sandbox network has its own cache container, reachable on that network under the
alias ``relaunch-sandbox-aptcache``; Droplets are pointed at it by an apt configuration
file the sandbox writes into each container (a sandbox-only addition; real Droplets fetch
from their mirror). Its cache lives in a volume of that network, so it outlives Droplets
and API restarts, and goes with ``remove_everything(network)``.
"""

from __future__ import annotations

import logging
import subprocess
import time

import docker
import docker.errors

from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL, NETWORK_LABEL

log = logging.getLogger(__name__)

ALIAS = "relaunch-sandbox-aptcache"
PORT = 3142
REPOSITORY = "relaunch-sandbox/aptcache"


class AptCache:
    def __init__(self, client: docker.DockerClient, network: str, base_tag: str) -> None:
        self.client = client
        self.network = network
        self.base_tag = base_tag
        self.name = f"{network}-aptcache"
        self.volume = f"{network}-aptcache"

    @staticmethod
    def apt_config() -> str:
        """Return the apt configuration that sends a Droplet's plain-http fetches through the cache."""
        return f'Acquire::http::Proxy "http://{ALIAS}:{PORT}";\n'

    def image_tag(self) -> str:
        return f"{REPOSITORY}:{self.base_tag.rsplit(':', 1)[1]}"

    def ensure(self) -> None:
        """Start this network's cache container unless it runs already (build its image first if needed)."""
        try:
            container = self.client.containers.get(self.name)
            if container.status != "running":
                container.start()
            self._wait_ready()
            return
        except docker.errors.NotFound:
            pass
        tag = self._ensure_image()
        labels = {LABEL: "aptcache", NETWORK_LABEL: self.network}
        if not self.client.volumes.list(filters={"name": self.volume}):
            self.client.volumes.create(self.volume, labels=labels)
        api = self.client.api
        created = api.create_container(
            tag,
            name=self.name,
            user="apt-cacher-ng",
            labels=labels,
            host_config=api.create_host_config(
                binds={self.volume: {"bind": "/var/cache/apt-cacher-ng", "mode": "rw"}},
                restart_policy={"Name": "unless-stopped"},
            ),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=[ALIAS])}
            ),
        )
        api.start(created["Id"])
        self._wait_ready()

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
            labels={LABEL: "build", NETWORK_LABEL: self.network},
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

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["docker", "exec", self.name, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"],
                capture_output=True,
                timeout=10,
            )
            if probe.returncode == 0:  # the CLI: docker-py's exec_run has no timeout
                return
            time.sleep(0.2)
        logs = self.client.containers.get(self.name).logs()[-500:]
        raise RelaunchError(f"the sandbox package cache ({self.name}) did not start: {logs!r}")
