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
from dataclasses import dataclass
from pathlib import Path

import jinja2

from relaunch.errors import RelaunchError
from relaunch.inventory import inventory_path
from relaunch.state import make_private_dirs

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


def planned_files(site: str, root: Path) -> dict[Path, str]:
    """Return path -> content of every file ``fab init`` makes for ``site`` under ``root`` (nothing written).

    Each scaffold file is a Jinja template (given ``site``) whose output name drops one ``.j2``.
    Raise RelaunchError (InventoryError) for a name that is not a site name.
    """
    inventory = inventory_path(site, root)  # checks the name
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SCAFFOLD_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    out: dict[Path, str] = {inventory: env.get_template("inventory.yml.j2").render(site=site)}
    for part in ("runbooks", "templates"):
        for source in sorted(p for p in (SCAFFOLD_DIR / part).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = source.relative_to(SCAFFOLD_DIR).as_posix()
            target = root / "sites" / site / (rel[:-3] if rel.endswith(".j2") else rel)
            out[target] = env.get_template(rel).render(site=site)
    out[root / "secrets" / site / ".gitignore"] = SECRETS_GITIGNORE
    return out


def init_site(site: str, root: Path | str | None = None) -> Scaffold:
    """Make a new site's inventory, runbook and template directories and secrets directory under ``root`` (default: cwd).

    Raise RelaunchError, writing nothing, when ``inventory/<site>.yml`` or ``sites/<site>/``
    exists (or a secrets ``.gitignore`` would be replaced).
    """
    root = Path.cwd() if root is None else Path(root)
    files = planned_files(site, root)
    inventory = inventory_path(site, root)
    site_dir = root / "sites" / site
    there = [p for p in (inventory, site_dir) if os.path.lexists(p)] or [p for p in files if os.path.lexists(p)]
    if there:
        raise RelaunchError(
            f"site {site!r} already has " + ", ".join(str(p) for p in there)
            + ": `fab init` never overwrites (edit those files, or move them aside to start over)")
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
    log.info("made site %s: %d files", site, len(written))
    return Scaffold(inventory, site_dir, secrets_dir, written)
