"""How a drill fails: a bad artifact is named by the data step (store or host), and a failure that is no
RelaunchError still ends in a failed drill with its report, its alert and no scratch Droplet left."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from relaunch import drill_host
from relaunch.backup.manifest import Verification
from relaunch.errors import RelaunchError
from relaunch.pipeline.steps import data

BACKUP_ID = "20000101T000000Z-71"
BAD = Verification(BACKUP_ID, False, ("blog.dump: sha256 0123456789abcdef… (10 bytes) does not match the manifest's "
                                      "fedcba9876543210… (10 bytes)",), ("blog.dump", "files.tar.gz"))


class FakeConn:
    """A host that answers every command with success (a listing of one backup where one is asked for)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def run(self, command: str, **kwargs):
        listing = f"/var/backups/relaunch/{BACKUP_ID}/manifest.json\n" if "find " in command else ""
        return SimpleNamespace(ok=True, stdout=listing, stderr="")


def _ctx() -> SimpleNamespace:
    old, new = FakeConn("10.0.0.1"), FakeConn("10.0.0.2")
    return SimpleNamespace(old_conn=lambda timeout=None: old, new_conn=lambda: new, options={"backup_id": BACKUP_ID},
                           state={}, inv=SimpleNamespace(site="example", backups=None),
                           journal=SimpleNamespace(kind="drill", id="X1"), say=lambda *a: None,
                           drop_conn=lambda name: None)


def test_verification_describe_names_every_bad_artifact_or_says_all_matched() -> None:
    assert BAD.describe().startswith("blog.dump: sha256 0123456789abcdef")
    assert Verification(BACKUP_ID, True, (), ("a", "b")).describe() == "all 2 artifact(s) match the manifest"


@pytest.mark.parametrize("source", ["store", "host"])
def test_a_backup_with_a_bad_artifact_fails_the_data_step_with_a_relaunch_error_naming_it(monkeypatch, source) -> None:
    if source == "store":
        monkeypatch.setattr(data, "store_access", lambda ctx, new: contextlib.nullcontext("repo"))
        monkeypatch.setattr(data.offsite, "snapshots", lambda conn, repo, site: [{"id": BACKUP_ID, "time": None}])
        monkeypatch.setattr(data.offsite, "fetch", lambda conn, wanted, dest, repo, site: f"{dest}/{wanted}")
        monkeypatch.setattr(data.offsite, "verify_remote_dir", lambda conn, directory: BAD)
        step = data.data_backup
    else:
        monkeypatch.setattr(drill_host, "relay", lambda *args, **kwargs: 10)
        monkeypatch.setattr(drill_host, "verify_remote_dir", lambda conn, directory: BAD)
        step = drill_host.data_from_host
    with pytest.raises(RelaunchError, match=f"backup {BACKUP_ID} .* does not match its manifest: blog.dump: sha256"):
        step(_ctx())


class QuietCloud:
    """A cloud with no Droplets: a drill whose step fails before provisioning has nothing to destroy."""

    def list_droplets(self, tag=None) -> list:
        return []


def test_a_drill_whose_step_raises_something_unexpected_still_fails_with_report_and_alert(monkeypatch, tmp_path) -> None:
    from relaunch import drill as drill_module
    from relaunch.inventory import load_site
    from relaunch.pipeline.plan import Plan, Step
    from relaunch.rebuild import Where

    inv = load_site("example")
    monkeypatch.setattr(drill_module, "open_site", lambda site, root, where: (
        inv, SimpleNamespace(mask=lambda s: s), Where(QuietCloud(), None, tmp_path / "key")))  # type: ignore[arg-type]
    monkeypatch.setattr(drill_module, "_cleanup", lambda cloud, inv: [])

    def broken(ctx):
        raise AttributeError("'Verification' object has no attribute 'describe'")

    monkeypatch.setattr(drill_module, "plan_drill", lambda ctx: Plan("drill", "example", [
        Step("preflight", "fine", lambda ctx: {}), Step("data", "broken", broken)]))
    alerted = []
    monkeypatch.setattr(drill_module.alerts, "after_drill", lambda inv, secrets, record, md: alerted.append(record) or [])

    result = drill_module.drill("example", drill_module.DrillOptions(canary=False))

    assert result.status == "failed"
    assert result.error.startswith("unexpected AttributeError at test_drill_failures.py:") and "describe" in result.error
    record = json.loads(Path(result.report_json).read_text())
    assert record["status"] == "failed" and record["scratch_destroyed"] is True
    assert {p["name"]: p["status"] for p in record["phases"]} == {"preflight": "passed", "data": "failed"}
    assert [r["status"] for r in alerted] == ["failed"]
