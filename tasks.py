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

# Text from inventories, hosts and errors is printed as written: every such value goes through
# _e (rich would read "[beta]" as markup, and choke on "[/old]"), and no ":name:" becomes an emoji.
console = Console(emoji=False)


def _e(value):
    """``value`` as text that rich prints as written (markup escaped)."""
    return escape(str(value))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


DEFAULT_SITE = "example"
SITE_HELP = f"the site: inventory/<site>.yml (default {DEFAULT_SITE})"


@task(
    help={
        "site": "also bring this site up on a sandbox production Droplet (e.g. example)",
        "data_mb": "how much data to seed into the example's own apps, in MB (default 100; a site without them gets none)",
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
                svc = manage.up(progress=lambda msg: spinner.update(_e(msg)))
            console.print(f"[green]sandbox up[/]: API {_e(svc.url)} (pid {svc.pid}, log {_e(svc.log_path)})")
            console.print(f"  use it with: export DIGITALOCEAN_END_POINT={_e(svc.url)}")
            return
        from relaunch.sandbox import site as sandbox_site

        with console.status(f"bringing {_e(site)} up") as spinner:
            up = sandbox_site.bring_up(site, data_mb=float(data_mb), droplet=droplet, backups=droplet is None,
                                       progress=lambda msg: spinner.update(_e(msg)))
    except RelaunchError as exc:
        raise Exit(f"sandbox-up failed: {exc}", code=1) from exc
    host = up.host
    verb = "created" if up.created else "found"
    console.print(f"[green]{_e(site)} is up[/] on Droplet {_e(host.name)} ({host.droplet_id}, {verb}) at {_e(host.ipv4)}")
    table = Table(title="phases")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in up.phases.items():
        table.add_row(_e(name), f"{seconds:.1f}")
    table.add_row("[bold]total[/]", f"{sum(up.phases.values()):.1f}")
    console.print(table)
    changed = up.bootstrap.runbook.changed if up.bootstrap else []
    written = len(up.bootstrap.files_written) if up.bootstrap else 0
    console.print(f"bootstrap: {written} file(s) written, steps that changed something: {_e(', '.join(changed) or 'none')}")
    if up.seeded_mb:
        console.print(f"seeded about {up.seeded_mb:g} MB more data")
    for r in up.health.results:
        console.print(f"  [green]ok[/] {_e(r.app)}: {_e(f'{r.scheme}://{r.host}{r.path}')} at {_e(r.address)} -> {r.status}")
    for rec in up.dns:
        console.print(f"  dns {_e(rec.name)} {_e(rec.type)} {_e(rec.data)} (ttl {rec.ttl})")


@task(help={"verbose": "log what the library does"})
def sandbox_status(c, verbose=False):
    """Show the sandbox cloud: API, base image, package cache, Droplets and their state."""
    _setup_logging(verbose)
    try:
        st = manage.status()
    except RelaunchError as exc:
        raise Exit(f"sandbox-status failed: {exc}", code=1) from exc
    api = f"{_e(st.api.url)} (pid {st.api.pid})" if st.api else "[yellow]not running[/] (fab sandbox-up)"
    console.print(f"API: {api}")
    console.print(f"base image: {_e(st.base_image)} ({'present' if st.base_image_present else 'not built'})")
    console.print(f"package cache: {_e(st.package_cache)}")
    table = Table(title="sandbox Droplets")
    for col in ("id", "name", "status", "ipv4", "ipv6", "tags", "machine"):
        table.add_column(col, overflow="fold")
    for d in st.droplets:
        table.add_row(*(_e(v) for v in (d.id, d.name, d.status, d.ipv4 or "-", d.ipv6 or "-", ",".join(d.tags), d.machine)))
    console.print(table)
    for name in st.stray_containers:
        console.print(f"[yellow]container {_e(name)} belongs to no Droplet the API knows[/] (fab sandbox-down removes it)")


@task(help={"images": "also remove the base image and package cache image (rebuilt on next sandbox-up)"})
def sandbox_down(c, images=False):
    """Remove everything of the sandbox: API, Droplets, snapshots, networks, volumes, state."""
    try:
        counts = manage.down(images=images)
    except RelaunchError as exc:
        raise Exit(f"sandbox-down failed: {exc}", code=1) from exc
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    console.print(f"[green]sandbox down[/]: removed {_e(summary)}")


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
    console.print(f"[green]{_e(report.file)}[/]: site {_e(repr(inv.site))} is valid ({_e(inv.description or 'no description')})")
    console.print(f"  provider {_e(inv.provider.kind)} ({_e(inv.provider.region)}, {_e(inv.provider.size)}, {_e(inv.provider.image)})")
    for t in report.tables:
        table = Table(title=_e(t.title))
        for col in t.columns:
            table.add_column(_e(col))
        for row in t.rows:
            table.add_row(*(_e(cell) for cell in row))
        console.print(table)
    console.print(f"secrets: {report.secrets_resolved} resolved")
    if report.missing_sandbox_secrets:
        console.print(f"[yellow]{len(report.missing_sandbox_secrets)} sandbox secret file(s) do not exist yet[/]:")
        for path in report.missing_sandbox_secrets:
            console.print(f"  {_e(path)}")
        console.print(f"  `fab sandbox-up --site {_e(site)}` creates them (random values, a sandbox CA and certificate; secrets mode 0600)")


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
    console.print(f"[green]rendered[/] {len(result.files)} files for site {_e(repr(site))} under {_e(result.out_dir)}")
    for path in result.files:
        mark = " [yellow](secret, 0600)[/]" if path in result.secret_files else ""
        console.print(f"  {_e(path.relative_to(result.out_dir))}{mark}")
    console.print("  images are named by tag here; a rebuild deploys the digests production runs")
    console.print("  user-data holds a host key made just for this preview")


@task(help={"name": "the new site's name (lowercase letters, digits, dashes)",
            "from": "ADDRESS of a server to start from: what it runs is read (read only; its host key pinned after "
                    "you confirm the fingerprint) and drafted in sites/NAME/draft/",
            "fingerprint": "with --from: the SHA256 fingerprint you checked on the server (else you are asked)",
            "ssh-key": "with --from: the private key to log in as root with (default: the sandbox's)",
            "verbose": "log what happens"})
def init(c, name, from_=None, fingerprint=None, ssh_key=None, verbose=False):
    """Make a new site of your own: inventory/NAME.yml (every key commented), sites/NAME/ (runbooks, templates), secrets/NAME/."""
    from relaunch.init_site import init_site

    if from_:
        return _init_from(name, from_, fingerprint, ssh_key, verbose)
    try:
        made = init_site(name)
    except RelaunchError as exc:
        raise Exit(f"init failed: {exc}", code=1) from exc
    console.print(f"[green]made site {_e(repr(name))}[/]:")
    for path in made.files:
        console.print(f"  {_e(path)}")
    console.print(f"  {_e(made.secrets_dir)} (0700; its files are ignored by git)")
    console.print(f"next: edit {_e(made.inventory)}, then `fab check --site {_e(name)}`, "
                  f"`fab sandbox-up --site {_e(name)}`, `fab drill --site {_e(name)}` (guide: docs/own-site.md)")


def _init_from(name, address, fingerprint, ssh_key, verbose):
    """`fab init NAME --from ADDRESS`: the scaffold, with drafts of what the server runs (read only), its key pinned."""
    from pathlib import Path

    from relaunch import adopt as adopt_
    from relaunch.init_site import init_from_host
    from relaunch.sandbox.site import client_key_path

    _setup_logging(verbose)
    try:
        scanned = adopt_.scan(address)
        console.print(f"{escape(scanned.address)} shows the host key {escape(scanned.public_line.split()[0])} "
                      f"[bold]{escape(scanned.fingerprint)}[/]")
        if fingerprint is None:
            console.print("Check it on the server itself: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
            fingerprint = console.input("Type the fingerprint you saw there to go on (anything else: nothing is "
                                        "read or written): ")
        key = Path(ssh_key).expanduser() if ssh_key else client_key_path()
        made = init_from_host(name, scanned, fingerprint, key)
    except RelaunchError as exc:
        raise Exit(f"init failed: {exc}", code=1) from exc
    console.print(f"[green]made site {_e(repr(name))}[/] from {_e(address)} ({made.findings} finding(s), "
                  f"{made.seconds:.1f} s; nothing was changed there):")
    for path in made.scaffold.files:
        console.print(f"  {_e(path)}")
    console.print(f"pinned {_e(made.record.name)} at {_e(made.record.ipv4)} as the site's production host")
    console.print(f"next: review {_e(made.inventory_draft)} and {_e(made.runbook_draft)}, merge what is right into "
                  f"{_e(made.scaffold.inventory)} and sites/{_e(name)}/runbooks/, fill in the secret files they name, "
                  f"then `fab check --site {_e(name)}` (guide: docs/own-site.md)")


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
        "prune": "from this machine, with the store's full-access key (backups.offsite.ssh_key): forget the off-host "
                 "snapshots backups.retention drops, then restic prune (production's own key is append-only)",
        "dry_run": "with --prune: list what would be forgotten, change nothing",
        "verbose": "log what the library does",
    },
)
def backup(c, site=DEFAULT_SITE, install=False, interval=None, status=False, list_=False, verify=None, prune=False,
           dry_run=False, verbose=False):
    """Back the site's production host up now, or install/inspect its scheduled backups, or apply the off-host retention."""
    from relaunch.backup import status as backups
    from relaunch.backup.site import connect_production, install_site
    from relaunch.inventory import load_site

    _setup_logging(verbose)
    try:
        inv = load_site(site)
        if prune:
            from relaunch.backup.prune import prune_site
            from relaunch.inventory.secrets import resolve_all

            with console.status(f"off-host retention of {_e(site)}"):
                done = prune_site(inv, resolve_all(inv), dry_run=dry_run)
            table = Table(title=f"off-host ({_e(done.repository)}){' (dry run)' if dry_run else ''}")
            for col in ("snapshot", "backup id", "decision"):
                table.add_column(col)
            for short, backup_id, why in done.keep:
                table.add_row(_e(short), _e(backup_id or "-"), "keep: " + _e(", ".join(why)))
            for short, backup_id, _ in done.forget:
                table.add_row(_e(short), _e(backup_id), "[yellow]forget[/]" + (" (dry run)" if dry_run else ""))
            console.print(table)
            if not dry_run:
                console.print(f"[green]{len(done.forget)} snapshot(s) forgotten, repository pruned[/] in {done.seconds:.1f} s")
                if done.prune_output:
                    console.print(_e(done.prune_output))
            return
        if install:
            with console.status(f"installing the backup of {_e(site)}"):
                done = install_site(inv, interval_minutes=int(interval) if interval else None)
            console.print(f"[green]backup installed[/] on {_e(inv.production.droplet_name)}: "
                          f"{len(done.files_written)} file(s) written, next run {_e(done.next_run or '?')}")
            if done.restic_installed:
                console.print("  restic installed")
            if done.repository_created:
                console.print(f"  restic repository created: {_e(inv.backups.offsite.repository)}")
            if done.store_append_only:
                console.print("  its store key is append-only (forget/prune: `fab backup --prune` from here)")
            if done.store_line:
                console.print("  the store's authorized_keys holds (keep it so; it is what makes the key append-only):")
                console.print(_e(done.store_line), soft_wrap=True)
            return
        conn = connect_production(inv)
        try:
            if status:
                st = backups.status(conn, inv)
                table = Table(title=f"backup runs on {_e(inv.production.droplet_name)} (newest last)")
                for col in ("started (UTC)", "id", "result", "seconds", "size", "off-host added"):
                    table.add_column(col)
                for r in st.runs[-10:]:
                    result = "[green]ok[/]" if r.ok else "[yellow]running[/]" if r.state == "running" else f"[red]failed at {_e(r.step)}[/]"
                    added = _size((r.offsite or {}).get("data_added")) if r.offsite else "-"
                    table.add_row(f"{r.started_at:%Y-%m-%d %H:%M:%S}", _e(r.id or "-"), result,
                                  f"{r.seconds:.1f}" if r.seconds is not None else "-", _size(r.size), added)
                console.print(table)
                age = st.age
                if age is not None:
                    console.print(f"newest good backup: {_e(st.newest_good.id)}, {age.total_seconds() / 60:.0f} min old "
                                  f"(RPO objective {st.rpo_minutes} min); timer {'active' if st.timer_active else 'inactive'}, next {_e(st.next_run or '?')}")
                retention = next(((r.offsite or {}).get("retention") for r in reversed(st.runs)
                                  if (r.offsite or {}).get("retention")), None)
                if retention and retention.get("would_forget"):
                    console.print(f"off-host: {retention['would_forget']} of {retention['snapshots']} snapshot(s) are past "
                                  f"backups.retention; this host cannot forget them: `fab backup --prune --site {_e(site)}`")
                for w in st.warnings:
                    console.print(f"[yellow]warning[/]: {_e(w)}")
                from relaunch.alerts import after_backup_status

                for sent in after_backup_status(inv, st):
                    console.print(("" if sent.ok else "[red]") + _e(sent.describe()))
                if not st.healthy:
                    raise Exit("backups need attention (see the warnings)", code=1)
            elif list_:
                found = backups.list_backups(conn, inv.site)
                table = Table(title=f"on the host ({_e(inv.production.droplet_name)})")
                for col in ("id", "started (UTC)", "size", "verified"):
                    table.add_column(col)
                for b in found["local"]:
                    v = b.get("verified")
                    mark = "-" if not v else ("[green]ok[/] " + _e(v["at"]) if v["ok"] else "[red]FAILED[/] " + _e(v["at"]))
                    table.add_row(_e(b["id"]), _e(b["started_at"] or "-"), _size(b["size"]), mark)
                console.print(table)
                if found.get("offsite_error"):
                    console.print(f"[red]off-host store unreadable[/]: {_e(found['offsite_error'])}")
                elif found.get("offsite") is not None:
                    table = Table(title=f"off-host ({_e(inv.backups.offsite.repository)})")
                    for col in ("snapshot", "backup id", "time"):
                        table.add_column(col)
                    for s in found["offsite"]:
                        table.add_row(_e(s["snapshot"] or "-"), _e(s["id"] or "-"), _e(s["time"] or "-"))
                    console.print(table)
                else:
                    console.print("[yellow]no off-host store configured[/] (backups.offsite)")
            elif verify:
                with console.status("verifying"):
                    result = backups.verify_backup(conn, inv.site, None if verify is True else str(verify))
                for a in result.get("artifacts", []):
                    console.print(f"  {'[green]ok[/]' if a['ok'] else '[red]BAD[/]'} {_e(a['file'])}")
                off = result.get("offsite")
                if off is not None:
                    console.print(f"  {'[green]ok[/]' if off['ok'] else '[red]BAD[/]'} off-host repository (restic check)")
                for p in result.get("problems", []):
                    console.print(f"[red]problem[/]: {_e(p)}")
                if not result["ok"]:
                    raise Exit(f"backup {result.get('id') or ''} did not verify", code=1)
                console.print(f"[green]backup {_e(result['id'])} verified[/]")
            else:
                with console.status(f"backing up {_e(site)} on {_e(inv.production.droplet_name)}"):
                    run = backups.run_now(conn, inv.site)
                added = (run.offsite or {}).get("data_added")
                console.print(f"[green]backup {_e(run.id)}[/]: {_size(run.size)} in {run.seconds:.1f} s"
                              + (f"; off-host copy added {_size(added)}" if run.offsite else ""))
        finally:
            conn.close()
    except RelaunchError as exc:  # the message says what failed, where, and the command to run next
        raise Exit(str(exc), code=1) from exc


def _dns_changes_table(title, changes, applied_ids, dry_run):
    table = Table(title=_e(title))
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
        table.add_row(*(_e(v) for v in (ch.name, ch.type, ch.before_data, ch.before_ttl, ch.after_data, ch.after_ttl)), mark)
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
    out = Console(stderr=True, emoji=False) if json else console
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
            with out.status(f"switching {_e(site)} to {_e(to)}") as spinner:
                options = dict(via=via, force=force, dry_run=dry_run, wait_ttl=wait_ttl, max_wait_ttl=float(max_wait),
                               dns_port=dns_port, settle=settle_s, progress=lambda msg: spinner.update(_e(msg)))
                back = None
                if str(to) == "old":  # after a rebuild: the old host's apps and timer go back on too
                    from relaunch.backup.site import login_key
                    from relaunch.handback import switch_to_old

                    back = switch_to_old(cloud, inv, login_key(inv), **options)
                    result = back.result
                else:
                    result = dns_switch_.switch(cloud, inv, str(to), **options)
    except RelaunchError as exc:
        if json:
            print(jsonlib.dumps({"ok": False, "error": str(exc)}, indent=2))
        raise Exit(f"dns-switch failed: {exc}", code=1) from exc
    summary = result.to_json()
    if back is not None:
        summary.update(undone=back.undone, handback_warnings=back.warnings)
    verification = result.verification
    if json:
        print(jsonlib.dumps(summary, indent=2))
    else:
        for line in back.undone if back is not None else []:
            console.print(f"undone: {_e(line)}")
        for line in back.warnings if back is not None else []:
            console.print(f"[yellow]warning[/]: {_e(line)}")
        for w in result.plan.warnings + result.warnings:
            console.print(f"[bold red]{_e(w)}[/]" if w.startswith("FORCED") else f"[yellow]warning[/]: {_e(w)}")
        plan = result.plan
        if plan.via == "reserved-ip":
            rip = plan.reserved_ip
            console.print(f"Reserved IP {_e(rip.ip)} ({_e(rip.region)}): Droplet {_e(rip.before_droplet)} -> {_e(rip.after_droplet)}"
                          + (" [cyan](dry run)[/]" if dry_run else ""))
        else:
            console.print(_dns_changes_table(f"{plan.zone} -> {plan.target}", plan.changes,
                                             {ch.id for ch in result.applied}, dry_run))
        timing = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases.items())
        console.print(f"timing: {_e(timing)}")
        if verification is not None:
            if verification.skipped:
                console.print(f"[yellow]not verified[/]: {_e(verification.skipped)}")
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
            console.print(f"[green]switched[/] {_e(site)} to {_e(to)}" + (" [bold red](FORCED)[/]" if result.forced else ""))


