"""Sandbox: the sandbox registry plays a public one; a public image's tag is resolved to a digest, which stays put.

No registry on the internet is reachable here, so a "project" publishes its release into
the session's sandbox registry (an image made FROM scratch: one file, no pull), as
``docker.io/relaunch-test/hello:1.0``. Deploying resolves the tag to the digest it points
at; when upstream moves the tag, the digest deployed (and recorded) still names the old
image, which the registry still serves: what a rebuild deploys. Seconds, no Droplet.
"""

from __future__ import annotations

import io
import tarfile
import uuid

import docker
import pytest
import requests

from relaunch.errors import RelaunchError
from relaunch.images import parse
from relaunch.sandbox.image import ensure_image
from relaunch.sandbox.images import MANIFEST_TYPES, publish, registry_digest, resolve_public
from relaunch.sandbox.registry import Registry

pytestmark = pytest.mark.sandbox


def scratch_image(client: docker.DockerClient, tag: str, text: str) -> str:
    """Build ``tag`` FROM scratch holding one file with ``text`` (nothing pulled); return ``tag``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY hello.txt /\n"), ("hello.txt", text.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, labels={"relaunch.sandbox": "test-image"})
    return tag


def test_a_public_tag_resolves_to_a_digest_that_stays_when_the_tag_moves(target) -> None:
    client = docker.from_env()
    registry = Registry(client, target.network, ensure_image(client))
    push = registry.ensure()
    run = uuid.uuid4().hex[:8]
    public = f"docker.io/relaunch-test/hello-{run}:1.0"
    path = parse(public).hub_path()
    # the run's id in the content: an image of its own, never one another run (a second .ci/run on the same Docker,
    # whose build cache would give the same id) removes with its own clean-up
    local = [scratch_image(client, f"relaunch-test-local/hello-{run}:{n}", f"release {n} of {run}\n") for n in ("a", "b")]
    try:
        first = publish(client, local[0], public, registry)  # upstream publishes 1.0
        deployed = resolve_public(client, public, registry)
        assert deployed == f"{Registry.pull_address}/{path}@{first}"

        second = publish(client, local[1], public, registry)  # upstream moves the tag
        assert second != first and registry_digest(push, path, "1.0") == second
        # what was deployed (and a backup recorded) still names the first release, which stays pullable
        still = requests.head(f"http://{push}/v2/{path}/manifests/{first}", headers={"Accept": MANIFEST_TYPES},
                              timeout=10)
        assert still.status_code == 200 and still.headers["Docker-Content-Digest"] == first
        # a new deploy resolves the tag anew (an upgrade); a rebuild never does (it reads production's digests)
        assert resolve_public(client, public, registry).endswith(second)

        # an image only this machine's Docker has (pulled or built by the user) is published on first use
        mine = f"docker.io/relaunch-test/mine-{run}:2.0"
        client.images.get(local[0]).tag(mine.split("/", 1)[1].rsplit(":", 1)[0], "2.0")
        assert resolve_public(client, mine, registry).endswith(first)
        with pytest.raises(RelaunchError, match="neither in the sandbox registry"):
            resolve_public(client, f"docker.io/relaunch-test/absent-{run}:1.0", registry)
    finally:
        for image in client.images.list(filters={"label": "relaunch.sandbox=test-image"}):
            for tag in image.tags:
                if run in tag:  # this run's tags only: the image goes with its last one
                    client.images.remove(tag)
