"""``fab drill``: the rebuild rehearsed into a scratch Droplet from the backups alone, measured, then destroyed.

The same steps and phase names as ``fab rebuild`` (:mod:`relaunch.rebuild`), with the
backup source always, and what makes a rehearsal safe:

- **a guard** (:class:`GuardedCloud`): the drill's cloud refuses every change to DNS
  records, domains and Reserved IPs, and the destruction of any Droplet that is not a
  scratch Droplet of a drill. Production is only read, except for the canary.
- **a canary** (its own phase, ``canary``, after preflight): a marker row with a unique value goes into every
  database of production (each engine's ``canary_write``), then a backup and its off-host
  copy run there; the restore must hold every marker — proof the data is the data, not
  counts that happen to match (``canary=False`` for a drill of an older backup).
- **isolation**: the scratch host gets no backup timer and reads the store with a
  temporary key (read-only SFTP where relaunch authorizes it); it is tagged
  ``relaunch-drill`` and with an expiry time, never a ``dns-switch --to new`` candidate.
- **clean-up**: the scratch Droplet is destroyed at the end, also when the drill fails or
  is interrupted (``keep`` keeps it); every drill first destroys scratch Droplets left by
  earlier runs that no running drill holds; :func:`cleanup` does only that.
- **where from**: the off-host store by default; ``source="host"`` (``--from host``) copies the
  backup from production's own backup directory, read only (:mod:`relaunch.drill_host`).
- **alerts**: a failed drill or a missed objective posts to ``alerts.webhook`` (:mod:`relaunch.alerts`).
- **measured**: RTO in total and per phase (the ``canary`` and ``golden`` phases are reported, not counted: the
  canary's backup stands for the moment production is lost, before any recovery); RPO as the age of the backup used, and the
  largest gap between consecutive good off-host backups within
  ``backups.retention.keep_within_hours``; the inventory's objectives are the pass mark.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from relaunch import alerts, apps, drill_host, golden
from relaunch.backup.status import run_now
from relaunch.cloud import Cloud
from relaunch.databases import engine
from relaunch.drift.check import drill_summary as check_drift
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.events import Progress, quiet
from relaunch.pipeline.journal import Journal, holder_pid, run_lock
from relaunch.pipeline.plan import Plan, Step, execute, sigterm_interrupts
from relaunch.pipeline.report import write_report
from relaunch.pipeline.report_record import record_from_run
from relaunch.pipeline.steps import apps as app_steps
from relaunch.pipeline.steps import data, host, restore
from relaunch.pipeline.store import missing_for_backup
from relaunch.provision import site_droplets
from relaunch.rebuild import Where, open_site
from relaunch.state import forget_host, production_record

log = logging.getLogger(__name__)

KIND = "drill"
DRILL_TAG = "relaunch-drill"
#: A scratch Droplet older than this is an orphan whatever its tags say.
EXPIRY = timedelta(hours=6)
_EXPIRES_PREFIX = "relaunch-expires-"
#: Where a drill's backup comes from (``--from``).
SOURCES = ("offsite", "host")


class DrillGuardError(RelaunchError):
    """A drill tried to change something of production's (DNS, a Reserved IP, a Droplet that is not its own)."""


class GuardedCloud:
    """The drill's view of the cloud: reads pass, production's records, IPs and Droplets cannot change."""

    _REFUSED = ("ensure_domain", "create_record", "update_record", "delete_record", "create_reserved_ip",
                "assign_reserved_ip", "unassign_reserved_ip", "delete_reserved_ip", "destroy_droplets_by_tag",
                "power_off", "power_on", "shutdown", "reboot")

    def __init__(self, cloud: Cloud) -> None:
        self._cloud = cloud

    def __getattr__(self, name: str) -> Any:
        if name in self._REFUSED:
            def refused(*args: Any, **kwargs: Any) -> Any:
                raise DrillGuardError(f"a drill never calls {name}: it would change production (DNS, Reserved IPs "
                                      "or Droplets that are not the drill's own); refused")
            return refused
        return getattr(self._cloud, name)

    def snapshot_droplet(self, droplet_id: int, name: str, **kwargs: Any) -> Any:
        """A golden snapshot of the drill's own scratch Droplet (``drill --golden``); no other Droplet's."""
        droplet = self._cloud.get_droplet(droplet_id)
        if DRILL_TAG not in droplet.tags:
            raise DrillGuardError(f"a drill snapshots only its own scratch Droplets (tag {DRILL_TAG}); "
                                  f"{droplet.name} ({droplet_id}) is not one: refused")
        return self._cloud.snapshot_droplet(droplet_id, name, **kwargs)

    def delete_snapshot(self, snapshot_id: int | str) -> bool:
        """Only golden snapshots (tag relaunch-golden) are a drill's to delete."""
        snap = next((s for s in self._cloud.list_snapshots() if str(s.id) == str(snapshot_id)), None)
        if snap is not None and golden.GOLDEN_TAG not in snap.tags:
            raise DrillGuardError(f"a drill deletes only golden snapshots; {snap.name} ({snap.id}) is not one: refused")
        return self._cloud.delete_snapshot(snapshot_id)

    def destroy_droplet(self, droplet_id: int) -> bool:
        droplet = self._cloud.get_droplet(droplet_id)
        if DRILL_TAG not in droplet.tags:
            raise DrillGuardError(f"a drill destroys only its own scratch Droplets (tag {DRILL_TAG}); "
                                  f"{droplet.name} ({droplet_id}) is not one: refused")
        return self._cloud.destroy_droplet(droplet_id)


