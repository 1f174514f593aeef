"""Droplets as Docker containers running a real Debian with systemd, sshd and cloud-init.

Each Droplet is a container ``relaunch-droplet-<id>`` from the base image (or from a
snapshot image) on the sandbox network, with a fixed address so it keeps it across
power cycles and rebuilds. Its user_data and ssh keys reach the real cloud-init through
a NoCloud seed written into the container before it boots. The flags are the ones
checked on these machines (see DESIGN.md): systemd as PID 1 without --privileged, and
room for Docker inside.

The Droplet's own Docker keeps its data (``/var/lib/docker``) on a volume of its own,
``<network>-droplet-<id>-docker``: on the machine's ext4 rather than on the container's
overlay root, where overlay2 works as on a real Droplet (overlay on overlay does not, and
vfs copies a whole image for every container and layer). A snapshot is therefore two
parts: the container committed as an image, and a copy of that volume
(``<network>-snapshot-<id>-docker``), copied again into the new volume of each Droplet
made from it.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import docker.types
import requests.exceptions
import yaml

from relaunch.errors import RelaunchError
from relaunch.poll import attempts
from relaunch.sandbox import LABEL, NETWORK_LABEL
from relaunch.sandbox.aptcache import AptCache
from relaunch.sandbox.backend import BASE_IMAGE_SLUG, BackendError, Booted
from relaunch.sandbox.helpers import tar_files
from relaunch.sandbox.image import ensure_image

log = logging.getLogger(__name__)

NETWORK = "relaunch-sandbox"
SEED_DIR = "/var/lib/cloud/seed/nocloud"
#: Seconds a snapshot (docker commit of a Droplet) may take.
SNAPSHOT_TIMEOUT = 1800
#: Where a Droplet's Docker keeps its images, containers and volumes (a volume of the Droplet's own).
DOCKER_DATA = "/var/lib/docker"
#: Seconds a copy of a Droplet's Docker data (to or from a snapshot) may take.
COPY_TIMEOUT = 1800
#: Addresses below this offset in the subnet are left to Docker and the helper services.
FIRST_DROPLET_HOST = 16


def _random_ula() -> str:
    """A random unique local IPv6 /64 (fd00::/8, 40 random bits of global ID, subnet 0)."""
    global_id = int.from_bytes(os.urandom(5), "big")
    return str(ipaddress.IPv6Network(((0xFD << 120) | (global_id << 80), 64)))


def _subnets(net: docker.models.networks.Network) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None]:
    """The network's IPv4 subnet and its IPv6 one (None when it has no IPv6)."""
    subnets = [ipaddress.ip_network(c["Subnet"]) for c in net.attrs["IPAM"]["Config"] or []]
    v4 = next(n for n in subnets if isinstance(n, ipaddress.IPv4Network))
    v6 = next((n for n in subnets if isinstance(n, ipaddress.IPv6Network)), None)
    return v4, v6


def render_seed(droplet_id: int, name: str, user_data: str | None, authorized_keys: list[str]) -> dict[str, str]:
    """Return the NoCloud seed files (``meta-data``, ``user-data``) for one boot of a Droplet.

    A new instance-id each time makes cloud-init treat a rebuild or a Droplet made from
    a snapshot as a new instance, as on DigitalOcean.
    """
    meta = {
        "instance-id": f"droplet-{droplet_id}-{uuid.uuid4().hex[:8]}",
        "local-hostname": name,
        "public-keys": list(authorized_keys),
    }
    return {
        "meta-data": yaml.safe_dump(meta, sort_keys=False),
        "user-data": user_data if user_data else "#cloud-config\n{}\n",
    }


