"""A package cache (apt-cacher-ng) on a sandbox network, so repeated bootstraps are fast.

Each sandbox network has its own cache container, reachable on that network under the
alias ``relaunch-sandbox-aptcache``; Droplets are pointed at it by an apt configuration
file the sandbox writes into each container (a sandbox-only addition; real Droplets fetch
from their mirror). Its cache lives in a volume of that network, so it outlives Droplets
and API restarts, and goes with ``remove_everything(network)``.
"""

from __future__ import annotations

import subprocess

import docker

from relaunch.sandbox.helpers import HelperSpec, ensure_container, wait_until

ALIAS = "relaunch-sandbox-aptcache"
PORT = 3142

SPEC = HelperSpec(
    kind="aptcache",
    repository="relaunch-sandbox/aptcache",
    packages=["apt-cacher-ng"],
    cmd=["/usr/sbin/apt-cacher-ng", "-c", "/etc/apt-cacher-ng", "ForeGround=1",
         "PidFile=/tmp/acng.pid", "SocketPath=/tmp/acng.socket", "LogDir=/tmp"],
    user="apt-cacher-ng",
    data_dir="/var/cache/apt-cacher-ng",
    alias=ALIAS,
)


class AptCache:
    def __init__(self, client: docker.DockerClient, network: str, base_tag: str) -> None:
        self.client = client
        self.network = network
        self.base_tag = base_tag
        self.name = f"{network}-{SPEC.kind}"

    @staticmethod
    def apt_config() -> str:
        """Return the apt configuration that sends a Droplet's plain-http fetches through the cache."""
        return f'Acquire::http::Proxy "http://{ALIAS}:{PORT}";\n'

    def ensure(self) -> None:
        """Start this network's cache container unless it runs already (build its image first if needed)."""
        ensure_container(self.client, SPEC, self.base_tag, self.network)

        def answers() -> bool:
            # the docker CLI, not docker-py's exec_run: that has no timeout
            probe = subprocess.run(
                ["docker", "exec", self.name, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"],
                capture_output=True,
                timeout=10,
            )
            return probe.returncode == 0

        wait_until(answers, f"the sandbox package cache ({self.name})")
