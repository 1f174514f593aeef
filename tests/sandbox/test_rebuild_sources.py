"""Sandbox: `fab rebuild --source backup --no-switch` while the old host still answers, on the session's production.

One rebuild, no switch (production stays production), that exercises three parts of issue 10
which had only fake-host tests before:

- the backup comes from the old host's own ``/var/backups/relaunch/<ID>``, pulled host to host
  by the new host over the temporary link and checked against its manifest there; the off-host
  store is not used, and the report's RPO basis says where the backup came from;
- the blog's Docker named volume (``blog_thumbs``: a hard link, symlinks to a file and to a
  directory, files of uid 33 with their own modes) is archived by production's backup, restored
  into the volume Compose made on the new host, and checked like the other trees; after the
  start the blog's own container sees it, owners and links kept;
- the inventory's ``verify.sample_above``/``sample_size``, set low here, make the verify step
  hash a sample seeded by the run of every tree (the report says "seeded sample"), still proving
  every fingerprint and every tree equal to the backup's.

Afterwards the new Droplet is destroyed and production is as it was: its apps and backup timer
on, the link's key gone from its authorized_keys, its backup untouched, DNS unchanged.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaunch import rebuild as rebuild_
from relaunch import transfer
from relaunch.backup.site import install_site
from relaunch.backup.status import run_now
from relaunch.health import check_site
from relaunch.inventory import load_site
from relaunch.pipeline.journal import Journal
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.state import forget_host, load_hosts, production_record
from tests.faults.test_rebuild_stories import authoritative_a, zone

# one whole rebuild (and the session's `up` when this module comes first): more than the 900 s default
pytestmark = [pytest.mark.sandbox, pytest.mark.heavy, pytest.mark.timeout(2700)]

THUMBS = "/var/lib/docker/volumes/blog_thumbs/_data"
#: Low enough that every tree of the example is sampled: its thumbnails alone hold 13000 bytes of files.
VERIFY = {"sample_above": "1KiB", "sample_size": "4KiB"}
TIMER = "systemctl is-enabled relaunch-backup.timer; systemctl is-active relaunch-backup.timer; true"
COMPOSE = "$(cat /etc/relaunch/compose-command) -p blog -f /srv/blog/compose.yml --env-file /etc/relaunch/blog.env"


def sh(conn, script: str) -> str:
    return conn.run(script, hide=True, in_stream=False, timeout=300).stdout.strip()


@pytest.fixture(scope="module")
def run(up, site_root, target, sandbox_api) -> Any:
    """The rebuild of the module docstring, run once; what the test checks, read before and after the new host goes."""
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    inv = load_site("example", site_root)
    install_site(inv, target.key_path)
    old = production_record("example", inv.production.droplet_name)
    conn = open_host(old, target.key_path)
    path = site_root / "inventory" / "example.yml"
    original = path.read_text()
    out: dict[str, Any] = {"events": [], "old": old, "records_before": zone(target.cloud, inv.dns.zone),
                           "a_before": authoritative_a(sandbox_api, inv.dns.zone),
                           "hosts_before": set(load_hosts("example"))}
    result = None
    cleaned: list[bool] = []

    def clean_up() -> None:
        """Destroy the new Droplet (abort a paused run), forget it, put the inventory back."""
        if cleaned:
            return
        cleaned.append(True)
        path.write_text(original)
        journal = Journal.load("example", "rebuild")
        state = result.journal.state if result is not None else journal.state if journal else {}
        if journal is not None:  # a failed run is paused: abort it (the old host's writers were never stopped)
            rebuild_.abort("example", root=site_root, destroy=True, where=where)
        elif state.get("new_id"):
            target.cloud.destroy_droplet(int(state["new_id"]))
        if state.get("new_name"):
            forget_host("example", state["new_name"])

    try:
        backup = run_now(conn, "example")
        assert backup.ok, backup
        out["backup"] = backup.id
        out["timer_before"] = sh(conn, TIMER)
        data = yaml.safe_load(original)
        data["verify"] = dict(VERIFY)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

        result = rebuild("example", RebuildOptions(source="backup", switch=False, settle=0), root=site_root,
                         where=where, progress=out["events"].append)
        out["result"] = result
        state = result.journal.state
        out["state"] = dict(state)
        if result.status == "passed":
            new = open_host(load_hosts("example")[state["new_name"]], target.key_path)
            try:
                # the tree on production against the new host's, every file hashed (the thumbnails do not change)
                out["thumbs_diff"] = transfer.verify_tree(conn, new, THUMBS)
                out["volume_labels"] = sh(new, "docker volume inspect blog_thumbs --format "
                                          + shlex.quote('{{index .Labels "com.docker.compose.project"}} '
                                                        '{{index .Labels "com.docker.compose.volume"}}'))
                out["in_container"] = sh(new, f"{COMPOSE} exec -T web sh -c "
                                         + shlex.quote("cd /var/lib/blog/thumbs && stat -c '%n %u:%g %a' private "
                                                       "private/cache.bin && readlink current latest.jpg && "
                                                       "stat -c '%n %h' 2026/a.jpg && sha256sum 2026/b.png"))
                out["on_production"] = sh(conn, f"cd {THUMBS} && sha256sum 2026/b.png")
            finally:
                new.close()
        out["records_after"] = zone(target.cloud, inv.dns.zone)
        out["a_after"] = authoritative_a(sandbox_api, inv.dns.zone)
        clean_up()
        out["droplets_after"] = {d.id for d in target.cloud.list_droplets()}
        out["hosts_after"] = set(load_hosts("example"))
        out["timer_after"] = sh(conn, TIMER)
        out["authorized_after"] = sh(conn, "cat ~/.ssh/authorized_keys")
        out["held_after"] = sh(conn, "ls /var/backups/relaunch").split()
        yield out
    finally:
        try:
            clean_up()
        finally:
            conn.close()


def test_rebuild_from_the_old_hosts_backup_directory_carries_the_named_volume_and_samples_every_tree(
        run, site_root, target) -> None:
    result = run["result"]
    assert result.status == "passed", result.error
    record, state, backup = result.record, run["state"], run["backup"]

    # the backup came from the old host's own directory, pulled host to host; the store was not asked
    assert record["source"] == "backup" and record["backup_id"] == backup
    assert state["backup_origin"] == "the old host's /var/backups/relaunch"
    assert f"backup {backup} from the old host's /var/backups/relaunch" in record["rpo_basis"]
    assert record["rpo_seconds"] >= 0
    said = [e.message for e in run["events"] if e.step == "data" and e.kind == "info"]
    assert any(m.startswith(f"pulling backup {backup} from the old host's") for m in said), said
    assert not any("off-host store" in m for m in said), said
    assert state["backup_dir"].endswith(f"/old-host/{backup}")

    # every fingerprint and every tree (the named volume too) equal to the backup's, each tree by a seeded sample
    assert len(record["databases"]) == 3 and all(d["fingerprint_match"] for d in record["databases"]), record["databases"]
    files = {f["path"]: f for f in record["files"]}
    assert set(files) == {"/srv/blog/uploads", THUMBS, "/srv/stats", "/srv/notes"}
    assert all(f["match"] for f in files.values()), files
    assert files[THUMBS]["files"] == 4  # a.jpg, its hard link, b.png, private/cache.bin (and two symlinks)
    for path in (THUMBS, "/srv/blog/uploads"):  # a small tree's sample may hold every file: then it says so
        assert files[path]["method"].startswith("seeded sample (tree above 1024 bytes)"), files[path]
        assert f"(seed {result.journal.id})" in files[path]["method"]
    assert "seeded sample" in Path(result.report_md).read_text()
    assert record["health_checks"] and all(h["passed"] for h in record["health_checks"])
    assert "switch" not in [p["name"] for p in record["phases"]]

    # the volume: the one Compose made (its labels), holding production's files, owners, modes and links
    assert run["thumbs_diff"] == []
    assert run["volume_labels"] == "blog thumbs"
    seen = run["in_container"].splitlines()
    assert seen[:4] == ["private 33:33 750", "private/cache.bin 33:33 640", "2026", "2026/a.jpg"], seen
    assert seen[4] == "2026/a.jpg 2" and seen[5].split()[0] == run["on_production"].split()[0]

    # production as it was: DNS, its timer, no link key left, its backups; the new Droplet gone
    assert run["records_after"] == run["records_before"] and run["a_after"] == run["a_before"]
    assert run["timer_after"] == run["timer_before"]
    assert "relaunch-link-" not in run["authorized_after"]
    assert backup in run["held_after"]
    assert run["hosts_after"] == run["hosts_before"]
    assert int(state["new_id"]) not in run["droplets_after"]
    report = check_site(load_site("example", site_root), run["old"].ipv4)
    assert report.ok, [r.describe() for r in report.results]
