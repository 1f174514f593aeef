"""Sandbox: a golden image made by `fab drill --golden`, then a rebuild that starts from it.

The golden drill bootstraps from the base image, cleans and snapshots its scratch host
before any data; the snapshot (a Docker image in the sandbox) must hold no secret, no
host key and no data. Then `fab rebuild --source backup --no-switch` of the same backup
starts from it: its held runbook steps report no change, and what it restores verifies
exactly as the drill's did (the drill bootstrapped from the base image: the run without
the golden image). Both RTOs are in the reports (the golden phase is not in the drill's)
and printed on a `GOLDEN-RTO` line.

Two runs, no more (CI budget). The rebuild does not switch: production stays where it was
for the tests after this one. A finalizer deletes every golden snapshot of the site and the
rebuild's Droplet (a paused rebuild is aborted) whatever the test's end, so no later test
starts from a golden image by accident.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from relaunch import golden
from relaunch.backup.site import install_site
from relaunch.drill import DrillOptions, drill
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.journal import Journal
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, abort, rebuild
from relaunch.sandbox.helpers import tar_files
from relaunch.state import forget_host, load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def with_backups(up, site_root, target):
    install_site(load_site("example", site_root), target.key_path)
    return up


@pytest.fixture
def where(target, sandbox_api) -> Where:
    return Where(target.cloud, sandbox_api.dns_port, target.key_path)


@pytest.fixture
def golden_left_nowhere(where, site_root) -> Iterator[None]:
    """After the test, passed or failed: no golden snapshot of the site, no Droplet of the rebuild, no paused rebuild."""
    before = set(load_hosts("example"))
    yield
    cloud = where.cloud
    try:
        if Journal.load("example", "rebuild") is not None:
            abort("example", root=site_root, destroy=True, where=where)
    finally:
        for snap in cloud.list_snapshots():
            if golden.site_tag("example") in snap.tags:
                cloud.delete_snapshot(snap.id)
        for name, record in load_hosts("example").items():
            if name not in before and record.role == "rebuild":
                if record.droplet_id is not None and any(d.id == record.droplet_id for d in cloud.list_droplets()):
                    cloud.destroy_droplet(record.droplet_id)
                forget_host("example", name)
    assert not [s for s in cloud.list_snapshots() if golden.site_tag("example") in s.tags]


def _run_in_image(snapshot: tuple[str, str], script: str, files: dict[str, str] | None = None) -> str:
    """Run ``script`` in the snapshot (its image and its Docker data volume; no network, not booted)
    with ``files`` put in first; return its output."""
    ref, docker_data = snapshot
    client = docker.from_env()
    container = client.containers.create(ref, ["bash", "-c", script], network_mode="none", entrypoint=[],
                                          volumes={docker_data: {"bind": "/var/lib/docker", "mode": "ro"}})
    try:
        if files:
            container.put_archive("/", tar_files(files, mode=0o600))
        container.start()
        container.wait(timeout=300)
        return container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)
        client.close()


def _image_holds(ref: tuple[str, str], patterns: list[str]) -> str:
    """What of a host's identity, data and secrets the snapshot image holds ("" for nothing)."""
    # the patterns go in as a file at / (a place the scan does not read), never on a command line
    return _run_in_image(ref, (
        "ls /etc/ssh/ssh_host_* /var/lib/relaunch/host-key-rotated /var/lib/cloud/instance 2>/dev/null; "
        "ls /var/lib/relaunch/drill /etc/relaunch/secrets/* /srv/notes/notes.db 2>/dev/null; "
        "grep -rlF -f /golden-patterns /etc /root /srv /var/lib/relaunch /var/lib/cloud /var/lib/mysql /var/log /tmp "
        "/var/lib/docker/containers /var/lib/docker/volumes /var/lib/containerd 2>/dev/null; true"),
        {"/golden-patterns": "\n".join(patterns) + "\n"})


def _images_in(ref: tuple[str, str]) -> set[str]:
    """The ids of the container images the snapshot's Docker holds (its image store, read without a daemon)."""
    out = _run_in_image(ref, "ls /var/lib/docker/image/*/imagedb/content/sha256/ 2>/dev/null; true")
    return {f"sha256:{line.strip()}" for line in out.splitlines() if line.strip()}


def _production_images(host, key_path: Path) -> set[str]:
    """The ids of the images production's Compose containers run."""
    conn = open_host(host, key_path)
    try:
        out = conn.run("docker ps -q --filter label=com.docker.compose.project | xargs -r docker inspect "
                       "--format '{{.Image}}'", hide=True, in_stream=False, timeout=120).stdout
    finally:
        conn.close()
    return {line.strip() for line in out.splitlines() if line.strip()}


