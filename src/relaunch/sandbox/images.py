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
import requests

from relaunch.errors import RelaunchError
from relaunch.images import parse, pinned
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


#: An example image built from other contents is removed only once it is this old: another checkout's (or
#: branch's) sandbox on the same Docker daemon may be about to push or run it.
STALE_AFTER_SECONDS = 24 * 3600


def _remove_stale(client: docker.DockerClient, repository: str, keep: str, now: float | None = None) -> None:
    """Remove this repository's images from older contexts (with their registry tags), so builds do not pile up.

    Only those built more than :data:`STALE_AFTER_SECONDS` ago: sandboxes of two checkouts share the
    daemon, and each builds the image of its own contents under its own tag. An image still used by a
    container stays (Docker refuses; that is fine).
    """
    now = time.time() if now is None else now
    for image in client.images.list(filters={"label": [f"{LABEL}=example-image", f"{CONTEXT_LABEL}"]}):
        if image.labels.get(CONTEXT_LABEL) == keep or now - _created(image) < STALE_AFTER_SECONDS:
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


def _created(image) -> float:
    """When ``image`` was built (seconds since the epoch); now when Docker does not say (so it is kept)."""
    from datetime import datetime

    try:  # "2026-11-27T22:01:02.123456789Z": Docker gives nanoseconds, Python takes six digits
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", str(image.attrs["Created"]))).timestamp()
    except (KeyError, ValueError):
        return time.time()


def push_image(client: docker.DockerClient, local_tag: str, push_address: str) -> str:
    """Push ``local_tag`` to the registry at ``push_address``; return the manifest digest it reports.

    The push needs a tag naming the registry (its address changes with every sandbox): it is
    removed again, pushed or not, so that no such tag piles up on this machine. Raise
    RelaunchError if the push fails or reports no digest.
    """
    repository, tag = local_tag.rsplit(":", 1)
    remote = f"{push_address}/{repository}"
    if not client.api.tag(local_tag, remote, tag):
        raise RelaunchError(f"could not tag {local_tag} as {remote}:{tag}")
    found: str | None = None
    try:
        for chunk in client.api.push(remote, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise RelaunchError(f"pushing {remote}:{tag} failed: {chunk['error']}")
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                found = aux["Digest"]
    finally:
        try:  # only the tag: the image stays under local_tag
            client.api.remove_image(f"{remote}:{tag}", noprune=True)
        except docker.errors.APIError as exc:
            log.warning("could not remove the push tag %s:%s: %s", remote, tag, exc)
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


# --- public images by tag: the sandbox's registry plays the public one ----------------------

#: What a registry may answer for a tag: a single image's manifest (Docker v2, OCI) or a list of them.
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def registry_digest(push_address: str, path: str, tag: str, timeout: float = 10) -> str | None:
    """The digest ``path:tag`` points at in the registry at ``push_address`` now, or None when it has no such tag.

    Asked as a client resolving a tag does (``HEAD /v2/<path>/manifests/<tag>``, its
    ``Docker-Content-Digest``). Raise RelaunchError when the registry answers anything else.
    """
    url = f"http://{push_address}/v2/{path}/manifests/{tag}"
    try:
        answer = requests.head(url, headers={"Accept": MANIFEST_TYPES}, timeout=timeout)
    except requests.RequestException as exc:
        raise RelaunchError(f"the sandbox registry at {push_address} does not answer: {exc}") from None
    if answer.status_code == 404:
        return None
    digest = answer.headers.get("Docker-Content-Digest", "")
    if answer.status_code != 200 or not _DIGEST.match(digest):
        raise RelaunchError(f"the sandbox registry answered {answer.status_code} for {path}:{tag} (digest {digest!r})")
    return digest


def publish(client: docker.DockerClient, local: str, reference: str, registry: Registry) -> str:
    """Push this machine's image ``local`` to the sandbox registry as public image ``reference`` (a tag); return its digest.

    What a project does when it publishes a release, played in the sandbox: the tag then
    points at this image (moving it if it pointed elsewhere). Raise RelaunchError if
    ``reference`` names no tag or the push fails.
    """
    name = parse(reference)
    if not name.by_tag:
        raise RelaunchError(f"{reference}: a public image is published by tag (e.g. 'docker.io/library/nginx:1.25')")
    path = name.hub_path()
    if not client.api.tag(local, path, name.tag):
        raise RelaunchError(f"could not tag {local} as {path}:{name.tag}")
    return push_image(client, f"{path}:{name.tag}", registry.ensure())


def resolve_public(client: docker.DockerClient, reference: str, registry: Registry) -> str:
    """Resolve public image ``reference`` (by tag) to the pull reference by digest a sandbox Droplet deploys.

    The sandbox registry plays the public one: the tag is resolved there
    (``relaunch-sandbox-registry:5000/<path>@sha256:...``). When it has no such tag yet, this
    machine's Docker may have the image (``docker pull`` it, or build and tag it, before
    ``fab sandbox-up``): it is published there first. Nothing is pulled from the internet.
    Raise RelaunchError when neither has it.
    """
    name = parse(reference)
    assert name.tag is not None, reference
    path = name.hub_path()
    digest = registry_digest(registry.ensure(), path, name.tag)
    if digest is None:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise RelaunchError(
                f"public image {reference} is neither in the sandbox registry (which plays the public one) nor in "
                f"this machine's Docker: `docker pull {reference}` (or build an image and `docker tag` it so), then "
                "run again") from None
        digest = publish(client, reference, reference, registry)
        log.info("published %s (from this machine's Docker) in the sandbox registry as %s", reference, digest)
    ref = pinned(f"{Registry.pull_address}/{path}", digest)
    log.info("public image %s resolved to %s", reference, ref)
    return ref
