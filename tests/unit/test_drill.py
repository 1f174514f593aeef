"""The drill's pure parts: the guard around the cloud, the largest gap between backups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from relaunch.cloud import Droplet
from relaunch.drill import DRILL_TAG, DrillGuardError, GuardedCloud, largest_gap


class FakeCloud:
    def __init__(self) -> None:
        self.destroyed: list[int] = []
        self.droplets = {1: Droplet(1, "example-prod", "active", "10.0.0.1", "fra1", ("relaunch-example",), None),
                         2: Droplet(2, "example-drill-x", "active", "10.0.0.2", "fra1",
                                    ("relaunch-example", DRILL_TAG), None)}

    def get_droplet(self, droplet_id: int) -> Droplet:
        return self.droplets[droplet_id]

    def destroy_droplet(self, droplet_id: int) -> bool:
        self.destroyed.append(droplet_id)
        return True

    def list_records(self, zone: str) -> list:
        return ["read is fine"]

    def update_record(self, *args, **kwargs):  # pragma: no cover - the guard must stop it first
        raise AssertionError("reached the cloud")


@pytest.mark.parametrize("method", ["update_record", "create_record", "delete_record", "ensure_domain",
                                    "assign_reserved_ip", "unassign_reserved_ip", "destroy_droplets_by_tag"])
def test_guard_refuses_every_change_to_production(method: str) -> None:
    with pytest.raises(DrillGuardError, match="never calls"):
        getattr(GuardedCloud(FakeCloud()), method)("example.test", 1, data="10.0.0.9")


def test_guard_lets_reads_through_and_destroys_only_scratch_droplets() -> None:
    cloud = FakeCloud()
    guarded = GuardedCloud(cloud)
    assert guarded.list_records("example.test") == ["read is fine"]
    with pytest.raises(DrillGuardError, match="example-prod"):
        guarded.destroy_droplet(1)
    assert guarded.destroy_droplet(2) and cloud.destroyed == [2]


def test_largest_gap_within_the_window_counts_up_to_now() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    times = [now - timedelta(hours=30), now - timedelta(hours=3), now - timedelta(hours=2, minutes=45),
             now - timedelta(minutes=10)]
    assert largest_gap(times, timedelta(hours=24), now) == timedelta(hours=2, minutes=35).total_seconds()
    assert largest_gap([], timedelta(hours=24), now) is None


def test_a_missed_objective_fails_a_drill_that_otherwise_passed(tmp_path, monkeypatch) -> None:
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from relaunch import drill as drill_module
    from relaunch.inventory import load_site
    from relaunch.pipeline.journal import Journal

    root = tmp_path
    (root / "inventory").mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "inventory" / "example.yml", root / "inventory" / "example.yml")
    inv = load_site("example", root)
    journal = Journal.ephemeral("example", "drill", {})
    journal.steps.update({"preflight": {"status": "done", "seconds": 1.0}, "data": {"status": "done", "seconds": 2000.0}})
    journal.state.update(rpo_seconds=30, rpo_basis="backup X, its age")
    ctx = SimpleNamespace(inv=inv, journal=journal, state=journal.state, mask=lambda s: s)
    written = {}
    monkeypatch.setattr(drill_module, "write_report", lambda site, record: written.setdefault("r", record) and
                        (tmp_path / "r.md", tmp_path / "r.json"))
    record, _, _ = drill_module._write(ctx, "passed", None, True, [], None)
    assert record["status"] == "failed" and record["missed"] == ["RTO 2001 s > 30 min"]
    assert written["r"]["error"].startswith("objective missed")


def _drill_ctx(fail_drill: bool):
    from types import SimpleNamespace

    from relaunch.inventory import load_site
    from relaunch.inventory.model import Drift
    from relaunch.pipeline.journal import Journal

    inv = load_site("example")
    inv = inv.model_copy(update={"drift": Drift(fail_drill=fail_drill)})
    journal = Journal.new("example", "drill", {})
    return SimpleNamespace(journal=journal, state=journal.state, inv=inv, mask=lambda s: s)


DRIFTED = {"drifted": True, "site": "example", "summary": "production has 1 thing(s) the inventory and runbooks do "
           "not describe (1 package)", "findings": [{"kind": "package", "subject": "cron", "change": "extra",
                                                       "detail": "installed", "advice": "a runbook step"}]}


@pytest.mark.parametrize("fail_drill", [False, True])
def test_write_a_passing_drill_with_drift_says_so_and_fails_only_with_fail_drill(fail_drill: bool) -> None:
    from pathlib import Path

    from relaunch.drill import _write

    record, md, _js = _write(_drill_ctx(fail_drill), "passed", None, True, [], DRIFTED)
    assert record["drift"]["drifted"] is True
    assert any("fab drift --site example --draft" in s for s in record["next_steps"])
    assert "**Drift**: production has 1 thing(s)" in Path(md).read_text()
    if fail_drill:
        assert record["status"] == "failed" and record["error"].startswith("drift (drift.fail_drill)")
    else:
        assert record["status"] == "passed" and record["error"] is None


def test_write_a_drill_without_drift_has_no_drift_step() -> None:
    from relaunch.drill import _write

    record, _md, _js = _write(_drill_ctx(True), "passed", None, True, [], {"drifted": False, "findings": []})
    assert record["status"] == "passed" and record["next_steps"] == []


def test_the_canary_is_a_phase_of_its_own_reported_but_not_in_the_rto(tmp_path, monkeypatch) -> None:
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from relaunch import drill as drill_module
    from relaunch.inventory import load_site
    from relaunch.pipeline.journal import Journal

    (tmp_path / "inventory").mkdir()
    shutil.copy(Path(__file__).resolve().parents[2] / "inventory" / "example.yml", tmp_path / "inventory" / "example.yml")
    inv = load_site("example", tmp_path)
    journal = Journal.ephemeral("example", "drill", {})
    ctx = SimpleNamespace(inv=inv, journal=journal, state=journal.state, options={}, mask=lambda s: s)
    assert [s.name for s in drill_module.plan_drill(ctx).steps][:3] == ["preflight", "canary", "provision"]
    for options in ({"canary": False}, {"backup_id": "20261127T000000Z"}):
        ctx.options = options
        assert "canary" not in [s.name for s in drill_module.plan_drill(ctx).steps]
    journal.steps.update({"preflight": {"status": "done", "seconds": 1.0}, "canary": {"status": "done", "seconds": 9.0},
                          "data": {"status": "done", "seconds": 5.0}})
    journal.state.update(rpo_seconds=30, rpo_basis="backup X, its age")
    monkeypatch.setattr(drill_module, "write_report", lambda site, record: (tmp_path / "r.md", tmp_path / "r.json"))
    record, _, _ = drill_module._write(ctx, "passed", None, True, [], None)
    assert record["rto_seconds"] == 6.0
    assert {p["name"]: p["seconds"] for p in record["phases"]}["canary"] == 9.0
