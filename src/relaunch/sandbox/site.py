"""Bring a site up on a sandbox "production" Droplet, from nothing (``fab sandbox-up --site NAME``).

The same parts a rebuild uses (provision, bootstrap, health) plus what only a sandbox
needs: the site's images built and pushed to the sandbox registry, its secret files made,
its DNS zone created in the simulator, and (for the example site) data seeded.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

import docker

from relaunch import example_site
from relaunch.backup.sandbox_store import ensure_backup_host
from relaunch.backup.site import install_site
from relaunch.backup.status import read_runs, run_now
from relaunch.bootstrap import BootstrapResult
from relaunch.cloud import Cloud, DnsRecord
from relaunch.cloud.local import login_key_path
from relaunch.errors import RelaunchError
from relaunch.health import HealthReport
from relaunch.images import is_by_tag
from relaunch.inventory import load_site
from relaunch.inventory.model import Inventory
from relaunch.inventory.secrets import Secrets, ensure_sandbox_secrets, resolve_all
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.plan import Plan, Step, execute
from relaunch.pipeline.steps import apps as app_steps
from relaunch.pipeline.steps import host
from relaunch.sandbox import manage, ownership
from relaunch.sandbox.docker_backend import NETWORK
from relaunch.sandbox.image import ensure_image
from relaunch.sandbox.images import build_example_images, resolve_public
from relaunch.sandbox.registry import Registry
from relaunch.state import HostRecord, production_record

log = logging.getLogger(__name__)

SEED_MARKER = "/var/lib/relaunch/example-seeded"


@dataclass
class SiteUp:
    """What ``bring_up`` did, phase by phase."""

    site: str
    host: HostRecord | None = None
    created: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    bootstrap: BootstrapResult | None = None
    seeded_mb: float = 0.0
    dns: list[DnsRecord] = field(default_factory=list)
    health: HealthReport | None = None


client_key_path = login_key_path


@dataclass(frozen=True)
class Target:
    """Which sandbox to use: its API (through the adapter), its Docker network, the login key."""

    cloud: Cloud
    network: str
    key_path: Path


def bring_up(
    site: str,
    data_mb: float = 100,
    root: Path | None = None,
    progress: Callable[[str], None] | None = None,
    target: Target | None = None,
    droplet: str | None = None,
    backups: bool = False,
) -> SiteUp:
    """Create (or find) the site's production Droplet in the sandbox, bootstrap it, seed it, point DNS at it.

    ``target`` defaults to the user's sandbox (started if needed). Idempotent: a second
    call finds the Droplet, changes nothing on it, seeds nothing twice. ``backups``: also
    install the backup on the production host (``fab backup --install``) and take one
    backup if it has none yet (what ``fab drill`` needs). Raise
    RelaunchError (with what failed) at the first failure; the last phase is the health
    checks, which must all pass.

    ``droplet`` names another Droplet to bring the site up on, as a *spare* (role
    ``spare`` in hosts.json, so ``fab dns-switch --to new`` finds it): its own data,
    DNS and the backup host left alone.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    inv = load_site(site, root)
    if inv.provider.kind != "sandbox":
        raise RelaunchError(f"site {site!r} has provider.kind {inv.provider.kind!r}; sandbox-up needs 'sandbox'")
    if not inv.production.droplet_name:
        raise RelaunchError(f"site {site!r}: production.droplet_name is needed to make it in the sandbox")
    if droplet == inv.production.droplet_name:
        raise RelaunchError(f"{droplet} is the site's production Droplet; a spare needs another name")
    result = SiteUp(site=site)
    clock = _phases(result.phases, say)

    with clock("secrets"):
        for path in ensure_sandbox_secrets(inv):
            say(f"made secret file {path}")
        secrets = resolve_all(inv)
    ownership.claim(inv, secrets)  # another checkout's site (other passwords) stops here, nothing touched
    if target is None:
        with clock("sandbox"):
            svc = manage.up(progress=say)
        with manage.sandbox_cloud(svc) as cloud:
            return _bring_up(inv, data_mb, Target(cloud, NETWORK, client_key_path()), secrets, result, clock, say,
                             droplet, backups)
    return _bring_up(inv, data_mb, target, secrets, result, clock, say, droplet, backups)


def _bring_up(
    inv: Inventory, data_mb: float, target: Target, secrets: Secrets, result: SiteUp, clock: Callable[[str], ContextManager[None]],
    say: Callable[[str], None], spare: str | None, backups: bool = False,
) -> SiteUp:
    """The pipeline's provision, boot, bootstrap and health steps, with what only a sandbox adds in between."""
    with clock("images"):
        images = _images(inv, target.network)
    # after a rebuild the production host is the one it built (role production), not the first one
    current = production_record(inv.site, inv.production.droplet_name)
    name = spare or (current.name if current is not None else inv.production.droplet_name)
    assert name is not None  # checked by bring_up
    journal = Journal.ephemeral(inv.site, "sandbox-up", {"role": "spare" if spare else "production"})
    journal.state.update(new_name=name, images=images)

    def progress(event: Event) -> None:
        if event.kind == "done" and event.seconds is not None:
            result.phases[event.step] = event.seconds
        elif event.kind in ("start", "info"):
            say(f"{event.step}: {event.message}")

    ctx = RunContext(inv, secrets, target.cloud, target.key_path, journal, dict(journal.data["options"]),
                     progress=progress)
    try:
        execute(Plan("sandbox-up", inv.site, [
            Step("provision", f"create (or find) Droplet {name}", host.provision),
            Step("boot", "wait for SSH and cloud-init", host.boot),
            Step("bootstrap", "upload the rendered templates, run the runbooks", host.bootstrap_host),
        ]), ctx)
        result.created = bool(journal.state.get("created"))
        result.host = ctx.new_record()
        result.bootstrap = ctx.results["bootstrap"]
        with clock("seed"):
            result.seeded_mb = _seed(ctx.new_conn(), inv, data_mb, say)
        if not spare:
            with clock("backup host"):
                ensure_backup_host(target, inv)  # the off-host store (relaunch.backup.sandbox_store)
            with clock("dns"):
                result.dns = point_records(target.cloud, inv, result.host)
        try:
            execute(Plan("sandbox-up", inv.site, [Step("health", "every health check", app_steps.health)]), ctx)
        except RelaunchError as exc:
            raise RelaunchError(f"site {inv.site!r} is up on {result.host.ipv4} but {exc}") from None
        result.health = ctx.results["health"]
        if backups and not spare:
            with clock("backups"):
                install_site(inv, target.key_path)
                conn = ctx.new_conn()
                if not any(run.ok for run in read_runs(conn)):
                    say("taking the first backup")
                    run_now(conn, inv.site)
    finally:
        ctx.close()
    return result


