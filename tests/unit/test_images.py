"""Images of Compose apps: by repository (your own) or by tag (a public registry's), always deployed by digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from relaunch import apps
from relaunch.errors import RelaunchError
from relaunch.images import digest_of, in_registry, is_by_tag, parse, pinned
from relaunch.inventory import load_site
from relaunch.inventory.errors import InventoryError
from relaunch.render import preview_images

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(("ref", "registry", "path", "tag", "digest"), [
    ("example/blog", None, "example/blog", None, None),
    ("nginx:1.25", None, "nginx", "1.25", None),
    ("docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", None),
    ("registry.example.test:5000/blog", "registry.example.test:5000", "blog", None, None),
    ("registry.example.test:5000/team/blog:2.1", "registry.example.test:5000", "team/blog", "2.1", None),
    ("localhost/app:v1", "localhost", "app", "v1", None),
    (f"ghcr.io/org/app@{D1}", "ghcr.io", "org/app", None, D1),
])
def test_parse_splits_registry_path_tag_and_digest(ref, registry, path, tag, digest) -> None:
    name = parse(ref)
    assert (name.registry, name.path, name.tag, name.digest) == (registry, path, tag, digest)


def test_is_by_tag_only_for_a_tag_without_digest() -> None:
    assert is_by_tag("nginx:1.25") and is_by_tag("registry.example.test:5000/blog:1")
    assert not is_by_tag("example/blog") and not is_by_tag("registry.example.test:5000/blog")
    assert not is_by_tag(f"nginx@{D1}")


def test_in_registry_makes_docker_hubs_library_explicit() -> None:
    assert in_registry("nginx:1.25", "mirror:5000") == "mirror:5000/library/nginx:1.25"
    assert in_registry("docker.io/library/nginx:1.25", "mirror:5000") == "mirror:5000/library/nginx:1.25"
    assert in_registry("ghcr.io/org/app:2", "mirror:5000") == "mirror:5000/org/app:2"


def test_pinned_and_digest_of() -> None:
    assert pinned("a/b", D1) == f"a/b@{D1}" and digest_of(f"a/b@{D1}") == D1 and digest_of("a/b:1") is None
    with pytest.raises(ValueError):
        pinned("a/b", "latest")


def test_inventory_accepts_a_public_image_by_tag_and_refuses_a_digest(tmp_path) -> None:
    import shutil
    from pathlib import Path

    root = tmp_path / "checkout"
    (root / "inventory").mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
    text = source.read_text()
    assert "example/blog" in text
    (root / "inventory" / "example.yml").write_text(text.replace("example/blog", "docker.io/library/nginx:1.25", 1))
    for d in ("secrets", "certs"):
        if (source.parents[1] / d).exists():
            shutil.copytree(source.parents[1] / d, root / d, dirs_exist_ok=True)
    inv = load_site("example", root)
    assert "docker.io/library/nginx:1.25" in inv.app("blog").compose.images.values()
    previews = preview_images(inv, sandbox=True)["blog"]
    assert "relaunch-sandbox-registry:5000/library/nginx:1.25" in previews.values()
    assert "relaunch-sandbox-registry:5000/example/postgres:latest" in previews.values()  # one of your own
    assert "docker.io/library/nginx:1.25" in preview_images(inv, sandbox=False)["blog"].values()
    (root / "inventory" / "example.yml").write_text(text.replace("example/blog", f"example/blog@{D1}", 1))
    with pytest.raises(InventoryError, match="never a digest"):
        load_site("example", root)


# --- what production runs: a rebuild deploys its digests, never the tag -------------------------


@dataclass
class Ran:
    stdout: str
    stderr: str = ""
    exited: int = 0

    @property
    def ok(self) -> bool:
        return self.exited == 0


class FakeHost:
    """Answers the script of deployed_images with what `docker inspect` would print for the given containers."""

    host = "prod.test"

    def __init__(self, containers: list[tuple[str, str, str, Any]]) -> None:
        self.containers = containers  # (service, Config.Image, Image id, RepoDigests or None)
        self.scripts: list[str] = []

    def run(self, script: str, **_kw: Any) -> Ran:
        import json

        self.scripts.append(script)
        lines = []
        for service, config_image, image_id, digests in self.containers:
            lines.append(f"{service} {config_image} {image_id}")
            lines.append(json.dumps(digests) if digests is not None else "null")
        return Ran("\n".join(lines) + "\n")


def _compose_inventory():
    from tests.unit.test_render import example_inventory

    return example_inventory()


def test_deployed_images_answers_a_container_made_from_a_tag_with_its_digest() -> None:
    inv = _compose_inventory()
    services = sorted(next(a for a in inv.apps if a.kind == "compose").compose.images)
    app = next(a for a in inv.apps if a.kind == "compose").name
    host = FakeHost([(s, f"docker.io/library/s{i}:1.25", f"sha256:{i}" * 8, [f"s{i}@{D1}"])
                     for i, s in enumerate(services)])
    got = apps.deployed_images(host, inv)  # type: ignore[arg-type]
    assert got[app] == {s: f"s{i}@{D1}" for i, s in enumerate(services)}  # the digest, not the moving tag
    assert all(":1.25" not in ref for ref in got[app].values())


def test_deployed_images_keeps_a_digest_the_container_was_made_from() -> None:
    inv = _compose_inventory()
    compose = next(a for a in inv.apps if a.kind == "compose")
    host = FakeHost([(s, f"reg:5000/x/{s}@{D2}", "sha256:ab", [f"reg:5000/x/{s}@{D1}"]) for s in compose.compose.images])
    assert apps.deployed_images(host, inv)[compose.name] == {s: f"reg:5000/x/{s}@{D2}" for s in compose.compose.images}


def test_deployed_images_refuses_an_image_known_by_no_digest() -> None:
    inv = _compose_inventory()
    compose = next(a for a in inv.apps if a.kind == "compose")
    host = FakeHost([(s, f"built-here/{s}:latest", "sha256:ab", []) for s in compose.compose.images])
    with pytest.raises(RelaunchError, match="known by no digest"):
        apps.deployed_images(host, inv)  # type: ignore[arg-type]


def test_sandbox_up_resolves_public_images_by_tag_and_builds_only_its_own(monkeypatch) -> None:
    """sandbox-up's images: a public image's tag is resolved to a digest (the sandbox registry plays the public one)."""
    from relaunch.sandbox import site as sandbox_site

    inv = _compose_inventory()
    data = inv.model_dump(mode="json", exclude_none=True)
    compose = next(a for a in data["apps"] if a["kind"] == "compose")
    first = sorted(compose["compose"]["images"])[0]
    compose["compose"]["images"][first] = "docker.io/library/redis:7.0"
    inv = type(inv).model_validate(data)
    built, resolved = [], []
    monkeypatch.setattr(sandbox_site.docker, "from_env", lambda: object())
    monkeypatch.setattr(sandbox_site, "ensure_image", lambda client: "base:1")
    monkeypatch.setattr(sandbox_site, "Registry", lambda client, network, base: "registry")

    def build(client, base, registry):
        built.append(base)
        return {"example/blog": f"r:5000/example/blog@{D1}", "example/postgres": f"r:5000/example/postgres@{D1}"}

    def resolve(client, ref, registry):
        resolved.append(ref)
        return f"r:5000/library/redis@{D2}"

    monkeypatch.setattr(sandbox_site, "build_example_images", build)
    monkeypatch.setattr(sandbox_site, "resolve_public", resolve)
    images = sandbox_site._images(inv, "net")
    assert resolved == ["docker.io/library/redis:7.0"] and built == ["base:1"]
    assert images[compose["name"]][first] == f"r:5000/library/redis@{D2}"  # by digest, never the tag
    assert all("@sha256:" in ref for ref in images[compose["name"]].values())