class DockerBackend:
    """The real Droplet backend (see ``backend.Backend`` for the contract of each method)."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        network: str = NETWORK,
        boot_timeout: float = 180.0,
        apt_cache: bool = True,
    ) -> None:
        self._client = client
        self.network = network
        self.boot_timeout = boot_timeout
        self._apt_cache_enabled = apt_cache
        self._ip_lock = threading.Lock()
        self._local = threading.local()
        self._base_tag: str | None = None

    def container_name(self, droplet_id: int) -> str:
        return f"{self.network}-droplet-{droplet_id}"

    def snapshot_ref(self, snapshot_id: int) -> str:
        return f"{self.network}-snapshot:{snapshot_id}"

    def docker_volume(self, droplet_id: int) -> str:
        """The volume holding the Droplet's Docker data."""
        return f"{self.container_name(droplet_id)}-docker"

    def snapshot_docker_volume(self, snapshot_id: int) -> str:
        """The volume holding a snapshot's copy of its Droplet's Docker data."""
        return f"{self.network}-snapshot-{snapshot_id}-docker"

    @property
    def client(self) -> docker.DockerClient:
        """A Docker client for the calling thread.

        The simulator calls the backend from many worker threads; requests' sessions
        (under docker-py) are not documented as thread-safe, so each thread gets its own.
        """
        if self._client is not None:
            return self._client
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                client = docker.from_env()
                client.ping()
            except docker.errors.DockerException as exc:
                raise RelaunchError(f"cannot reach the Docker daemon (is dockerd running?): {exc}") from exc
            self._local.client = client
        return client

    # --- setup -----------------------------------------------------------------------

    def prepare(self) -> None:
        self._base_tag = ensure_image(self.client)
        self._ensure_network()
        if self._apt_cache_enabled:
            AptCache(self.client, self.network, self._base_tag).ensure()
        # App images reach Droplets through the sandbox registry (no public one is reachable).
        from relaunch.sandbox.registry import Registry

        #: Where the host's dockerd pushes images (``127.0.0.1:<port>``); Droplets pull from Registry.pull_address.
        self.registry_push_address = Registry(self.client, self.network, self._base_tag).ensure()

    def _ensure_network(self) -> docker.models.networks.Network:
        found = self.client.networks.list(names=[self.network])
        for net in found:
            if net.name == self.network:
                return net
        log.info("creating sandbox network %s", self.network)
        labels = {LABEL: "network", NETWORK_LABEL: self.network}
        # Fixed Droplet addresses need a network with a configured subnet. Let Docker
        # pick a free one first (it knows what is in use), then pin it.
        probe = self.client.networks.create(self.network, driver="bridge", labels=labels)
        probe.reload()
        subnet = probe.attrs["IPAM"]["Config"][0]["Subnet"]
        gateway = probe.attrs["IPAM"]["Config"][0].get("Gateway")
        probe.remove()
        pool = docker.types.IPAMPool(subnet=subnet, gateway=gateway)
        # Dual stack: a random unique local /64 (RFC 4193) beside it, so Droplets have IPv6
        # addresses that are the sandbox's own (AAAA records, nginx on [::]).
        for _ in range(5):
            v6 = _random_ula()
            try:
                return self.client.networks.create(
                    self.network, driver="bridge", labels=labels, enable_ipv6=True,
                    ipam=docker.types.IPAMConfig(pool_configs=[pool, docker.types.IPAMPool(subnet=v6)]),
                )
            except docker.errors.APIError as exc:
                log.info("IPv6 subnet %s refused (%s)", v6, exc.explanation or exc)
                if "overlap" not in str(exc).lower():
                    break
        log.warning("sandbox network %s has no IPv6 (Docker refused it): Droplets get IPv4 only", self.network)
        return self.client.networks.create(
            self.network, driver="bridge", labels=labels, ipam=docker.types.IPAMConfig(pool_configs=[pool])
        )

    def _base(self) -> str:
        if self._base_tag is None:
            self._base_tag = ensure_image(self.client)
        return self._base_tag

    # --- Droplet lifecycle -------------------------------------------------------------

    def create_droplet(
        self,
        droplet_id: int,
        name: str,
        image: str,
        user_data: str | None,
        authorized_keys: list[str],
    ) -> Booted:
        seed = render_seed(droplet_id, name, user_data, authorized_keys)
        image_ref, docker_data = self._image_ref(image)
        self._create_container(droplet_id, name, image_ref, docker_data, seed, ip=None)
        return self._boot(droplet_id)

    def _image_ref(self, image: str) -> tuple[str, str | None]:
        """The image to start from, and the volume of Docker data to copy in (None: start empty)."""
        if image == BASE_IMAGE_SLUG:
            return self._base(), None
        if image.startswith("snapshot:"):
            snapshot_id = int(image.split(":", 1)[1])
            ref = self.snapshot_ref(snapshot_id)
            try:
                self.client.images.get(ref)
            except docker.errors.ImageNotFound as exc:
                raise BackendError(f"snapshot image {ref} does not exist") from exc
            volume = self.snapshot_docker_volume(snapshot_id)
            try:
                self.client.volumes.get(volume)
            except docker.errors.NotFound as exc:
                raise BackendError(f"snapshot {snapshot_id}'s Docker data (volume {volume}) does not exist") from exc
            return ref, volume
        raise BackendError(f"unknown image {image!r}")

    def _docker_data(self, droplet_id: int, copy_from: str | None) -> str:
        """Make the Droplet's (empty) Docker data volume, filled from ``copy_from`` when given; return its name."""
        name = self.docker_volume(droplet_id)
        self._new_volume(name, "droplet-docker", {"relaunch.droplet_id": str(droplet_id)})
        if copy_from:
            self._copy_volume(copy_from, name)
        return name

    def _copy_volume(self, source: str, target: str) -> int:
        """Copy one volume's files into another, owners, modes and extended attributes kept; return the bytes.

        overlay2 marks directories with ``trusted.overlay.*`` attributes, which only a
        process with SYS_ADMIN may read and write: the copying container gets it, and no network.
        """
        script = "cp -a --preserve=all /from/. /to/ && du -sb /to | cut -f1"
        container = self.client.containers.create(
            self._base(), ["/bin/sh", "-c", script], entrypoint=[], network_mode="none",
            labels={LABEL: "volume-copy", NETWORK_LABEL: self.network},
            volumes={source: {"bind": "/from", "mode": "ro"}, target: {"bind": "/to", "mode": "rw"}},
            cap_add=["SYS_ADMIN"],
        )
        try:
            container.start()
            status = container.wait(timeout=COPY_TIMEOUT)
            out = container.logs().decode(errors="replace").strip()
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise BackendError(f"copying volume {source} to {target} failed: {exc}") from exc
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass  # being removed already; sandbox-down finds it by its label otherwise
        if status.get("StatusCode") != 0:
            raise BackendError(f"copying volume {source} to {target} failed: {out[-1000:]}")
        lines = out.splitlines()
        return int(lines[-1]) if lines and lines[-1].isdigit() else 0

    def _new_volume(self, name: str, kind: str, labels: dict[str, str]) -> None:
        """Create an empty volume of this sandbox; one of that name left over by a crash is removed first, never reused."""
        self._remove_volume(name)
        self.client.volumes.create(name, labels={LABEL: kind, NETWORK_LABEL: self.network, **labels})

    def _remove_volume(self, name: str) -> None:
        try:
            self.client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass

    def _create_container(self, droplet_id: int, name: str, image_ref: str, docker_data: str | None,
                          seed: dict[str, str], ip: str | None) -> None:
        api = self.client.api
        volume = self._docker_data(droplet_id, docker_data)
        net = self._ensure_network()
        with self._ip_lock:
            net.reload()
            v4, v6 = _subnets(net)
            address = ip or self._free_address(v4)
            # the IPv6 address goes with the IPv4 one: the same host number in the IPv6 subnet
            ipv6 = str(v6.network_address + (int(ipaddress.ip_address(address)) - int(v4.network_address))) if v6 else None
            host_config = api.create_host_config(
                tmpfs={"/run": "", "/run/lock": ""},
                binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                       volume: {"bind": DOCKER_DATA, "mode": "rw"}},
                # SYS_ADMIN and NET_ADMIN: Docker inside; SYS_PTRACE: `docker exec` into a
                # container whose process runs as another user (runc opens its /proc/PID/ns).
                cap_add=["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"],
                security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            )
            networking = api.create_networking_config(
                {self.network: api.create_endpoint_config(ipv4_address=address, ipv6_address=ipv6)}
            )
            try:
                created = api.create_container(
                    image_ref,
                    name=self.container_name(droplet_id),
                    hostname=_hostname(name),
                    labels={LABEL: "droplet", NETWORK_LABEL: self.network, "relaunch.droplet_id": str(droplet_id), "relaunch.droplet_name": name},
                    host_config=host_config,
                    networking_config=networking,
                    environment={"container": "docker"},
                    # systemd halts cleanly on SIGRTMIN+3 (docker import cannot set STOPSIGNAL).
                    stop_signal="SIGRTMIN+3",
                )
            except docker.errors.APIError as exc:
                raise BackendError(f"cannot create the container of droplet {droplet_id}: {exc}") from exc
        container = self.client.containers.get(created["Id"])
        files = {f"{SEED_DIR}/{k}": v for k, v in seed.items()}
        if self._apt_cache_enabled:
            files["/etc/apt/apt.conf.d/01relaunch-sandbox-proxy"] = AptCache.apt_config()
        container.put_archive("/", tar_files(files, mode=0o600))
        container.start()

    def _free_address(self, subnet: ipaddress.IPv4Network) -> str:
        used: set[str] = set()
        # ignore_removed: another worker may remove a Droplet between docker-py's list and get.
        for container in self.client.containers.list(all=True, ignore_removed=True, filters={"network": self.network}):
            settings = container.attrs["NetworkSettings"]["Networks"].get(self.network) or {}
            if settings.get("IPAddress"):
                used.add(settings["IPAddress"])
            ipam = settings.get("IPAMConfig") or {}
            if ipam.get("IPv4Address"):
                used.add(ipam["IPv4Address"])
        for offset, host in enumerate(subnet.hosts(), start=1):
            if offset >= FIRST_DROPLET_HOST and str(host) not in used:
                return str(host)
        raise BackendError(f"no free address left on {subnet}")

    def _container(self, droplet_id: int) -> docker.models.containers.Container:
        try:
            return self.client.containers.get(self.container_name(droplet_id))
        except docker.errors.NotFound as exc:
            raise BackendError(f"droplet {droplet_id} has no machine") from exc

    def _boot(self, droplet_id: int) -> Booted:
        """Wait until systemd answers as PID 1 (DigitalOcean's "active": SSH may still be starting)."""
        container = self._container(droplet_id)
        state = "no answer"
        for _ in attempts(self.boot_timeout, first=0.1, cap=1.0):
            container.reload()
            if container.status != "running":
                raise BackendError(f"droplet {droplet_id}'s machine stopped while booting ({container.status})")
            state = _exec(container.name, ["systemctl", "is-system-running"])
            if state in ("initializing", "starting", "running", "degraded"):
                return self._booted(container)
        raise BackendError(f"droplet {droplet_id} did not boot in {self.boot_timeout:.0f} s (systemd: {state})")

    def _booted(self, container: docker.models.containers.Container) -> Booted:
        settings = container.attrs["NetworkSettings"]["Networks"][self.network]
        prefix = int(settings["IPPrefixLen"])
        netmask = str(ipaddress.ip_network(f"0.0.0.0/{prefix}").netmask)
        return Booted(ipv4=settings["IPAddress"], netmask=netmask, gateway=settings["Gateway"],
                      ipv6=settings.get("GlobalIPv6Address") or None, gateway6=settings.get("IPv6Gateway") or None)

    def destroy_droplet(self, droplet_id: int) -> None:
        try:
            self.client.containers.get(self.container_name(droplet_id)).remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        self._remove_volume(self.docker_volume(droplet_id))

    def exists(self, droplet_id: int) -> bool:
        try:
            self.client.containers.get(self.container_name(droplet_id))
            return True
        except docker.errors.NotFound:
            return False

    def is_running(self, droplet_id: int) -> bool:
        try:
            return self.client.containers.get(self.container_name(droplet_id)).status == "running"
        except docker.errors.NotFound:
            return False

    def power_off(self, droplet_id: int) -> None:
        container = self._container(droplet_id)
        if container.status == "running":
            container.kill()
        container.wait(condition="not-running", timeout=60)

    def shutdown(self, droplet_id: int) -> None:
        # docker stop sends the image's STOPSIGNAL (SIGRTMIN+3): systemd's clean halt.
        self._container(droplet_id).stop(timeout=60)

    def power_on(self, droplet_id: int) -> Booted:
        container = self._container(droplet_id)
        if container.status != "running":
            container.start()
        return self._boot(droplet_id)

    def reboot(self, droplet_id: int) -> Booted:
        self._container(droplet_id).restart(timeout=60)
        return self._boot(droplet_id)

    def snapshot(self, droplet_id: int, snapshot_id: int) -> int:
        """Commit the machine and copy its Docker data, the machine paused throughout (one moment of its disk)."""
        container = self._container(droplet_id)
        repository, tag = self.snapshot_ref(snapshot_id).split(":")
        volume = self.snapshot_docker_volume(snapshot_id)
        # docker-py reads its timeout per request: a commit of a large Droplet takes minutes on a
        # loaded machine, far past the default 60 s (the client is this thread's own)
        api = self.client.api
        previous, api.timeout = api.timeout, max(api.timeout or 0, SNAPSHOT_TIMEOUT)
        paused = False
        try:
            if container.status == "running":
                container.pause()
                paused = True
            image = container.commit(
                repository=repository,
                tag=tag,
                changes=[f'LABEL {LABEL}="snapshot" {NETWORK_LABEL}="{self.network}" relaunch.snapshot_id="{snapshot_id}"'],
                pause=False,
            )
            self._new_volume(volume, "snapshot-docker", {"relaunch.snapshot_id": str(snapshot_id)})
            copied = self._copy_volume(self.docker_volume(droplet_id), volume)
        except (docker.errors.APIError, requests.exceptions.RequestException, BackendError) as exc:
            self.delete_snapshot(snapshot_id)
            raise BackendError(f"snapshot of droplet {droplet_id} failed: {exc}") from exc
        finally:
            if paused:
                container.unpause()
            api.timeout = previous
        return int(image.attrs.get("Size") or 0) + copied

    def delete_snapshot(self, snapshot_id: int) -> None:
        try:
            self.client.images.remove(self.snapshot_ref(snapshot_id), force=True)
        except docker.errors.ImageNotFound:
            pass
        self._remove_volume(self.snapshot_docker_volume(snapshot_id))

    def rebuild(self, droplet_id: int, image: str) -> Booted:
        old = self._container(droplet_id)
        image_ref, docker_data = self._image_ref(image)
        meta, user_data = self._read_seed(old)
        name = old.labels.get("relaunch.droplet_name", str(droplet_id))
        address = old.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"] or None
        with self._ip_lock:
            old.remove(force=True, v=True)
        seed = render_seed(droplet_id, name, user_data, meta.get("public-keys") or [])
        self._create_container(droplet_id, name, image_ref, docker_data, seed, ip=address)
        return self._boot(droplet_id)

    def _read_seed(self, container: docker.models.containers.Container) -> tuple[dict, str]:
        """Return the meta-data (parsed) and user-data the Droplet was created with."""
        out: dict[str, str] = {}
        for item in ("meta-data", "user-data"):
            stream, _ = container.get_archive(f"{SEED_DIR}/{item}")
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.getmembers()[0]
                out[item] = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
        return yaml.safe_load(out["meta-data"]) or {}, out["user-data"]

    # --- housekeeping (for the tasks) ----------------------------------------------------

    def droplet_containers(self) -> list[docker.models.containers.Container]:
        return self.client.containers.list(
            all=True, ignore_removed=True, filters={"label": [f"{LABEL}=droplet", f"{NETWORK_LABEL}={self.network}"]}
        )


