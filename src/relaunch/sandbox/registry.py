"""An image registry (Debian's ``docker-registry``, i.e. distribution 2.8) for the sandbox.

No registry on the internet is reachable here, so the app images a sandbox site deploys
(``example/blog``, ``example/postgres``) are built locally and pushed to this one. It is
reached two ways:

- from the host's dockerd at ``127.0.0.1:<port>`` (published on loopback only; dockerd
  treats 127.0.0.0/8 as an insecure, i.e. plain-http, registry by default), to push;
- from Droplets at ``relaunch-sandbox-registry:5000`` on the sandbox network (an alias
  of this network's registry container; the base image's /etc/docker/daemon.json lists
  that name as an insecure registry), to pull.

Both names reach the same storage, so a digest reported after a push is the digest a
Droplet pulls. Each sandbox network has its own registry container and storage volume
(labelled with the network), so a test session and the user's sandbox never share or
remove each other's. Built once from the base image like the package cache and committed
as ``relaunch-sandbox/registry:<base hash>``.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time

import docker
import docker.errors
import requests

from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL, NETWORK_LABEL

log = logging.getLogger(__name__)

ALIAS = "relaunch-sandbox-registry"
PORT = 5000
REPOSITORY = "relaunch-sandbox/registry"
STORAGE = "/var/lib/docker-registry"
CONFIG_PATH = "/etc/docker/registry/config.yml"

#: Debian's default config turns on htpasswd auth; the sandbox registry is reachable
#: only from loopback and sandbox networks, so it runs without auth (plain http).
CONFIG = f"""\
version: 0.1
log:
  level: warn
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {STORAGE}
  delete:
    enabled: true
http:
  addr: :{PORT}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


class Registry:
    """The sandbox registry container of one sandbox network."""

    #: How Droplets (and anything on a sandbox network) name the registry in image references.
    pull_address = f"{ALIAS}:{PORT}"

    def __init__(self, client: docker.DockerClient, network: str, base_tag: str) -> None:
        self.client = client
        self.network = network
        self.base_tag = base_tag
        self.name = f"{network}-registry"
        self.volume = f"{network}-registry"

    def image_tag(self) -> str:
        return f"{REPOSITORY}:{self.base_tag.rsplit(':', 1)[1]}"

    def ensure(self) -> str:
        """Start this network's registry unless it runs already; return the push address.

        The push address is ``127.0.0.1:<host port>`` (what the host's dockerd pushes to;
        Docker picks the port, read back). Raise RelaunchError if the image cannot be
        built or the registry does not answer.
        """
        try:
            container = self.client.containers.get(self.name)
            if container.status != "running":
                container.start()
            return self._wait_ready(container)
        except docker.errors.NotFound:
            pass
        tag = self._ensure_image()
        labels = {LABEL: "registry", NETWORK_LABEL: self.network}
        if not self.client.volumes.list(filters={"name": self.volume}):
            self.client.volumes.create(self.volume, labels=labels)
        api = self.client.api
        created = api.create_container(
            tag,
            name=self.name,
            user="docker-registry",
            labels=labels,
            ports=[PORT],
            host_config=api.create_host_config(
                binds={self.volume: {"bind": STORAGE, "mode": "rw"}},
                port_bindings={PORT: ("127.0.0.1", None)},
                restart_policy={"Name": "unless-stopped"},
            ),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=[ALIAS])}
            ),
        )
        api.start(created["Id"])
        return self._wait_ready(self.client.containers.get(created["Id"]))

    def _ensure_image(self) -> str:
        tag = self.image_tag()
        try:
            self.client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        log.info("building the sandbox registry image %s", tag)
        builder = self.client.containers.run(
            self.base_tag,
            [
                "sh",
                "-c",
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
                " docker-registry && apt-get clean",
            ],
            detach=True,
            labels={LABEL: "build", NETWORK_LABEL: self.network},
            network=self.network,
        )
        try:
            result = builder.wait(timeout=600)
            if result.get("StatusCode") != 0:
                logs = builder.logs().decode(errors="replace")[-2000:]
                raise RelaunchError(f"installing docker-registry for the sandbox failed:\n{logs}")
            builder.put_archive("/", _tar({CONFIG_PATH: CONFIG}))
            builder.commit(
                repository=REPOSITORY,
                tag=tag.rsplit(":", 1)[1],
                changes=[
                    f'CMD ["/usr/bin/docker-registry", "serve", "{CONFIG_PATH}"]',
                    f'LABEL {LABEL}="registry"',
                    f"EXPOSE {PORT}",
                ],
            )
        finally:
            builder.remove(force=True)
        return tag

    def _wait_ready(self, container: docker.models.containers.Container, timeout: float = 30) -> str:
        """Wait until the registry answers its API on the published port; return ``127.0.0.1:<port>``."""
        deadline = time.monotonic() + timeout
        error = "not started"
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "running":
                bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{PORT}/tcp") or []
                port = next((b["HostPort"] for b in bindings if b.get("HostIp") in ("127.0.0.1", "")), None)
                if port:
                    address = f"127.0.0.1:{port}"
                    try:
                        # The distribution API's base endpoint: 200 with an empty JSON object.
                        if requests.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                            return address
                    except requests.RequestException as exc:
                        error = str(exc)
            elif container.status in ("exited", "dead"):
                break
            time.sleep(0.2)
        raise RelaunchError(f"the sandbox registry ({self.name}) did not start ({error}): {container.logs()[-500:]!r}")


def _tar(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
