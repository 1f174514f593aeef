"""A rebuild from backup while the old host still answers: the backup comes from the old host's backup directory.

``--source backup`` with the old host reachable (broken, but SSH answers): its own backups
(``/var/backups/relaunch/<ID>``, the runner's) are the newest there are and the closest —
no off-host store in between. The new host pulls the backup's directory straight from the
old host over the same temporary link as a live sync (:func:`relaunch.transfer.link`;
``tar`` on the old host through sudo for a sudoer, unpacked on the new host, never through
this machine), then it is checked against its manifest like one from the store. When the
old host does not answer, has no backup (or not the one asked for), or its copy does not
match its manifest, the caller goes to the off-host store instead.
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from typing import Any

from relaunch import transfer
from relaunch.backup.install import BACKUP_ROOT
from relaunch.backup.manifest import MANIFEST
from relaunch.databases.base import RemoteCommand
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext

log = logging.getLogger(__name__)

#: Seconds the old host gets to answer before the store is used instead.
OLD_HOST_TIMEOUT = 15


def local_backups(conn: Any) -> list[str]:
    """The IDs of the backups in the old host's backup directory that have a manifest, oldest first."""
    root = shlex.quote(BACKUP_ROOT)
    run = conn.run(f"cd {root} 2>/dev/null && for d in *; do [ -f \"$d/{MANIFEST}\" ] && echo \"$d\"; done; true",
                   warn=True, hide=True, in_stream=False, timeout=60)
    return sorted(line.strip() for line in run.stdout.splitlines() if line.strip() and "/" not in line)


def fetch_from_old_host(ctx: RunContext, new: Any, wanted: str | None, dest: str) -> tuple[str, str, list[str]] | None:
    """Pull backup ``wanted`` (default the newest) from the old host's backup directory into ``dest`` on the new host.

    Return (its directory on the new host, its ID, the IDs the old host holds), or None when the
    old host does not answer or does not hold it (said through ``ctx.say``). Raise RelaunchError
    if the copy itself fails part-way.
    """
    old = ctx.state.get("old") or {}
    if not old.get("address"):
        return None
    try:
        conn = ctx.old_conn(timeout=OLD_HOST_TIMEOUT)
        held = local_backups(conn)
    except (RelaunchError, OSError) as exc:
        ctx.drop_conn("old")
        ctx.say("data", f"the old host {old['address']} does not answer ({ctx.mask(str(exc))[:160]}): "
                        "using the off-host store")
        return None
    backup_id = wanted or (held[-1] if held else None)
    if backup_id is None or backup_id not in held:
        ctx.say("data", f"the old host {old['address']} holds {'no backup' if not held else 'no backup ' + str(wanted)} "
                        f"in {BACKUP_ROOT}: using the off-host store")
        return None
    ctx.say("data", f"pulling backup {backup_id} from the old host's {BACKUP_ROOT} onto the new host")
    new.run(f"install -d -m 0700 {shlex.quote(dest)}", hide=True, in_stream=False, timeout=60)
    with transfer.link(conn, old["host_key"], new, src_address=old["address"]) as ln:
        transfer.pull_dump_into(
            ln, RemoteCommand(("tar", "-C", BACKUP_ROOT, "-cf", "-", "--", backup_id), f"tar of backup {backup_id}"),
            new, RemoteCommand(("tar", "-C", dest, "-xf", "-", "--no-same-owner"), f"unpacking backup {backup_id}"),
            progress=lambda done, total: ctx.bytes("data", f"backup {backup_id}", done, total))
    return posixpath.join(dest, backup_id), backup_id, held
