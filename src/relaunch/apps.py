"""Stopping and starting a site's apps on a host: the writers a final sync freezes, what a rebuild starts.

An app's writers are its own processes: a native app's unit, a Compose app's services
other than the ones its databases run in (those keep running so they can be dumped or
restored). The backup timer is a writer too (a run during a final sync would make a
"newest" backup of a half-stopped site). Every command is built from inventory names
(slugs) and quoted; each function returns what it did, for the report.

Hosts relaunch built all look alike (unit ``<app>.service``; Compose project ``<app>`` from
``/srv/<app>/compose.yml``). A production host set up by hand (``fab adopt``) may not: there
each app's ``control`` says its unit or its Compose directory (``hand_built=True``), and a
host without relaunch's record of its Compose command gets the one it has.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shlex
from dataclasses import dataclass, field

from fabric import Connection

from relaunch.backup.runner import image_reference
from relaunch.errors import RelaunchError
from relaunch.example_site import COMPOSE_COMMAND_FILE, parse_compose_command
from relaunch.inventory.model import App, ComposeService, Inventory
from relaunch.render import env_file_path

log = logging.getLogger(__name__)

BACKUP_TIMER = "relaunch-backup.timer"
BACKUP_SERVICE = "relaunch-backup.service"


def database_services(inv: Inventory, app: App) -> list[str]:
    """The Compose services of ``app`` that run one of the site's databases."""
    return sorted({db.runs.service for db in inv.databases if isinstance(db.runs, ComposeService) and db.runs.app == app.name})


def writer_services(inv: Inventory, app: App) -> list[str]:
    """The Compose services of ``app`` that are not database services (its writers)."""
    assert app.compose is not None
    keep = set(database_services(inv, app))
    return sorted(s for s in app.compose.images if s not in keep)


def compose_command(conn: Connection) -> list[str]:
    """The host's Compose command (``[]`` when the host has none: no Compose apps).

    The one relaunch's bootstrap recorded; on a host set up by hand, ``docker compose`` (v2)
    when it works, else ``docker-compose``.
    """
    run = conn.run(
        f"cat {COMPOSE_COMMAND_FILE} 2>/dev/null || "
        "{ if docker compose version >/dev/null 2>&1; then echo 'docker compose'; "
        "elif command -v docker-compose >/dev/null; then echo docker-compose; fi; } || true",
        warn=True, hide=True, in_stream=False, timeout=30)
    return parse_compose_command(run.stdout) if run.ok and run.stdout.strip() else []


def unit_of(app: App, hand_built: bool = False) -> str:
    """The systemd unit that runs ``app``: its ``control.unit`` on a host set up by hand, else ``<app>.service``."""
    return (app.control.unit if hand_built else None) or f"{app.name}.service"


def project_of(app: App, hand_built: bool = False) -> str:
    """The Compose project name of ``app`` (its containers' ``com.docker.compose.project`` label)."""
    if hand_built and app.control.compose_dir:
        # as Compose derives it from the directory (v1 and v2 agree on this form)
        return app.control.compose_project or re.sub(r"[^-_a-z0-9]", "", posixpath.basename(app.control.compose_dir).lower())
    return app.name


def _project(compose: list[str], app: App, hand_built: bool = False) -> str:
    """The shell words that run ``compose`` on ``app``'s project (a ``cd`` into its directory on a hand-built host)."""
    if hand_built and app.control.compose_dir:
        return (f"cd {shlex.quote(app.control.compose_dir)} && "
                + shlex.join([*compose, "-p", project_of(app, True)]))
    return shlex.join([*compose, "-p", app.name, "-f", f"/srv/{app.name}/compose.yml", "--env-file", env_file_path(app.name)])


def _compose_file_test(app: App, hand_built: bool) -> str:
    if hand_built and app.control.compose_dir:
        d = shlex.quote(app.control.compose_dir)
        return f"[ -d {d} ]"
    return f"[ -f /srv/{app.name}/compose.yml ]"


#: Compose v1 gives up on a slow Docker API after 60 s by default; a busy host needs longer.
_COMPOSE_ENV = "export COMPOSE_HTTP_TIMEOUT=600 DOCKER_CLIENT_TIMEOUT=600\n"


def _sh(conn: Connection, script: str, what: str, timeout: float = 300) -> str:
    run = conn.run(_COMPOSE_ENV + script, warn=True, hide=True, in_stream=False, timeout=timeout)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: {what} failed (exit {run.exited}): {(run.stdout + run.stderr).strip()[-1500:]}")
    return run.stdout


@dataclass(frozen=True)
class Stopped:
    """What :func:`stop_writers` stopped: units, compose services per app, whether the backup timer was on, and
    the host's Compose command (``[]`` without Compose apps)."""

    units: list[str]
    services: dict[str, list[str]]
    backup_timer: bool
    compose: list[str] = field(default_factory=list)


