"""Sandbox: a golden image made by `fab drill --golden`, then a drill that starts from it.

The golden drill bootstraps from the base image, cleans and snapshots its scratch host
before any data; the snapshot (a Docker image in the sandbox) must hold no secret, no
host key and no data. The second drill starts from it: its held runbook steps report no
change, and what it restores verifies exactly as the first one's did. Both RTOs are in
the reports (the golden phase is not in the first one's).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import docker
import pytest

from relaunch import golden
from relaunch.backup.site import install_site
from relaunch.drill import DrillOptions, drill
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.rebuild import Where
from relaunch.sandbox.helpers import tar_files

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def with_backups(up, site_root, target):
    install_site(load_site("example", site_root), target.key_path)
    return up


def _image_holds(ref: str, patterns: list[str]) -> str:
    """Run the snapshot image (no network, not booted) and report what of a host's identity and secrets it holds."""
    client = docker.from_env()
    script = (
        "ls /etc/ssh/ssh_host_* /var/lib/relaunch/host-key-rotated /var/lib/cloud/instance 2>/dev/null; "
        "ls /var/lib/relaunch/drill /etc/relaunch/secrets/* /srv/notes/notes.db 2>/dev/null; "
        "grep -rlF -f /dev/stdin /etc /root /srv /var/lib/relaunch /var/lib/cloud /var/lib/mysql /var/log /tmp "
        "/var/lib/docker/containers /var/lib/docker/volumes 2>/dev/null; true"
    )
    container = client.containers.create(ref, ["bash", "-c", script.replace("/dev/stdin", "/golden-patterns")],
                                         network_mode="none", entrypoint=[])
    try:
        # the patterns go in as a file at / (a place the scan does not read), never on a command line
        container.put_archive("/", tar_files({"/golden-patterns": "\n".join(patterns) + "\n"}, mode=0o600))
        container.start()
        container.wait(timeout=300)
        return container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)
        client.close()


def test_a_drill_from_the_golden_image_matches_one_without_it(with_backups, site_root, target, sandbox_api,
                                                               sandbox_backend) -> None:
    cloud = target.cloud
    inv = load_site("example", site_root)
    where = Where(cloud, sandbox_api.dns_port, target.key_path)

    made = drill("example", DrillOptions(golden="make"), root=site_root, where=where)
    assert made.status == "passed", made.error
    first = json.loads(Path(made.report_json).read_text())
    info = first["golden_made"]
    assert info and info["snapshot_seconds"] > 0
    assert "golden" in [p["name"] for p in first["phases"]]
    golden_seconds = next(p["seconds"] for p in first["phases"] if p["name"] == "golden")
    assert first["rto_seconds"] == pytest.approx(sum(p["seconds"] for p in first["phases"] if p["name"] != "golden"),
                                                 abs=0.2)
    assert {"apt-lists", "nginx"}.isdisjoint(info["held"]) and {"docker", "base-packages"} <= set(info["held"])
    snaps = [s for s in cloud.list_snapshots() if golden.site_tag("example") in s.tags]
    assert [s.id for s in snaps] == [info["id"]]
    assert golden.recipe_tag(golden.recipe_hash(inv)) in snaps[0].tags

    # the image itself: no host key, no cloud-init instance (its user-data held the first host key), no data,
    # no rendered secret anywhere the scan reads
    patterns = golden.secret_patterns(s.reveal() for s in resolve_all(inv).values())
    assert patterns
    assert _image_holds(sandbox_backend.snapshot_ref(info["id"]), patterns) == ""

    # the same backup (production's timer may have taken a newer one meanwhile)
    again = drill("example", DrillOptions(canary=False, backup_id=first["backup_id"]), root=site_root, where=where)
    assert again.status == "passed", again.error
    second = json.loads(Path(again.report_json).read_text())
    image = second["image"]
    assert image["golden"]["id"] == info["id"]
    check = image["check"]
    assert check["passed"] and check["held"] == info["held"] and check["held_changed"] == []
    # the same data, verified the same way
    assert second["backup_id"] == first["backup_id"]
    assert {d["name"]: (d["tables"], d["rows"], d["fingerprint_match"]) for d in second["databases"]} == {
        d["name"]: (d["tables"], d["rows"], d["fingerprint_match"]) for d in first["databases"]}
    assert all(d["fingerprint_match"] for d in second["databases"])
    assert [(f["path"], f["files"], f["match"]) for f in second["files"]] == [
        (f["path"], f["files"], f["match"]) for f in first["files"]]
    assert all(h["passed"] for h in second["health_checks"])
    bootstrap = {p["name"]: p["seconds"] for p in second["phases"]}["bootstrap"]
    first_bootstrap = {p["name"]: p["seconds"] for p in first["phases"]}["bootstrap"]
    summary = (f"RTO without golden {first['rto_seconds']} s (bootstrap {first_bootstrap} s; golden phase "
               f"{golden_seconds} s of which snapshot {info['snapshot_seconds']} s, not in the RTO); "
               f"RTO from golden {second['rto_seconds']} s (bootstrap {bootstrap} s); held {info['held']}")
    log.warning("golden: %s", summary)
    print("GOLDEN-RTO", summary)

    # leave no golden snapshot for the tests after this one (they start from the base image)
    for snap in cloud.list_snapshots():
        if golden.site_tag("example") in snap.tags:
            cloud.delete_snapshot(snap.id)
