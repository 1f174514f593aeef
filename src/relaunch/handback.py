"""Going back after a rebuild's switch: ``fab dns-switch --to old`` puts the old host back in service.

A rebuild that switched left the old host with its apps and backup timer stopped and
disabled (so a reboot there brings no second writer and no stale "newest" backup). Going
back to it therefore takes more than the records: its apps are started and enabled again
BEFORE the switch (the switch's health checks run against it), then the records go back
through the dns-switch code (``old``: what they held before the rebuild's switch), then its
backup timer is turned on again if it was on before the rebuild, and the new host's backup
timer is turned off (it no longer serves: its backups would be the newest of a site that
does not write there). Roles follow: the old host is production again, the new one a spare.

If the switch fails or is refused, the old host's apps are stopped and disabled again:
nothing is left half-done. What was undone is returned, one line each, for the CLI to say;
so is what cannot be undone: rows written on the new host after the rebuild's switch are
not on the old host.

Without a switched rebuild to go back from (e.g. a plain ``dns-switch --to NAME`` earlier),
or for a dry run, this is the plain switch to ``old``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaunch import apps
from relaunch.cloud import Cloud
from relaunch.dns.switch import SwitchResult
from relaunch.dns.switch import switch as dns_switch
from relaunch.errors import RelaunchError
from relaunch.health import wait_healthy
from relaunch.inventory.model import Inventory
from relaunch.pipeline.journal import now_iso, runs_dir
from relaunch.remote import connect, wait_for_ssh
from relaunch.state import load_hosts, set_role, write_json_atomic

log = logging.getLogger(__name__)

#: Seconds the old host's apps get to answer every health check after they start.
HEALTH_TIMEOUT = 180


@dataclass
class HandBack:
    """The switch's result, what was undone (one line each) and what could not be."""

    result: SwitchResult
    undone: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def last_switched_rebuild(site: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest finished rebuild of ``site`` that switched the records and was not gone back from, or None."""
    found = []
    for path in runs_dir(site).glob("rebuild-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        state = data.get("state") or {}
        if data.get("status") == "passed" and state.get("switched") and (state.get("old") or {}).get("address") \
                and not state.get("handed_back"):
            found.append((str(data.get("finished_at") or ""), path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda f: (f[0], f[1].name))
    return path, data


def switch_to_old(cloud: Cloud, inv: Inventory, key_path: Path, *, dry_run: bool = False,
                  progress: Callable[[str], None] | None = None, switch: Callable[..., SwitchResult] = dns_switch,
                  **switch_options: Any) -> HandBack:
    """Switch ``inv``'s site back to the host it ran on before the last rebuild, and put that host back in service.

    ``switch_options`` go to :func:`relaunch.dns.switch.switch` (via, force, wait_ttl, dns_port,
    settle ...). Raise RelaunchError when the old host does not answer (nothing changed), or as the
    switch does (the old host's apps are stopped and disabled again first).
    """
    say = progress or (lambda msg: log.info("%s", msg))
    found = None if dry_run else last_switched_rebuild(inv.site)
    if found is None:
        return HandBack(switch(cloud, inv, "old", dry_run=dry_run, progress=progress, **switch_options))
    path, run = found
    state = run["state"]
    old = state["old"]
    hand_built = bool(old.get("adopted"))
    conn = connect(old["address"], old["host_key"], key_path, user=old.get("user", "root"))
    back = HandBack(result=None)  # type: ignore[arg-type]
    try:
        try:
            wait_for_ssh(conn, timeout=30)
        except RelaunchError as exc:
            raise RelaunchError(f"the old host {old.get('name')} ({old['address']}) does not answer ({exc}); nothing was "
                                f"changed. To point the records at it anyway: `fab dns-switch --to {old['address']} "
                                "--force`") from None
        say(f"starting the database servers and the apps on the old host {old['address']} again")
        apps.start_databases(conn, inv)  # the outage may have left them down too
        started = apps.start_apps(conn, inv, hand_built=hand_built)
        try:
            # the apps need a moment to answer: wait for them (bounded) before the switch's own checks
            ready = wait_healthy(inv, [old["address"]], timeout=HEALTH_TIMEOUT,
                                 on_attempt=lambda r: say(f"old host: {sum(x.ok for x in r.results)}/{len(r.results)} "
                                                          "health checks passing"))
            if not ready.ok:
                failed = "; ".join(r.describe() for r in ready.failures())
                raise RelaunchError(f"the old host {old['address']} does not pass its health checks after its apps "
                                    f"started ({failed}); its apps were stopped again, the records left as they are")
            back.result = switch(cloud, inv, "old", progress=progress, **switch_options)
        except BaseException:
            with contextlib.suppress(Exception):
                apps.stop_writers(conn, inv, disable=True, hand_built=hand_built)
            raise
        back.undone.append(f"old host {old.get('name')} ({old['address']}): apps {', '.join(started)} started and "
                           "enabled again")
        if state.get("old_backup_timer_was_on"):
            apps.enable_backup_timer(conn, True)
            back.undone.append(f"old host {old.get('name')}: backup timer on again")
    finally:
        conn.close()
    back.undone.append(f"records: back to what they were before rebuild {run.get('id')} switched them")
    if old.get("name"):
        set_role(inv.site, old["name"], "production")
    new_name = state.get("new_name")
    new = load_hosts(inv.site).get(new_name or "")
    if new is not None:
        set_role(inv.site, new.name, "spare")
        back.undone.append(_new_host_timer_off(new, key_path))
        back.warnings.append(
            f"whatever was written on the new host {new.name} ({new.ipv4}) after rebuild {run.get('id')} switched to it "
            f"({run.get('finished_at')}) is not on the old host; the new host keeps running, serving nothing, until "
            "you destroy it")
    state["handed_back"] = {"at": now_iso(), "undone": back.undone}
    write_json_atomic(path, run)
    return back


def _new_host_timer_off(new: Any, key_path: Path) -> str:
    """Turn the new host's backup timer off; say what happened (a host that does not answer is said, not fatal)."""
    try:
        conn = connect(new.ipv4, new.host_key, key_path, user=new.user)
        try:
            wait_for_ssh(conn, timeout=30)
            apps.enable_backup_timer(conn, False)
        finally:
            conn.close()
    except (RelaunchError, OSError) as exc:
        return f"new host {new.name}: its backup timer could NOT be turned off ({exc}); do it there by hand"
    return f"new host {new.name}: backup timer off (a spare now)"
