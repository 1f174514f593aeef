"""The fab tasks: parse arguments, call relaunch, print. Nothing else lives here."""

from __future__ import annotations

import logging

from fabric import task
from invoke import Collection, Exit
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from relaunch.errors import RelaunchError
from relaunch.sandbox import manage

console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


DEFAULT_SITE = "example"
SITE_HELP = f"the site: inventory/<site>.yml (default {DEFAULT_SITE})"


@task(
    help={
        "site": "also bring this site up on a sandbox production Droplet (e.g. example)",
        "data_mb": "how much data to seed into the example site, in MB (default 100)",
        "droplet": "with --site: bring it up on this other Droplet instead, as a spare (for `dns-switch --to new`)",
        "verbose": "log what the library does",
    }
)
def sandbox_up(c, site=None, data_mb=100, droplet=None, verbose=False):
    """Start the local sandbox cloud; with --site, bring that site up on it too. Idempotent."""
    _setup_logging(verbose)
    try:
        if site is None:
            if droplet is not None:
                raise Exit("sandbox-up: --droplet goes with --site", code=2)
            with console.status("sandbox") as spinner:
                svc = manage.up(progress=lambda msg: spinner.update(escape(msg)))
            console.print(f"[green]sandbox up[/]: API {svc.url} (pid {svc.pid}, log {svc.log_path})")
            console.print(f"  use it with: export DIGITALOCEAN_END_POINT={svc.url}")
            return
        from relaunch.sandbox import site as sandbox_site

        with console.status(f"bringing {site} up") as spinner:
            up = sandbox_site.bring_up(site, data_mb=float(data_mb), droplet=droplet,
                                       progress=lambda msg: spinner.update(escape(msg)))
    except RelaunchError as exc:
        raise Exit(f"sandbox-up failed: {exc}", code=1) from exc
    host = up.host
    verb = "created" if up.created else "found"
    console.print(f"[green]{site} is up[/] on Droplet {host.name} ({host.droplet_id}, {verb}) at {host.ipv4}")
    table = Table(title="phases")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in up.phases.items():
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("[bold]total[/]", f"{sum(up.phases.values()):.1f}")
    console.print(table)
    changed = up.bootstrap.runbook.changed if up.bootstrap else []
    written = len(up.bootstrap.files_written) if up.bootstrap else 0
    console.print(f"bootstrap: {written} file(s) written, steps that changed something: {', '.join(changed) or 'none'}")
    if up.seeded_mb:
        console.print(f"seeded about {up.seeded_mb:g} MB more data")
    for r in up.health.results:
        console.print(f"  [green]ok[/] {r.app}: {r.scheme}://{r.host}{r.path} at {escape(r.address)} -> {r.status}")
    for rec in up.dns:
        console.print(f"  dns {rec.name} {rec.type} {rec.data} (ttl {rec.ttl})")


@task(help={"verbose": "log what the library does"})
def sandbox_status(c, verbose=False):
    """Show the sandbox cloud: API, base image, package cache, Droplets and their state."""
    _setup_logging(verbose)
    try:
        st = manage.status()
    except RelaunchError as exc:
        raise Exit(f"sandbox-status failed: {exc}", code=1) from exc
    api = f"{st.api.url} (pid {st.api.pid})" if st.api else "[yellow]not running[/] (fab sandbox-up)"
    console.print(f"API: {api}")
    console.print(f"base image: {st.base_image} ({'present' if st.base_image_present else 'not built'})")
    console.print(f"package cache: {st.package_cache}")
    table = Table(title="sandbox Droplets")
    for col in ("id", "name", "status", "ipv4", "ipv6", "tags", "machine"):
        table.add_column(col, overflow="fold")
    for d in st.droplets:
        table.add_row(str(d.id), d.name, d.status, d.ipv4 or "-", d.ipv6 or "-", ",".join(d.tags), d.machine)
    console.print(table)
    for name in st.stray_containers:
        console.print(f"[yellow]container {name} belongs to no Droplet the API knows[/] (fab sandbox-down removes it)")