def _phase(record: dict, name: str) -> float:
    return next((p["seconds"] for p in record["phases"] if p["name"] == name), 0.0) or 0.0


@pytest.mark.timeout(3000)  # two full runs on a loaded 2-core machine (and the session's `up` when run alone)
def test_a_rebuild_from_the_golden_image_matches_a_drill_without_it(with_backups, site_root, target, where,
                                                                   sandbox_backend, golden_left_nowhere) -> None:
    cloud = target.cloud
    inv = load_site("example", site_root)

    made = drill("example", DrillOptions(golden="make"), root=site_root, where=where)
    assert made.status == "passed", made.error
    first = json.loads(Path(made.report_json).read_text())
    info = first["golden_made"]
    assert info and info["snapshot_seconds"] > 0
    assert first["image"]["golden"] is None and "--golden" in first["image"]["reason"]
    # the canary (marker rows and their backup) and the snapshot are reported, neither is in the RTO
    assert {"canary", "golden"} <= {p["name"] for p in first["phases"]}
    assert first["rto_seconds"] == pytest.approx(
        sum(p["seconds"] for p in first["phases"] if p["name"] not in ("canary", "golden")), abs=0.2)
    assert {"apt-lists", "nginx"}.isdisjoint(info["held"]) and {"docker", "base-packages"} <= set(info["held"])
    snaps = [s for s in cloud.list_snapshots() if golden.site_tag("example") in s.tags]
    assert [s.id for s in snaps] == [info["id"]]
    assert golden.recipe_tag(golden.recipe_hash(inv)) in snaps[0].tags
    md = Path(made.report_md).read_text()
    assert f"Golden snapshot made: {info['name']} ({info['id']})" in md.replace("\\", "")

    # the image itself: no host key, no cloud-init instance (its user-data held the first host key), no data,
    # no rendered secret anywhere the scan reads (containerd's metadata included)
    patterns = golden.secret_patterns(s.reveal() for s in resolve_all(inv).values())
    assert patterns
    ref = (sandbox_backend.snapshot_ref(info["id"]), sandbox_backend.snapshot_docker_volume(info["id"]))
    assert _image_holds(ref, patterns) == ""
    # ... and it keeps the Compose apps' images (containerd's metadata went, Docker's image store stays)
    running = _production_images(with_backups.host, target.key_path)
    assert running and running <= _images_in(ref)

    # a rebuild from the same backup (production's timer may have taken a newer one meanwhile), not switched:
    # production stays where it is
    production = {d.id for d in cloud.list_droplets()}
    built = rebuild("example", RebuildOptions(source="backup", backup_id=first["backup_id"], switch=False, settle=0),
                    root=site_root, where=where)
    assert built.status == "passed", built.error
    second = json.loads(Path(built.report_json).read_text())
    assert second["backup_id"] == first["backup_id"] and "switch" not in [p["name"] for p in second["phases"]]
    image = second["image"]
    assert image["golden"]["id"] == info["id"]
    check = image["check"]
    assert check["passed"] and check["held"] == info["held"] and check["held_changed"] == []
    assert f"Started from: golden snapshot {info['name']} ({info['id']}" in Path(built.report_md).read_text().replace(
        "\\", "")
    # the same data, verified the same way; the Compose apps run from the images the snapshot kept
    assert {d["name"]: (d["engine"], d["tables"], d["rows"], d["fingerprint_match"]) for d in second["databases"]} == {
        d["name"]: (d["engine"], d["tables"], d["rows"], d["fingerprint_match"]) for d in first["databases"]}
    assert len(second["databases"]) == 3 and all(d["fingerprint_match"] for d in second["databases"])
    assert [(f["path"], f["files"], f["match"]) for f in second["files"]] == [
        (f["path"], f["files"], f["match"]) for f in first["files"]]
    assert all(f["match"] for f in second["files"])
    assert {h["name"] for h in second["health_checks"]} == {h["name"] for h in first["health_checks"]}
    assert all(h["passed"] for h in second["health_checks"])
    new_id = int(built.journal.state["new_id"])
    assert {d.id for d in cloud.list_droplets()} == production | {new_id}

    without, with_ = first["rto_seconds"], second["rto_seconds"]
    line = (f"GOLDEN-RTO without={without}s with={with_}s "
            f"(after preflight: without={without - _phase(first, 'preflight'):.1f}s "
            f"with={with_ - _phase(second, 'preflight'):.1f}s; bootstrap without={_phase(first, 'bootstrap')}s "
            f"with={_phase(second, 'bootstrap')}s; golden phase {_phase(first, 'golden')}s of which snapshot "
            f"{info['snapshot_seconds']}s, not in the RTO; held {','.join(info['held'])})")
    log.warning("%s", line)
    print(line)