def _images(inv: Inventory, network: str) -> dict[str, dict[str, str]]:
    """Build and push the site's own images, resolve its public ones (by tag); return app -> service -> reference by digest.

    A public image's tag is resolved now, when the app is deployed (the sandbox registry plays
    the public one); what the host then runs, and every backup records, is that digest.
    """
    own = {repo for app in inv.apps if app.compose for repo in app.compose.images.values() if not is_by_tag(repo)}
    public = {repo for app in inv.apps if app.compose for repo in app.compose.images.values() if is_by_tag(repo)}
    if not own and not public:
        return {}
    client = docker.from_env()
    base = ensure_image(client)
    registry = Registry(client, network, base)
    refs = build_example_images(client, base, registry) if own else {}
    missing = sorted(own - set(refs))
    if missing:
        raise RelaunchError(
            f"site {inv.site!r} wants images {', '.join(missing)}, which the sandbox does not build "
            f"(it builds {', '.join(sorted(refs))}; an image of another project is named by tag, e.g. "
            "'docker.io/library/nginx:1.25')"
        )
    for repo in sorted(public):
        refs[repo] = resolve_public(client, repo, registry)
    return {
        app.name: {service: refs[repo] for service, repo in app.compose.images.items()}
        for app in inv.apps
        if app.compose
    }


def _seed(conn, inv: Inventory, data_mb: float, say: Callable[[str], None]) -> float:
    """Seed the example apps up to ``data_mb`` (a marker file records how much); return the MB added.

    Seeding is the example's business: a site without the example's apps gets nothing (0 MB).

    Asking again for the same amount (or less) does nothing; asking for more adds the
    difference (each app's seeder tops up to the size asked for).
    """
    if data_mb <= 0:
        return 0.0
    if not example_site.example_apps(inv):
        say("no example apps to seed (the site's data is its own)")
        return 0.0
    marker = conn.run(f"cat {SEED_MARKER} 2>/dev/null || true", hide=True, in_stream=False).stdout.strip()
    try:
        seeded = float(marker) if marker else 0.0
    except ValueError:
        seeded = 0.0
    if data_mb <= seeded:
        say(f"already seeded with {seeded:g} MB on this host")
        return 0.0
    compose = example_site.parse_compose_command(
        conn.run(f"cat {example_site.COMPOSE_COMMAND_FILE}", hide=True, in_stream=False).stdout
    )
    for app, argv in example_site.seed_commands(inv, data_mb, compose):
        say(f"seeding {app}")
        started = time.monotonic()
        run = conn.run(shlex.join(argv), warn=True, hide=True, in_stream=False, timeout=3600)
        if not run.ok:
            tail = (run.stdout + run.stderr)[-1500:]
            raise RelaunchError(f"seeding {app} failed (exit {run.exited}):\n{tail}")
        log.info("seeded %s in %.1f s", app, time.monotonic() - started)
    conn.run(
        f"mkdir -p /var/lib/relaunch && echo {shlex.quote(str(data_mb))} > {SEED_MARKER}", hide=True, in_stream=False
    )
    return data_mb - seeded


def point_records(cloud: Cloud, inv: Inventory, host: HostRecord) -> list[DnsRecord]:
    """Create the site's zone if needed and point each of its records at ``host`` (A: IPv4, AAAA: IPv6)."""
    zone = inv.dns.zone
    cloud.ensure_domain(zone)
    out: list[DnsRecord] = []
    for spec in inv.dns.records:
        address = host.ipv4 if spec.type == "A" else host.ipv6
        if not address:
            raise RelaunchError(
                f"AAAA record {spec.name!r} needs an IPv6 address and Droplet {host.name} has none "
                "(was the sandbox network made before it had IPv6? `fab sandbox-down`, then up again)"
            )
        existing = cloud.list_records(zone, type=spec.type, name=spec.name)
        if not existing:
            out.append(cloud.create_record(zone, type=spec.type, name=spec.name, data=address, ttl=inv.dns.ttl))
        elif existing[0].data != address:
            out.append(cloud.update_record(zone, existing[0].id, data=address))
        else:
            out.append(existing[0])
    return out


def _phases(into: dict[str, float], say: Callable[[str], None]) -> Callable[[str], ContextManager[None]]:
    """Return ``clock``: ``with clock(name):`` tells progress, then times the block into ``into[name]``."""

    @contextlib.contextmanager
    def clock(name: str) -> Iterator[None]:
        say(f"{name}...")
        started = time.monotonic()
        try:
            yield
        finally:
            into[name] = time.monotonic() - started

    return clock