@dataclass
class DrillOptions:
    backup_id: str | None = None
    source: str = "offsite"  # offsite (the copy that survives a dead host) | host (production's own, read only)
    keep: bool = False
    canary: bool = True
    golden: str = "use"  # use a matching golden snapshot; make: bootstrap from the base image, then snapshot; off

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DrillResult:
    status: str
    journal: Journal
    record: dict[str, Any]
    report_md: Path | None = None
    report_json: Path | None = None
    cleaned: list[str] = field(default_factory=list)
    error: str | None = None
    notified: list[alerts.Sent] = field(default_factory=list)


# --- steps ------------------------------------------------------------------------------


def wants_canary(ctx: RunContext) -> bool:
    """Whether this drill writes a canary (not with --no-canary, nor for a drill of a named older backup)."""
    return bool(ctx.options.get("canary", True) and not ctx.options.get("backup_id"))


def preflight(ctx: RunContext) -> dict[str, Any]:
    """Check the account and that the store can be read from a new host; record the production host the canary
    (or --from host) needs."""
    inv = ctx.inv
    ctx.cloud.check_account()
    from_host = ctx.options.get("source") == "host"
    problems = [] if from_host else missing_for_backup(inv)
    if problems:
        raise RelaunchError(f"a drill of {inv.site!r} cannot start: " + "; ".join(problems))
    out: dict[str, Any] = {"source": "backup", "source_reason": "a drill restores from the backups alone" + (
        " (--from host: production's backup directory, read only)" if from_host else ""), **golden.choose_for(ctx)}
    if not wants_canary(ctx):
        out["canary"] = {}
        if not from_host:
            return out
    record = production_record(inv.site, inv.production.droplet_name)
    if record is None:
        raise RelaunchError(f"the canary and --from host need the production host of {inv.site!r} and relaunch "
                            "knows none (`fab adopt`, or run with --no-canary)")
    ctx.journal.record(old={"name": record.name, "address": record.ipv4, "host_key": record.host_key,
                            "user": inv.production.user, "droplet_id": record.droplet_id})
    return out


def write_canary(ctx: RunContext) -> dict[str, Any]:
    """Write the canary into every production database, then take the backup that carries it (and, unless
    --from host, its off-host copy): the drill's stand-in for the moment production is lost, so not in its RTO."""
    conn = ctx.old_conn(timeout=30)
    compose = apps.compose_command(conn)
    value = f"drill-{ctx.journal.id}-{uuid.uuid4().hex[:8]}"
    for db in ctx.inv.databases:
        engine(db.engine).canary_write(conn, db, compose, value)
    ctx.say("canary", f"canary {value} written into {len(ctx.inv.databases)} production database(s); backing up")
    run = run_now(conn, ctx.inv.site)
    if ctx.options.get("source") != "host" and run.offsite is not None and not run.offsite.get("ok", True):
        raise RelaunchError(f"the canary's backup {run.id} did not reach the off-host store: {run.offsite}")
    ctx.drop_conn("old")
    return {"canary": {"value": value, "backup_id": run.id}, "backup_id": run.id}


def canary_check(ctx: RunContext) -> None:
    """After verify: every database of the scratch host holds the canary's marker. Raise naming those that do not."""
    canary = ctx.state.get("canary") or {}
    value = canary.get("value")
    if not value:
        return
    conn = ctx.new_conn()
    compose = apps.compose_command(conn)
    found = {db.name: value in engine(db.engine).canary_read(conn, db, compose) for db in ctx.inv.databases}
    databases = ctx.state.get("verify_databases") or []
    for entry in databases:
        entry["canary"] = found.get(entry["name"])
    ctx.journal.record(verify_databases=databases)
    missing = sorted(n for n, ok in found.items() if not ok)
    if missing:
        raise RelaunchError(f"the canary {value} written before the backup is missing from the restore of "
                            f"{', '.join(missing)}: the backup does not hold what production held")


