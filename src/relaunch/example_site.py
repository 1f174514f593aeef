"""The bundled example site's data: how to fill its apps with a realistic amount of it.

A drill or benchmark on the example site needs data worth moving. Each example app has
a ``seed`` subcommand that fills its database (and, for the blog, its uploads directory)
up to about N MB and records what it seeded, so running it twice does not double the data.
This module says which command to run on the host for each app, and how a total is
split between the apps:

- ``blog``  60 % (half rows in PostgreSQL, half upload files under /srv/blog/uploads)
- ``stats`` 30 % (page views in MariaDB)
- ``notes`` 10 % (notes in SQLite)

Commands are argument lists for the host (no shell): the blog's runs in its ``web``
container through Compose, the native apps' with ``python3`` and their env file (the
stats app reads its database password from it).
"""

from __future__ import annotations

import shlex

from relaunch.errors import RelaunchError
from relaunch.inventory.model import App, Inventory

#: App name -> share of the total data. The shares sum to 1.
SHARES: dict[str, float] = {"blog": 0.6, "stats": 0.3, "notes": 0.1}
#: The bundled example apps' templates (relative to relaunch's templates/): an app is one of the example's
#: only when it is named like one of them and runs relaunch's own template of it.
TEMPLATES: dict[str, str] = {
    "blog": "apps/blog/compose.yml.j2", "stats": "apps/stats/stats.service.j2", "notes": "apps/notes/notes.service.j2",
}
#: Where the bootstrap records the Compose command it chose on the host (runbooks/10-docker.md).
COMPOSE_COMMAND_FILE = "/etc/relaunch/compose-command"


def is_example_app(inv: Inventory, app: App) -> bool:
    """Whether ``app`` is one of the bundled example's apps: its name, relaunch's own template of it, not overridden.

    A user's app that happens to be called ``blog`` is not one: seeding runs the example's
    own ``app.py seed`` inside it.
    """
    template = app.compose.template if app.compose else app.systemd.unit_template if app.systemd else None
    if TEMPLATES.get(app.name) != template:
        return False
    own = inv.own_dir("templates")
    return own is None or not (own / "apps" / app.name).exists()


def example_apps(inv: Inventory) -> list[str]:
    """The names of ``inv``'s apps that are the bundled example's (in the inventory's order)."""
    return [a.name for a in inv.apps if is_example_app(inv, a)]


def split_mb(data_mb: float, apps: list[str]) -> dict[str, float]:
    """Return app name -> MB for the example apps among ``apps`` (in ``apps``' order), by :data:`SHARES`.

    Amounts are rounded to 0.1 MB. Apps not in SHARES get nothing (they are left out).
    Raise RelaunchError if ``data_mb`` is negative.
    """
    if data_mb < 0:
        raise RelaunchError(f"data size must be 0 MB or more, not {data_mb}")
    return {name: round(data_mb * SHARES[name], 1) for name in apps if name in SHARES}


def parse_compose_command(text: str) -> list[str]:
    """Return the argv prefix of the Compose command in ``COMPOSE_COMMAND_FILE``'s content.

    ``"docker compose\\n"`` -> ``["docker", "compose"]``. Raise RelaunchError unless it is
    one of the two commands the bootstrap writes.
    """
    argv = shlex.split(text.strip())
    if argv not in (["docker", "compose"], ["docker-compose"]):
        raise RelaunchError(f"{COMPOSE_COMMAND_FILE} holds {text.strip()!r}, not 'docker compose' or 'docker-compose'")
    return argv


def seed_commands(
    inv: Inventory, data_mb: float, compose: list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """Return (app name, argv to run as root on the host) to seed about ``data_mb`` MB into the example apps.

    ``compose`` is the host's Compose command as an argv prefix (read it from
    :data:`COMPOSE_COMMAND_FILE` with :func:`parse_compose_command`); default
    ``["docker-compose"]``, what Debian 12 ships. Apps that get 0 MB are left out, and so
    is every app that is not the example's (:func:`is_example_app`): a site without them
    gets no command (its data is its own, or none). Raise RelaunchError for a negative size.
    """
    compose = list(compose or ["docker-compose"])
    shares = split_mb(data_mb, example_apps(inv))
    commands: list[tuple[str, list[str]]] = []
    for name, mb in shares.items():
        if mb <= 0:
            continue
        app = inv.app(name)
        size = ["seed", "--mb", f"{mb:g}"]
        if app.kind == "compose":
            argv = [*compose, "-f", f"/srv/{name}/compose.yml", "exec", "-T", "web", "python3", "/app/app.py", *size]
        else:
            argv = ["python3", f"/srv/{name}/app.py", "--env-file", f"/etc/relaunch/{name}.env", *size]
        commands.append((name, argv))
    return commands
