"""The contract between the API simulator and whatever runs the Droplets.

The simulator (``api``/``store``) owns the cloud's state and its asynchronous actions; a
backend only does the slow, real work. Every method blocks until done and is called from
a worker thread, never from a request handler. The real backend is
``docker_backend.DockerBackend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: The one image slug the sandbox offers, DigitalOcean's Debian 12 image.
BASE_IMAGE_SLUG = "debian-12-x64"


class BackendError(Exception):
    """The backend could not do what was asked (the action that asked for it errors)."""


@dataclass(frozen=True)
class Booted:
    """What a Droplet looks like once its machine is up."""

    ipv4: str
    """Its address on the sandbox network, reachable from the machine running relaunch."""
    netmask: str
    gateway: str
    disk_bytes: int = 0
    ipv6: str | None = None
    """Its IPv6 address on the sandbox network (a private ULA /64), when the network has one."""
    gateway6: str | None = None


class Backend(Protocol):
    def prepare(self) -> None:
        """Make sure the base image, the network and any helper service exist (idempotent)."""

    def create_droplet(
        self,
        droplet_id: int,
        name: str,
        image: str,
        user_data: str | None,
        authorized_keys: list[str],
    ) -> Booted:
        """Create and boot a Droplet's machine; return once systemd has finished booting.

        ``image`` is ``BASE_IMAGE_SLUG`` or ``"snapshot:<snapshot id>"``. ``user_data``
        goes to the real cloud-init (NoCloud seed); ``authorized_keys`` (OpenSSH public
        key lines) end up in root's authorized_keys, as on DigitalOcean. Raise
        BackendError if it does not boot in time.
        """

    def destroy_droplet(self, droplet_id: int) -> None:
        """Remove the Droplet's machine and its private volumes; no error if already gone."""

    def exists(self, droplet_id: int) -> bool:
        """Tell whether the Droplet's machine still exists (running or stopped)."""

    def is_running(self, droplet_id: int) -> bool:
        """Tell whether the Droplet's machine is running."""

    def power_off(self, droplet_id: int) -> None:
        """Cut power (hard stop)."""

    def shutdown(self, droplet_id: int) -> None:
        """Shut down cleanly (systemd poweroff), then make sure it is stopped."""

    def power_on(self, droplet_id: int) -> Booted:
        """Start a stopped machine and wait for it to boot; same address as before."""

    def reboot(self, droplet_id: int) -> Booted:
        """Reboot and wait for it to boot again."""

    def snapshot(self, droplet_id: int, snapshot_id: int) -> int:
        """Keep the machine's disk (its Docker data included) as ``snapshot:<snapshot_id>``; return its size in bytes."""

    def delete_snapshot(self, snapshot_id: int) -> None:
        """Remove a snapshot image; no error if already gone."""

    def rebuild(self, droplet_id: int, image: str) -> Booted:
        """Replace the machine's disk with ``image`` (same id and address) and boot it.

        user_data and keys given at create time apply again, as on DigitalOcean.
        """
