"""relaunch.handback: `fab dns-switch --to old` after a rebuild puts the old host back in service and says what it undid."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from relaunch import handback
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.pipeline.journal import runs_dir
from relaunch.state import HostRecord, load_hosts, save_host

OLD = {"name": "example-prod", "address": "192.0.2.10", "host_key": "ssh-ed25519 AAAA", "user": "admin",
       "adopted": True, "droplet_id": 0}


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))
    inv = load_site("example")
    save_host("example", HostRecord("example-prod", "retired", 0, "192.0.2.10", "ssh-ed25519 AAAA", "t0", adopted=True,
                                    user="admin"))
    save_host("example", HostRecord("example-new", "production", 7, "192.0.2.20", "ssh-ed25519 BBBB", "t1"))
    run = {"format": 1, "kind": "rebuild", "site": "example", "id": "R1", "status": "passed",
           "finished_at": "2026-11-27T10:00:00Z",
           "state": {"old": OLD, "new_name": "example-new", "switched": [{"name": "@", "type": "A"}],
                     "old_writers_stopped": True, "old_backup_timer_was_on": True}, "steps": {}}
    path = runs_dir("example") / "rebuild-R1.json"
    path.write_text(json.dumps(run))
    calls: list[tuple] = []
    conns = []

    def fake_connect(address, host_key, key, user="root"):
        conn = SimpleNamespace(host=address, user=user, close=lambda: None)
        conns.append(conn)
        return conn

    monkeypatch.setattr(handback, "connect", fake_connect)
    monkeypatch.setattr(handback, "wait_for_ssh", lambda conn, timeout: 0.1)
    monkeypatch.setattr(handback.apps, "start_apps",
                        lambda conn, inv, hand_built=False: calls.append(("start", conn.host, conn.user, hand_built))
                        or ["blog", "stats", "notes"])
    monkeypatch.setattr(handback.apps, "stop_writers",
                        lambda conn, inv, disable=False, hand_built=False: calls.append(("stop", conn.host, disable)))
    monkeypatch.setattr(handback.apps, "enable_backup_timer", lambda conn, on: calls.append(("timer", conn.host, on)))
    monkeypatch.setattr(handback.apps, "start_databases", lambda conn, inv: None)
    monkeypatch.setattr(handback, "wait_healthy", lambda inv, addresses, timeout, on_attempt=None:
                        calls.append(("healthy?", tuple(addresses))) or SimpleNamespace(ok=True))
    return SimpleNamespace(inv=inv, path=path, calls=calls)


def test_switch_to_old_starts_the_old_hosts_apps_before_the_switch_then_its_timer(site, tmp_path) -> None:
    order = site.calls

    def fake_switch(cloud, inv, target, **kw):
        order.append(("switch", target))
        return SimpleNamespace(ok=True)

    back = handback.switch_to_old(None, site.inv, tmp_path / "key", switch=fake_switch, via="dns")
    assert order == [("start", "192.0.2.10", "admin", True), ("healthy?", ("192.0.2.10",)), ("switch", "old"),
                     ("timer", "192.0.2.10", True),
                     ("timer", "192.0.2.20", False)]
    assert any("apps blog, stats, notes started and enabled again" in line for line in back.undone)
    assert any("backup timer on again" in line for line in back.undone)
    assert any("example-new: backup timer off" in line for line in back.undone)
    assert "is not on the old host" in back.warnings[0]
    hosts = load_hosts("example")
    assert hosts["example-prod"].role == "production" and hosts["example-new"].role == "spare"
    assert json.loads(site.path.read_text())["state"]["handed_back"]["undone"] == back.undone
    # done once: a second `--to old` is a plain switch (nothing left to undo)
    order.clear()
    again = handback.switch_to_old(None, site.inv, tmp_path / "key", switch=fake_switch)
    assert order == [("switch", "old")] and again.undone == []


def test_a_refused_switch_stops_the_old_hosts_apps_again(site, tmp_path) -> None:
    def refused(cloud, inv, target, **kw):
        raise RelaunchError("health checks fail on 192.0.2.10")

    with pytest.raises(RelaunchError, match="health checks fail"):
        handback.switch_to_old(None, site.inv, tmp_path / "key", switch=refused)
    assert site.calls == [("start", "192.0.2.10", "admin", True), ("healthy?", ("192.0.2.10",)),
                          ("stop", "192.0.2.10", True)]
    assert "handed_back" not in json.loads(site.path.read_text())["state"]


def test_a_dry_run_is_the_plain_switch(site, tmp_path) -> None:
    seen = []
    handback.switch_to_old(None, site.inv, tmp_path / "key", dry_run=True,
                           switch=lambda cloud, inv, target, **kw: seen.append(kw) or SimpleNamespace(ok=True))
    assert seen[0]["dry_run"] is True and site.calls == []


def test_rebuild_abort_before_the_switch_starts_the_old_hosts_apps_and_timer_and_says_so(tmp_path, monkeypatch) -> None:
    from relaunch import rebuild
    from relaunch.pipeline.context import RunContext
    from relaunch.pipeline.journal import Journal

    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))
    inv = load_site("example")
    where = rebuild.Where(cloud=None, dns_port=None, key_path=tmp_path / "key")
    monkeypatch.setattr(rebuild, "open_site", lambda site, root, where_: (inv, SimpleNamespace(mask=lambda s: s), where))
    journal = Journal.new("example", "rebuild", rebuild.RebuildOptions().to_json())
    journal.state.update(old=OLD, new_name="example-r1", new_id=9, old_writers_stopped=True, old_backup_timer_was_on=True)
    journal.save()
    calls = []
    monkeypatch.setattr(RunContext, "old_conn", lambda self, timeout=20: SimpleNamespace(host="192.0.2.10"))
    monkeypatch.setattr(rebuild.apps, "start_apps", lambda conn, inv, hand_built=False: calls.append(("start", hand_built)))
    monkeypatch.setattr(rebuild.apps, "enable_backup_timer", lambda conn, on: calls.append(("timer", on)))
    result = rebuild.abort("example")
    assert calls == [("start", True), ("timer", True)]
    assert result.undone[:2] == ["started the apps on the old host 192.0.2.10 again",
                                 "turned the old host's backup timer on again"]
    assert "kept the new Droplet example-r1 (id 9) for inspection" in result.undone[2]
    assert Journal.load("example", "rebuild") is None  # closed: a new rebuild may start


def test_an_old_host_whose_apps_do_not_come_up_is_stopped_again_and_nothing_switched(site, tmp_path, monkeypatch) -> None:
    bad = SimpleNamespace(ok=False, failures=lambda: [SimpleNamespace(describe=lambda: "notes -> 502")])
    monkeypatch.setattr(handback, "wait_healthy", lambda inv, addresses, timeout, on_attempt=None: bad)
    with pytest.raises(RelaunchError, match=r"does not pass its health checks after its apps started \(notes -> 502\)"):
        handback.switch_to_old(None, site.inv, tmp_path / "key", switch=lambda *a, **kw: pytest.fail("switched"))
    assert site.calls == [("start", "192.0.2.10", "admin", True), ("stop", "192.0.2.10", True)]
