"""App steps: start the apps on the new host, then run every health check against its addresses."""

from __future__ import annotations

from typing import Any

from relaunch import apps
from relaunch.drift import collect as drift
from relaunch.errors import RelaunchError
from relaunch.health import wait_healthy
from relaunch.pipeline.context import RunContext
from relaunch.provision import host_addresses

#: Seconds the apps get to answer every health check after they start.
HEALTH_TIMEOUT = 180
#: The runs whose new host is kept as the reference of `fab drift` (not sandbox-up: no rebuild made that host).
REFERENCE_KINDS = ("rebuild", "drill")


def start(ctx: RunContext) -> dict[str, Any]:
    started = apps.start_apps(ctx.new_conn(), ctx.inv)
    return {"apps_started": started}


def health(ctx: RunContext) -> dict[str, Any]:
    """Every check of every app against each of the new host's addresses, with the Host header and SNI."""
    addresses = host_addresses(ctx.inv, ctx.new_record())
    report = wait_healthy(ctx.inv, addresses, timeout=HEALTH_TIMEOUT,
                          on_attempt=lambda r: ctx.say("health", f"{sum(x.ok for x in r.results)}/{len(r.results)} passing"))
    checks = [{"name": f"{r.app} {r.scheme}://{r.host}{r.path}", "address": r.address, "passed": r.ok,
               "detail": r.describe()} for r in report.results]
    ctx.journal.record(health_checks=checks)
    ctx.results["health"] = report
    if not report.ok:
        failed = "; ".join(r.describe() for r in report.failures()) or "the site has no health checks"
        raise RelaunchError(f"health checks fail on the new host {', '.join(addresses)}: {failed}")
    if ctx.journal.kind in REFERENCE_KINDS and not reference_in_handover(ctx):
        return record_drift_reference(ctx, "health")
    return {}


def reference_in_handover(ctx: RunContext) -> bool:
    """Whether the run records its drift reference in its handover, not in health: a rebuild that switches does,
    after the site answers from the new host (the reference is bookkeeping, not part of getting the site back)."""
    return ctx.journal.kind == "rebuild" and bool(ctx.options.get("switch", True))


def record_drift_reference(ctx: RunContext, step: str) -> dict[str, Any]:
    """Keep what the inventory and runbooks really produced on the new host, for `fab drift` (before a drill destroys
    the host). Recording it never fails the run: a rebuild during an outage matters more than the bookkeeping."""
    try:
        path = drift.record_reference(ctx.new_conn(), ctx.inv, kind=ctx.journal.kind, run_id=ctx.journal.id)
    except (RelaunchError, OSError) as exc:
        ctx.say(step, f"the drift reference could not be recorded: {ctx.mask(str(exc))[:300]}")
        return {"drift_reference": None}
    return {"drift_reference": str(path)}
