"""The example site's app images: built locally FROM the sandbox base image, pushed to the sandbox registry.

``examples/images/<name>/`` is the build context of ``example/<name>`` (a Dockerfile taking
the base image as the build argument ``BASE``, and the app's code). An image is tagged
``example/<name>:<context hash>`` and labelled with that hash, so a warm run skips the
build; the push always runs (cheap when the registry has the layers) because the
registry's storage may have been removed since. What is deployed is the digest the
registry reports after the push: exactly what was built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from relaunch.errors import RelaunchError
from relaunch.sandbox import LABEL
from relaunch.sandbox.registry import Registry

log = logging.getLogger(__name__)

#: The repository's examples/images/ (src/relaunch/sandbox/images.py -> repo root).
IMAGES_DIR = Path(__file__).resolve().parents[3] / "examples" / "images"
#: Repository name -> build context directory name under IMAGES_DIR.
EXAMPLE_IMAGES = {"example/blog": "blog", "example/postgres": "postgres"}
CONTEXT_LABEL = "relaunch.context"
_SKIP = {"__pycache__", ".git"}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: One build at a time per machine (every sandbox on it shares one dockerd): two sessions
#: building the same context at once would each tag their own, non-identical, image.
LOCK_FILE = Path(tempfile.gettempdir()) / "relaunch-sandbox-images.lock"


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    with open(LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another session is building the example images; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def context_files(context: Path) -> list[Path]:
    """Return the files of a build context that go into the image (sorted; caches and .git left out)."""
    return sorted(
        p for p in context.rglob("*") if p.is_file() and not (_SKIP & set(p.relative_to(context).parts)) and p.suffix != ".pyc"
    )


def context_hash(context: Path, base_tag: str) -> str:
    """Return a short hash of everything that decides an image: the base image tag, each file's path, mode and bytes."""
    h = hashlib.sha256()
    h.update(f"base={base_tag}\n".encode())
    for path in context_files(context):
        rel = path.relative_to(context).as_posix()
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        data = path.read_bytes()
        h.update(f"{rel}\0{executable}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def build_image(client: docker.DockerClient, repository: str, context: Path, base_tag: str) -> str:
    """Build ``repository`` from ``context`` FROM ``base_tag`` unless built already; return ``repository:<hash>``.

    Raise RelaunchError with the build's last output if the build fails.
    """
    digest = context_hash(context, base_tag)
    tag = f"{repository}:{digest}"
    try:
        client.images.get(tag)
        log.debug("image %s present (context unchanged)", tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    log.info("building %s from %s", tag, context)
    started = time.monotonic()
    output: list[str] = []
    # The low-level API streams the build; errors arrive in the stream, not as an exception.
    stream = client.api.build(
        path=str(context),
        tag=tag,
        buildargs={"BASE": base_tag},
        labels={LABEL: "example-image", CONTEXT_LABEL: digest},
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "stream" in chunk:
            output.append(chunk["stream"])
        if "error" in chunk:
            tail = "".join(output)[-2000:]
            raise RelaunchError(f"building {repository} failed: {chunk['error']}\n{tail}")
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise RelaunchError(f"building {repository} produced no image:\n{''.join(output)[-2000:]}") from None
    log.info("built %s in %.0f s", tag, time.monotonic() - started)
    _remove_stale(client, repository, digest)
    return tag


def _remove_stale(client: docker.DockerClient, repository: str, keep: str) -> None:
    """Remove this repository's images from older contexts (with their registry tags), so builds do not pile up.

    An image still used by a container stays (Docker refuses; that is fine).
    """
    for image in client.images.list(filters={"label": [f"{LABEL}=example-image", f"{CONTEXT_LABEL}"]}):
        if image.labels.get(CONTEXT_LABEL) == keep:
            continue
        if not image.tags:  # untagged: an older build whose tags moved on
            try:
                client.images.remove(image.id)
            except docker.errors.APIError as exc:
                log.debug("kept %s: %s", image.short_id, exc.explanation or exc)
            continue
        names = [t for t in image.tags if t.rsplit(":", 1)[0].endswith(repository)]
        if not names or len(names) != len(image.tags):
            continue  # another repository's image, or tagged by someone else too: leave it
        for name in names:
            try:
                client.images.remove(name)
            except docker.errors.APIError as exc:
                log.debug("kept %s: %s", name, exc.explanation or exc)


def push_image(client: docker.DockerClient, local_tag: str, push_address: str) -> str:
    """Push ``local_tag`` to the registry at ``push_address``; return the manifest digest it reports.

    Raise RelaunchError if the push fails or reports no digest.
    """
    repository, tag = local_tag.rsplit(":", 1)
    remote = f"{push_address}/{repository}"
    if not client.api.tag(local_tag, remote, tag):
        raise RelaunchError(f"could not tag {local_tag} as {remote}:{tag}")
    found: str | None = None
    for chunk in client.api.push(remote, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise RelaunchError(f"pushing {remote}:{tag} failed: {chunk['error']}")
        aux = chunk.get("aux") or {}
        if aux.get("Digest"):
            found = aux["Digest"]
    if not found or not _DIGEST.match(found):
        raise RelaunchError(f"the registry reported no digest after pushing {remote}:{tag}")
    return found


def build_example_images(client: docker.DockerClient, base_tag: str, registry: Registry) -> dict[str, str]:
    """Build (when changed) and push the example site's images; return repository -> pull reference by digest.

    A reference looks like ``relaunch-sandbox-registry:5000/example/blog@sha256:<digest>``:
    what a Droplet's Docker pulls, pinned to exactly what was built. ``registry`` is
    started if needed. Raise RelaunchError if a build or push fails.
    """
    push_address = registry.ensure()
    refs: dict[str, str] = {}
    with _build_lock():
        for repository, directory in EXAMPLE_IMAGES.items():
            started = time.monotonic()
            local = build_image(client, repository, IMAGES_DIR / directory, base_tag)
            digest = push_image(client, local, push_address)
            refs[repository] = f"{Registry.pull_address}/{repository}@{digest}"
            log.info("%s ready as %s (%.1f s)", repository, refs[repository], time.monotonic() - started)
    return refs
