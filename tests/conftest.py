"""Fixtures shared by every test layer.

The sandbox fixtures give a test session its own sandbox network (Droplet containers,
snapshots, package cache, image registry) on the local Docker daemon and remove all of
it at the end, also on failure and Ctrl-C (pytest runs session teardown on
KeyboardInterrupt). Only the base images are shared: they are caches, not state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from relaunch.cloud import Cloud
from relaunch.sandbox.api import ServerHandle, start_server
from relaunch.sandbox.site import SiteUp, Target, bring_up


@pytest.fixture(scope="session", autouse=True)
def _keep_user_state_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests never read or write the user's ~/.ssh, relaunch state or sandbox state.

    Session-scoped (and autouse) so it is in place before any module- or session-scoped
    fixture runs: a broader fixture is set up before narrower ones.
    """
    base = tmp_path_factory.getbasetemp()
    home = base / "home"
    home.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.delenv("SSH_AUTH_SOCK", raising=False)
        mp.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
        mp.delenv("DIGITALOCEAN_END_POINT", raising=False)
        mp.setenv("RELAUNCH_SANDBOX_DIR", str(base / "sandbox-state"))
        mp.setenv("RELAUNCH_STATE_DIR", str(base / "relaunch-state"))
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``retires_production`` run after every other test of the session, in their own order.

    They switch the example site over to a host they rebuild, so the session's production (``up``)
    is retired under them; tests in any directory that use ``up`` as it is must run first.
    """
    last = [item for item in items if item.get_closest_marker("retires_production") is not None]
    if last:
        items[:] = [item for item in items if item.get_closest_marker("retires_production") is None] + last


def _network_name() -> str:
    return f"relaunch-sandbox-t{os.getpid()}"


@pytest.fixture(scope="session")
def sandbox_backend() -> Iterator[object]:
    """The real Droplet backend on a network of this session's own; everything removed after."""
    from relaunch.sandbox.docker_backend import DockerBackend, remove_everything

    # Everything of this sandbox, its package cache and registry included, carries its
    # network's label, and goes with it.
    backend = DockerBackend(network=_network_name())

    def clean_up() -> None:
        remove_everything(network=backend.network)

    try:
        backend.prepare()
    except BaseException:
        clean_up()
        raise
    yield backend
    clean_up()


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An ed25519 login key for root on sandbox Droplets: (private key path, public line)."""
    from relaunch.remote import ensure_client_key

    path = tmp_path_factory.mktemp("keys") / "id_ed25519"
    return path, ensure_client_key(path)


# ---- the sandbox cloud and the example site on it (tests/sandbox and tests/faults) ----

TOKEN = "sandbox-test-token"
ROOT = Path(__file__).resolve().parents[1]
#: The example site is seeded small in tests; `fab sandbox-up --site example` seeds 100 MB.
SEED_MB = 8
#: Faster background writers than the defaults, so growth shows within seconds.
FAST_WRITES = {"blog": {"BLOG_COMMENT_INTERVAL": "0.5"}, "stats": {"STATS_WRITE_INTERVAL": "0.5"},
               "notes": {"NOTES_WRITE_INTERVAL": "0.5"}}


@pytest.fixture(scope="session")
def sandbox_api(tmp_path_factory: pytest.TempPathFactory, sandbox_backend: object) -> Iterator[ServerHandle]:
    """One simulator for the session (documented rate limits raised: tests poll a lot)."""
    handle = start_server(
        tmp_path_factory.mktemp("cloud"), sandbox_backend, TOKEN, per_hour=1_000_000, per_minute=1_000_000
    )
    yield handle
    handle.close()


def boot_rendered(cloud: Cloud, client_key: tuple[Path, str], ctx, name: str):
    """Create a Droplet from relaunch's own user-data for ``ctx`` (its host key pinned) and return a
    connection to it with SSH answering; the ``cloud`` fixture destroys the Droplet, the caller closes the connection."""
    from relaunch.remote import connect, wait_for_ssh
    from relaunch.render import render_user_data

    key = cloud.ensure_ssh_key(client_key[1], "relaunch-test")
    droplet = cloud.create_droplet(
        name=name, region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
        ssh_keys=[key.fingerprint], user_data=render_user_data(ctx), tags=["relaunch-test"], ssh_timeout=180,
    )
    conn = connect(droplet.ipv4, ctx.host_key.public_line, client_key[0])  # the host key from our user-data
    try:
        wait_for_ssh(conn, timeout=120)
    except BaseException:
        conn.close()
        raise
    return conn


@pytest.fixture
def cloud(sandbox_api: ServerHandle) -> Iterator[Cloud]:
    """The relaunch cloud adapter pointed at the session's sandbox; droplets it made are destroyed after."""
    with Cloud(token=TOKEN, endpoint=sandbox_api.url, timeout=30, poll_interval=0.2, poll_max_interval=1.0) as c:
        before = {d.id for d in c.list_droplets()}
        yield c
        for droplet in c.list_droplets():
            if droplet.id not in before:
                c.destroy_droplet(droplet.id)


@pytest.fixture(scope="session")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example inventory with fast writers (its secret files are made beside it, not in the repo)."""
    root = tmp_path_factory.mktemp("site")
    (root / "inventory").mkdir()
    data = yaml.safe_load((ROOT / "inventory/example.yml").read_text())
    for app in data["apps"]:
        app["env"] = {**app.get("env", {}), **FAST_WRITES[app["name"]]}
    (root / "inventory/example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@pytest.fixture(scope="session")
def target(sandbox_api, sandbox_backend, client_key) -> Iterator[Target]:
    with Cloud(token="sandbox-test-token", endpoint=sandbox_api.url, poll_interval=0.2, poll_max_interval=1.0) as c:
        yield Target(cloud=c, network=sandbox_backend.network, key_path=client_key[0])
        c.destroy_droplets_by_tag("relaunch-example")


@pytest.fixture(scope="session")
def up(site_root: Path, target: Target) -> SiteUp:
    """The example site, up on a production Droplet of the session's sandbox (shared by the tests that need it)."""
    return bring_up("example", data_mb=SEED_MB, root=site_root, target=target)
