"""``fab rebuild``: from a broken production host to a verified, switched-over new one.

The plan (:func:`plan_rebuild`) is the pipeline's steps in order; the data source is
chosen in preflight: a final sync from the old host when it answers (``live``, RPO 0),
else the newest backup that verifies, fetched from the off-host store by the new host
(``backup``, RPO its age). With the backup source the data step comes before the
bootstrap: the backup's manifest says which images production ran.

A run is journaled (:mod:`relaunch.pipeline.journal`): ``resume=True`` continues a paused
run from its first unfinished step; ``abort`` ends a paused run before its switch and puts
the old host back in service. One rebuild per site at a time (a lock); a paused one
refuses a new one. Every run, whatever its end, writes a report.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaunch import apps, golden
from relaunch.cloud import Cloud
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.events import Event, Progress, quiet
from relaunch.pipeline.journal import Journal, holder_pid, now_iso, run_lock
from relaunch.pipeline.plan import Plan, Step, execute, sigterm_interrupts
from relaunch.poll import attempts
from relaunch.pipeline.report import write_report
from relaunch.pipeline.report_record import record_from_run
from relaunch.pipeline.steps import apps as app_steps
from relaunch.pipeline.steps import data, host, restore
from relaunch.pipeline.steps import switch as switch_step
from relaunch.backup.install import RESTIC_PASSWORD_FILE, STORE_KEY
from relaunch.pipeline.store import missing_for_backup, sandbox_store_record
from relaunch.provision import wants_ipv6
from relaunch.remote import HostKeyMismatch, NotRoot, check_root, ensure_client_key
from relaunch.state import HostRecord, forget_host, production_record

log = logging.getLogger(__name__)

KIND = "rebuild"
#: The steps that depend on the data source: a resume that changes the source runs them again.
SOURCE_STEPS = ("data", "restore", "verify", "start", "health")


@dataclass
class RebuildOptions:
    """The choices of one rebuild (journaled with it, so a resume makes the same ones)."""

    source: str | None = None  # None: live when the old host answers, else backup
    backup_id: str | None = None
    region: str | None = None
    size: str | None = None
    switch: bool = True
    settle: float | None = 0.0
    fallback_to_backup: bool = False
    golden: str = "use"  # use: the newest golden snapshot made from the current recipe (relaunch.golden); off

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RebuildResult:
    status: str  # passed, failed, planned (dry run)
    plan: Plan
    journal: Journal
    report_md: Path | None = None
    report_json: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# --- preflight ------------------------------------------------------------------------


def preflight(ctx: RunContext) -> dict[str, Any]:
    """Check what the rebuild needs before anything is created; choose the data source, and say why."""
    inv, opts = ctx.inv, ctx.options
    ctx.cloud.check_account()
    ensure_client_key(ctx.key_path) if inv.provider.kind == "sandbox" else _check_key(ctx.key_path)
    record = production_record(inv.site, inv.production.droplet_name)
    old: dict[str, Any] = {}
    if record is not None:
        old = {"name": record.name, "droplet_id": record.droplet_id, "address": record.ipv4,
               "user": record.user, "host_key": record.host_key, "adopted": record.adopted}
    ctx.journal.record(old=old)
    source, reason, images = opts.get("source"), "", {}
    if source == "backup":
        reason = "asked for (--source backup)"
    elif not old:
        if source == "live":
            raise RelaunchError(f"--source live: relaunch knows no production host of site {inv.site!r} "
                                "(no pinned host key: `fab adopt` a host relaunch did not build)")
        source, reason = "backup", "relaunch knows no production host to sync from"
    else:
        try:
            conn = ctx.old_conn(timeout=15)
            check_root(conn, "production.user")  # root, or a sudoer with NOPASSWD: every command runs as root
            images = apps.deployed_images(conn, inv, hand_built=record.adopted)
            source, reason = "live", f"the old host {old['address']} answers: final sync, nothing lost"
            for warning in secrets_only_on_production(inv, ctx.secrets, conn):
                ctx.say("preflight", f"warning: {warning}")
                ctx.journal.record(preflight_warnings=[*ctx.state.get("preflight_warnings", []), warning])
        except (HostKeyMismatch, NotRoot):
            raise
        except (RelaunchError, OSError) as exc:
            if source == "live":
                raise RelaunchError(f"--source live: the old host does not answer: {ctx.mask(str(exc))}") from None
            ctx.drop_conn("old")
            source, reason = "backup", f"the old host does not answer ({ctx.mask(str(exc))[:160]})"
    if source == "backup":
        problems = missing_for_backup(inv)
        if problems:
            raise RelaunchError(f"a rebuild of {inv.site!r} from backup cannot start: " + "; ".join(problems))
    ctx.say("preflight", f"data source: {source} ({reason})")
    return {"source": source, "source_reason": reason, "images": images, **golden.choose_for(ctx)}


#: Files of the backup on a production host that hold a secret a rebuild may need (relaunch.backup.install).
_PRODUCTION_SECRETS = {"store_key": STORE_KEY, "restic_password": RESTIC_PASSWORD_FILE}


def secrets_only_on_production(inv: Inventory, secrets: Any, conn: Any) -> list[str]:
    """What a rebuild needs that exists only on production, read on ``conn``'s host (the old one); one line each.

    The key that reads an SFTP off-host store, when the inventory has none
    (``backups.offsite.ssh_key`` and ``known_hosts``) and relaunch cannot log in to the store to
    make one; the store's password, when production's differs from the inventory's. Only
    presence and sha256 are read there, never a secret's content. A rebuild from the old host
    works without these; the day the old host is gone, one from backup would not.
    """
    off = inv.backups.offsite
    if off is None:
        return []
    script = "; ".join(f"if [ -f {shlex.quote(p)} ]; then echo {name} $(sha256sum < {shlex.quote(p)} | cut -c1-64); fi"
                       for name, p in _PRODUCTION_SECRETS.items())
    run = conn.run(script + "; true", warn=True, hide=True, in_stream=False, timeout=60)
    found = dict(line.split()[:2] for line in run.stdout.splitlines() if len(line.split()) >= 2)
    out = []
    if off.kind == "sftp" and not (off.ssh_key and off.known_hosts) and sandbox_store_record(inv) is None:
        where = f"it exists only on production ({STORE_KEY})" if "store_key" in found else "production has none either"
        out.append(f"the key that reads the off-host store is not in the inventory: {where}. With production gone, no new "
                   "host could fetch a backup: put a key authorized on the store in backups.offsite.ssh_key and the store's "
                   "host key in backups.offsite.known_hosts")
    local = hashlib.sha256(secrets[off.password].reveal().encode()).hexdigest()
    if found.get("restic_password") not in (None, local):
        out.append(f"backups.offsite.password is not the password production's backups use ({RESTIC_PASSWORD_FILE} "
                   "differs): the store's backups open only with production's copy; put that one in the inventory's secret")
    return out


def _check_key(path: Path) -> None:
    if not path.exists():
        raise RelaunchError(f"provider.ssh_key: {path} does not exist (the private key relaunch logs in with)")
    if path.stat().st_mode & 0o077:
        raise RelaunchError(f"provider.ssh_key: {path} is readable by group or others (chmod 600 {path})")


# --- the plan ---------------------------------------------------------------------------


def plan_rebuild(ctx: RunContext) -> Plan:
    """The rebuild's steps for this site and, once preflight ran, this data source."""
    inv, opts, state = ctx.inv, ctx.options, ctx.state
    source = state.get("source") or opts.get("source") or "live when the old host answers, else backup"
    name = state.get("new_name")
    region, size = opts.get("region") or inv.provider.region, opts.get("size") or inv.provider.size
    pre = Step("preflight", "check the token, the SSH key and the secrets; probe the old host; choose the data source",
               preflight)
    image = golden.describe(state) if state.get("golden_image") else f"image {inv.provider.image}"
    prov = Step("provision", f"create Droplet {name} ({size} in {region}, {image}"
                f"{', IPv6' if wants_ipv6(inv) else ''}, tags {', '.join(inv.provider.tags) or 'none'})", host.provision)
    boot = Step("boot", "wait until it answers SSH with its pinned key and cloud-init has finished", host.boot)
    boot_strap = Step("bootstrap", "upload the rendered templates, run the runbooks (backup timer off)"
                      + ("; the steps the golden snapshot holds must report no change" if state.get("golden_image") else ""),
                      host.bootstrap_host)
    if source == "backup":
        which = opts.get("backup_id") or "the newest backup"
        dat = Step("data", f"the new host fetches {which} from the old host's backup directory when it answers, else "
                   "from the off-host store, and checks it against its manifest", data.data_any)
        # the backup's manifest says which images production ran: fetched before the bootstrap (unless a live
        # attempt already bootstrapped this host)
        middle = [boot_strap, dat] if ctx.journal.done("bootstrap") else [dat, boot_strap]
    else:
        dat = Step("data", "stop the old host's writers, final dump of every database and copy of every tree, "
                   "pulled host to host by the new host" + (" (the newest backup if the old host is lost on the way)"
                                                           if opts.get("fallback_to_backup") else ""), data.data_any)
        middle = [boot_strap, dat]
    steps = [pre, prov, boot, *middle,
             Step("restore", "fresh empty databases restored from the dumps; trees put in place", restore.restore),
             Step("verify", "fingerprints and tree listings on the new host against the source's", restore.verify),
             Step("start", "start the apps", app_steps.start),
             Step("health", "every health check against the new host's addresses (Host header, SNI)", app_steps.health)]
    if opts.get("switch", True):
        records = ", ".join(f"{r.type} {r.name}" for r in inv.dns.records)
        what = f"Reserved IP {inv.dns.reserved_ip}" if inv.dns.reserved_ip else f"records {records} in {inv.dns.zone}"
        steps.append(Step("switch", f"point {what} at the new host, verify on the authoritative servers",
                          switch_step.switch))
        steps.append(Step("handover", "the new host becomes production (its drift reference recorded, backup "
                          "installed, timer on, first backup; "
                          "not in the RTO: the site already answers); the old host's apps and backup timer stay off",
                          switch_step.handover))
    facts = [
        ("site", inv.site),
        ("new Droplet", f"{name} — {size} in {region}, image {inv.provider.image}"),
        ("starts from", golden.describe(state) if "golden_reason" in state else
         ("the base image (--no-golden)" if opts.get("golden") == "off" else
          "the newest golden snapshot made from the current runbooks, templates and inventory, if any")),
        ("old host", _describe_old(state.get("old"))),
        ("data source", f"{source}" + (f" ({state['source_reason']})" if state.get("source_reason") else "")),
        ("records", "not switched (--no-switch)" if not opts.get("switch", True) else
         (f"Reserved IP {inv.dns.reserved_ip}" if inv.dns.reserved_ip else
          ", ".join(f"{r.type} {r.name}.{inv.dns.zone}" if r.name != "@" else f"{r.type} {inv.dns.zone}"
                    for r in inv.dns.records))),
        ("objectives", f"RTO {inv.objectives.rto_minutes} min, RPO {inv.objectives.rpo_minutes} min"),
    ]
    return Plan(KIND, inv.site, steps, facts)


