"""The sandbox's catalogue: the regions, sizes and the one image DigitalOcean would offer.

Shapes follow the official spec's ``region``, ``size`` and ``image`` models, so they can be
embedded as-is in a Droplet. Prices and limits are DigitalOcean's published ones for these
slugs (they only need to look real).
"""

from __future__ import annotations

from typing import Any

from relaunch.sandbox.backend import BASE_IMAGE_SLUG

#: Region slug -> display name.
REGIONS: dict[str, str] = {
    "nyc1": "New York 1",
    "nyc3": "New York 3",
    "sfo3": "San Francisco 3",
    "ams3": "Amsterdam 3",
    "fra1": "Frankfurt 1",
    "lon1": "London 1",
    "sgp1": "Singapore 1",
    "tor1": "Toronto 1",
    "blr1": "Bangalore 1",
    "syd1": "Sydney 1",
}

REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]

#: Size slug -> (memory MiB, vcpus, disk GB, transfer TB, price monthly USD, description).
SIZES: dict[str, tuple[int, int, int, float, float, str]] = {
    "s-1vcpu-512mb-10gb": (512, 1, 10, 0.5, 4.0, "Basic"),
    "s-1vcpu-1gb": (1024, 1, 25, 1.0, 6.0, "Basic"),
    "s-1vcpu-2gb": (2048, 1, 50, 2.0, 12.0, "Basic"),
    "s-2vcpu-2gb": (2048, 2, 60, 3.0, 18.0, "Basic"),
    "s-2vcpu-4gb": (4096, 2, 80, 4.0, 24.0, "Basic"),
    "s-4vcpu-8gb": (8192, 4, 160, 5.0, 48.0, "Basic"),
}

#: The base image's numeric id (DigitalOcean gives public images ids too).
BASE_IMAGE_ID = 155133621
BASE_IMAGE_CREATED_AT = "2024-06-10T19:12:45Z"


def region(slug: str) -> dict[str, Any]:
    """Return the spec's ``region`` object for ``slug``. Raise KeyError if unknown."""
    return {
        "name": REGIONS[slug],
        "slug": slug,
        "features": list(REGION_FEATURES),
        "available": True,
        "sizes": list(SIZES),
    }


def size(slug: str) -> dict[str, Any]:
    """Return the spec's ``size`` object for ``slug``. Raise KeyError if unknown."""
    memory, vcpus, disk, transfer, monthly, description = SIZES[slug]
    return {
        "slug": slug,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "transfer": transfer,
        "price_monthly": monthly,
        "price_hourly": round(monthly / 672, 5),
        "regions": sorted(REGIONS),
        "available": True,
        "description": description,
        "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
    }


def base_image() -> dict[str, Any]:
    """Return the spec's ``image`` object of the one base image (Debian 12)."""
    return {
        "id": BASE_IMAGE_ID,
        "name": "12 x64",
        "type": "base",
        "distribution": "Debian",
        "slug": BASE_IMAGE_SLUG,
        "public": True,
        "regions": sorted(REGIONS),
        "created_at": BASE_IMAGE_CREATED_AT,
        "min_disk_size": 10,
        "size_gigabytes": 0.98,
        "description": "Debian 12 x64",
        "tags": [],
        "status": "available",
    }