def verify_with_canary(ctx: RunContext) -> dict[str, Any]:
    out = restore.verify(ctx)
    canary_check(ctx)
    return out


def plan_drill(ctx: RunContext) -> Plan:
    name = ctx.state.get("new_name")
    which = ctx.options.get("backup_id") or (ctx.state.get("canary") or {}).get("backup_id") or "the newest backup"
    from_host = ctx.options.get("source") == "host"
    fetch = (Step("data", f"{which} copied from the production host's backup directory (read only) and checked "
                  "against its manifest", drill_host.data_from_host) if from_host else
             Step("data", f"the scratch host fetches {which} from the off-host store and checks it against its manifest",
                  data.data_backup))
    steps = [
        Step("preflight", "check the account and the store", preflight),
        *([Step("canary", "write a canary into production's databases and take the backup that carries it (not in "
                "the RTO: it stands for the moment production is lost)", write_canary)] if wants_canary(ctx) else []),
        Step("provision", f"create the scratch Droplet {name} (tags {DRILL_TAG}, expiry)", host.provision),
        Step("boot", "wait until it answers SSH with its pinned key and cloud-init has finished", host.boot),
        fetch,
        Step("bootstrap", "upload the rendered templates, run the runbooks (no backup timer)", host.bootstrap_host),
        *([Step("golden", "clean the scratch host of secrets, data and host keys; snapshot it (not in the RTO); "
                "bootstrap it again; keep only the newest golden snapshot", golden.make)]
          if ctx.options.get("golden") == "make" else []),
        Step("restore", "fresh empty databases restored from the dumps; trees put in place", restore.restore),
        Step("verify", "fingerprints and tree listings against the manifest; the canary in every database",
             verify_with_canary),
        Step("start", "start the apps", app_steps.start),
        Step("health", "every health check against the scratch host's addresses", app_steps.health),
    ]
    return Plan(KIND, ctx.inv.site, steps)


# --- running ----------------------------------------------------------------------------


def drill(site: str, options: DrillOptions | None = None, *, root: Path | str | None = None,
          progress: Progress = quiet, where: Where | None = None) -> DrillResult:
    """Run a drill of ``site``; return its result (status passed only when everything passed and every objective held).

    Raise RelaunchError before anything is created when the inventory, secrets or cloud are wrong, or
    another drill of the site runs.
    """
    opts = options or DrillOptions()
    if opts.source not in SOURCES:
        raise RelaunchError(f"drill --from {opts.source!r}: one of {', '.join(SOURCES)} (offsite: the off-host store, "
                            "the copy that survives a dead host; host: the production host's backup directory)")
    inv, secrets, where = open_site(site, root, where)
    guarded = GuardedCloud(where.cloud)
    with run_lock(inv.site, KIND):
        cleaned = _cleanup(guarded, inv)  # earlier drills' orphans (we hold the lock: none is running)
        stale = Journal.load(inv.site, KIND)
        if stale is not None:
            stale.close("failed")
        journal = Journal.new(inv.site, KIND, opts.to_json())
        journal.state["new_name"] = f"{inv.site}-drill-{journal.id.lower()}"
        journal.masking(secrets.mask)
        expires = int((datetime.now(timezone.utc) + EXPIRY).timestamp())
        scratch_inv = inv.model_copy(update={"provider": inv.provider.model_copy(
            update={"tags": [*inv.provider.tags, DRILL_TAG, f"{_EXPIRES_PREFIX}{expires}"]})})
        ctx = RunContext(scratch_inv, secrets, guarded, where.key_path, journal,  # type: ignore[arg-type]
                         {**opts.to_json(), "role": "drill"}, where.dns_port, progress)
        error: str | None = None
        status = "failed"
        destroyed = False
        try:
            with sigterm_interrupts():
                try:
                    execute(plan_drill(ctx), ctx)
                    status = "passed"
                except RelaunchError as exc:
                    error = ctx.mask(str(exc))
                except Exception as exc:  # noqa: BLE001 - a drill runs unattended: whatever broke, the report and alert go out
                    error = ctx.mask(_unexpected(exc))
                    log.error("drill of %s: %s", inv.site, error)
                finally:
                    ctx.close()
                    if not opts.keep:
                        destroyed = _destroy_scratch(guarded, ctx)
        except KeyboardInterrupt:
            _write(ctx, "failed", "interrupted", destroyed, cleaned)
            journal.close("failed")
            raise
        # what production has that the reference this drill just recorded does not (read only)
        drift = check_drift(inv, where.key_path) if status == "passed" else None
        record, md, js = _write(ctx, status, error, destroyed, cleaned, drift)
        if record["status"] != "passed" and status == "passed":
            error = record.get("error") or "an objective was missed: " + "; ".join(record["missed"])
        journal.close(record["status"])
        sent = alerts.after_drill(inv, secrets, record, md)
        return DrillResult(record["status"], journal, record, md, js, cleaned, error, sent)


