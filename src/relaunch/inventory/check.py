"""``fab check``'s logic: load a site, resolve its secrets, summarise it as tables (data, not output)."""

from __future__ import annotations

import logging
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaunch.inventory import tls
from relaunch.inventory.errors import InventoryError, Problem
from relaunch.inventory.loader import load_site, source_of
from relaunch.inventory.model import ComposeService, Inventory
from relaunch.inventory.secrets import missing_sandbox_secrets, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, for the task layer to print."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class CheckReport:
    """What ``check_site`` found: a valid inventory, how many secrets resolved, sandbox secret files still to create."""

    inventory: Inventory
    file: str
    secrets_resolved: int
    missing_sandbox_secrets: list[Path]
    tables: list[Table]


def check_site(site: str, root: Path | str | None = None) -> CheckReport:
    """Load and validate ``inventory/<site>.yml`` under ``root`` and resolve its secrets, changing nothing.

    Raise InventoryError for any problem in the file or any secret that cannot be resolved,
    except one case: the ``file:`` secrets of a sandbox site that do not exist yet are
    returned in ``missing_sandbox_secrets`` (``ensure_sandbox_secrets`` makes them when the
    sandbox site is brought up); check never creates them.
    """
    inv = load_site(site, root)
    secrets, problems = resolve(inv)
    pending = [p for p in problems if inv.provider.kind == "sandbox" and p.code == "secret-missing-file"]
    others = [p for p in problems if p not in pending]
    if inv.proxy.tls is not None:
        key = secrets.get(inv.proxy.tls.key)
        others += tls.site_problems(inv, key.reveal() if key else None)
    if not others:
        # what check accepts, render accepts: render everything once, in memory
        others += render_problems(inv, secrets)
    if others:
        raise InventoryError(others, file=source_of(inv).file)
    missing = missing_sandbox_secrets(inv) if pending else []
    if inv.provider.kind == "sandbox" and inv.proxy.tls is not None:
        missing += [Path(f) for f in (inv.proxy.tls.certificate, inv.proxy.tls.ca) if f and not Path(f).exists()]
    return CheckReport(inv, source_of(inv).file, len(secrets), missing, summary(inv))


def render_problems(inv: Inventory, secrets: Mapping[str, Any]) -> list[Problem]:
    """Render the site's host files, user-data and runbooks in memory; return why that fails (empty: it works).

    So ``fab check`` refuses every inventory that ``fab render`` or ``fab runbook`` would
    (a template's requirement, say), pointing at the app whose template failed when it can.
    Secret files a sandbox site has yet to make stand in as random text, as
    ``ensure_sandbox_secrets`` will make them; a sandbox certificate not made yet is left out.
    """
    from relaunch import render, runbooks
    from relaunch.inventory.secrets import Secret, references
    from relaunch.remote import HostKey

    values: dict[str, Any] = dict(secrets)
    for _, ref in references(inv):
        if ref not in values and ref.startswith("file:"):
            values[ref] = Secret(_random.token_urlsafe(24), ref)
    trial = inv
    sandbox = inv.provider.kind == "sandbox"
    if sandbox and inv.proxy.tls is not None and not Path(inv.proxy.tls.certificate).exists():
        trial = inv.model_copy(update={"proxy": inv.proxy.model_copy(update={"tls": None})})
    ctx = render.RenderContext(
        inventory=trial, secrets=values, images=render.preview_images(inv, sandbox), sandbox=sandbox,
        host_key=HostKey.generate(),
    )
    src = source_of(inv)
    try:
        render.render_host(ctx)
        render.render_user_data(ctx)
        runbooks.render_runbook(render.RenderContext(inventory=trial, images=ctx.images, sandbox=sandbox))
    except (render.RenderError, runbooks.RunbookError) as exc:
        message = str(exc)
        for i, app in enumerate(inv.apps):
            templates = [t for t in (app.compose and app.compose.template, app.systemd and app.systemd.unit_template) if t]
            if f"apps[{app.name}]" in message or f"apps/{app.name}/" in message or any(t in message for t in templates):
                return [Problem(src.file, src.line_of(("apps", i)), src.describe(("apps", i)), f"cannot be rendered: {message}", "render")]
        return [Problem(src.file, None, "", f"cannot be rendered: {message}", "render")]
    return []


def summary(inv: Inventory) -> list[Table]:
    """The inventory as tables: apps, databases, DNS, backups, objectives."""
    apps = Table("apps", ("name", "kind", "domain", "port", "databases", "health checks"))
    for a in inv.apps:
        checks = []
        for h in a.health:
            text = f"{'https ' if h.scheme == 'https' else ''}{h.path} → {h.status}"
            if h.contains is not None:
                text += f" containing {h.contains!r}"
            if h.host is not None:
                text += f" (Host {h.host})"
            checks.append(text)
        apps.rows.append((a.name, a.kind, a.domain, str(a.port), ", ".join(a.databases) or "-", "\n".join(checks)))

    dbs = Table("databases", ("name", "engine", "runs", "database"))
    for d in inv.databases:
        runs = f"compose {d.runs.app}/{d.runs.service}" if isinstance(d.runs, ComposeService) else "native"
        what = d.path if d.engine == "sqlite" else f"{d.database} (user {d.user})"
        dbs.rows.append((d.name, d.engine, runs, what or "-"))

    dns = Table(f"DNS zone {inv.dns.zone}", ("record", "type", "ttl", "ttl while switching"))
    for r in inv.dns.records:
        fqdn = inv.dns.zone if r.name == "@" else f"{r.name}.{inv.dns.zone}"
        dns.rows.append((fqdn, r.type, str(inv.dns.ttl), str(inv.dns.switch_ttl)))
    if inv.dns.reserved_ip is not None:
        dns.rows.append(("reserved IP", str(inv.dns.reserved_ip), "-", "-"))

    b = inv.backups
    offsite = f"{b.offsite.kind} {b.offsite.repository}" if b.offsite else "none (advised: an off-host copy)"
    backups = Table("backups", ("every", "keep", "off-host copy"))
    backups.rows.append(
        (
            f"{b.interval_minutes} min",
            f"all within {b.retention.keep_within_hours} h, {b.retention.daily} daily, {b.retention.weekly} weekly",
            offsite,
        )
    )
    objectives = Table("objectives", ("RTO (back up within)", "RPO (data loss at most)"))
    objectives.rows.append((f"{inv.objectives.rto_minutes} min", f"{inv.objectives.rpo_minutes} min"))
    return [apps, dbs, dns, backups, objectives]
