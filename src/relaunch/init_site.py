"""``fab init NAME``: the files of a new site of the user's own, made from ``relaunch/scaffold/``.

Made under the checkout (``root``): ``inventory/NAME.yml`` (every key there, commented:
what it is, an example, its default), ``sites/NAME/runbooks/`` and ``sites/NAME/templates/``
(one commented example each: the site's own setup notes and files, beside relaunch's and
never inside its tree) and ``secrets/NAME/`` (0700, with a ``.gitignore`` that keeps its
files out of git). As made, the site is valid and runs in the sandbox as it is.

Nothing is overwritten: when the inventory or the site's directory exists, nothing is
written at all.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from relaunch.adopt import ScannedKey, pin
from relaunch.drift.collect import collect_host
from relaunch.drift.draft import draft
from relaunch.drift.host_only import from_host
from relaunch.errors import RelaunchError
from relaunch.inventory import inventory_path, load_site
from relaunch.remote import connect, wait_for_ssh
from relaunch.state import HostRecord, make_private_dirs, write_atomic

log = logging.getLogger(__name__)

SCAFFOLD_DIR = Path(__file__).resolve().parent / "scaffold"
SECRETS_GITIGNORE = "# secrets of this site: never in git\n*\n!.gitignore\n"


@dataclass(frozen=True)
class Scaffold:
    """What :func:`init_site` made: the inventory, the site's directory, its secrets directory, every file."""

    inventory: Path
    site_dir: Path
    secrets_dir: Path
    files: list[Path]


def planned_files(site: str, root: Path, address: str | None = None) -> dict[Path, str]:
    """Return path -> content of every file ``fab init`` makes for ``site`` under ``root`` (nothing written).

    Each scaffold file is a Jinja template (given ``site``) whose output name drops one ``.j2``.
    ``address``: the production server's IPv4 (``--from``), written as ``production.address``.
    Raise RelaunchError (InventoryError) for a name that is not a site name.
    """
    inventory = inventory_path(site, root)  # checks the name
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SCAFFOLD_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False, trim_blocks=True)
    out: dict[Path, str] = {inventory: env.get_template("inventory.yml.j2").render(site=site, address=address)}
    for part in ("runbooks", "templates"):
        for source in sorted(p for p in (SCAFFOLD_DIR / part).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = source.relative_to(SCAFFOLD_DIR).as_posix()
            target = root / "sites" / site / (rel[:-3] if rel.endswith(".j2") else rel)
            out[target] = env.get_template(rel).render(site=site)
    out[root / "secrets" / site / ".gitignore"] = SECRETS_GITIGNORE
    return out


def _refuse_existing(site: str, root: Path, files: dict[Path, str]) -> None:
    inventory = inventory_path(site, root)
    site_dir = root / "sites" / site
    there = [p for p in (inventory, site_dir) if os.path.lexists(p)] or [p for p in files if os.path.lexists(p)]
    if there:
        raise RelaunchError(
            f"site {site!r} already has " + ", ".join(str(p) for p in there)
            + ": `fab init` never overwrites (edit those files, or move them aside to start over)")


def init_site(site: str, root: Path | str | None = None, *, address: str | None = None,
              extra: dict[Path, str] | None = None) -> Scaffold:
    """Make a new site's inventory, runbook and template directories and secrets directory under ``root`` (default: cwd).

    ``extra``: more files to write with them (``--from``'s drafts), 0600. Raise
    RelaunchError, writing nothing, when ``inventory/<site>.yml`` or ``sites/<site>/``
    exists (or a secrets ``.gitignore`` would be replaced).
    """
    root = Path.cwd() if root is None else Path(root)
    files = planned_files(site, root, address)
    _refuse_existing(site, root, files)
    inventory = inventory_path(site, root)
    site_dir = root / "sites" / site
    secrets_dir = root / "secrets" / site
    make_private_dirs(secrets_dir)
    written: list[Path] = []
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # "x": never replaces a file made meanwhile
            fh.write(content)
        if path.suffix == ".sh":
            path.chmod(0o755)
        written.append(path)
    for path, content in (extra or {}).items():
        make_private_dirs(path.parent)
        write_atomic(path, content.encode(), 0o600)
        written.append(path)
    log.info("made site %s: %d files", site, len(written))
    return Scaffold(inventory, site_dir, secrets_dir, written)


# --- fab init NAME --from ADDRESS -------------------------------------------------------------


@dataclass(frozen=True)
class FromHost:
    """What :func:`init_from_host` made and found: the scaffold, the drafts, the pinned record, the findings."""

    scaffold: Scaffold
    inventory_draft: Path
    runbook_draft: Path
    record: HostRecord
    findings: int
    seconds: float


def init_from_host(site: str, scanned: ScannedKey, confirmed: str, key_path: Path, root: Path | str | None = None,
                   user: str = "root") -> FromHost:
    """``fab init NAME --from ADDRESS``: a new site whose drafts say what the server at ``scanned`` runs.

    The server's host key (``scanned``, from :func:`relaunch.adopt.scan`) is trusted only when
    ``confirmed`` is its fingerprint (as ``fab adopt``); then its state manifest is read over
    SSH, read only (nothing written there), and compared with a plain Debian server made
    from the manifest itself (:mod:`relaunch.drift.host_only`). The scaffold is written with
    ``production.address`` set, and beside it ``sites/NAME/draft/inventory-additions.yml``
    and ``runbook-additions.md`` (0600, never run as they are: a draft is reviewed, then
    merged). No secret value reaches them (the collector sends names of secrets, never
    values; the drafts name secret references under ``secrets/NAME/``). Last, the host key
    is pinned as the site's production host (what ``fab adopt`` records).

    Raise RelaunchError, writing nothing, when the site exists, the fingerprint differs, the
    login fails or is not root, or the manifest cannot be read.
    """
    root = Path.cwd() if root is None else Path(root)
    address = scanned.address
    _refuse_existing(site, root, planned_files(site, root, address))
    if confirmed.strip() != scanned.fingerprint:
        raise RelaunchError(f"the confirmed fingerprint {confirmed.strip()!r} is not the one {address} shows "
                            f"({scanned.fingerprint}); nothing was written or pinned")
    started = time.monotonic()
    conn = connect(address, scanned.public_line, key_path, user=user, port=scanned.port)
    try:
        wait_for_ssh(conn, timeout=30)
        who = conn.run("id -u", hide=True, in_stream=False, timeout=30).stdout.strip()
        if who != "0":
            raise RelaunchError(f"user {user!r} on {address} is not root (uid {who}); relaunch reads a host as root")
        manifest = collect_host(conn, trees=[], exclude=[])
    finally:
        conn.close()
    comparison = from_host(manifest)
    production = f"{address}"
    drafted = draft(site, comparison.findings, production)
    draft_dir = root / "sites" / site / "draft"
    yml, md = draft_dir / "inventory-additions.yml", draft_dir / "runbook-additions.md"
    made = init_site(site, root, address=address, extra={yml: drafted.inventory_yaml, md: drafted.runbook_md})
    inv = load_site(site, root)
    record = pin(inv, scanned, confirmed, key_path)
    log.info("site %s from %s: %d finding(s) drafted in %s", site, address, len(comparison.findings), draft_dir)
    return FromHost(made, yml, md, record, len(comparison.findings), time.monotonic() - started)
