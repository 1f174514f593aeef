"""Image references of Compose apps: by repository (built by you) or by tag (from a public registry), deployed by digest.

An inventory's ``compose.images`` names each service's image one of two ways:

- a repository without tag (``example/blog``): an image of your own, pushed to
  ``docker.registry`` (in the sandbox: built by the sandbox and pushed to its registry);
- a reference by tag (``docker.io/library/nginx:1.25``, ``ghcr.io/org/app:2.1``,
  ``nginx:1.25``): a third party's image from a public registry.

Whatever the inventory says, a host runs an image *by digest*: a tag is resolved to the
digest it points at when the app is deployed (``fab sandbox-up``: in the sandbox, its own
registry plays the public one), the compose file is rendered with ``repo@sha256:...``, and
that is what the containers, ``/etc/relaunch/site.json`` and every backup's manifest
(``deploy.images``) record. A rebuild or a drill deploys the digests production ran (read
from its containers, or from the backup's manifest), never the tag again: a tag moves
(upstream publishes 1.25.4 as ``1.25``), and a rebuild must bring back what ran.

Only the parsing lives here (pure functions); resolving a tag needs a registry, so it
happens where one is at hand (the sandbox's, see ``relaunch.sandbox.images``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Docker Hub's names: ``nginx`` is ``docker.io/library/nginx``.
DOCKER_HUB = "docker.io"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageName:
    """One image reference, split: ``registry`` (None: Docker Hub, implied), ``path``, ``tag``, ``digest``."""

    registry: str | None
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The repository as written, without tag or digest (``registry/path`` or ``path``)."""
        return f"{self.registry}/{self.path}" if self.registry else self.path

    @property
    def by_tag(self) -> bool:
        return self.tag is not None and self.digest is None

    def hub_path(self) -> str:
        """The path in its registry (Docker Hub's one-part names live under ``library/``)."""
        if self.registry in (None, DOCKER_HUB, "index.docker.io", "registry-1.docker.io") and "/" not in self.path:
            return f"library/{self.path}"
        return self.path


def parse(reference: str) -> ImageName:
    """Split ``[registry/]path[:tag][@sha256:...]``.

    The first part is a registry when it has a dot or a port, or is ``localhost`` (Docker's
    rule); a ``:`` after the last ``/`` starts the tag (a registry's port is not a tag).
    """
    name, _, digest = reference.partition("@")
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    name = f"{head}{slash}{last}"
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = None, name
    return ImageName(registry, path, tag if colon else None, digest or None)


def is_by_tag(reference: str) -> bool:
    """Whether an inventory's image names a tag (a third party's image, resolved to a digest when deployed)."""
    return parse(reference).by_tag


def pinned(repository: str, digest: str) -> str:
    """``repository@sha256:...``; raise ValueError if ``digest`` is not a sha256 digest."""
    if not _DIGEST.match(digest):
        raise ValueError(f"not an image digest: {digest!r}")
    return f"{repository}@{digest}"


def digest_of(reference: str) -> str | None:
    """The ``sha256:...`` a reference pins, or None when it names no digest."""
    digest = parse(reference).digest
    return digest if digest and _DIGEST.match(digest) else None


def in_registry(reference: str, registry: str) -> str:
    """The same image (path and tag) in another ``registry``: a mirror's name for it.

    ``nginx:1.25`` in ``relaunch-sandbox-registry:5000`` is
    ``relaunch-sandbox-registry:5000/library/nginx:1.25`` (Docker Hub's implied ``library/``
    made explicit); how the sandbox's registry plays a public one.
    """
    name = parse(reference)
    out = f"{registry}/{name.hub_path()}"
    if name.tag:
        out += f":{name.tag}"
    return out + (f"@{name.digest}" if name.digest else "")