#: Shell functions of the stop and start scripts. ``running P S``: whether compose service S of project P has a
#: container running, restarting or paused (a failing ``docker ps`` fails the script: never taken for "stopped");
#: ``any_running P S...`` and ``all_running P S...`` over several services; ``wait_all PID...``: wait for every
#: background job, fail if any failed.
_SHELL_FUNCTIONS = r"""running() {
  local out
  out=$(docker ps -aq --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=$2" \
        --filter status=running --filter status=restarting --filter status=paused) || { echo "docker ps failed" >&2; exit 1; }
  [ -n "$out" ]
}
any_running() { local p=$1 s; shift; for s; do running "$p" "$s" && return 0; done; return 1; }
all_running() { local p=$1 s; shift; for s; do running "$p" "$s" || return 1; done; return 0; }
wait_all() { local p rc=0; for p; do wait "$p" || rc=1; done; return "$rc"; }
pids=""
"""


def _script(lines: list[str], jobs: list[list[str]]) -> str:
    """A script that runs ``lines``, then every job of ``jobs`` (its lines under ``set -e``) at once in the
    background, and fails if any of them failed, with :data:`_SHELL_FUNCTIONS` defined."""
    background = ["( set -e\n  " + "\n  ".join(job) + ' ) & pids="$pids $!"' for job in jobs]
    return "set -e\n" + _SHELL_FUNCTIONS + "\n".join([*lines, *background, "wait_all $pids"])

#: What the stop script prints when the backup timer was on before it stopped it.
_TIMER_WAS_ON = "relaunch-backup-timer-was-active"


def stop_writers(conn: Connection, inv: Inventory, *, disable: bool = False, backup_timer: bool = True,
                 wait_backup: float = 900, hand_built: bool = False, databases_up: bool = False) -> Stopped:
    """Stop every writer of the site on ``conn``'s host (``disable``: also keep them from starting at boot).

    ``hand_built``: the host was set up by hand; each app's ``control`` says how to reach it.
    ``databases_up``: then start the site's database servers as :func:`start_databases` does, in
    the same go (what a final sync or a restore needs: writers stopped, databases up).

    A backup run in progress is waited for (up to ``wait_backup`` s), never killed: its
    backup would be lost. Idempotent: stopping what is stopped changes nothing (a Compose app
    none of whose writers runs is not asked to stop them). The apps' Compose projects are
    stopped in parallel; one SSH command in all.
    """
    units: list[str] = []
    services: dict[str, list[str]] = {}
    lines: list[str] = []
    if backup_timer:
        verb = "disable --now" if disable else "stop"
        lines.append(f"if systemctl is-active --quiet {BACKUP_TIMER}; then echo {_TIMER_WAS_ON}; fi")
        lines.append(f"systemctl {verb} --quiet {BACKUP_TIMER} 2>/dev/null || true  # not installed: nothing to stop")
        lines.append(
            f"for _ in $(seq {int(wait_backup)}); do systemctl is-active --quiet {BACKUP_SERVICE} || break; sleep 1; done; "
            f"if systemctl is-active --quiet {BACKUP_SERVICE}; then echo 'a backup run is still going' >&2; exit 1; fi"
        )
    compose = compose_command(conn) if any(a.kind == "compose" for a in inv.apps) else []
    for app in inv.apps:
        if app.kind == "systemd":
            unit = unit_of(app, hand_built)
            units.append(unit)
            lines.append(f"systemctl {'disable --now' if disable else 'stop'} --quiet {shlex.quote(unit)}")
    jobs: list[list[str]] = []
    for app in inv.apps:
        if app.kind != "compose":
            continue
        writers = writer_services(inv, app)
        services[app.name] = writers
        job = []
        if writers and compose:
            # asked only when one of them runs; a host going out of service (disable) is always asked
            when = "" if disable else f" && any_running {shlex.join([project_of(app, hand_built), *writers])}"
            # a subshell: a hand-built host's `cd` stays inside it
            job.append(f"if {_compose_file_test(app, hand_built)}{when}; then "
                       f"( {_project(compose, app, hand_built)} stop {shlex.join(writers)} ); fi")
        if databases_up:
            job += _databases_up(inv, app, compose, conn)
        if job:
            jobs.append(job)
    if databases_up:
        lines += _native_databases_up(inv)
    what = "stopping the site's writers" + (" and starting its database servers" if databases_up else "")
    out = _sh(conn, _script(lines, jobs), what, timeout=wait_backup + 300)
    had_timer = _TIMER_WAS_ON in out.split()
    log.info("%s: writers stopped: %s %s%s", conn.host, units, services, "; databases up" if databases_up else "")
    return Stopped(units, services, had_timer, compose)


def _native_databases_up(inv: Inventory) -> list[str]:
    native = sorted({db.engine for db in inv.databases if db.runs == "native" and db.engine != "sqlite"})
    return [f"systemctl start {'postgresql' if eng == 'postgresql' else 'mariadb'}" for eng in native]


def _databases_up(inv: Inventory, app: App, compose: list[str], conn: Connection) -> list[str]:
    """The lines that start ``app``'s Compose database services unless every one runs already."""
    dbs = database_services(inv, app)
    if not dbs:
        return []
    if not compose:
        raise RelaunchError(f"{conn.host}: app {app.name!r} runs a database in Compose but the host has no compose command")
    # databases in a project of relaunch's layout only (the inventory refuses them with control.compose_dir)
    return [f"all_running {shlex.join([app.name, *dbs])} || {_project(compose, app)} up -d {shlex.join(dbs)}"]


