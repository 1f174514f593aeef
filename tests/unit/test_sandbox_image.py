import yaml

from relaunch.sandbox import image
from relaunch.sandbox.docker_backend import render_seed


def test_recipe_hash_changes_with_the_recipe(monkeypatch) -> None:
    before = image.recipe_hash()
    monkeypatch.setattr(image, "PACKAGES", [*image.PACKAGES, "htop"])
    assert image.recipe_hash() != before


def test_recipe_hash_is_stable() -> None:
    assert image.recipe_hash() == image.recipe_hash()
    assert image.image_tag().endswith(":" + image.recipe_hash())


def test_render_seed_puts_keys_in_meta_data_and_user_data_verbatim() -> None:
    seed = render_seed(7, "web-1", "#!/bin/sh\necho hi\n", ["ssh-ed25519 AAAA one"])
    meta = yaml.safe_load(seed["meta-data"])
    assert meta["public-keys"] == ["ssh-ed25519 AAAA one"]
    assert meta["local-hostname"] == "web-1"
    assert meta["instance-id"].startswith("droplet-7-")
    assert seed["user-data"] == "#!/bin/sh\necho hi\n"


def test_render_seed_gives_each_boot_a_new_instance_id() -> None:
    a = yaml.safe_load(render_seed(7, "w", None, [])["meta-data"])["instance-id"]
    b = yaml.safe_load(render_seed(7, "w", None, [])["meta-data"])["instance-id"]
    assert a != b


def test_render_seed_without_user_data_is_empty_cloud_config() -> None:
    assert render_seed(1, "w", None, [])["user-data"].startswith("#cloud-config")
