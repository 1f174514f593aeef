"""Sandbox: `fab drill` of the example site (the session's production, backups installed).

A drill rehearses the rebuild into a scratch Droplet from the off-host store alone; it
must prove the data with a canary in every database, leave production's DNS, Droplets
and records as they were, and destroy its scratch Droplet whatever happens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaunch.backup.site import install_site
from relaunch.drill import DRILL_TAG, DrillOptions, cleanup, drill
from relaunch.inventory import load_site
from relaunch.pipeline.report import list_reports
from relaunch.rebuild import Where
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]


@pytest.fixture(scope="module")
def with_backups(up, site_root, target):
    install_site(load_site("example", site_root), target.key_path)
    return up


def zone(cloud, zone_name: str) -> dict:
    return {r.id: (r.type, r.name, r.data, r.ttl) for r in cloud.list_records(zone_name)}


def test_drill_restores_verifies_measures_and_destroys_its_scratch_droplet(with_backups, site_root, target,
                                                                           sandbox_api) -> None:
    cloud = target.cloud
    inv = load_site("example", site_root)
    where = Where(cloud, sandbox_api.dns_port, target.key_path)
    records_before = zone(cloud, inv.dns.zone)
    droplets_before = {d.id for d in cloud.list_droplets()}
    hosts_before = {n: h for n, h in load_hosts("example").items()}

    result = drill("example", DrillOptions(), root=site_root, where=where)

    assert result.status == "passed", result.error
    record = json.loads(Path(result.report_json).read_text())
    assert record["status"] == "passed" and record["kind"] == "drill"
    assert record["scratch_destroyed"] is True and record["backup_id"]
    assert record["rto_seconds"] > 0 and record["rpo_seconds"] is not None and record["rpo_seconds"] >= 0
    assert [p["name"] for p in record["phases"]] == [
        "preflight", "canary", "provision", "boot", "data", "bootstrap", "restore", "verify", "start", "health"]
    assert record["rto_seconds"] == round(sum(p["seconds"] for p in record["phases"] if p["name"] != "canary"), 1)
    assert {d["name"]: (d["engine"], d["fingerprint_match"], d["canary"]) for d in record["databases"]} == {
        "blog": ("postgresql", True, True), "stats": ("mariadb", True, True), "notes": ("sqlite", True, True)}
    assert record["files"] and all(f["match"] for f in record["files"])
    assert record["health_checks"] and all(h["passed"] for h in record["health_checks"])
    assert "gantt" in Path(result.report_md).read_text()
    # production untouched: records, Droplets, hosts; the scratch Droplet gone
    assert zone(cloud, inv.dns.zone) == records_before
    assert {d.id for d in cloud.list_droplets()} == droplets_before
    assert not [d for d in cloud.list_droplets(DRILL_TAG)]
    assert load_hosts("example") == hosts_before
    assert list_reports("example")[0]["kind"] == "drill"
    assert cleanup("example", root=site_root, where=where) == []


def test_the_store_access_a_drill_gets_reads_but_cannot_forget(with_backups, site_root, target) -> None:
    """The temporary key a scratch host reads the store with is read-only: `restic forget` fails, the snapshot stays."""
    import shlex

    from relaunch.backup import offsite
    from relaunch.inventory.secrets import resolve_all
    from relaunch.pipeline.context import RunContext
    from relaunch.pipeline.journal import Journal
    from relaunch.pipeline.store import store_access
    from relaunch.provision import open_host

    inv = load_site("example", site_root)
    ctx = RunContext(inv, resolve_all(inv), target.cloud, target.key_path, Journal.ephemeral("example", "drill", {}), {})
    conn = open_host(with_backups.host, target.key_path)
    try:
        with store_access(ctx, conn) as repo:
            found = offsite.snapshots(conn, repo, "example")
            assert found, "the store holds the site's backups"
            snapshot = found[-1]["snapshot"]
            argv = ["restic", "-r", repo.location, *[o for o in repo.options if o != "--no-lock"], "forget", snapshot]
            forget = conn.run("RESTIC_PASSWORD_FILE=/etc/relaunch/secrets/restic.password " + shlex.join(argv),
                              warn=True, hide=True, in_stream=False, timeout=120)
            assert not forget.ok, forget.stdout
            assert snapshot in {s["snapshot"] for s in offsite.snapshots(conn, repo, "example")}
    finally:
        conn.close()


def test_a_drill_whose_health_check_fails_says_so_and_still_destroys_its_scratch_droplet(
        with_backups, site_root, target, sandbox_api, monkeypatch) -> None:
    import yaml

    from relaunch.pipeline.steps import apps as app_steps

    monkeypatch.setattr(app_steps, "HEALTH_TIMEOUT", 20)  # the check cannot pass: 180 s of waiting prove nothing more

    path = site_root / "inventory" / "example.yml"
    original = path.read_text()
    data = yaml.safe_load(original)
    data["apps"][2]["health"].append({"path": "/no-such-page", "status": 200})  # notes answers 404 there
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cloud = target.cloud
    before = {d.id for d in cloud.list_droplets()}
    try:
        result = drill("example", DrillOptions(canary=False), root=site_root,
                       where=Where(cloud, sandbox_api.dns_port, target.key_path))
    finally:
        path.write_text(original)
    assert result.status == "failed"
    assert "health checks fail" in result.error and "/no-such-page" in result.error
    record = result.record
    assert record["scratch_destroyed"] is True
    assert [p["status"] for p in record["phases"]][-1] == "failed" and record["phases"][-1]["name"] == "health"
    assert not [h for h in record["health_checks"] if not h["passed"] and "no-such-page" not in h["name"]]
    assert {d.id for d in cloud.list_droplets()} == before