@task(help={"images": "also remove the base image and package cache image (rebuilt on next sandbox-up)"})
def sandbox_down(c, images=False):
    """Remove everything of the sandbox: API, Droplets, snapshots, networks, volumes, state."""
    try:
        counts = manage.down(images=images)
    except RelaunchError as exc:
        raise Exit(f"sandbox-down failed: {exc}", code=1) from exc
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    console.print(f"[green]sandbox down[/]: removed {summary}")


@task(help={"site": SITE_HELP, "verbose": "log what the library does"})
def check(c, site=DEFAULT_SITE, verbose=False):
    """Validate inventory/<site>.yml and its secrets, and show what it describes; changes nothing."""
    from relaunch.inventory.check import check_site

    _setup_logging(verbose)
    try:
        report = check_site(site)
    except RelaunchError as exc:
        raise Exit(f"check failed: {exc}", code=1) from exc
    inv = report.inventory
    console.print(f"[green]{report.file}[/]: site {inv.site!r} is valid ({inv.description or 'no description'})")
    console.print(f"  provider {inv.provider.kind} ({inv.provider.region}, {inv.provider.size}, {inv.provider.image})")
    for t in report.tables:
        table = Table(title=t.title)
        for col in t.columns:
            table.add_column(col)
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"secrets: {report.secrets_resolved} resolved")
    if report.missing_sandbox_secrets:
        console.print(f"[yellow]{len(report.missing_sandbox_secrets)} sandbox secret file(s) do not exist yet[/]:")
        for path in report.missing_sandbox_secrets:
            console.print(f"  {path}")
        console.print(f"  `fab sandbox-up --site {site}` creates them (random values, a sandbox CA and certificate; secrets mode 0600)")


@task(help={"site": SITE_HELP, "out": "directory to write into (mirrors the host's paths)", "verbose": "log what the library does"})
def render(c, out, site=DEFAULT_SITE, verbose=False):
    """Render every file a new host of the site gets (and its cloud-init user-data) under --out, to read or diff."""
    from pathlib import Path

    from relaunch.inventory import load_site, resolve_all
    from relaunch.render import render_site_locally

    _setup_logging(verbose)
    try:
        inv = load_site(site)
        result = render_site_locally(inv, resolve_all(inv), Path(out))
    except RelaunchError as exc:
        raise Exit(f"render failed: {exc}", code=1) from exc
    console.print(f"[green]rendered[/] {len(result.files)} files for site {site!r} under {result.out_dir}")
    for path in result.files:
        mark = " [yellow](secret, 0600)[/]" if path in result.secret_files else ""
        console.print(f"  {path.relative_to(result.out_dir)}{mark}")
    console.print("  images are named by tag here; a rebuild deploys the digests production runs")
    console.print("  user-data holds a host key made just for this preview")


@task(help={"site": SITE_HELP, "plain": "print the Markdown as is (to save it to a file)"})
def runbook(c, site=DEFAULT_SITE, plain=False):
    """Print the site's runbooks fully rendered (notes and steps), for rebuilding by hand."""
    from rich.markdown import Markdown

    from relaunch.inventory import load_site
    from relaunch.render import RenderContext, preview_images
    from relaunch.runbooks import render_runbook

    try:
        inv = load_site(site)
        sandbox = inv.provider.kind == "sandbox"
        text = render_runbook(RenderContext(inventory=inv, images=preview_images(inv, sandbox), sandbox=sandbox))
    except RelaunchError as exc:
        raise Exit(f"runbook failed: {exc}", code=1) from exc
    if plain:
        print(text, end="")
    else:
        console.print(Markdown(text))


