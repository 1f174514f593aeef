"""Sandbox: DNS switches of the example site (records through the API, answers from the sandbox's DNS).

The only healthy host is production, so the records are first moved elsewhere (forced, to a
bare Droplet with no apps) and then switched back to production: a switch to a healthy target.
Every test leaves the zone as it found it (other tests check its records point at production).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dns.message
import dns.query
import pytest

from relaunch.cloud import Cloud, Droplet
from relaunch.dns import switch as sw
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.model import Inventory
from relaunch.sandbox.site import bring_up
from relaunch.state import forget_host

pytestmark = pytest.mark.sandbox

def zone_state(cloud: Cloud, inv: Inventory) -> dict[int, tuple[str, str, str, int | None]]:
    return {r.id: (r.type, r.name, r.data, r.ttl) for r in cloud.list_records(inv.dns.zone)}


@pytest.fixture(scope="module")
def inv(up, site_root) -> Inventory:
    return load_site("example", site_root)


@pytest.fixture(scope="module")
def bare(target, up) -> Iterator[Droplet]:
    """A Droplet of the site with nothing on it: every health check fails against it."""
    cloud = target.cloud
    d = cloud.create_droplet(name="example-bare", region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
                             tags=["relaunch-example"], ipv6=True, ssh_timeout=None)
    yield d
    cloud.destroy_droplet(d.id)


@pytest.fixture
def zone_kept(target, inv) -> Iterator[dict]:
    """The zone before the test; put back exactly (data and TTL) after it, whatever happened."""
    cloud = target.cloud
    before = zone_state(cloud, inv)
    yield before
    for rid, (_type, _name, data, ttl) in before.items():
        now = zone_state(cloud, inv).get(rid)
        if now is not None and (now[2], now[3]) != (data, ttl):
            cloud.update_record(inv.dns.zone, rid, data=data, ttl=ttl)
    journal = sw.load_journal(inv.site)
    journal["ttl"] = {}
    sw.save_journal(inv.site, journal)


def verify_kwargs(sandbox_api) -> dict:
    """Verification by the default verifier: relaunch.dns.authoritative against the sandbox's DNS server."""
    assert sandbox_api.dns_port, "the sandbox answers DNS"
    return {"dns_port": sandbox_api.dns_port, "verify_timeout": 30}


def authoritative_answer(sandbox_api, name: str, rdtype: str = "A") -> list[str]:
    port = sandbox_api.dns_port
    reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=5)
    return sorted(item.address for rrset in reply.answer for item in rrset)


def test_switch_refuses_a_droplet_whose_apps_are_down(target, inv, bare, zone_kept) -> None:
    with pytest.raises(RelaunchError, match="refusing to switch .* health check failed: blog: .*no answer"):
        sw.switch(target.cloud, inv, "example-bare")
    assert zone_state(target.cloud, inv) == zone_kept


def test_switch_dry_run_changes_nothing(target, inv, bare, zone_kept) -> None:
    result = sw.switch(target.cloud, inv, "example-bare", dry_run=True, force=True)
    assert bare.ipv6 and bare.ipv6.startswith("fd")  # the sandbox network's own unique local /64
    assert [(c.name, c.type, c.after_data) for c in result.plan.changes] == [
        (spec.name, spec.type, bare.ipv4 if spec.type == "A" else bare.ipv6) for spec in inv.dns.records]
    assert zone_state(target.cloud, inv) == zone_kept


def test_switch_to_healthy_target_then_old_restores_exactly(target, inv, up, bare, zone_kept, sandbox_api) -> None:
    cloud, prod = target.cloud, up.host
    kw = verify_kwargs(sandbox_api)
    sw.prepare(cloud, inv)
    assert {r[3] for r in zone_state(cloud, inv).values() if r[0] == "A"} == {inv.dns.switch_ttl}

    # Move the records off production (forced: nothing answers there) ...
    away = sw.switch(cloud, inv, "example-bare", force=True, **kw)
    assert away.forced and any(w.startswith("FORCED") for w in away.warnings)
    after_away = zone_state(cloud, inv)
    assert {r[2] for r in after_away.values() if r[0] == "A"} == {bare.ipv4}

    # ... then switch to the healthy production Droplet, waiting out what is left of the old TTL
    # (the TTL was lowered "1798 s ago" here, so 2 s of its 1800 s are left).
    journal = sw.load_journal(inv.site)
    journal["ttl"]["prepared_at"] = (datetime.now(timezone.utc) - timedelta(seconds=1798)).isoformat()
    sw.save_journal(inv.site, journal)
    back = sw.switch(cloud, inv, prod.name, wait_ttl=True, **kw)
    assert 0 < back.waited_ttl <= 2.5 and back.phases["wait ttl"] >= back.waited_ttl - 0.1
    assert back.ok and not back.forced and back.health.ok
    assert {r[2] for r in zone_state(cloud, inv).values() if r[0] == "A"} == {prod.ipv4}
    assert back.verification is not None and back.verification.skipped is None
    assert back.verification.ok and back.verification.seconds < 30
    assert back.verification.answers["A"] == {f"{name}.{inv.dns.zone}" if name != "@" else inv.dns.zone: [prod.ipv4]
                                              for name in ("@", "stats", "notes")}
    assert back.verification.answers["AAAA"] == {inv.dns.zone: [prod.ipv6]}
    assert back.health.address == f"{prod.ipv4}, [{prod.ipv6}]"  # checked over IPv4 and IPv6
    assert authoritative_answer(sandbox_api, f"stats.{inv.dns.zone}") == [prod.ipv4]
    assert authoritative_answer(sandbox_api, inv.dns.zone, "AAAA") == [prod.ipv6]

    # `old` puts back exactly what the last switch replaced (data and TTL).
    sw.switch(cloud, inv, "old", force=True, **kw)
    assert zone_state(cloud, inv) == after_away
    assert authoritative_answer(sandbox_api, inv.dns.zone) == [bare.ipv4]
    sw.switch(cloud, inv, "old", **kw)  # and back to production

    sw.restore_ttl(cloud, inv)
    assert zone_state(cloud, inv) == zone_kept


