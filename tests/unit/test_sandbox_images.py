"""Context hashing of the example images: rebuilt exactly when what goes into them changes."""

from __future__ import annotations

from pathlib import Path

from relaunch.sandbox.images import EXAMPLE_IMAGES, IMAGES_DIR, context_files, context_hash


def make_context(root: Path) -> Path:
    (root / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (root / "app.py").write_text("print('hi')\n")
    return root


def test_context_hash_is_stable_and_follows_the_base_image(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    assert context_hash(ctx, "base:1") == context_hash(ctx, "base:1")
    assert context_hash(ctx, "base:1") != context_hash(ctx, "base:2")


def test_context_hash_changes_with_content_name_and_mode(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    before = context_hash(ctx, "b")
    (ctx / "app.py").write_text("print('ho')\n")
    changed = context_hash(ctx, "b")
    assert changed != before
    (ctx / "app.py").chmod(0o755)
    assert context_hash(ctx, "b") != changed
    (ctx / "app.py").rename(ctx / "main.py")
    assert context_hash(ctx, "b") not in (before, changed)


def test_context_hash_ignores_caches(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    before = context_hash(ctx, "b")
    (ctx / "__pycache__").mkdir()
    (ctx / "__pycache__/app.cpython-311.pyc").write_bytes(b"\0")
    assert context_hash(ctx, "b") == before
    assert [p.name for p in context_files(ctx)] == ["Dockerfile", "app.py"]


def test_example_contexts_exist_with_a_dockerfile_taking_the_base() -> None:
    for directory in EXAMPLE_IMAGES.values():
        dockerfile = (IMAGES_DIR / directory / "Dockerfile").read_text()
        assert "ARG BASE" in dockerfile and "FROM ${BASE}" in dockerfile


class _Api:
    """The Docker API calls push_image makes: tag, push (a stream of JSON chunks), remove_image."""

    def __init__(self, chunks: list[dict]) -> None:
        self.chunks, self.tags, self.removed = chunks, [], []

    def tag(self, image: str, repository: str, tag: str) -> bool:
        self.tags.append(f"{repository}:{tag}")
        return True

    def push(self, repository: str, tag: str, stream: bool, decode: bool):
        yield from self.chunks

    def remove_image(self, image: str, noprune: bool = False) -> None:
        assert noprune  # the image itself stays under its local tag
        self.removed.append(image)


def test_push_removes_the_tag_naming_the_registry_pushed_or_not() -> None:
    # each sandbox's registry has its own port: a push tag left behind per sandbox piles up in `docker images`
    from types import SimpleNamespace

    import pytest

    from relaunch.errors import RelaunchError
    from relaunch.sandbox.images import push_image

    digest = "sha256:" + "a" * 64
    api = _Api([{"status": "pushing"}, {"aux": {"Digest": digest}}])
    assert push_image(SimpleNamespace(api=api), "example/blog:abc", "127.0.0.1:32777") == digest
    assert api.tags == api.removed == ["127.0.0.1:32777/example/blog:abc"]
    api = _Api([{"error": "denied"}])
    with pytest.raises(RelaunchError, match="denied"):
        push_image(SimpleNamespace(api=api), "example/blog:abc", "127.0.0.1:32778")
    assert api.removed == ["127.0.0.1:32778/example/blog:abc"]
