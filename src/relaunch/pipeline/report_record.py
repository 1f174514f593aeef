"""A run's report record (the JSON a person and a CI read the morning after), built from its journal."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from relaunch.pipeline import UNTIMED
from relaunch.pipeline.journal import mask_tree, now_iso

if TYPE_CHECKING:
    from relaunch.pipeline.context import RunContext


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a = datetime.fromisoformat(start.replace("Z", "+00:00"))
    b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return round((b - a).total_seconds(), 1)


def record_from_run(ctx: RunContext, status: str, error: str | None, next_steps: list[str],
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report record of the run in ``ctx`` (see relaunch.pipeline.report for its keys). No secret: masked."""
    journal, state, inv = ctx.journal, ctx.state, ctx.inv
    phases = []
    for name, step in journal.ordered_steps():
        phase = {"name": name, "seconds": step.get("seconds"), "status":
                 {"done": "passed", "failed": "failed", "running": "failed"}.get(step.get("status"), "skipped"),
                 "started_at": step.get("started_at"), "detail": step.get("error") or ""}
        # the part of a phase spent waiting for the cloud to make the Droplet (its boot, not relaunch's work)
        cloud = state.get(f"{name}_cloud_seconds")
        if cloud is not None:
            phase["cloud_seconds"] = cloud
            phase["detail"] = phase["detail"] or f"{cloud} s of it the cloud making the Droplet"
        phases.append(phase)
    rto = round(sum(float(p["seconds"] or 0) for p in phases if p["name"] not in UNTIMED), 1)
    finished = now_iso()
    old, new = state.get("old") or {}, state
    objectives = {"rto_minutes": inv.objectives.rto_minutes, "rpo_minutes": inv.objectives.rpo_minutes,
                  "rto_met": rto <= inv.objectives.rto_minutes * 60,
                  "rpo_met": None if state.get("rpo_seconds") is None else
                  state["rpo_seconds"] <= inv.objectives.rpo_minutes * 60}
    record: dict[str, Any] = {
        "kind": journal.kind, "id": journal.id, "site": inv.site, "status": status,
        "started_at": journal.data.get("started_at"), "finished_at": finished,
        "wall_seconds": _seconds_between(journal.data.get("started_at"), finished),
        "attempts": journal.data.get("attempts", 1),
        "rto_seconds": rto, "rpo_seconds": state.get("rpo_seconds"), "rpo_basis": state.get("rpo_basis"),
        "source": state.get("source"), "source_reason": state.get("source_reason"),
        "phases": phases,
        "databases": state.get("verify_databases") or [],
        "files": state.get("verify_files") or [],
        "health_checks": state.get("health_checks") or [],
        "switched": state.get("switched") or [],
        "old_host": {"name": old.get("name"), "id": old.get("droplet_id"), "address": old.get("address")} if old else None,
        "new_host": {"name": new.get("new_name"), "id": new.get("new_id"), "address": new.get("new_ipv4")}
        if new.get("new_id") else None,
        "backup_id": state.get("backup_id"),
        # the image the new host started from, the check of its bootstrap, and a golden snapshot this run made
        "image": {"golden": state.get("golden_image"), "reason": state.get("golden_reason"),
                  "check": state.get("golden_check")},
        "golden_made": state.get("golden"),
        "handover": state.get("handover") or [],
        "objectives": objectives,
        "error": error, "next_steps": next_steps,
        "journal": str(journal.path),
    }
    record.update(extra or {})
    return mask_tree(record, ctx.mask)