def _size(n):
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@task(
    optional=["verify"],
    help={
        "site": SITE_HELP,
        "install": "install (or update) the runner, its config and the systemd timer on the production host",
        "interval": "with --install: minutes between backups (default: the inventory's backups.interval_minutes)",
        "status": "the last runs, their age, size and result; exit 1 if the last failed or backups are older than the RPO",
        "list": "the backups on the host and in the off-host store",
        "verify": "check a backup (default the newest; or --verify ID) against its manifest, and the off-host store",
        "verbose": "log what the library does",
    },
)
def backup(c, site=DEFAULT_SITE, install=False, interval=None, status=False, list_=False, verify=None, verbose=False):
    """Back the site's production host up now, or install/inspect its scheduled backups."""
    from relaunch.backup import status as backups
    from relaunch.backup.site import connect_production, install_site
    from relaunch.inventory import load_site

    _setup_logging(verbose)
    try:
        inv = load_site(site)
        if install:
            with console.status(f"installing the backup of {site}"):
                done = install_site(inv, interval_minutes=int(interval) if interval else None)
            console.print(f"[green]backup installed[/] on {inv.production.droplet_name}: "
                          f"{len(done.files_written)} file(s) written, next run {done.next_run or '?'}")
            if done.restic_installed:
                console.print("  restic installed")
            if done.repository_created:
                console.print(f"  restic repository created: {inv.backups.offsite.repository}")
            return
        conn = connect_production(inv)
        try:
            if status:
                st = backups.status(conn, inv)
                table = Table(title=f"backup runs on {inv.production.droplet_name} (newest last)")
                for col in ("started (UTC)", "id", "result", "seconds", "size", "off-host added"):
                    table.add_column(col)
                for r in st.runs[-10:]:
                    result = "[green]ok[/]" if r.ok else "[yellow]running[/]" if r.state == "running" else f"[red]failed at {r.step}[/]"
                    added = _size((r.offsite or {}).get("data_added")) if r.offsite else "-"
                    table.add_row(f"{r.started_at:%Y-%m-%d %H:%M:%S}", r.id or "-", result,
                                  f"{r.seconds:.1f}" if r.seconds is not None else "-", _size(r.size), added)
                console.print(table)
                age = st.age
                if age is not None:
                    console.print(f"newest good backup: {st.newest_good.id}, {age.total_seconds() / 60:.0f} min old "
                                  f"(RPO objective {st.rpo_minutes} min); timer {'active' if st.timer_active else 'inactive'}, next {st.next_run or '?'}")
                for w in st.warnings:
                    console.print(f"[yellow]warning[/]: {w}")
                if not st.healthy:
                    raise Exit("backups need attention (see the warnings)", code=1)
            elif list_:
                found = backups.list_backups(conn, inv.site)
                table = Table(title=f"on the host ({inv.production.droplet_name})")
                for col in ("id", "started (UTC)", "size", "verified"):
                    table.add_column(col)
                for b in found["local"]:
                    v = b.get("verified")
                    mark = "-" if not v else ("[green]ok[/] " + v["at"] if v["ok"] else "[red]FAILED[/] " + v["at"])
                    table.add_row(b["id"], b["started_at"] or "-", _size(b["size"]), mark)
                console.print(table)
                if found.get("offsite_error"):
                    console.print(f"[red]off-host store unreadable[/]: {found['offsite_error']}")
                elif found.get("offsite") is not None:
                    table = Table(title=f"off-host ({inv.backups.offsite.repository})")
                    for col in ("snapshot", "backup id", "time"):
                        table.add_column(col)
                    for s in found["offsite"]:
                        table.add_row(s["snapshot"] or "-", s["id"] or "-", s["time"] or "-")
                    console.print(table)
                else:
                    console.print("[yellow]no off-host store configured[/] (backups.offsite)")
            elif verify:
                with console.status("verifying"):
                    result = backups.verify_backup(conn, inv.site, None if verify is True else str(verify))
                for a in result.get("artifacts", []):
                    console.print(f"  {'[green]ok[/]' if a['ok'] else '[red]BAD[/]'} {a['file']}")
                off = result.get("offsite")
                if off is not None:
                    console.print(f"  {'[green]ok[/]' if off['ok'] else '[red]BAD[/]'} off-host repository (restic check)")
                for p in result.get("problems", []):
                    console.print(f"[red]problem[/]: {p}")
                if not result["ok"]:
                    raise Exit(f"backup {result.get('id') or ''} did not verify", code=1)
                console.print(f"[green]backup {result['id']} verified[/]")
            else:
                with console.status(f"backing up {site} on {inv.production.droplet_name}"):
                    run = backups.run_now(conn, inv.site)
                added = (run.offsite or {}).get("data_added")
                console.print(f"[green]backup {run.id}[/]: {_size(run.size)} in {run.seconds:.1f} s"
                              + (f"; off-host copy added {_size(added)}" if run.offsite else ""))
        finally:
            conn.close()
    except RelaunchError as exc:  # the message says what failed, where, and the command to run next
        raise Exit(str(exc), code=1) from exc


