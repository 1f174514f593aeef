"""The drift check as one call: production's manifest (read only) against the site's newest reference.

Used by ``fab drift`` and by the drill (after its checks passed: the reference it just
recorded against production as it is).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric import Connection

from relaunch.drift.collect import collect, newest_reference
from relaunch.drift.compare import Comparison, Finding, compare
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.provision import open_host
from relaunch.state import production_record

log = logging.getLogger(__name__)


class NoReference(RelaunchError):
    """No rebuild or drill of the site recorded a reference yet: nothing to compare production with."""


@dataclass
class DriftResult:
    site: str
    production: str  # name and address
    reference: dict[str, Any]  # kind, run_id, host, collected_at, path
    collected_at: str
    seconds: float  # the whole check, this machine's clock
    host_seconds: float  # the collection on the host
    comparison: Comparison
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return self.comparison.findings

    @property
    def drifted(self) -> bool:
        return self.comparison.drifted

    def summary(self) -> str:
        if not self.drifted:
            return f"no drift: production {self.production} has nothing the inventory and runbooks do not describe"
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        parts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
        return (f"production {self.production} has {len(self.findings)} thing(s) the inventory and runbooks do not "
                f"describe ({parts}): a rebuild would not bring them back")

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site, "drifted": self.drifted, "production": self.production, "reference": self.reference,
            "collected_at": self.collected_at, "seconds": round(self.seconds, 2), "host_seconds": self.host_seconds,
            "summary": self.summary(), "findings": [f.to_json() for f in self.findings],
            "ignored": self.comparison.ignored, "folded": self.comparison.folded,
            "host_errors": self.manifest.get("errors") or [],
        }


def reference_of(site: str) -> tuple[Path, dict[str, Any]]:
    """The site's newest reference. Raise NoReference saying how to make one."""
    found = newest_reference(site)
    if found is None:
        raise NoReference(f"site {site!r} has no reference yet (what a rebuild from the inventory really produces): "
                          f"run a drill first, `fab drill --site {site}`; it records one before its scratch host is "
                          "destroyed")
    return found


def production_conn(inv: Inventory, key_path: Path, timeout: float = 60) -> tuple[Connection, str]:
    """A pinned connection to the site's production host, and how to name it. Raise RelaunchError if none is known."""
    record = production_record(inv.site, inv.production.droplet_name)
    if record is None or not record.ipv4:
        raise RelaunchError(f"site {inv.site!r}: relaunch knows no production host (no pinned host key); `fab adopt "
                            f"--site {inv.site}` pins the key of a host relaunch did not build")
    return open_host(record, key_path, timeout=timeout), f"{record.name} ({record.ipv4})"


def check(inv: Inventory, key_path: Path, *, conn: Connection | None = None, timeout: float = 60) -> DriftResult:
    """Compare the site's production host (read only) with its newest reference.

    Raise NoReference when there is none yet, RelaunchError when production cannot be read.
    """
    started = time.monotonic()
    path, reference = reference_of(inv.site)
    own = conn is None
    name = ""
    if conn is None:
        conn, name = production_conn(inv, key_path, timeout)
    else:
        name = str(conn.host)
    try:
        manifest = collect(conn, inv)
    finally:
        if own:
            conn.close()
    comparison = compare(manifest, reference, ignore=inv.drift.ignore,
                         inventory_databases=[d.database or d.name for d in inv.databases])
    ref = {**(reference.get("reference") or {}), "collected_at": reference.get("collected_at"), "path": str(path)}
    result = DriftResult(inv.site, name, ref, str(manifest.get("collected_at")), time.monotonic() - started,
                         float(manifest.get("seconds") or 0), comparison, manifest)
    log.info("drift of %s: %s (%.1f s)", inv.site, result.summary(), result.seconds)
    return result


def drift(site: str, *, root: Path | str | None = None, key_path: Path | None = None,
          draft_dir: Path | None = None, write_draft: bool = False) -> tuple[DriftResult, tuple[Path, Path] | None]:
    """``fab drift``: load the site, check production against the newest reference; with ``write_draft``, write
    the draft additions (into ``draft_dir``, default ``<site state>/drafts/<time>``) and return their paths.

    Raise NoReference when no drill or rebuild recorded a reference yet, RelaunchError when the check cannot run.
    """
    from relaunch.backup.site import login_key
    from relaunch.drift.draft import draft
    from relaunch.inventory import load_site
    from relaunch.pipeline.journal import new_run_id
    from relaunch.state import site_dir

    inv = load_site(site, root)
    result = check(inv, key_path or login_key(inv))
    paths = None
    if write_draft:
        directory = draft_dir or site_dir(inv.site) / "drafts" / new_run_id()
        paths = draft(inv.site, result.findings, result.production).write(Path(directory))
    return result, paths


def drill_summary(inv: Inventory, key_path: Path) -> dict[str, Any]:
    """The drift part of a drill's report: the check's JSON, or ``{"error": ...}`` when it could not run."""
    try:
        out = check(inv, key_path, timeout=20).to_json()  # a drill does not wait long for a dead production
        out["ignored"] = len(out["ignored"])  # the report keeps the count, not the list
        return out
    except RelaunchError as exc:
        log.warning("drift check of %s could not run: %s", inv.site, exc)
        return {"drifted": None, "error": str(exc)}
