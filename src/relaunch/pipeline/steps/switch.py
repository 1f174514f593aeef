"""The switch and handover steps: only after every check passed, point the site at the new host, then hand production over.

``switch``: through the dns-switch code (records or the Reserved IP, health re-checked,
journaled, rolled back on failure, verified on the authoritative servers, TTL put back
after the settle time). The site answers from the new host when it ends: the RTO ends there.

``handover``: the new host becomes production (its backup installed, timer on, first
backup taken) and the old host's apps and backup timer stay stopped and disabled, so a
reboot there brings no second writer and no stale "newest" backup. Its time is reported
apart (:data:`relaunch.pipeline.UNTIMED`): the site is already back while it runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

from relaunch import apps
from relaunch.backup.install import install as install_backup
from relaunch.backup.site import own_store_access
from relaunch.backup.status import run_now
from relaunch.dns.switch import switch as dns_switch
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.steps import apps as app_steps
from relaunch.pipeline.store import sandbox_store_record
from relaunch.provision import open_host
from relaunch.state import set_role


def switch(ctx: RunContext) -> dict[str, Any]:
    inv = ctx.inv
    via = "reserved-ip" if inv.dns.reserved_ip else "dns"
    result = dns_switch(ctx.cloud, inv, ctx.state["new_name"], via=via, dns_port=ctx.dns_port,
                        settle=ctx.options.get("settle"), progress=lambda msg: ctx.say("switch", msg))
    switched = [{"name": c.name, "type": c.type, "before": c.before_data, "after": c.after_data} for c in result.applied]
    ctx.journal.record(switched=switched, switch_verified=result.ok)
    if not result.ok:
        raise RelaunchError("the records were switched but the authoritative name servers do not answer the new "
                            "address yet; check with `fab dns-switch --to new --dry-run`, or go back with "
                            "`fab dns-switch --to old`")
    old = ctx.state.get("old") or {}
    set_role(inv.site, ctx.state["new_name"], "production")
    if old.get("name"):
        set_role(inv.site, old["name"], "retired")
    return {}


def handover(ctx: RunContext) -> dict[str, Any]:
    """After the switch: record the new host's drift reference (as health left it), keep the old host's writers
    off, make the new host production (backup on, first backup)."""
    reference = app_steps.record_drift_reference(ctx, "handover") if app_steps.reference_in_handover(ctx) else {}
    notes = _retire_old(ctx)
    notes += _backups_on_new(ctx)
    return {"handover": notes, **reference}


def _retire_old(ctx: RunContext) -> list[str]:
    """Keep the old host's apps and backup timer stopped and disabled (when it still answers)."""
    try:
        conn = ctx.old_conn(timeout=15)
        apps.stop_writers(conn, ctx.inv, disable=True, hand_built=ctx.old_hand_built)
        return ["old host: apps and backup timer stopped and disabled"]
    except (RelaunchError, OSError) as exc:
        return [f"old host did not answer ({ctx.mask(str(exc))[:200]}): disable its apps and backup timer by hand "
                "before it ever boots again"]


def _backups_on_new(ctx: RunContext) -> list[str]:
    """Install the backup on the new production host, turn its timer on, take its first backup."""
    conn, inv = ctx.new_conn(), ctx.inv
    notes = []
    store = sandbox_store_record(inv)
    off = inv.backups.offsite
    if store is not None:
        store_conn = open_host(store, ctx.key_path, timeout=60)
        try:
            install_backup(conn, inv, ctx.secrets, store, store_conn)  # the host's own key, authorized there
        finally:
            with contextlib.suppress(Exception):
                store_conn.close()
    elif access := own_store_access(inv, ctx.secrets):
        install_backup(conn, inv, ctx.secrets, **access)
        if off is not None and not off.append_only_key:
            notes.append("new host: it reaches the off-host store with backups.offsite.ssh_key (this machine knows no "
                         "root login on the store to authorize a key of its own); give production its own, append-only "
                         "key: backups.offsite.append_only_key")
    else:
        install_backup(conn, inv, ctx.secrets)
    run = run_now(conn, inv.site)
    return [f"new host: backup installed and its timer on; first backup {run.id} taken", *notes]
