"""relaunch.dns.switch: plans, the journal, rollback, the lock, TTL choreography (a stub of Cloud's interface)."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest

from relaunch.cloud import DnsRecord, Droplet, ReservedIp
from relaunch.dns import switch as sw
from relaunch.errors import RelaunchError
from relaunch.health import CheckResult, HealthReport
from relaunch.inventory.model import Inventory
from relaunch.state import HostRecord, save_host

INV = Inventory.model_validate({
    "site": "t",
    "provider": {"kind": "sandbox", "region": "fra1", "size": "s-1vcpu-1gb", "tags": ["relaunch-t"]},
    "production": {"droplet_name": "t-prod"},
    "apps": [{"name": "blog", "kind": "systemd", "domain": "t.test", "port": 8081,
              "systemd": {"unit_template": "x.j2"}, "health": [{"path": "/health"}]}],
    "dns": {"zone": "t.test", "records": [{"name": "@"}, {"name": "www"}, {"name": "@", "type": "AAAA"}],
            "ttl": 1800, "switch_ttl": 60},
})
V4_ONLY = INV.model_copy(update={"dns": INV.dns.model_copy(update={"records": INV.dns.records[:2]})})


@pytest.fixture(autouse=True)
def _own_state(tmp_path, monkeypatch) -> None:
    """Each test its own journal, hosts and lock."""
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))


def droplet(id_: int, name: str, ip: str, region: str = "fra1", ipv6: str | None = None) -> Droplet:
    return Droplet(id_, name, "active", ip, region, ("relaunch-t",), "2026-01-01T00:00:00Z", ipv6)


class FakeCloud:
    """The part of Cloud a switch uses, in memory; ``fail_on`` makes the Nth update_record raise."""

    def __init__(self) -> None:
        self.records = {
            1: DnsRecord(1, "A", "@", "10.0.0.1", 1800),
            2: DnsRecord(2, "A", "www", "10.0.0.1", 1800),
            3: DnsRecord(3, "AAAA", "@", "fd00::1", 1800),
            4: DnsRecord(4, "MX", "@", "mail.t.test", 1800),
        }
        self.droplets = [droplet(11, "t-prod", "10.0.0.1", ipv6="fd00::1"), droplet(12, "t-new", "10.0.0.2", ipv6="fd00::2"),
                         droplet(13, "t-far", "10.0.0.3", region="nyc3")]
        self.reserved = {"10.9.9.9": ReservedIp("10.9.9.9", "fra1", 11)}
        self.updates = 0
        self.fail_on: int | None = None
        self.interrupt = False

    def list_records(self, domain, *, type=None, name=None):
        assert domain == "t.test"
        return [r for r in self.records.values()
                if (type is None or r.type == type) and (name is None or r.name == name)]

    def update_record(self, domain, record_id, *, data=None, ttl=None, name=None):
        self.updates += 1
        if self.fail_on is not None and self.updates == self.fail_on:
            if self.interrupt:
                raise KeyboardInterrupt
            raise RelaunchError(f"updating DNS record {record_id}: HTTP 500")
        r = self.records[record_id]
        r = replace(r, data=r.data if data is None else data, ttl=r.ttl if ttl is None else ttl)
        self.records[record_id] = r
        return r

    def list_droplets(self, tag=None):
        return list(self.droplets)

    def get_droplet(self, droplet_id):
        return next(d for d in self.droplets if d.id == droplet_id)

    def get_reserved_ip(self, ip):
        return self.reserved[ip]

    def assign_reserved_ip(self, ip, droplet_id, timeout=300.0):
        self.reserved[ip] = replace(self.reserved[ip], droplet_id=droplet_id)
        return self.reserved[ip]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def zone(self):
        return {k: (r.data, r.ttl) for k, r in self.records.items()}


def healthy(inv, address):
    return HealthReport(address, [CheckResult("blog", "t.test", "/health", True, 200, "ok", 0.01)])


def unhealthy(inv, address):
    return HealthReport(address, [CheckResult("blog", "t.test", "/health", False, None, "no answer (ConnectTimeout)", 2)])


@dataclass
class Answer:
    seconds: float
    answers: dict
    ok: bool


def verifier(calls: list):
    def verify(names, rdtype, expected, servers, timeout):
        calls.append((tuple(names), rdtype, expected, servers))
        return Answer(0.1, {n: [expected] for n in names}, True)
    return verify


def run(cloud, target, inv=INV, **kw):
    kw.setdefault("health", healthy)
    kw.setdefault("verify", verifier([]))
    return sw.switch(cloud, inv, target, **kw)


def test_plan_switch_address_pair_gives_exact_changes() -> None:
    cloud = FakeCloud()
    plan = sw.plan_switch(cloud, INV, "10.0.0.2,fd00::2")
    assert [(c.id, c.type, c.name, c.before_data, c.before_ttl, c.after_data, c.after_ttl) for c in plan.changes] == [
        (1, "A", "@", "10.0.0.1", 1800, "10.0.0.2", 1800),
        (2, "A", "www", "10.0.0.1", 1800, "10.0.0.2", 1800),
        (3, "AAAA", "@", "fd00::1", 1800, "fd00::2", 1800),
    ]
    assert plan.droplet and plan.droplet.name == "t-new"
    assert any("TTL 1800" in w for w in plan.warnings)
    assert cloud.updates == 0


def test_plan_switch_refuses_aaaa_record_without_ipv6() -> None:
    with pytest.raises(RelaunchError, match="AAAA record '@' needs an IPv6"):
        sw.plan_switch(FakeCloud(), INV, "t-far")  # a Droplet without IPv6
    with pytest.raises(RelaunchError, match="AAAA record '@' needs an IPv6"):
        sw.plan_switch(FakeCloud(), INV, "10.0.0.2")


def test_plan_switch_to_a_droplet_takes_its_ipv6_for_aaaa_and_checks_both_addresses() -> None:
    plan = sw.plan_switch(FakeCloud(), INV, "t-new")
    assert {(c.type, c.after_data) for c in plan.changes} == {("A", "10.0.0.2"), ("AAAA", "fd00::2")}
    assert plan.health_addresses == ["10.0.0.2", "[fd00::2]"]
    assert sw.plan_switch(FakeCloud(), V4_ONLY, "t-new").health_addresses == ["10.0.0.2"]  # no AAAA to switch
    checked: list[str] = []

    def health(inv, address):
        checked.append(address)
        return healthy(inv, address) if address == "10.0.0.2" else unhealthy(inv, address)

    cloud = FakeCloud()
    with pytest.raises(RelaunchError, match=r"\(10.0.0.2, \[fd00::2\]\): health check failed"):
        run(cloud, "t-new", health=health)
    assert checked == ["10.0.0.2", "[fd00::2]"] and cloud.updates == 0


def test_plan_switch_droplet_name_and_unknown_name() -> None:
    plan = sw.plan_switch(FakeCloud(), V4_ONLY, "t-new")
    assert {c.after_data for c in plan.changes} == {"10.0.0.2"}
    with pytest.raises(RelaunchError, match="no Droplet of site 't' is called 'nope'"):
        sw.plan_switch(FakeCloud(), V4_ONLY, "nope")


def test_plan_switch_new_is_newest_non_production_host() -> None:
    for name, did, ip, at in (("t-prod", 11, "10.0.0.1", "2026-01-03"), ("t-new", 12, "10.0.0.2", "2026-01-02"),
                              ("t-older", 13, "10.0.0.3", "2026-01-01")):
        save_host("t", HostRecord(name, "production" if name == "t-prod" else "rebuild", did, ip, "ssh-ed25519 A", at))
    cloud = FakeCloud()
    cloud.droplets[2] = droplet(13, "t-older", "10.0.0.3")
    plan = sw.plan_switch(cloud, V4_ONLY, "new")
    assert plan.droplet.name == "t-new" and plan.addresses == {"A": "10.0.0.2", "AAAA": "fd00::2"}


def test_plan_switch_refuses_missing_record() -> None:
    cloud = FakeCloud()
    del cloud.records[2]
    with pytest.raises(RelaunchError, match="no A record 'www'"):
        sw.plan_switch(cloud, V4_ONLY, "10.0.0.2")


def test_switch_changes_records_journals_before_and_verifies() -> None:
    cloud, calls = FakeCloud(), []
    result = run(cloud, "10.0.0.2,fd00::2", verify=verifier(calls), servers=["127.0.0.1:5353"])
    assert result.ok and not result.forced
    assert cloud.zone()[1] == ("10.0.0.2", 1800) and cloud.zone()[3] == ("fd00::2", 1800)
    assert cloud.zone()[4] == ("mail.t.test", 1800)
    assert calls == [(("t.test", "www.t.test"), "A", "10.0.0.2", ["127.0.0.1:5353"]),
                     (("t.test",), "AAAA", "fd00::2", ["127.0.0.1:5353"])]
    entry = sw.load_journal("t")["switches"][-1]
    assert entry["status"] == "done"
    assert [(r["id"], r["data"], r["ttl"]) for r in entry["records"]] == [
        (1, "10.0.0.1", 1800), (2, "10.0.0.1", 1800), (3, "fd00::1", 1800)]
    assert set(result.phases) >= {"plan", "health", "change", "verify"}
    json.dumps(result.to_json())


def test_switch_refuses_unhealthy_target_and_changes_nothing() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    with pytest.raises(RelaunchError, match="health check failed: blog: .*no answer"):
        run(cloud, "t-new", inv=V4_ONLY, health=unhealthy)
    assert cloud.zone() == before and cloud.updates == 0
    assert sw.load_journal("t")["switches"] == []


def test_switch_force_goes_on_and_says_so() -> None:
    cloud = FakeCloud()
    result = run(cloud, "t-new", inv=V4_ONLY, health=unhealthy, force=True)
    assert result.forced and any(w.startswith("FORCED") for w in result.warnings)
    assert result.to_json()["forced"] is True
    assert cloud.zone()[1][0] == "10.0.0.2"


def test_switch_failure_after_first_record_rolls_back() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    cloud.fail_on = 2
    with pytest.raises(RelaunchError, match=r"HTTP 500 \(the 1 record\(s\) already changed were put back\)"):
        run(cloud, "10.0.0.2,fd00::2")
    assert cloud.zone() == before
    assert sw.load_journal("t")["switches"][-1]["status"] == "rolled-back"


def test_apply_changes_rolls_back_on_keyboard_interrupt_and_reraises() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    cloud.fail_on, cloud.interrupt = 3, True
    plan = sw.plan_switch(cloud, INV, "10.0.0.2,fd00::2")
    with pytest.raises(KeyboardInterrupt):
        sw.apply_changes(cloud, "t.test", plan.changes)
    assert cloud.zone() == before


def test_apply_changes_names_records_left_when_rollback_fails() -> None:
    cloud = FakeCloud()
    plan = sw.plan_switch(cloud, INV, "10.0.0.2,fd00::2")
    cloud.fail_on = 2
    real = cloud.update_record

    def update(*a, **kw):
        if cloud.updates >= 2:
            cloud.updates += 1
            raise RelaunchError("HTTP 503")
        return real(*a, **kw)

    cloud.update_record = update
    with pytest.raises(sw.RollbackFailed, match="left changed: A @ \\(record 1\\)"):
        sw.apply_changes(cloud, "t.test", plan.changes)


def test_switch_old_restores_journaled_data_and_ttl_exactly() -> None:
    cloud = FakeCloud()
    cloud.records[2] = replace(cloud.records[2], ttl=120)
    before = cloud.zone()
    run(cloud, "10.0.0.2", inv=V4_ONLY)
    sw.prepare(cloud, V4_ONLY)  # TTLs change after the switch too
    assert cloud.zone() != before
    result = run(cloud, "old", inv=V4_ONLY)
    assert cloud.zone() == before
    assert {c.after_data for c in result.plan.changes} == {"10.0.0.1"}
    # and `old` again goes back to where the first switch went
    run(cloud, "old", inv=V4_ONLY)
    assert cloud.zone()[1][0] == "10.0.0.2"


def test_switch_old_skips_rolled_back_switches() -> None:
    cloud = FakeCloud()
    run(cloud, "10.0.0.2", inv=V4_ONLY)
    cloud.fail_on = cloud.updates + 2
    with pytest.raises(RelaunchError):
        run(cloud, "10.0.0.3", inv=V4_ONLY)
    cloud.fail_on = None
    plan = sw.plan_switch(cloud, V4_ONLY, "old")
    assert {c.after_data for c in plan.changes} == {"10.0.0.1"}


def test_switch_old_without_journal_refuses() -> None:
    with pytest.raises(RelaunchError, match="nothing to go back to"):
        sw.plan_switch(FakeCloud(), V4_ONLY, "old")


def test_switch_dry_run_changes_nothing() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    result = run(cloud, "10.0.0.2,fd00::2", dry_run=True)
    assert result.dry_run and len(result.plan.changes) == 3 and not result.applied
    assert cloud.zone() == before and cloud.updates == 0
    assert not sw.journal_path("t").exists()


def _hold_lock(site, ready, release) -> None:
    with sw.site_lock(site):
        ready.set()
        release.wait(10)


def test_switch_refuses_while_another_holds_the_lock() -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=("t", ready, release))
    proc.start()
    try:
        assert ready.wait(10)
        cloud = FakeCloud()
        with pytest.raises(RelaunchError, match="another DNS switch of site 't' is running"):
            run(cloud, "10.0.0.2", inv=V4_ONLY)
        assert cloud.updates == 0
    finally:
        release.set()
        proc.join(10)
    run(FakeCloud(), "10.0.0.2", inv=V4_ONLY)  # free again


def test_journal_round_trip_and_atomic_write(tmp_path) -> None:
    journal = {"switches": [{"at": "x", "status": "done", "records": []}], "ttl": {}}
    sw.save_journal("t", journal)
    assert sw.load_journal("t") == journal
    assert sw.journal_path("t").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in sw.journal_path("t").parent.iterdir() if p.name.startswith(".tmp")] == []
    sw.journal_path("t").write_text("{not json")
    with pytest.raises(RelaunchError, match="unreadable DNS journal"):
        sw.load_journal("t")


def test_prepare_and_restore_ttl_round_trip() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    prepared = sw.prepare(cloud, INV)
    assert prepared.wait_seconds == 1800 and len(prepared.changes) == 3
    assert {cloud.zone()[i][1] for i in (1, 2, 3)} == {60} and cloud.zone()[4] == before[4]
    assert sw.prepare(cloud, INV).changes == []  # twice: the first remembered TTL stays
    result = run(cloud, "10.0.0.2,fd00::2")
    assert not any("TTL 1800" in w for w in result.plan.warnings)
    assert cloud.zone()[1] == ("10.0.0.2", 60)
    restored = sw.restore_ttl(cloud, INV)
    assert len(restored.changes) == 3
    assert {cloud.zone()[i][1] for i in (1, 2, 3)} == {1800}
    assert sw.load_journal("t")["ttl"] == {}


def test_switch_wait_ttl_waits_out_the_rest_of_the_old_ttl_bounded() -> None:
    cloud = FakeCloud()
    sw.prepare(cloud, V4_ONLY)
    journal = sw.load_journal("t")
    journal["ttl"]["prepared_at"] = (datetime.now(timezone.utc) - timedelta(seconds=1790)).isoformat()
    sw.save_journal("t", journal)
    slept, said = [], []
    result = run(cloud, "10.0.0.2", inv=V4_ONLY, wait_ttl=True, sleep=slept.append, progress=said.append)
    assert 5 < sum(slept) <= 10.5 and result.waited_ttl == sum(slept)
    assert any("waiting out the previous TTL" in s for s in said)
    journal["ttl"]["prepared_at"] = datetime.now(timezone.utc).isoformat()
    sw.save_journal("t", journal)
    slept.clear()
    result = run(cloud, "10.0.0.1", inv=V4_ONLY, wait_ttl=True, max_wait_ttl=30, sleep=slept.append)
    assert sum(slept) == 30 and any("waited 30 s" in w for w in result.warnings)


def test_switch_settle_restores_the_prepared_ttl_after_a_verified_switch() -> None:
    cloud = FakeCloud()
    before = cloud.zone()
    sw.prepare(cloud, INV)
    slept, said = [], []
    result = run(cloud, "10.0.0.2,fd00::2", settle=25, sleep=slept.append, progress=said.append)
    assert slept == [10.0, 10.0, 5.0] and any("settling before the TTL is restored: 25 s left" in s for s in said)
    assert {cloud.zone()[i] for i in (1, 2)} == {("10.0.0.2", 1800)} and cloud.zone()[3] == ("fd00::2", 1800)
    assert len(result.ttl_restored.changes) == 3 and result.to_json()["ttl_restored"][0]["after_ttl"] == 1800
    assert sw.load_journal("t")["ttl"] == {} and cloud.zone()[4] == before[4]


def test_old_after_a_settled_switch_lowers_the_ttl_again_but_remembers_the_normal_one() -> None:
    cloud = FakeCloud()
    sw.prepare(cloud, V4_ONLY)
    run(cloud, "10.0.0.2", inv=V4_ONLY, settle=0, sleep=lambda s: None)
    assert cloud.zone()[1] == ("10.0.0.2", 1800)
    back = run(cloud, "old", inv=V4_ONLY)  # exactly the state before that switch: TTL 60 ...
    assert cloud.zone()[1] == ("10.0.0.1", 60)
    assert any("`--restore-ttl` puts back 1800 s" in w for w in back.warnings)
    sw.restore_ttl(cloud, V4_ONLY)  # ... and the normal TTL is not lost
    assert cloud.zone()[1] == ("10.0.0.1", 1800) and cloud.zone()[2] == ("10.0.0.1", 1800)


def test_switch_settle_restores_nothing_after_a_failed_verification() -> None:
    def never(names, rdtype, expected, servers, timeout):
        return Answer(timeout, {n: ["10.0.0.1"] for n in names}, False)

    cloud = FakeCloud()
    sw.prepare(cloud, V4_ONLY)
    slept = []
    result = run(cloud, "10.0.0.2", inv=V4_ONLY, verify=never, verify_timeout=5, settle=30, sleep=slept.append)
    assert not result.ok and result.ttl_restored is None and slept == []
    assert cloud.zone()[1] == ("10.0.0.2", 60)  # still low: the switch may be retried or reverted


def test_switch_reports_failed_verification() -> None:
    def never(names, rdtype, expected, servers, timeout):
        return Answer(timeout, {n: ["10.0.0.1"] for n in names}, False)

    result = run(FakeCloud(), "10.0.0.2", inv=V4_ONLY, verify=never, verify_timeout=5)
    assert not result.ok and result.to_json()["ok"] is False


def test_reserved_ip_mode_assigns_and_refuses_other_region() -> None:
    inv = V4_ONLY.model_copy(update={"dns": V4_ONLY.dns.model_copy(update={"reserved_ip": "10.9.9.9"})})
    cloud = FakeCloud()
    before = cloud.zone()
    result = run(cloud, "t-new", inv=inv, via="reserved-ip")
    assert cloud.reserved["10.9.9.9"].droplet_id == 12 and cloud.zone() == before
    assert result.verification is None and result.ok
    with pytest.raises(RelaunchError, match="cannot move across regions; switch with DNS instead"):
        run(cloud, "t-far", inv=inv, via="reserved-ip")
    assert cloud.reserved["10.9.9.9"].droplet_id == 12
    run(cloud, "old", inv=inv, via="reserved-ip")
    assert cloud.reserved["10.9.9.9"].droplet_id == 11


def test_reserved_ip_mode_needs_one_in_the_inventory() -> None:
    with pytest.raises(RelaunchError, match="names no Reserved IP"):
        sw.plan_switch(FakeCloud(), V4_ONLY, "t-new", via="reserved-ip")


def test_switch_verifies_with_relaunch_dns_authoritative_by_default(monkeypatch) -> None:
    from relaunch.dns import authoritative

    calls = []
    monkeypatch.setattr(authoritative, "authoritative_servers_for", lambda zone, port: [("127.0.0.1", port)])
    monkeypatch.setattr(authoritative, "wait_until_answers", verifier(calls))
    result = sw.switch(FakeCloud(), V4_ONLY, "10.0.0.2", health=healthy, dns_port=5353)
    assert calls == [(("t.test", "www.t.test"), "A", "10.0.0.2", [("127.0.0.1", 5353)])]
    assert result.ok and result.verification.skipped is None


@pytest.fixture
def fab(monkeypatch):
    """tasks.dns_switch on a FakeCloud and the test inventory (healthy target, verified)."""
    import importlib.util
    from pathlib import Path

    from relaunch import inventory

    spec = importlib.util.spec_from_file_location("relaunch_tasks_under_test",
                                                  Path(__file__).resolve().parents[2] / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)

    cloud = FakeCloud()
    monkeypatch.setattr(inventory, "load_site", lambda site: V4_ONLY)
    monkeypatch.setattr(sw, "open_cloud", lambda inv: (cloud, None))
    real = sw.switch
    monkeypatch.setattr(sw, "switch", lambda *a, **kw: real(*a, **{**kw, "health": cloud.health,
                                                                  "verify": verifier([])}))
    cloud.health = healthy
    return tasks, cloud


def test_dns_switch_task_json_summary(fab, capsys) -> None:
    tasks, cloud = fab
    tasks.dns_switch.body(None, to="t-new", json=True)
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["applied"] == [1, 2] and cloud.zone()[1][0] == "10.0.0.2"


def test_dns_switch_task_refusal_exits_non_zero_without_success(fab, capsys) -> None:
    from invoke import Exit

    tasks, cloud = fab
    cloud.health = unhealthy
    with pytest.raises(Exit) as exc:
        tasks.dns_switch.body(None, to="t-new")
    assert exc.value.code == 1 and "health check failed" in str(exc.value.message)
    assert "switched" not in capsys.readouterr().out
    assert cloud.updates == 0


def test_dns_switch_task_needs_exactly_one_action(fab) -> None:
    from invoke import Exit

    tasks, _ = fab
    with pytest.raises(Exit, match="exactly one of"):
        tasks.dns_switch.body(None, to="t-new", prepare=True)


def test_dns_switch_task_settle_restores_the_ttl_and_bad_settle_changes_nothing(fab, capsys) -> None:
    from invoke import Exit

    tasks, cloud = fab
    before = cloud.zone()
    for bad, why in (("soon", "expects seconds"), ("-1", "0 to 86400")):
        with pytest.raises(Exit, match=why) as exc:
            tasks.dns_switch.body(None, to="t-new", settle=bad)
        assert exc.value.code == 2
    with pytest.raises(Exit, match="--settle goes with --to"):
        tasks.dns_switch.body(None, prepare=True, settle="5")
    assert cloud.zone() == before and cloud.updates == 0

    sw.prepare(cloud, V4_ONLY)
    tasks.dns_switch.body(None, to="t-new", settle="0", json=True)
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and [c["after_ttl"] for c in out["ttl_restored"]] == [1800, 1800]
    assert cloud.zone()[1] == ("10.0.0.2", 1800)


def test_switch_refuses_an_address_outside_the_sandbox_before_any_health_check() -> None:
    cloud = FakeCloud()
    checked: list[str] = []

    def health(inv, address):
        checked.append(address)
        return healthy(inv, address)

    with pytest.raises(RelaunchError, match="no sandbox Droplet's address"):
        run(cloud, "10.0.0.99,fd00::99", health=health)
    assert checked == []
    assert cloud.zone()[1] == ("10.0.0.1", 1800)


def _hosts(*rows) -> FakeCloud:
    """Record hosts (name, role, id, IPv4, created_at) and give the cloud a Droplet for each."""
    cloud = FakeCloud()
    cloud.droplets = [droplet(11, "t-prod", "10.0.0.1", ipv6="fd00::1")]
    for name, role, did, ip, at, *tags in rows:
        save_host("t", HostRecord(name, role, did, ip, "ssh-ed25519 A", at))
        if did != 11:
            cloud.droplets.append(replace(droplet(did, name, ip), tags=("relaunch-t", *tags)))
    return cloud


@pytest.mark.parametrize("newest", [("t-backup", "backup", 14, "10.0.0.4", "2026-01-05"),
                                    ("t-scratch", "drill", 15, "10.0.0.5", "2026-01-05"),
                                    ("t-scratch", "rebuild", 15, "10.0.0.5", "2026-01-05", "relaunch-drill"),
                                    ("t-later", "someday", 16, "10.0.0.6", "2026-01-05")],
                         ids=["backup", "drill-role", "drill-tag", "unknown-role"])
def test_plan_switch_new_takes_only_hosts_built_to_serve_the_site(newest) -> None:
    cloud = _hosts(("t-prod", "production", 11, "10.0.0.1", "2026-01-06"),
                   ("t-spare", "spare", 12, "10.0.0.2", "2026-01-02"),
                   ("t-rebuilt", "rebuild", 13, "10.0.0.3", "2026-01-03"),
                   newest)
    assert sw.plan_switch(cloud, V4_ONLY, "new").droplet.name == "t-rebuilt"


def test_plan_switch_new_refuses_when_only_backup_and_drill_hosts_were_built() -> None:
    cloud = _hosts(("t-prod", "production", 11, "10.0.0.1", "2026-01-01"),
                   ("t-backup", "backup", 14, "10.0.0.4", "2026-01-05"),
                   ("t-scratch", "drill", 15, "10.0.0.5", "2026-01-06"))
    with pytest.raises(RelaunchError, match="no Droplet to serve site 't'.*name the target instead"):
        sw.plan_switch(cloud, V4_ONLY, "new")


@pytest.mark.parametrize("target", ["t-backup", "t-scratch", "t-tagged", "10.0.0.4", "10.0.0.5", "10.0.0.7"])
def test_switch_refuses_a_backup_or_drill_host_however_named_and_changes_nothing(target) -> None:
    cloud = _hosts(("t-backup", "backup", 14, "10.0.0.4", "2026-01-05"),
                   ("t-scratch", "drill", 15, "10.0.0.5", "2026-01-06"),
                   ("t-tagged", "spare", 17, "10.0.0.7", "2026-01-06", "relaunch-drill"))
    before = cloud.zone()
    with pytest.raises(RelaunchError, match="traffic never goes there"):
        run(cloud, target, inv=V4_ONLY)
    assert cloud.zone() == before and cloud.updates == 0


def test_switch_finds_the_name_servers_before_the_first_change(monkeypatch) -> None:
    from relaunch.dns import authoritative

    def no_servers(zone, port):
        raise RelaunchError(f"could not find the name servers of {zone}: SERVFAIL")

    verified = []
    monkeypatch.setattr(authoritative, "authoritative_servers_for", no_servers)
    monkeypatch.setattr(authoritative, "wait_until_answers", verifier(verified))
    cloud = FakeCloud()
    before = cloud.zone()
    slept: list[float] = []
    sw.prepare(cloud, V4_ONLY)
    lowered = cloud.zone()
    with pytest.raises(RelaunchError, match="name servers of t.test: SERVFAIL; nothing was changed"):
        sw.switch(cloud, V4_ONLY, "10.0.0.2", health=healthy, dns_port=5353, wait_ttl=True, sleep=slept.append)
    assert cloud.zone() == lowered and lowered != before and verified == []
    assert slept == []  # not after waiting out the TTL either
    assert sw.load_journal("t")["switches"] == []


def test_switch_journals_the_records_as_they_are_right_before_the_change() -> None:
    cloud = FakeCloud()
    sw.prepare(cloud, V4_ONLY)
    journal = sw.load_journal("t")
    journal["ttl"]["prepared_at"] = (datetime.now(timezone.utc) - timedelta(seconds=1780)).isoformat()
    sw.save_journal("t", journal)

    def sleep(seconds: float) -> None:  # during --wait-ttl, someone points www elsewhere by hand
        cloud.records[2] = replace(cloud.records[2], data="10.0.0.9", ttl=90)

    result = run(cloud, "10.0.0.2", inv=V4_ONLY, wait_ttl=True, sleep=sleep)
    assert result.waited_ttl > 0
    entry = sw.load_journal("t")["switches"][-1]
    assert [(r["id"], r["data"], r["ttl"]) for r in entry["records"]] == [(1, "10.0.0.1", 60), (2, "10.0.0.9", 90)]
    assert {(c.id, c.before_data) for c in result.plan.changes} == {(1, "10.0.0.1"), (2, "10.0.0.9")}
    assert cloud.zone()[2] == ("10.0.0.2", 90)  # the TTL kept is the one there at the change
    run(cloud, "old", inv=V4_ONLY)
    assert cloud.zone()[1] == ("10.0.0.1", 60) and cloud.zone()[2] == ("10.0.0.9", 90)


def test_switch_refuses_when_the_target_moved_after_the_health_checks() -> None:
    cloud = _hosts(("t-rebuilt", "rebuild", 13, "10.0.0.3", "2026-01-03"))
    checked: list[str] = []

    def health(inv, address):  # while the checks run, a newer rebuild is recorded
        checked.append(address)
        save_host("t", HostRecord("t-newer", "rebuild", 12, "10.0.0.2", "ssh-ed25519 A", "2026-01-04"))
        cloud.droplets.append(droplet(12, "t-newer", "10.0.0.2"))
        return healthy(inv, address)

    with pytest.raises(RelaunchError, match="now 10.0.0.2, not 10.0.0.3 that the health checks passed"):
        run(cloud, "new", inv=V4_ONLY, health=health)
    assert checked == ["10.0.0.3"] and cloud.updates == 0


def test_switch_of_a_sandbox_site_without_the_sandbox_dns_port_asks_no_resolver_and_changes_nothing(monkeypatch) -> None:
    from relaunch.dns import authoritative

    def resolver(zone, port):
        raise AssertionError("the system resolver was asked about a sandbox zone")

    monkeypatch.setattr(authoritative, "authoritative_servers_for", resolver)
    cloud = FakeCloud()
    with pytest.raises(RelaunchError, match="lives in the sandbox: its switch is verified on the sandbox's DNS server"):
        sw.switch(cloud, V4_ONLY, "10.0.0.2", health=healthy)
    assert cloud.updates == 0 and sw.load_journal("t")["switches"] == []