def _exec(container: str, argv: list[str], timeout: float = 30) -> str:
    """Run a command in a container through the docker CLI; return its output, stripped.

    The CLI rather than docker-py's exec_run because exec_run has no timeout, and a
    hung exec in a booting container must not hang the simulator's worker.
    """
    try:
        proc = subprocess.run(
            ["docker", "exec", container, *argv], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "no answer"
    return (proc.stdout or proc.stderr).strip()


def _hostname(name: str) -> str:
    """Return a valid hostname for a Droplet name (DigitalOcean allows dots and more)."""
    cleaned = "".join(c if c.isalnum() or c in "-." else "-" for c in name)[:63].strip("-.")
    return cleaned or "droplet"


#: Containers removed at once by :func:`remove_everything`.
REMOVE_WORKERS = 6


def remove_everything(client: docker.DockerClient | None = None, network: str | None = None) -> dict[str, int]:
    """Remove the containers, networks, volumes and snapshot images labelled ``relaunch.sandbox``.

    With ``network``, only what belongs to that one sandbox network (a test session's):
    its Droplets, snapshots, helper services (package cache, registry) and their volumes;
    without, everything of every sandbox. The base images are kept (they take minutes to
    build). Return counts of what was removed.
    """
    client = client or docker.from_env()
    scope = [f"{NETWORK_LABEL}={network}"] if network else [LABEL]
    counts = {"containers": 0, "networks": 0, "volumes": 0, "snapshots": 0}
    containers = client.containers.list(all=True, ignore_removed=True, filters={"label": scope})
    # at once: each is a whole Debian with its own Docker inside, whose layers take seconds to delete
    with ThreadPoolExecutor(max_workers=REMOVE_WORKERS) as pool:
        counts["containers"] += sum(pool.map(lambda c: _gone(lambda: c.remove(force=True, v=True)), containers))
    for net in client.networks.list(filters={"label": scope}):
        for attached in client.containers.list(all=True, ignore_removed=True, filters={"network": net.name}):
            try:
                net.disconnect(attached, force=True)
            except docker.errors.APIError:
                pass  # being removed already; the network removal below says if it matters
        counts["networks"] += _gone(net.remove)
    for volume in client.volumes.list(filters={"label": scope}):
        counts["volumes"] += _gone(lambda: volume.remove(force=True))
    for image in client.images.list(filters={"label": [f"{LABEL}=snapshot", *scope]}):
        counts["snapshots"] += _gone(lambda: client.images.remove(image.id, force=True))
    return counts


def _gone(remove: Callable[[], object]) -> int:
    """Run a removal; count 1 if it removed something, 0 if it was already gone or going."""
    try:
        remove()
        return 1
    except docker.errors.NotFound:
        return 0
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return 0
        raise RelaunchError(f"could not remove a sandbox resource: {exc.explanation or exc}") from exc
