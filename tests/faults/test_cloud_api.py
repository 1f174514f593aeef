"""Fault case 3: the DigitalOcean API on a bad day (429 bursts with retry-after, 500s, a create action that
errors, a Droplet that never becomes active), injected into the sandbox simulator (``POST /_sandbox/faults``).

Each run stops at provision, so these cost seconds: the adapter retries within its documented limits
(:class:`relaunch.cloud.retry.RetryPolicy`), and a hard failure gives a clear error, the half-created Droplet
tagged ``relaunch-failed`` and reported (rebuild) or destroyed (drill), DNS untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from relaunch import provision
from relaunch.cloud.retry import RetryPolicy
from relaunch.drill import DRILL_TAG, DrillOptions, drill
from relaunch.inventory import load_site
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps.host import FAILED_TAG
from relaunch.rebuild import RebuildOptions, Where, abort, rebuild
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox]

TOKEN = "sandbox-test-token"


class Faults:
    """The simulator's fault knobs over its admin endpoint (the same token as the API)."""

    def __init__(self, api) -> None:
        self.url = api.url.rstrip("/").removesuffix("/v2") + "/_sandbox/faults"
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    def add(self, **spec) -> None:
        requests.post(self.url, json=spec, headers=self.headers, timeout=10).raise_for_status()

    def active(self) -> dict:
        return requests.get(self.url, headers=self.headers, timeout=10).json()

    def clear(self) -> None:
        requests.delete(self.url, headers=self.headers, timeout=10).raise_for_status()


@pytest.fixture
def faults(sandbox_api) -> Iterator[Faults]:
    knobs = Faults(sandbox_api)
    knobs.clear()
    yield knobs
    knobs.clear()


def zone(cloud, name: str) -> dict:
    return {r.id: (r.type, r.name, r.data, r.ttl) for r in cloud.list_records(name)}


def site_droplets(cloud) -> dict[int, object]:
    return {d.id: d for d in cloud.list_droplets("relaunch-example")}


@pytest.fixture
def paused_rebuild_cleaned(site_root, target, sandbox_api) -> Iterator[Where]:
    """A rebuild that fails at provision stays paused: abort it (destroying what it half-created) afterwards."""
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    yield where
    if Journal.load("example", "rebuild") is not None:
        abort("example", root=site_root, destroy=True, where=where)


@pytest.mark.fault(case=3, ci=True, expected="429 bursts (retry-after) and 500s retried within the policy's limits; "
                   "a create action that errors: a clear error, the half-created Droplet tagged relaunch-failed and "
                   "reported, DNS untouched")
def test_rebuild_through_429s_and_500s_then_a_create_that_errors(up, site_root, target, faults,
                                                                paused_rebuild_cleaned, observed) -> None:
    cloud, where = target.cloud, paused_rebuild_cleaned
    inv = load_site("example", site_root)
    records = zone(cloud, inv.dns.zone)
    before = site_droplets(cloud)
    # every request on the Droplet paths is refused 3 times (429, retry after 1 s), then two creates answer 500
    faults.add(status=429, count=3, retry_after=1, path_prefix="/v2/droplets")
    faults.add(status=500, count=2, method="POST", path_prefix="/v2/droplets")
    faults.add(droplet_create="create_error")
    started = time.monotonic()
    result = rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    seconds = time.monotonic() - started

    assert faults.active() == {"responses": [], "droplet_create": []}, "every injected fault was met"
    assert result.status == "failed"
    assert result.journal.steps["provision"]["status"] == "failed"
    assert "create action" in result.error and "errored" in result.error, result.error
    after = site_droplets(cloud)
    made = [d for i, d in after.items() if i not in before]
    assert len(made) == 1, f"one Droplet despite the 500s on its create (no duplicate): {made}"
    half = made[0]
    assert FAILED_TAG in half.tags
    assert f"{half.name} (id {half.id}" in result.error and "kept for inspection" in result.error
    assert any(str(half.id) in line and "destroy it" in line for line in result.record["next_steps"])
    assert result.journal.state["failed_droplets"][0]["id"] == half.id
    assert result.journal.state["new_name"] != half.name, "a resume creates a new Droplet, never adopts this one"
    assert zone(cloud, inv.dns.zone) == records
    policy = RetryPolicy()
    assert seconds < policy.max_total, f"{seconds:.0f} s"
    observed(f"3×429 + 2×500 retried, {seconds:.1f} s; one Droplet {half.id} ({half.status}) tagged {FAILED_TAG}, "
             f"named in the error and next steps; DNS unchanged; error: {result.error[:160]}")


@pytest.mark.fault(case=3, expected="a Droplet that never becomes active: given up after the create timeout, "
                   "tagged relaunch-failed and reported; DNS untouched")
def test_rebuild_whose_droplet_never_becomes_active(up, site_root, target, faults, paused_rebuild_cleaned,
                                                    monkeypatch, observed) -> None:
    cloud, where = target.cloud, paused_rebuild_cleaned
    inv = load_site("example", site_root)
    records = zone(cloud, inv.dns.zone)
    before = site_droplets(cloud)
    monkeypatch.setattr(provision, "CREATE_TIMEOUT", 8.0)
    faults.add(droplet_create="never_active")
    started = time.monotonic()
    result = rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    seconds = time.monotonic() - started

    assert result.status == "failed" and result.journal.steps["provision"]["status"] == "failed"
    assert "still in progress after 8 s" in result.error or "not active" in result.error, result.error
    made = [d for i, d in site_droplets(cloud).items() if i not in before]
    assert len(made) == 1 and made[0].status == "new" and FAILED_TAG in made[0].tags
    assert str(made[0].id) in result.error
    assert zone(cloud, inv.dns.zone) == records
    # the next attempt goes on with a new Droplet: abort destroys the half-created one (the fixture checks it goes)
    done = abort("example", root=site_root, destroy=True, where=where)
    assert any("destroyed the half-created Droplet" in line for line in done.undone)
    assert made[0].id not in site_droplets(cloud)
    observed(f"given up after {seconds:.0f} s (create timeout 8 s); Droplet {made[0].id} tagged {FAILED_TAG}, "
             "reported, then destroyed by `rebuild --abort --destroy`; DNS unchanged")


@pytest.mark.fault(case=3, expected="a drill whose scratch Droplet's create action errors: a clear error, the "
                   "half-created Droplet destroyed, DNS untouched")
def test_drill_whose_create_errors_destroys_the_half_created_droplet(up, site_root, target, sandbox_api, faults,
                                                                      observed) -> None:
    cloud = target.cloud
    inv = load_site("example", site_root)
    records = zone(cloud, inv.dns.zone)
    before = {d.id for d in cloud.list_droplets()}
    hosts_before = set(load_hosts("example"))
    faults.add(status=429, count=2, retry_after=1, path_prefix="/v2/droplets")
    faults.add(droplet_create="create_error")
    result = drill("example", DrillOptions(canary=False), root=site_root,
                   where=Where(cloud, sandbox_api.dns_port, target.key_path))
    assert result.status == "failed"
    assert "creating the scratch Droplet" in result.error and "destroyed with the drill's scratch" in result.error
    assert result.record["scratch_destroyed"] is True
    assert {d.id for d in cloud.list_droplets()} == before and not cloud.list_droplets(DRILL_TAG)
    assert zone(cloud, inv.dns.zone) == records
    assert set(load_hosts("example")) <= hosts_before | {result.journal.state["new_name"]}
    observed(f"drill failed at provision ({result.error[:120]}); scratch destroyed, no Droplet left, DNS unchanged")