def _unexpected(exc: Exception) -> str:
    """A failure that is not a RelaunchError (a bug, a dropped connection) as one line: what and where it was raised.

    No traceback goes to the log: its frames would hold values the journal's masking never sees.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(exc).__name__}{where}: {exc}"


def _write(ctx: RunContext, status: str, error: str | None, destroyed: bool,
           cleaned: list[str], drift: dict[str, Any] | None = None) -> tuple[dict[str, Any], Path, Path]:
    state = ctx.state
    times = [datetime.fromisoformat(str(b["time"]).replace("Z", "+00:00")) for b in state.get("store_backups") or []
             if b.get("time")]
    gap = largest_gap(times, timedelta(hours=ctx.inv.backups.retention.keep_within_hours))
    extra = {"scratch_destroyed": destroyed, "cleaned_up": cleaned, "canary": (state.get("canary") or {}).get("value"),
             "largest_gap_seconds": None if gap is None else round(gap), "backups_in_store": len(times)}
    steps = [] if status == "passed" else ["see what failed above; the report is the place to start",
                                          *(["the scratch Droplet was kept (--keep): ssh root@" + str(state.get("new_ipv4"))
                                             + " with relaunch's key; `fab drill --cleanup` removes it"]
                                            if not destroyed and state.get("new_id") else [])]
    if drift is not None:
        extra["drift"] = drift
        if drift.get("drifted"):
            steps.append(f"production has {len(drift['findings'])} thing(s) the inventory and runbooks do not "
                         f"describe (a rebuild would not bring them back): `fab drift --site {ctx.inv.site} --draft`")
    record = record_from_run(ctx, status, error, steps, extra)
    missed = []
    obj = record["objectives"]
    if obj.get("rto_met") is False:
        missed.append(f"RTO {record['rto_seconds']:.0f} s > {obj['rto_minutes']} min")
    if obj.get("rpo_met") is False:
        missed.append(f"RPO {record['rpo_seconds']:.0f} s > {obj['rpo_minutes']} min")
    if gap is not None and gap > obj["rpo_minutes"] * 60:
        missed.append(f"largest gap between off-host backups {gap:.0f} s > RPO {obj['rpo_minutes']} min")
    record["missed"] = missed
    if missed and status == "passed":
        record["status"] = "failed"
        record["error"] = "objective missed: " + "; ".join(missed)
    if drift and drift.get("drifted") and record["status"] == "passed" and ctx.inv.drift.fail_drill:
        record["status"] = "failed"
        record["error"] = f"drift (drift.fail_drill): {drift['summary']}"
    md, js = write_report(ctx.inv.site, record)
    return record, md, js


def _destroy_scratch(cloud: GuardedCloud, ctx: RunContext) -> bool:
    droplet_id = ctx.state.get("new_id")
    if not droplet_id:
        # never created, or created but not yet journaled: look it up by name
        found = [d for d in cloud.list_droplets(DRILL_TAG) if d.name == ctx.state.get("new_name")]
        if not found:
            return True
        droplet_id = found[0].id
    cloud.destroy_droplet(int(droplet_id))
    forget_host(ctx.inv.site, ctx.state["new_name"])
    return True


def _cleanup(cloud: GuardedCloud, inv: Any) -> list[str]:
    """Destroy the site's scratch Droplets no running drill holds (call with the drill lock held)."""
    out = []
    for d in site_droplets(cloud, inv):  # type: ignore[arg-type]
        if DRILL_TAG in d.tags:
            cloud.destroy_droplet(d.id)
            forget_host(inv.site, d.name)
            out.append(f"destroyed {d.name} ({d.id}), left by an earlier drill")
    return out


def cleanup(site: str, *, root: Path | str | None = None, where: Where | None = None) -> list[str]:
    """Destroy scratch Droplets of ``site`` left by earlier drills; refuse while a drill runs."""
    inv, _secrets, where = open_site(site, root, where)
    holder = holder_pid(inv.site, KIND)
    if holder is not None:
        raise RelaunchError(f"a drill of {inv.site!r} is running (pid {holder}); its scratch Droplet is its own")
    with run_lock(inv.site, KIND):
        return _cleanup(GuardedCloud(where.cloud), inv)


def largest_gap(times: list[datetime], within: timedelta, now: datetime | None = None) -> float | None:
    """The largest gap in seconds between consecutive backup times within the window (and from the newest to now)."""
    now = now or datetime.now(timezone.utc)
    recent = sorted(t for t in times if now - t <= within)
    if not recent:
        return None
    points = [*recent, now]
    return max((b - a).total_seconds() for a, b in zip(points, points[1:]))

