"""Plain results of the cloud adapter: small frozen dataclasses built from API JSON.

The builders tolerate missing keys (a simulator or an older API may omit
fields) and raise only on a missing identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


def _public_ip(networks: Any, version: str) -> str | None:
    """The first public address of ``networks[version]`` (``v4`` or ``v6``), or None."""
    for net in (networks or {}).get(version) or []:
        if net.get("type") == "public" and net.get("ip_address"):
            return net["ip_address"]
    return None


def _slug(region: Any) -> str | None:
    if isinstance(region, Mapping):
        return region.get("slug")
    return region if isinstance(region, str) else None


@dataclass(frozen=True)
class Droplet:
    id: int
    name: str
    status: str
    ipv4: str | None
    region: str | None
    tags: tuple[str, ...]
    created_at: str | None
    ipv6: str | None = None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "Droplet":
        return cls(
            id=int(d["id"]),
            name=d.get("name") or "",
            status=d.get("status") or "",
            ipv4=_public_ip(d.get("networks"), "v4"),
            ipv6=_public_ip(d.get("networks"), "v6"),
            region=_slug(d.get("region")),
            tags=tuple(d.get("tags") or ()),
            created_at=d.get("created_at"),
        )


@dataclass(frozen=True)
class SshKey:
    id: int
    fingerprint: str
    name: str

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "SshKey":
        return cls(id=int(d["id"]), fingerprint=d.get("fingerprint") or "", name=d.get("name") or "")


@dataclass(frozen=True)
class Snapshot:
    """A Droplet snapshot. `id` is the image id to pass as a Droplet's image."""

    id: int
    name: str
    created_at: str | None
    resource_id: str | None
    size_gigabytes: float | None
    tags: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, d: Mapping[str, Any], resource_id: str | int | None = None) -> "Snapshot":
        rid = d.get("resource_id", resource_id)
        return cls(
            id=int(d["id"]),
            name=d.get("name") or "",
            created_at=d.get("created_at"),
            resource_id=str(rid) if rid is not None else None,
            size_gigabytes=d.get("size_gigabytes"),
            tags=tuple(d.get("tags") or ()),
            regions=tuple(d.get("regions") or ()),
        )


@dataclass(frozen=True)
class DnsRecord:
    id: int
    type: str
    name: str
    data: str
    ttl: int | None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "DnsRecord":
        return cls(
            id=int(d["id"]),
            type=d.get("type") or "",
            name=d.get("name") or "",
            data=str(d.get("data") or ""),
            ttl=d.get("ttl"),
        )


@dataclass(frozen=True)
class ReservedIp:
    ip: str
    region: str | None
    droplet_id: int | None

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "ReservedIp":
        droplet = d.get("droplet")
        return cls(
            ip=d["ip"],
            region=_slug(d.get("region")),
            droplet_id=int(droplet["id"]) if isinstance(droplet, Mapping) and droplet.get("id") is not None else None,
        )
