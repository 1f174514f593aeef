"""Read a host's state manifest (read only), and keep the references a rebuild or a drill records.

The manifest is made ON the host by :mod:`relaunch.drift.hostscript` (Python 3 stdlib
only, sent on stdin to ``python3 -``; nothing is installed or written there) and comes back
as one JSON document: packages, /etc checksums, units and timers, crontabs, listening
ports, containers, Compose projects and images, databases, users, nginx server names and
a listing of the apps' trees. See that module for what never leaves the host.

A *reference* is the manifest of a host a rebuild or a drill built from the inventory,
taken after its health checks passed and before a drill destroys it: what the inventory
and runbooks really produce. References are kept in the site's state directory
(``references/<kind>-<run id>.json``, 0600).
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from fabric import Connection
from invoke.exceptions import CommandTimedOut

from relaunch.drift import hostscript
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.state import make_private_dirs, site_dir, write_json_atomic

log = logging.getLogger(__name__)

#: Seconds the collection may take on a host (measured: a few seconds on the example site).
TIMEOUT = 300
_PARAMS_LINE = re.compile(r"^PARAMS = .*$", re.M)


class _Script(io.StringIO):
    """The script as stdin, handed to invoke in large pieces (it reads others one byte per 10 ms)."""

    def read(self, size: int | None = -1) -> str:
        return super().read(64 * 1024)


def app_trees(inv: Inventory) -> list[str]:
    """The trees listed: ``/srv/<app>`` of every app (where relaunch puts an app's files)."""
    return [f"/srv/{app.name}" for app in inv.apps]


def carried(inv: Inventory) -> list[str]:
    """What a rebuild carries with the data (each app's ``files``, SQLite files): left out of the tree listing."""
    out = [path for app in inv.apps for path in app.files]
    for db in inv.databases:
        if db.path:
            out += [db.path, f"{db.path}-wal", f"{db.path}-shm", f"{db.path}-journal"]
    return sorted(set(out))


def script(params: dict[str, Any]) -> str:
    """The collector's source with ``params`` in it (as a JSON string literal: no value reaches a shell)."""
    source = Path(hostscript.__file__).read_text()
    line = f"PARAMS = json.loads({json.dumps(json.dumps(params, sort_keys=True))})"
    out, count = _PARAMS_LINE.subn(lambda _m: line, source, count=1)
    assert count == 1, "hostscript.py lost its PARAMS line"
    return out


def collect(conn: Connection, inv: Inventory, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The state manifest of ``conn``'s host for site ``inv`` (read only). Raise RelaunchError if it cannot be read."""
    return collect_host(conn, app_trees(inv), carried(inv), timeout)


def collect_host(conn: Connection, trees: list[str], exclude: list[str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """The state manifest of ``conn``'s host, listing ``trees`` but ``exclude`` (read only); no inventory needed."""
    params = {"trees": list(trees), "exclude": list(exclude), "root": "/"}
    try:
        run = conn.run("python3 -", in_stream=_Script(script(params)), hide=True, warn=True, pty=False, timeout=timeout)
    except CommandTimedOut:
        raise RelaunchError(f"{conn.host}: reading the host's state took more than {timeout:.0f} s") from None
    if run.exited != 0:
        raise RelaunchError(f"{conn.host}: reading the host's state failed (exit {run.exited}): "
                            f"{run.stderr.strip()[-800:]}")
    try:
        manifest = json.loads(run.stdout)
    except ValueError:
        raise RelaunchError(f"{conn.host}: the host's state is not JSON: {run.stdout[:200]!r}") from None
    for problem in manifest.get("errors") or []:
        log.info("%s: %s", conn.host, problem)
    return manifest


# --- references -----------------------------------------------------------------------------


def references_dir(site: str) -> Path:
    path = site_dir(site) / "references"
    make_private_dirs(path)
    return path


def save_reference(site: str, manifest: dict[str, Any], *, kind: str, run_id: str, host: str | None = None) -> Path:
    """Keep ``manifest`` as a reference of ``site`` (0600); return its path."""
    data = {**manifest, "reference": {"kind": kind, "run_id": run_id, "host": host, "site": site}}
    path = references_dir(site) / f"{kind}-{run_id}.json"
    write_json_atomic(path, data)
    return path


def record_reference(conn: Connection, inv: Inventory, *, kind: str, run_id: str) -> Path:
    """Collect the manifest of the host a rebuild or drill just built and keep it as the site's newest reference."""
    manifest = collect(conn, inv)
    path = save_reference(inv.site, manifest, kind=kind, run_id=run_id, host=conn.host)
    log.info("reference of %s recorded from %s in %s (%.1f s on the host)", inv.site, conn.host, path,
             manifest.get("seconds") or 0)
    return path


def newest_reference(site: str) -> tuple[Path, dict[str, Any]] | None:
    """The newest reference of ``site`` (by its collection time), or None when no rebuild or drill recorded one."""
    best: tuple[str, Path, dict[str, Any]] | None = None
    for path in references_dir(site).glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s: unreadable reference, skipped", path)
            continue
        key = str(data.get("collected_at") or "")
        if best is None or (key, path.name) > (best[0], best[1].name):
            best = (key, path, data)
    return None if best is None else (best[1], best[2])
