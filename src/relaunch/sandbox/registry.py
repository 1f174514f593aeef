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

import logging

import docker
import requests

from relaunch.sandbox.helpers import HelperSpec, ensure_container, wait_until

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


SPEC = HelperSpec(
    kind="registry",
    repository=REPOSITORY,
    packages=["docker-registry"],
    cmd=["/usr/bin/docker-registry", "serve", CONFIG_PATH],
    user="docker-registry",
    data_dir=STORAGE,
    alias=ALIAS,
    files={CONFIG_PATH: CONFIG},
    ports=[PORT],
)


class Registry:
    """The sandbox registry container of one sandbox network."""

    #: How Droplets (and anything on a sandbox network) name the registry in image references.
    pull_address = f"{ALIAS}:{PORT}"

    def __init__(self, client: docker.DockerClient, network: str, base_tag: str) -> None:
        self.client = client
        self.network = network
        self.base_tag = base_tag
        self.name = f"{network}-{SPEC.kind}"

    def ensure(self) -> str:
        """Start this network's registry unless it runs already; return the push address.

        The push address is ``127.0.0.1:<host port>`` (what the host's dockerd pushes to;
        Docker picks the port, read back). Raise RelaunchError if the image cannot be
        built or the registry does not answer.
        """
        container = ensure_container(self.client, SPEC, self.base_tag, self.network)

        def address() -> str | None:
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{PORT}/tcp") or []
            port = next((b["HostPort"] for b in bindings if b.get("HostIp") in ("127.0.0.1", "")), None)
            if not port:
                return None
            try:
                # The distribution API's base endpoint: 200 with an empty JSON object.
                ok = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200
            except requests.RequestException:
                return None
            return f"127.0.0.1:{port}" if ok else None

        return str(wait_until(address, f"the sandbox registry ({self.name})"))
