"""The fab tasks: parse arguments, call relaunch, print. Nothing else lives here."""

from __future__ import annotations

import logging

from fabric import task
from invoke import Collection, Exit
from rich.console import Console
from rich.table import Table

from relaunch.errors import RelaunchError
from relaunch.sandbox import manage

console = Console()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


DEFAULT_SITE = "example"
SITE_HELP = f"the site: inventory/<site>.yml (default {DEFAULT_SITE})"


@task(help={"verbose": "log what the library does"})
def sandbox_up(c, verbose=False):
    """Start the local sandbox cloud (base image, network, package cache, API); idempotent."""
    _setup_logging(verbose)
    try:
        with console.status("sandbox") as spinner:
            svc = manage.up(progress=lambda msg: spinner.update(msg))
    except RelaunchError as exc:
        raise Exit(f"sandbox-up failed: {exc}", code=1) from exc
    console.print(f"[green]sandbox up[/]: API {svc.url} (pid {svc.pid}, log {svc.log_path})")
    console.print(f"  use it with: export DIGITALOCEAN_END_POINT={svc.url}")


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
    for col in ("id", "name", "status", "ipv4", "tags", "machine"):
        table.add_column(col)
    for d in st.droplets:
        table.add_row(str(d.id), d.name, d.status, d.ipv4 or "-", ",".join(d.tags), d.machine)
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
        console.print(f"  `fab sandbox-up --site {site}` creates them (random values, mode 0600)")


ns = Collection(sandbox_up, sandbox_status, sandbox_down, check)
