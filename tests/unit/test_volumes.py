"""Docker named volumes an app names in `compose.volumes` travel with its trees: live copy, backup archive, verify."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from relaunch.backup.install import backup_config
from relaunch.inventory import InventoryError, load_text
from relaunch.pipeline.steps import data

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "inventory" / "example.yml").read_text()
IMAGES = "        db: example/postgres\n"
#: The example's own named volume (its blog's thumbnails), replaced by the tests' own.
THUMBS = "      volumes: [thumbs]\n"


def inventory(extra: str, before: str = IMAGES):
    text = EXAMPLE_TEXT.replace(THUMBS, "", 1)
    assert before in text and THUMBS in EXAMPLE_TEXT
    return load_text(text.replace(before, before + extra, 1), "inventory/example.yml")


def test_a_named_volume_is_one_more_tree_of_its_app() -> None:
    inv = inventory("      volumes: [media, cache.v2]\n")
    blog = inv.app("blog")
    assert blog.trees() == ["/srv/blog/uploads", "/var/lib/docker/volumes/blog_media/_data",
                            "/var/lib/docker/volumes/blog_cache.v2/_data"]
    assert data.trees(SimpleNamespace(inv=inv))[:3] == blog.trees()  # copied, listed and verified like the others


def test_the_backup_archives_the_named_volumes_with_the_files() -> None:
    inv = inventory("      volumes: [media]\n")
    archives = {a["app"]: a for a in backup_config(inv, ["docker-compose"])["archives"]}
    assert archives["blog"]["paths"] == ["/srv/blog/uploads", "/var/lib/docker/volumes/blog_media/_data"]


@pytest.mark.parametrize("extra, before, expected", [
    ("      volumes: ['../etc']\n", IMAGES, "a Compose volume name"),
    ("    control: {compose_dir: /opt/blog}\n", "    compose:\n      template", "named volumes are carried from"),
])
def test_volumes_refused(extra, before, expected) -> None:
    text = EXAMPLE_TEXT.replace(THUMBS, "", 1)
    text = text.replace(IMAGES, IMAGES + "      volumes: [media]\n", 1) if "control" in extra else text
    text = text.replace(before, extra + before if "control" in extra else before + extra, 1)
    with pytest.raises(InventoryError, match=expected):
        load_text(text, "inventory/example.yml")