def _describe_old(old: dict[str, Any] | None) -> str:
    if not old:
        return "none known"
    return f"{old.get('name')} at {old.get('address')}"


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Which cloud a run talks to, its authoritative DNS port (the sandbox's) and the key it logs in with."""

    cloud: Cloud
    dns_port: int | None
    key_path: Path


def open_site(site: str, root: Path | str | None, where: Where | None = None) -> tuple[Inventory, Any, Where]:
    """Load the inventory and its secrets, open its cloud (unless given); raise before anything is created if any is wrong."""
    from relaunch.backup.site import login_key
    from relaunch.dns.switch import open_cloud

    inv = load_site(site, root)
    secrets = resolve_all(inv)
    if where is None:
        cloud, dns_port = open_cloud(inv)
        where = Where(cloud, dns_port, login_key(inv))
    return inv, secrets, where


def resume_from_backup(journal: Journal, backup_id: str | None) -> None:
    """A paused run resumed with ``--source backup`` (the old host lost part-way: in the data step, or before the
    verify step read it) goes on from that backup; the data step and every step after it up to the switch run
    again. A run already on a backup is left as it is."""
    if journal.state.get("source") == "backup":
        return
    journal.data["options"].update(source="backup", backup_id=backup_id)
    journal.state.update(source="backup", source_reason="asked for on resume (--source backup)")
    for name in SOURCE_STEPS:
        journal.steps.pop(name, None)


def rebuild(site: str, options: RebuildOptions | None = None, *, root: Path | str | None = None,
            resume: bool = False, dry_run: bool = False, progress: Progress = quiet,
            where: Where | None = None) -> RebuildResult:
    """Run (or with ``dry_run`` only plan) a rebuild of ``site``; return its result with the report's paths.

    Raise RelaunchError before anything is created when the inventory, its secrets or the
    cloud are wrong, when another rebuild runs, or when a paused one exists and
    ``resume`` is False (the message says how to resume or abort).
    """
    inv, secrets, where = open_site(site, root, where)
    with run_lock(inv.site, KIND):
        if not dry_run:
            stop_drill(inv.site, progress)
        existing = Journal.load(inv.site, KIND)
        if resume:
            if existing is None:
                raise RelaunchError(f"there is no paused rebuild of site {inv.site!r} to resume")
            journal = existing
            journal.data["attempts"] = int(journal.data.get("attempts", 1)) + 1
            journal.data["status"] = "running"
            if options is not None and options.source == "backup":
                resume_from_backup(journal, options.backup_id)
        else:
            if existing is not None and not dry_run:
                raise RelaunchError(
                    f"a rebuild of site {inv.site!r} started {existing.data.get('started_at')} is paused "
                    f"({_where(existing)}); continue it with `fab rebuild --resume --site {inv.site}` or end it with "
                    f"`fab rebuild --abort --site {inv.site}`")
            journal = Journal.new(inv.site, KIND, (options or RebuildOptions()).to_json())
            journal.state["new_name"] = f"{inv.site}-{journal.id.lower()}"
        journal.masking(secrets.mask)
        ctx = RunContext(inv, secrets, where.cloud, where.key_path, journal, dict(journal.data["options"]),
                         where.dns_port, progress)
        try:
            if dry_run:
                return _dry_run(ctx)
            return _run(ctx)
        finally:
            ctx.close()


def stop_drill(site: str, progress: Progress = quiet, timeout: float = 300) -> int | None:
    """A drill never holds a rebuild back: stop a running drill of ``site`` (SIGTERM: it destroys its scratch
    Droplet and writes its report) and wait until it has let go of its lock; return its pid, or None.

    Raise RelaunchError if it is still running after ``timeout`` seconds.
    """
    pid = holder_pid(site, "drill")
    if pid is None:
        return None
    progress(Event("info", "preflight", f"a drill of {site} is running (pid {pid}): stopping it, it cleans up after itself"))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in attempts(timeout, first=0.2, cap=2.0):
        if holder_pid(site, "drill") is None:
            progress(Event("info", "preflight", f"the drill (pid {pid}) stopped"))
            return pid
    raise RelaunchError(f"the drill of {site} (pid {pid}) did not stop within {timeout:.0f} s after SIGTERM; "
                        f"stop it (kill {pid}), then run `fab drill --cleanup --site {site}` and the rebuild again")


def _dry_run(ctx: RunContext) -> RebuildResult:
    """Probe like preflight (nothing is created, nothing journaled) and return the plan."""
    ctx.journal.save = lambda: None  # type: ignore[method-assign]
    try:
        ctx.state.update(preflight(ctx))
    except RelaunchError as exc:
        plan = plan_rebuild(ctx)
        return RebuildResult("failed", plan, ctx.journal, error=str(exc))
    return RebuildResult("planned", plan_rebuild(ctx), ctx.journal)


def _run(ctx: RunContext) -> RebuildResult:
    journal = ctx.journal
    error: str | None = None
    status = "failed"
    with sigterm_interrupts():
        try:
            execute(Plan(KIND, ctx.inv.site, plan_rebuild(ctx).steps[:1]), ctx)  # preflight decides the rest
            plan = plan_rebuild(ctx)
            execute(plan, ctx)
            status = "passed"
        except KeyboardInterrupt:
            error = "interrupted"
            plan = plan_rebuild(ctx)
            _report(ctx, "failed", error)
            raise
        except RelaunchError as exc:
            error = ctx.mask(str(exc))
            plan = plan_rebuild(ctx)
    if status == "passed":
        journal.state["finished"] = now_iso()
    md, js, record = _report(ctx, status, error)
    if status == "passed":
        journal.close("passed")
    return RebuildResult(status, plan, journal, md, js, record, error)


def _report(ctx: RunContext, status: str, error: str | None) -> tuple[Path, Path, dict[str, Any]]:
    record = record_from_run(ctx, status, error, next_steps=_next_steps(ctx, status))
    md, js = write_report(ctx.inv.site, record)
    return md, js, record


def _next_steps(ctx: RunContext, status: str) -> list[str]:
    site, state = ctx.inv.site, ctx.state
    new = state.get("new_name")
    old = (state.get("old") or {}).get("name")
    warnings = [f"before the next outage: {w}" for w in state.get("preflight_warnings", [])]
    if status == "passed":
        steps = warnings
        if ctx.options.get("switch", True):
            steps.append(f"watch the site for a while; to go back: `fab dns-switch --to old --site {site}` "
                         "(then start the old host's apps again)")
            if old:
                steps.append(f"when you are sure (a day or a week), destroy the old Droplet {old} "
                             f"(id {(state.get('old') or {}).get('droplet_id')}) in the DigitalOcean console or API")
        else:
            steps.append(f"the new host {new} is verified but not switched: `fab dns-switch --to {new} --site {site}`")
        return steps
    return [*warnings, f"see what failed above; continue with `fab rebuild --resume --site {site}`",
            f"or give up and put the old host back in service: `fab rebuild --abort --site {site}`",
            *( [f"the new Droplet {new} (id {state.get('new_id')}) is kept for inspection: ssh root@{state.get('new_ipv4')} "
                "with relaunch's key"] if state.get("new_id") else []),
            *[f"the half-created Droplet {d['name']} (id {d['id']}{', tagged ' + d['tagged'] if d.get('tagged') else ''}) "
              "is kept for inspection; it is billed: destroy it when done" for d in state.get("failed_droplets") or []]]


def _where(journal: Journal) -> str:
    failed = [n for n, s in journal.steps.items() if s.get("status") in ("failed", "running")]
    return f"stopped at {failed[0]}: {journal.steps[failed[0]].get('error')}" if failed else "between steps"


# --- abort ------------------------------------------------------------------------------


@dataclass
class AbortResult:
    undone: list[str]
    journal: Path | None


def abort(site: str, *, root: Path | str | None = None, destroy: bool = False, where: Where | None = None) -> AbortResult:
    """End a paused rebuild before its switch: start the old host's apps and timer again if they were stopped.

    The new Droplet is kept for inspection unless ``destroy``. Raise RelaunchError when there
    is no paused rebuild, or when its switch already happened (then `fab dns-switch --to old`).
    """
    inv, secrets, where = open_site(site, root, where)
    cloud = where.cloud
    with run_lock(inv.site, KIND):
        journal = Journal.load(inv.site, KIND)
        if journal is None:
            raise RelaunchError(f"there is no paused rebuild of site {inv.site!r} to abort")
        if journal.done("switch") or journal.state.get("switched"):
            raise RelaunchError("this rebuild already switched the records: go back with "
                                f"`fab dns-switch --to old --site {inv.site}`")
        journal.masking(secrets.mask)
        ctx = RunContext(inv, secrets, cloud, where.key_path, journal, dict(journal.data["options"]), where.dns_port)
        undone: list[str] = []
        try:
            if journal.state.get("old_writers_stopped"):
                conn = ctx.old_conn(timeout=30)
                apps.start_apps(conn, inv, hand_built=ctx.old_hand_built)
                undone.append(f"started the apps on the old host {conn.host} again")
                if journal.state.get("old_backup_timer_was_on"):
                    apps.enable_backup_timer(conn, True)
                    undone.append("turned the old host's backup timer on again")
            for failed in journal.state.get("failed_droplets") or []:
                if destroy:
                    cloud.destroy_droplet(int(failed["id"]))
                    forget_host(inv.site, failed["name"])
                    undone.append(f"destroyed the half-created Droplet {failed['name']}")
                else:
                    undone.append(f"kept the half-created Droplet {failed['name']} (id {failed['id']}) for inspection")
            if journal.state.get("new_id"):
                if destroy:
                    cloud.destroy_droplet(int(journal.state["new_id"]))
                    undone.append(f"destroyed the new Droplet {journal.state.get('new_name')}")
                else:
                    undone.append(f"kept the new Droplet {journal.state.get('new_name')} "
                                  f"(id {journal.state['new_id']}) for inspection")
        finally:
            ctx.close()
        journal.state["abort"] = undone
        return AbortResult(undone, journal.close("aborted"))


# --- the data path alone (the benchmark's entry point) -------------------------------------


def data_restore_verify(site: str, old: HostRecord, new: HostRecord, *, root: Path | str | None = None,
                        where: Where | None = None, progress: Progress = quiet) -> dict[str, float]:
    """Run the rebuild's data (live), restore and verify steps alone, from host ``old`` onto host ``new``.

    Both must be recorded hosts of the site (pinned keys), ``new`` already bootstrapped. Nothing
    is journaled and nothing is switched; the old host's writers are stopped (and stay so).
    Return the seconds each phase took. Raise RelaunchError as the steps do.
    """
    inv, secrets, where = open_site(site, root, where)
    journal = Journal.ephemeral(inv.site, "bench", {})
    journal.state.update(new_name=new.name, source="live", old={
        "name": old.name, "droplet_id": old.droplet_id, "address": old.ipv4, "user": old.user,
        "host_key": old.host_key})
    phases: dict[str, float] = {}

    def sink(event: Any) -> None:
        if event.kind == "done" and event.seconds is not None:
            phases[event.step] = event.seconds
        progress(event)

    ctx = RunContext(inv, secrets, where.cloud, where.key_path, journal, {}, where.dns_port, sink)
    try:
        execute(Plan(KIND, inv.site, [Step("data", "final sync, host to host", data.data_live),
                                      Step("restore", "restore from the dumps", restore.restore),
                                      Step("verify", "fingerprints and listings", restore.verify)]), ctx)
    finally:
        ctx.close()
    return phases
