"""A backup's ``manifest.json``: what it holds and the checksums that prove it is intact.

The host's runner (``relaunch.backup.runner``) writes it; this module reads it on the
control machine and checks artifacts against it, wherever they are (on the production
host, restored from the off-host store onto another host, or on local disk).

Shape (format 1)::

    {"format": 1, "id": "20261126T081500Z", "site": "example", "host": "example-prod",
     "started_at": "...Z", "finished_at": "...Z", "relaunch_version": "0.1.0",
     "inventory_sha256": "<hex>", "size": <bytes, all artifacts>,
     "databases": [{"name", "engine", "file", "snapshot_at", "size", "sha256", "seconds", "fingerprint",
                    "fingerprint_method" (shared-snapshot | dumped-copy | paired-snapshot | scratch-restore,
                                          with a fingerprint),
                    "fingerprint_seconds" (what the fingerprint added after the dump ended),
                    "writes_paused_s" (paired-snapshot: how long writes to the database waited),
                    "fingerprint_unpaired" (why a paired fingerprint was taken the scratch way instead),
                    "fingerprint_scratch_database" (scratch-restore),
                    "fingerprint_note" (why there is none)}],
     "archives":  [{"app", "file", "paths", "size", "sha256", "files", "seconds",
                    "excluded" (database files dumped on their own),
                    "excluded_temporary" (relaunch's temporary files found in the trees, left out)}],
     "deploy":    {"images": {"<app>": {"<service>": "<repo>@sha256:<hex>"}},
                   "problems": ["<app>/<service>: why its image is not recorded", ...] (only when any)}}

``deploy`` is what a deploy needs to run exactly what production ran: for every service
of every compose app of the inventory, the image its container was created from (a running one, else a stopped one),
by digest. The host's runner reads it at backup time from the containers of each compose
project (labels ``com.docker.compose.project=<app>`` and ``com.docker.compose.service``;
``docker inspect``: the container's image reference when it names a digest, else the
image's ``RepoDigests`` for the same repository). A service with no container at all, or
an image known by no digest (built on the host), is named in ``problems`` instead. A
manifest written before ``deploy`` existed parses with no images (:attr:`Manifest.images`
is ``{}``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from relaunch.errors import RelaunchError

MANIFEST = "manifest.json"
FORMAT = 1


class ManifestError(RelaunchError):
    """A manifest that cannot be read or is not one relaunch wrote."""


@dataclass(frozen=True)
class Artifact:
    """One file of a backup: a database dump or an archive of an app's trees."""

    kind: str  # "database" or "archive"
    name: str  # database name or app name
    file: str
    size: int
    sha256: str
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (``raw`` keeps every field as written)."""

    id: str
    site: str
    started_at: datetime
    finished_at: datetime
    size: int
    artifacts: tuple[Artifact, ...]
    raw: Mapping[str, Any]

    @property
    def images(self) -> dict[str, dict[str, str]]:
        """``{app: {service: "<repo>@sha256:..."}}``: the image of every compose service production ran ({} if unrecorded)."""
        images = (self.raw.get("deploy") or {}).get("images") or {}
        return {app: dict(services) for app, services in images.items()}

    def database(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.kind == "database" and a.name == name:
                return a
        raise KeyError(name)

    def archive(self, app: str) -> Artifact:
        for a in self.artifacts:
            if a.kind == "archive" and a.name == app:
                return a
        raise KeyError(app)


def _time(value: Any, what: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ManifestError(f"manifest: {what} {value!r} is not an ISO time") from None


def parse(text: str | bytes) -> Manifest:
    """Parse a manifest's JSON text. Raise ManifestError if it is not JSON or misses a field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON ({exc})") from None
    try:
        if data.get("format") != FORMAT:
            raise ManifestError(f"manifest format {data.get('format')!r}; this relaunch reads format {FORMAT}")
        deploy = data.get("deploy") or {}
        images = deploy.get("images") or {}
        if not isinstance(images, dict) or not all(
            isinstance(svcs, dict) and all(isinstance(r, str) and "@sha256:" in r for r in svcs.values())
            for svcs in images.values()
        ):
            raise ManifestError("manifest: deploy.images is not {app: {service: '<repo>@sha256:...'}}")
        artifacts = [
            Artifact("database", d["name"], d["file"], int(d["size"]), d["sha256"], d) for d in data["databases"]
        ] + [Artifact("archive", a["app"], a["file"], int(a["size"]), a["sha256"], a) for a in data["archives"]]
        return Manifest(
            id=data["id"], site=data["site"], started_at=_time(data["started_at"], "started_at"),
            finished_at=_time(data["finished_at"], "finished_at"), size=int(data["size"]),
            artifacts=tuple(artifacts), raw=data,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"manifest misses or mistypes {exc}") from None


@dataclass(frozen=True)
class Verification:
    """The result of checking a backup's artifacts: ``problems`` names each bad artifact by file."""

    backup_id: str | None
    ok: bool
    problems: tuple[str, ...]
    checked: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a message: every bad artifact by file and what is wrong with it, or that all matched."""
        if self.ok:
            return f"all {len(self.checked)} artifact(s) match the manifest"
        return "; ".join(self.problems) or "the check failed without naming an artifact"


def verify(manifest: Manifest, actual: Mapping[str, tuple[str, int] | None]) -> Verification:
    """Compare the manifest with ``actual``: file name -> (sha256, size), or None when the file is missing.

    Every artifact must be present with the manifest's sha256 and size. Files in
    ``actual`` that the manifest does not name are ignored (the manifest itself, say).
    """
    problems: list[str] = []
    for art in manifest.artifacts:
        got = actual.get(art.file)
        if got is None:
            problems.append(f"{art.file}: missing")
        elif got[0] != art.sha256 or got[1] != art.size:
            problems.append(
                f"{art.file}: sha256 {got[0][:16]}… ({got[1]} bytes) does not match the manifest's "
                f"{art.sha256[:16]}… ({art.size} bytes)"
            )
    return Verification(manifest.id, not problems, tuple(problems), tuple(a.file for a in manifest.artifacts))


def digest_file(path: Path) -> tuple[str, int]:
    """Return (sha256 hex, size) of a local file, read in 1 MiB pieces."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def verify_local(directory: Path) -> Verification:
    """Verify a backup directory on this machine against the manifest in it."""
    manifest = parse((directory / MANIFEST).read_bytes())
    actual = {a.file: digest_file(directory / a.file) if (directory / a.file).is_file() else None for a in manifest.artifacts}
    return verify(manifest, actual)