def _print_image(record):
    """Which image the new host started from, how its check went, and the golden snapshot a drill made."""
    image = record.get("image") or {}
    if image.get("golden"):
        check = image.get("check") or {}
        verdict = ("held steps reported no change" if check.get("passed") else
                   f"[red]check failed[/]: {_e(str(check.get('problem')))}") if check else "not checked"
        console.print(f"started from golden snapshot {_e(image['golden']['name'])}: {verdict}")
    elif image.get("reason"):
        console.print(f"started from the base image: {_e(image['reason'])}")
    made = record.get("golden_made")
    if made:
        console.print(f"golden snapshot made: {_e(made['name'])} ({made['id']}), snapshot {made['snapshot_seconds']} s "
                      f"(not in the RTO); holds {_e(', '.join(made['held']) or 'no step')}")


@task(
    help={
        "site": SITE_HELP,
        "dry_run": "print the plan (what will be created, the data source and why, the records, the objectives); create nothing",
        "resume": "continue a paused rebuild from its first unfinished step",
        "abort": "end a paused rebuild before its switch: the old host's apps and backup timer go back on",
        "destroy": "with --abort: also destroy the run's new Droplet and any half-created one (kept otherwise)",
        "source": "live (final sync from the old host) or backup (the newest verified backup); default: live if the old host answers",
        "backup": "with --source backup: this backup ID instead of the newest",
        "region": "create the new Droplet in this region instead of the inventory's",
        "size": "create the new Droplet with this size instead of the inventory's",
        "no_switch": "stop after the health checks: leave DNS and the old host as they are",
        "fallback_to_backup": "if the old host is lost during the final sync, go on from the newest verified backup "
                              "(without it the rebuild stops and says how to go on)",
        "settle": "after a verified switch, wait SETTLE seconds, then put back a TTL lowered with dns-switch --prepare",
        "no_golden": "start from the base image even when a golden snapshot matches (made by `fab drill --golden`)",
        "json": "print the report's JSON instead of the summary",
        "verbose": "log what the library does",
    }
)
def rebuild(c, site=DEFAULT_SITE, dry_run=False, resume=False, abort=False, source=None, backup=None, region=None,
            size=None, no_switch=False, fallback_to_backup=False, settle=0, no_golden=False, json=False, verbose=False,
            destroy=False):
    """Rebuild the site on a new Droplet with its newest data, verify it, and switch traffic over. Resumable."""
    import json as jsonlib

    from relaunch import rebuild as rebuild_
    from relaunch.pipeline import PHASES
    from relaunch.ui.progress import RunView

    _setup_logging(verbose)
    if source not in (None, "live", "backup"):
        raise Exit(f"rebuild: --source expects live or backup, got {source!r}", code=2)
    if backup and source == "live":
        raise Exit("rebuild: --backup goes with --source backup", code=2)
    try:
        settle_s = float(settle)
    except ValueError:
        raise Exit(f"rebuild: --settle expects seconds, got {settle!r}", code=2) from None
    if sum(map(bool, (dry_run, resume, abort))) > 1:
        raise Exit("rebuild: --dry-run, --resume and --abort go alone", code=2)
    try:
        if abort:
            done = rebuild_.abort(site, destroy=destroy)
            for line in done.undone:
                console.print(f"  {escape(line)}")
            console.print(f"[green]rebuild aborted[/]; its journal: {escape(str(done.journal))}")
            return
        options = rebuild_.RebuildOptions(source=source or ("backup" if backup else None), backup_id=backup,
                                          region=region, size=size, switch=not no_switch, settle=settle_s,
                                          fallback_to_backup=fallback_to_backup, golden="off" if no_golden else "use")
        out = Console(stderr=True) if json else console
        with RunView(out, [p for p in PHASES if p != "golden"], title=f"rebuild of {site}") as view:
            result = rebuild_.rebuild(site, options, resume=resume, dry_run=dry_run, progress=view)
    except RelaunchError as exc:
        raise Exit(f"rebuild failed: {exc}", code=1) from exc
    if dry_run:
        for key, value in result.plan.facts:
            console.print(f"[bold]{key}[/]: {escape(str(value))}")
        for line in result.plan.lines():
            console.print(f"  {escape(line)} [cyan](dry run)[/]")
        if result.error:
            raise Exit(f"rebuild would fail at preflight: {result.error}", code=1)
        console.print("[cyan]dry run[/]: nothing was created")
        return
    record = result.record
    if json:
        print(jsonlib.dumps(record, indent=2))
    else:
        _print_run(record, result.report_md)
        _print_image(record)
    if result.status != "passed":
        raise Exit(f"rebuild failed: {result.error}", code=1)
    console.print(f"[green]rebuilt[/] {site} on {escape(str(result.journal.state.get('new_name')))}")