def _dns_changes_table(title, changes, applied_ids, dry_run):
    table = Table(title=title)
    for col in ("record", "type", "before", "ttl", "after", "ttl ", ""):
        # addresses are shown whole (folded onto a second line if the terminal is narrow), never cut
        table.add_column(col, overflow="fold" if col in ("before", "after") else "ellipsis")
    for ch in changes:
        if dry_run:
            mark = "[cyan](dry run)[/]"
        elif not ch.changes_anything:
            mark = "unchanged"
        else:
            mark = "[green]changed[/]" if ch.id in applied_ids else "[red]not changed[/]"
        table.add_row(ch.name, ch.type, ch.before_data, str(ch.before_ttl), ch.after_data, str(ch.after_ttl), mark)
    return table


@task(
    help={
        "to": "new (newest Droplet relaunch built), old (before the last switch), a Droplet name, or IPv4[,IPv6]",
        "site": SITE_HELP,
        "via": "dns (the records, default) or reserved-ip (move the inventory's dns.reserved_ip)",
        "prepare": "only lower the records' TTL to dns.switch_ttl (the old TTL is remembered)",
        "wait_ttl": "before switching, wait out the TTL that --prepare lowered (bounded by --max-wait)",
        "max_wait": "longest wait for --wait-ttl, seconds (default 1800)",
        "restore_ttl": "only put back the TTL remembered by --prepare",
        "settle": "after a verified switch, wait SETTLE seconds, then put back the TTL --prepare lowered",
        "force": "switch even when health checks fail against the target (said loudly)",
        "dry_run": "print the exact changes (before -> after) and change nothing",
        "json": "print a JSON summary instead of tables",
        "verbose": "log what the library does",
    }
)
def dns_switch(c, to=None, site=DEFAULT_SITE, via="dns", prepare=False, wait_ttl=False, max_wait=1800,
               restore_ttl=False, settle=None, force=False, dry_run=False, json=False, verbose=False):
    """Cut the site's traffic over to TARGET: health checks, journal, change, verify; rolled back on failure."""
    import json as jsonlib

    from relaunch.dns import switch as dns_switch_
    from relaunch.inventory import load_site

    _setup_logging(verbose)
    actions = [name for name, on in (("--to", to), ("--prepare", prepare), ("--restore-ttl", restore_ttl)) if on]
    if len(actions) != 1:
        raise Exit("dns-switch needs exactly one of --to TARGET, --prepare, --restore-ttl"
                   + (f" (got {', '.join(actions)})" if actions else ""), code=2)
    if settle is not None and not to:
        raise Exit("dns-switch: --settle goes with --to (it restores the TTL after a switch)", code=2)
    try:
        settle_s = None if settle is None else float(settle)
    except ValueError:
        raise Exit(f"dns-switch: --settle expects seconds (a number), got {settle!r}", code=2) from None
    if settle_s is not None and not 0 <= settle_s <= 86400:
        raise Exit(f"dns-switch: --settle expects 0 to 86400 seconds, got {settle}", code=2)
    out = Console(stderr=True) if json else console
    try:
        inv = load_site(site)
        cloud, dns_port = dns_switch_.open_cloud(inv)
        with cloud:
            if prepare or restore_ttl:
                fn = dns_switch_.prepare if prepare else dns_switch_.restore_ttl
                done = fn(cloud, inv, dry_run=dry_run)
                if json:
                    print(jsonlib.dumps({"ok": True, "action": actions[0].lstrip("-"), "dry_run": dry_run,
                                         "changes": [vars(ch) for ch in done.changes],
                                         "wait_seconds": done.wait_seconds}, indent=2))
                    return
                console.print(_dns_changes_table(f"TTL of {inv.dns.zone}", done.changes,
                                                 {ch.id for ch in done.changes}, dry_run))
                if not done.changes:
                    console.print("nothing to change")
                elif prepare and not dry_run:
                    console.print(f"[green]TTL lowered[/] to {inv.dns.switch_ttl} s; resolvers may hold the old "
                                  f"TTL up to {done.wait_seconds} s: switch after that (or with --wait-ttl)")
                elif not dry_run:
                    console.print("[green]TTL restored[/]")
                return
            with out.status(f"switching {site} to {to}") as spinner:
                result = dns_switch_.switch(
                    cloud, inv, str(to), via=via, force=force, dry_run=dry_run, wait_ttl=wait_ttl,
                    max_wait_ttl=float(max_wait), dns_port=dns_port, settle=settle_s,
                    progress=lambda msg: spinner.update(escape(msg)),
                )
    except RelaunchError as exc:
        if json:
            print(jsonlib.dumps({"ok": False, "error": str(exc)}, indent=2))
        raise Exit(f"dns-switch failed: {exc}", code=1) from exc
    summary = result.to_json()
    verification = result.verification
    if json:
        print(jsonlib.dumps(summary, indent=2))
    else:
        for w in result.plan.warnings + result.warnings:
            console.print(f"[bold red]{escape(w)}[/]" if w.startswith("FORCED") else f"[yellow]warning[/]: {escape(w)}")
        plan = result.plan
        if plan.via == "reserved-ip":
            rip = plan.reserved_ip
            console.print(f"Reserved IP {rip.ip} ({rip.region}): Droplet {rip.before_droplet} -> {rip.after_droplet}"
                          + (" [cyan](dry run)[/]" if dry_run else ""))
        else:
            console.print(_dns_changes_table(f"{plan.zone} -> {plan.target}", plan.changes,
                                             {ch.id for ch in result.applied}, dry_run))
        timing = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items())
        console.print(f"timing: {timing}")
        if verification is not None:
            if verification.skipped:
                console.print(f"[yellow]not verified[/]: {verification.skipped}")
            elif verification.ok:
                console.print(f"authoritative servers answer the new address after {verification.seconds:.1f} s")
        if result.ttl_restored is not None and result.ttl_restored.changes:
            console.print(_dns_changes_table(f"TTL of {plan.zone} restored after {settle_s:.0f} s",
                                             result.ttl_restored.changes,
                                             {ch.id for ch in result.ttl_restored.changes}, False))
    if not result.ok:
        raise Exit(f"dns-switch: records changed, but the authoritative servers did not answer the new address "
                   f"within the wait ({verification.seconds:.1f} s): {summary['verification']['answers']}", code=1)
    if not json:
        if dry_run:
            console.print("[cyan]dry run[/]: nothing changed")
        else:
            console.print(f"[green]switched[/] {site} to {to}" + (" [bold red](FORCED)[/]" if result.forced else ""))


ns = Collection(sandbox_up, sandbox_status, sandbox_down, check, render, runbook, backup, dns_switch)
