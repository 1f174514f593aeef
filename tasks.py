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


ns = Collection(sandbox_up, sandbox_status, sandbox_down)
