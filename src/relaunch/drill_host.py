"""``fab drill --from host``: the scratch host gets a backup from production's own backup directory.

The default drill restores from the off-host store (the copy that survives a dead host).
``--from host`` rehearses the other copy: ``/var/backups/relaunch/<ID>`` on the production
host, as the backup runner left it. Production is only read, never changed:

- on production one command runs, ``tar -C /var/backups/relaunch -cf - ID`` (it reads the
  backup's directory and writes to stdout, nothing else); no key is authorized there, no
  file is written, no service touched;
- the stream crosses THIS machine (two SSH channels, one to each host, bytes copied
  between them in memory) into ``tar -x`` on the scratch host. Unlike the rebuild's live
  pull (:mod:`relaunch.transfer`, the new host pulls over a temporary authorized key) this
  relays through the operator's line — the price of leaving production's
  ``authorized_keys`` alone. A site's backup is small next to its trees; a slow line makes
  it slower, never wrong;
- the scratch host checks every artifact against the manifest (sha256 and size) before
  anything is restored, as for a backup from the store, and the journal gets the same
  facts (dumps, archives, fingerprints, images, RPO) so the later steps cannot tell the two
  sources apart.

The largest gap is measured between the backups on the host (the store is not read).
"""

from __future__ import annotations

import logging
import posixpath
import shlex
import time
from typing import Any

from fabric import Connection

from relaunch.backup.install import BACKUP_ROOT
from relaunch.backup.manifest import MANIFEST, parse
from relaunch.backup.offsite import verify_remote_dir
from relaunch.backup.runner import parse_id
from relaunch.errors import RelaunchError
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.steps.data import backup_facts, workdir

log = logging.getLogger(__name__)

#: Bytes per read from production's channel.
CHUNK = 1 << 20
#: Seconds a channel may stay silent before the copy is given up.
SILENCE = 600
#: Seconds the whole copy may take.
DEADLINE = 6 * 3600


def host_backups(conn: Connection) -> list[dict[str, Any]]:
    """The complete backups in production's backup directory (a directory with a manifest), oldest first: [{id, time}]."""
    root = shlex.quote(BACKUP_ROOT)  # no directory yet: no backup yet
    run = conn.run(f"[ ! -d {root} ] || find {root} -mindepth 2 -maxdepth 2 -name {MANIFEST} -type f",
                   hide=True, warn=True, in_stream=False, timeout=120)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: cannot list the backups in {BACKUP_ROOT}: {run.stderr.strip()[-400:]}")
    found = []
    for line in run.stdout.split():
        backup_id = posixpath.basename(posixpath.dirname(line))
        when = parse_id(backup_id)
        if when is not None:
            found.append({"id": backup_id, "time": when.isoformat().replace("+00:00", "Z")})
    return sorted(found, key=lambda b: (b["time"], b["id"]))


def relay(src: Connection, src_cmd: str, dst: Connection, dst_cmd: str, deadline: float = DEADLINE) -> int:
    """Run ``src_cmd`` on ``src`` and ``dst_cmd`` on ``dst``, the first's stdout into the second's stdin; return bytes.

    Raise RelaunchError naming the side that failed (its exit status and stderr's tail), or when
    either side stays silent for ``SILENCE`` seconds or the whole copy passes ``deadline``.
    """
    out_ch = src.client.get_transport().open_session()  # type: ignore[union-attr]
    in_ch = dst.client.get_transport().open_session()  # type: ignore[union-attr]
    total = 0
    try:
        for ch in (out_ch, in_ch):
            ch.settimeout(SILENCE)
        out_ch.exec_command(src_cmd)
        in_ch.exec_command(dst_cmd)
        end = time.monotonic() + deadline
        while True:
            if time.monotonic() > end:
                raise RelaunchError(f"copying from {src.host} to {dst.host} took longer than {deadline:.0f} s; given up")
            try:
                chunk = out_ch.recv(CHUNK)
            except TimeoutError:
                raise RelaunchError(f"{src.host} sent nothing for {SILENCE} s while copying to {dst.host}; given up") from None
            if not chunk:
                break
            in_ch.sendall(chunk)
            total += len(chunk)
        in_ch.shutdown_write()
        src_status, dst_status = out_ch.recv_exit_status(), in_ch.recv_exit_status()
        if src_status != 0:
            err = out_ch.recv_stderr(65536).decode(errors="replace").strip()
            raise RelaunchError(f"{src.host}: {src_cmd!r} exited {src_status}: {err[-800:]}")
        if dst_status != 0:
            err = in_ch.recv_stderr(65536).decode(errors="replace").strip()
            raise RelaunchError(f"{dst.host}: {dst_cmd!r} exited {dst_status}: {err[-800:]}")
        return total
    finally:
        out_ch.close()
        in_ch.close()


def data_from_host(ctx: RunContext) -> dict[str, Any]:
    """The drill's data step with ``--from host``: production's ``/var/backups/relaunch/<ID>`` onto the scratch host.

    ``<ID>`` is ``--backup ID``, else the canary's backup, else the newest on the host. Raise
    RelaunchError when the host has no such backup or a copied artifact does not match the manifest
    (naming it).
    """
    old, new = ctx.old_conn(timeout=30), ctx.new_conn()
    found = host_backups(old)
    wanted = ctx.options.get("backup_id") or ctx.state.get("backup_id")
    if not wanted:
        if not found:
            raise RelaunchError(f"the production host {old.host} holds no backup of site {ctx.inv.site!r} in "
                                f"{BACKUP_ROOT}; nothing to rehearse from (`fab backup --site {ctx.inv.site}` takes one)")
        wanted = found[-1]["id"]
    elif wanted not in {b["id"] for b in found}:
        raise RelaunchError(f"the production host {old.host} holds no backup {wanted!r} in {BACKUP_ROOT} (it holds "
                            f"{', '.join(b['id'] for b in found[-5:]) or 'none'}{' ...' if len(found) > 5 else ''})")
    work = workdir(ctx)
    dest = posixpath.join(work, "backup")
    q = shlex.quote
    new.run(f"install -d -m 0700 {q(work)} && rm -rf -- {q(dest)} && install -d -m 0700 {q(dest)}",
            hide=True, in_stream=False, timeout=60)
    ctx.say("data", f"copying backup {wanted} from {BACKUP_ROOT} on the production host (read only) onto the scratch host")
    started = time.monotonic()
    size = relay(old, shlex.join(["tar", "-C", BACKUP_ROOT, "-cf", "-", "--", wanted]),
                 new, shlex.join(["tar", "-C", dest, "--no-same-owner", "-xf", "-"]))
    ctx.say("data", f"backup {wanted}: {size} bytes in {time.monotonic() - started:.1f} s")
    ctx.drop_conn("old")
    directory = posixpath.join(dest, wanted)
    check = verify_remote_dir(new, directory)
    if not check.ok:
        raise RelaunchError(f"backup {wanted} copied from the production host onto {new.host} does not match its "
                            f"manifest: {check.describe()}")
    manifest = parse(new.run(f"cat {q(posixpath.join(directory, MANIFEST))}", hide=True, in_stream=False,
                             timeout=60).stdout)
    # the same facts as from the store, so restore and verify do not care where the backup came from
    return {**backup_facts(manifest, directory, " on the production host"), "backup_from": "host", "store_backups": found}