@pytest.mark.heavy
def test_switch_to_new_spare_host_verified_then_ttl_restored_after_settle(
        target, inv, up, site_root, zone_kept, sandbox_api) -> None:
    """`--to new`: the newest Droplet relaunch built (a spare with the site's apps), checked over
    HTTPS with each app's SNI, switched, verified on the authoritative server; the TTL lowered by
    prepare comes back by itself after the settle time."""
    cloud, kw = target.cloud, verify_kwargs(sandbox_api)
    spare = bring_up("example", data_mb=1, root=site_root, target=target, droplet="example-new")
    try:
        assert spare.host.role == "spare" and spare.dns == [] and spare.health.ok
        assert {r.scheme for r in spare.health.results} == {"https", "http"}
        sw.prepare(cloud, inv)
        said: list[str] = []
        result = sw.switch(cloud, inv, "new", settle=1, progress=said.append, **kw)
        assert result.ok and not result.forced and result.plan.droplet.name == "example-new"
        assert result.health.ok and result.health.address == f"{spare.host.ipv4}, [{spare.host.ipv6}]"
        assert any(r.scheme == "https" and r.ok for r in result.health.results)
        assert result.verification.skipped is None and result.verification.seconds < 30
        for name in ("example.test", "stats.example.test", "notes.example.test"):
            assert authoritative_answer(sandbox_api, name) == [spare.host.ipv4]
        assert authoritative_answer(sandbox_api, "example.test", "AAAA") == [spare.host.ipv6]
        # after the settle time the TTL is the inventory's again, the data still the spare's
        assert any(m.startswith("settling before the TTL is restored") for m in said)
        assert {(r[2], r[3]) for r in zone_state(cloud, inv).values() if r[0] in ("A", "AAAA")} == {
            (spare.host.ipv4, inv.dns.ttl), (spare.host.ipv6, inv.dns.ttl)}
        assert len(result.ttl_restored.changes) == len(inv.dns.records)
        assert sw.load_journal(inv.site)["ttl"] == {}
        back = sw.switch(cloud, inv, up.host.name, **kw)  # and back to production, healthy
        assert back.ok and authoritative_answer(sandbox_api, inv.dns.zone) == [up.host.ipv4]
    finally:
        if spare.host is not None:
            cloud.destroy_droplet(spare.host.droplet_id)
            forget_host(inv.site, spare.host.name)
    assert zone_state(cloud, inv) == zone_kept


class FailingSecondUpdate:
    """The real Cloud, except that the second update_record fails (as the API might, part-way)."""

    def __init__(self, cloud: Cloud) -> None:
        self._cloud = cloud
        self.updates = 0

    def update_record(self, *args, **kwargs):
        self.updates += 1
        if self.updates == 2:
            raise RelaunchError("updating DNS record: HTTP 500 (injected)")
        return self._cloud.update_record(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._cloud, name)


def test_switch_failure_after_first_record_rolls_back(target, inv, bare, zone_kept, sandbox_api) -> None:
    assert len(inv.dns.records) >= 3
    failing = FailingSecondUpdate(target.cloud)
    with pytest.raises(RelaunchError, match=r"injected.*already changed were put back"):
        sw.switch(failing, inv, "example-bare", force=True, **verify_kwargs(sandbox_api))  # type: ignore[arg-type]
    assert zone_state(target.cloud, inv) == zone_kept
    assert sw.load_journal(inv.site)["switches"][-1]["status"] == "rolled-back"


def test_reserved_ip_switch_and_cross_region_refusal(target, inv, up, zone_kept) -> None:
    cloud, prod = target.cloud, up.host
    region = cloud.get_droplet(prod.droplet_id).region
    same = cloud.create_reserved_ip(region=region)
    other = cloud.create_reserved_ip(region="nyc3" if region != "nyc3" else "ams3")
    try:
        with_ip = inv.model_copy(update={"dns": inv.dns.model_copy(update={"reserved_ip": same.ip})})
        result = sw.switch(cloud, with_ip, prod.name, via="reserved-ip")
        assert result.ok and result.reserved_ip_after == prod.droplet_id
        assert cloud.get_reserved_ip(same.ip).droplet_id == prod.droplet_id

        far = inv.model_copy(update={"dns": inv.dns.model_copy(update={"reserved_ip": other.ip})})
        with pytest.raises(RelaunchError, match="cannot move across regions; switch with DNS instead"):
            sw.switch(cloud, far, prod.name, via="reserved-ip")
        assert cloud.get_reserved_ip(other.ip).droplet_id is None
        assert zone_state(cloud, inv) == zone_kept
    finally:
        for rip in (same, other):
            if cloud.get_reserved_ip(rip.ip).droplet_id is not None:
                cloud.unassign_reserved_ip(rip.ip)
            cloud.delete_reserved_ip(rip.ip)