def start_apps(conn: Connection, inv: Inventory, hand_built: bool = False) -> list[str]:
    """Start (and enable) every app of the site on ``conn``'s host; return what was started.

    ``hand_built``: the host was set up by hand; each app's ``control`` says how to reach it.
    """
    compose = compose_command(conn) if any(a.kind == "compose" for a in inv.apps) else []
    lines, started = ["set -e"], []
    for app in inv.apps:
        if app.kind == "systemd":
            unit = shlex.quote(unit_of(app, hand_built))
            # restart starts a stopped unit and restarts a running one (it must read the restored data): once
            lines.append(f"systemctl enable --quiet {unit}")
            lines.append(f"systemctl restart {unit}")
        else:
            if not compose:
                raise RelaunchError(f"{conn.host}: app {app.name!r} is a Compose app but the host has no compose command")
            lines.append(f"( {_project(compose, app, hand_built)} up -d )")
        started.append(app.name)
    _sh(conn, "\n".join(lines), "starting the apps", timeout=600)
    return started


def enable_backup_timer(conn: Connection, on: bool) -> None:
    """Turn the host's backup timer on (enabled and started) or off (disabled and stopped)."""
    verb = "enable --now" if on else "disable --now"
    _sh(conn, f"systemctl {verb} --quiet {BACKUP_TIMER}", f"turning the backup timer {'on' if on else 'off'}")


def start_databases(conn: Connection, inv: Inventory) -> None:
    """Start the site's database servers on ``conn``'s host (native units, Compose database services); idempotent.

    A broken host whose apps are down may have its databases down too; a final dump needs them.
    A Compose app whose database services all run is not asked again; the apps go in parallel.
    """
    compose_apps = [a for a in inv.apps if a.kind == "compose" and database_services(inv, a)]
    compose = compose_command(conn) if compose_apps else []
    native = _native_databases_up(inv)
    jobs = [job for job in (_databases_up(inv, app, compose, conn) for app in compose_apps) if job]
    if native or jobs:
        _sh(conn, _script(native, jobs), "starting the database servers", timeout=600)


def deployed_images(conn: Connection, inv: Inventory, hand_built: bool = False) -> dict[str, dict[str, str]]:
    """The image each Compose service of the site runs on ``conn``'s host, by digest: app -> service -> ``repo@sha256:...``.

    Read from the containers (running or stopped), so a rebuild deploys exactly what
    production ran. A container created from a tag (a hand-built production's
    ``image: nginx:1.25``) is answered with the digest its image was pulled by, never the
    tag: a tag moves, and a rebuild must not deploy what upstream published since. Raise
    RelaunchError when a service has no container, or runs an image known by no digest
    (built on the host and never pushed: a rebuild could not pull it).
    """
    out: dict[str, dict[str, str]] = {}
    for app in inv.apps:
        if app.kind != "compose":
            continue
        script = (
            f"ids=$(docker ps -aq --filter label=com.docker.compose.project={shlex.quote(project_of(app, hand_built))}); "
            'for id in $ids; do docker inspect --format '
            + shlex.quote('{{index .Config.Labels "com.docker.compose.service"}} {{.Config.Image}} {{.Image}}')
            + ' "$id"; docker image inspect --format ' + shlex.quote("{{json .RepoDigests}}")
            + ' "$(docker inspect --format ' + shlex.quote("{{.Image}}") + ' "$id")" 2>/dev/null || echo null; done'
        )
        lines = _sh(conn, script, f"reading the images of {app.name}", timeout=60).splitlines()
        found: dict[str, set[str]] = {}
        for line, digests in zip(lines[0::2], lines[1::2], strict=False):
            words = line.split()
            if len(words) != 3:
                continue
            service, config_image, image_id = words
            try:
                repo_digests = json.loads(digests)
            except ValueError:
                repo_digests = None
            ref = image_reference(config_image, image_id, repo_digests if isinstance(repo_digests, list) else None)
            if ref is None:
                raise RelaunchError(f"{conn.host}: app {app.name!r} service {service!r} runs image {config_image}, "
                                    "known by no digest (built on the host, never pushed or pulled): a rebuild could "
                                    "not pull it; push it to a registry and deploy it from there")
            found.setdefault(service, set()).add(ref)
        for service, refs in sorted(found.items()):
            if len(refs) > 1:
                raise RelaunchError(f"{conn.host}: app {app.name!r} service {service!r} runs different images "
                                    f"({', '.join(sorted(refs))}); cannot tell which one a rebuild should deploy")
            out.setdefault(app.name, {})[service] = next(iter(refs))
        assert app.compose is not None
        missing = sorted(set(app.compose.images) - set(out.get(app.name, {})))
        if missing:
            raise RelaunchError(f"{conn.host}: app {app.name!r} has no container for service(s) {', '.join(missing)}; "
                                "cannot tell which images production ran")
    return out