@task(
    help={
        "site": SITE_HELP,
        "fingerprint": "the SHA256:... fingerprint you checked on the server's console (ssh-keygen -lf "
                       "/etc/ssh/ssh_host_ed25519_key.pub); without it, you are shown the key and asked",
        "verbose": "log what the library does",
    }
)
def adopt(c, site=DEFAULT_SITE, fingerprint=None, verbose=False):
    """Pin the host key of a production server relaunch did not build (production.address), after you confirm it."""
    from relaunch import adopt as adopt_
    from relaunch.backup.site import login_key
    from relaunch.inventory import load_site

    _setup_logging(verbose)
    try:
        inv = load_site(site)
        if inv.production.address is None:
            raise Exit(f"adopt: inventory/{site}.yml has no production.address (the server to adopt)", code=2)
        scanned = adopt_.scan(str(inv.production.address))
        console.print(f"{escape(scanned.address)} shows the host key {escape(scanned.public_line.split()[0])} "
                      f"[bold]{escape(scanned.fingerprint)}[/]")
        if fingerprint is None:
            console.print("Check it on the server itself: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
            fingerprint = console.input("Type the fingerprint you saw there to pin it (anything else: nothing is pinned): ")
        record = adopt_.pin(inv, scanned, fingerprint, login_key(inv))
    except RelaunchError as exc:
        raise Exit(f"adopt failed: {exc}", code=1) from exc
    console.print(f"[green]pinned[/] {escape(record.name)} at {escape(record.ipv4)}: every command now reaches it "
                  "with this key only")


@task(help={"site": SITE_HELP, "json": "print the list as JSON (newest first) instead of a table"})
def reports(c, site=DEFAULT_SITE, json=False):
    """The site's rebuild and drill reports, newest first (fab rebuild and fab drill write them)."""
    import json as jsonlib
    from pathlib import Path

    from rich import box

    from relaunch.pipeline.report import human_duration, list_reports

    found = list_reports(site)
    if json:
        print(jsonlib.dumps(found, indent=2))
        return
    if not found:
        console.print(f"no reports for {escape(site)} yet: fab rebuild and fab drill write them")
        return
    table = Table(title=f"reports of {escape(site)}, newest first", box=box.SIMPLE, show_edge=False, pad_edge=False)
    for col in ("report", "finished (UTC)", "status", "RTO", "RPO"):
        table.add_column(col, no_wrap=True)
    for r in found:
        status = "[green]passed[/]" if r["status"] == "passed" else f"[red]{escape(str(r['status'] or '?'))}[/]"
        rto, rpo = (human_duration(r[k]) if isinstance(r[k], int | float) else "-" for k in ("rto_seconds", "rpo_seconds"))
        finished = str(r["finished_at"] or "-").replace("T", " ")[:16]
        table.add_row(escape(Path(r["path_json"]).stem), escape(finished), status, rto, rpo)
    console.print(table)
    console.print(f"in {escape(str(Path(found[0]['path_json']).parent))} (.md to read, .json for tools)")

@task(
    help={
        "site": SITE_HELP,
        "backup": "rehearse with this backup ID (default: the newest, taken right after the canary)",
        "from_": "offsite (default: the copy that survives a dead host) or host (production's backup directory, read only)",
        "install_schedule": "weekly|daily: a systemd user timer on this machine that runs this drill (off: remove it)",
        "keep": "keep the scratch Droplet afterwards and print how to reach it",
        "no_canary": "write no canary into production (e.g. a drill of an older backup)",
        "cleanup": "only destroy scratch Droplets left by earlier drills",
        "golden": "bootstrap from the base image, then snapshot the scratch host before any data as the golden image "
                  "rebuilds start from (older golden snapshots deleted, one kept)",
        "no_golden": "start from the base image even when a golden snapshot matches",
        "json": "print the report's JSON instead of the summary",
        "verbose": "log what the library does",
    }
)
def drill(c, site=DEFAULT_SITE, backup=None, from_="offsite", keep=False, no_canary=False, cleanup=False, json=False,
          verbose=False, install_schedule=None, golden=False, no_golden=False):
    """Rehearse the rebuild into a scratch Droplet from the backups alone: verify, measure, destroy, report."""
    import json as jsonlib

    from relaunch import drill as drill_
    from relaunch.pipeline import PHASES
    from relaunch.ui.progress import RunView

    _setup_logging(verbose)
    try:
        if install_schedule:
            _install_schedule(site, install_schedule)
            return
        if cleanup:
            done = drill_.cleanup(site)
            for line in done:
                console.print(f"  {_e(line)}")
            console.print(f"[green]clean[/]: {len(done)} scratch Droplet(s) destroyed")
            return
        if golden and no_golden:
            raise Exit("drill: --golden and --no-golden go alone", code=2)
        options = drill_.DrillOptions(backup_id=backup, source=from_, keep=keep, canary=not no_canary,
                                      golden="make" if golden else "off" if no_golden else "use")
        out = Console(stderr=True) if json else console
        with RunView(out, [p for p in PHASES[:-1] if golden or p != "golden"], title=f"drill of {site}") as view:
            result = drill_.drill(site, options, progress=view)
    except RelaunchError as exc:
        raise Exit(f"drill failed: {exc}", code=1) from exc
    record = result.record
    if json:
        print(jsonlib.dumps(record, indent=2))
    else:
        _print_run(record, result.report_md)
        for line in result.cleaned:
            console.print(f"  cleaned up: {_e(line)}")
        console.print(f"scratch Droplet destroyed: {record.get('scratch_destroyed')}; canary: {_e(str(record.get('canary')))}")
        _print_image(record)
    for sent in result.notified:
        Console(stderr=True).print(("" if sent.ok else "[red]") + _e(sent.describe()))
    if result.status != "passed":
        raise Exit(f"drill failed: {result.error}", code=1)
    console.print(f"[green]drill passed[/] for {_e(site)}")


@task(
    help={
        "site": SITE_HELP,
        "draft": "also write inventory and runbook additions for what it finds (drafts to review; no secret in them)",
        "json": "print the result as JSON (for CI)",
        "verbose": "log what the library does",
    }
)
def drift(c, site=DEFAULT_SITE, draft=False, json=False, verbose=False):
    """What production runs that the inventory and runbooks do not describe (read only). Exit 0 none, 1 drift, 2 no check."""
    import json as jsonlib

    from relaunch.drift.check import drift as drift_

    _setup_logging(verbose)
    try:
        result, paths = drift_(site, write_draft=draft)
    except RelaunchError as exc:
        if json:
            print(jsonlib.dumps({"site": site, "drifted": None, "error": str(exc)}, indent=2))
        raise Exit(f"drift: could not check: {exc}", code=2) from exc
    if json:
        out = result.to_json()
        if paths:
            out["draft"] = [str(p) for p in paths]
        print(jsonlib.dumps(out, indent=2))
    else:
        ref = result.reference
        console.print(f"production {_e(result.production)} against the reference of {_e(ref.get('kind'))} "
                      f"{_e(ref.get('run_id'))} ({_e(ref.get('collected_at'))}); {result.seconds:.1f} s")
        if result.findings:
            table = Table(title=f"drift of {_e(site)}")
            for col in ("kind", "what", "found", "detail", "to describe it"):
                table.add_column(col)
            for f in result.findings:
                detail = f.detail + (f" (with {len(f.related)}: {', '.join(f.related[:4])}"
                                     f"{' ...' if len(f.related) > 4 else ''})" if f.related else "")
                table.add_row(_e(f.kind), _e(f.subject), _e(f.where), _e(detail), _e(f.advice))
            console.print(table)
        for problem in result.manifest.get("errors") or []:
            console.print(f"  [yellow]not read on the host[/]: {_e(problem)}")
        if paths:
            console.print(f"drafts to review: {_e(paths[0])}, {_e(paths[1])}")
        console.print(("[yellow]drift[/]: " if result.drifted else "[green]no drift[/]: ") + _e(result.summary()))
    if result.drifted:
        raise Exit(code=1)


def _install_schedule(site, every):
    """fab drill --install-schedule: the systemd user timer (or `off`: its removal)."""
    from relaunch import schedule

    if every == "off":
        removed = schedule.remove(site)
        console.print(f"removed {len(removed)} unit file(s): " + ", ".join(_e(r) for r in removed) if removed
                      else f"no drill schedule of {_e(site)} was installed")
        return
    done = schedule.install(schedule.default_schedule(site, every))
    console.print(f"[green]installed[/] {_e(', '.join(done.units))} in {_e(done.unit_dir)}; next run {_e(done.next_run or '?')}")
    for note in done.notes:
        console.print(f"  note: {_e(note)}")


def _print_run(record, report_md):
    """The summary of a rebuild's or drill's report: phases, RTO and RPO, databases, trees, what to do next."""
    table = Table(title=f"{_e(record['kind'])} of {_e(record['site'])}: {_e(record['status'])}")
    for col in ("phase", "seconds", "status"):
        table.add_column(col)
    for phase in record["phases"]:
        table.add_row(_e(phase["name"]), f"{phase['seconds'] or 0:.1f}", _e(phase["status"]))
    console.print(table)
    rpo = record.get("rpo_seconds")
    console.print(f"RTO {record['rto_seconds']:.0f} s; RPO {'-' if rpo is None else f'{rpo:.0f} s'} "
                  f"({_e(str(record.get('rpo_basis')))})")
    for db in record.get("databases") or []:
        console.print(f"  database {_e(db['name'])} ({_e(db['engine'])}): {db['tables']} tables, {db['rows']} rows, "
                      f"fingerprint {'matches' if db['fingerprint_match'] else 'DIFFERS'}"
                      + (f", canary {'present' if db['canary'] else 'MISSING'}" if db.get("canary") is not None else ""))
    for tree in record.get("files") or []:
        console.print(f"  files {_e(tree['path'])}: {tree['files']} files, {'match' if tree['match'] else 'DIFFER'}")
    drift_ = record.get("drift") or {}
    if drift_.get("drifted") or drift_.get("error"):
        console.print(f"[yellow]drift[/]: {_e(drift_.get('summary') or 'the check could not run: ' + str(drift_.get('error')))}")
    if record.get("error"):
        console.print(f"[red]error[/]: {_e(record['error'])}")
    for line in record["next_steps"]:
        console.print(f"  next: {_e(line)}")
    console.print(f"report: {_e(str(report_md))}")


ns = Collection(sandbox_up, sandbox_status, sandbox_down, check, init, render, runbook, backup, dns_switch, rebuild,
                adopt, reports, drill, drift)
