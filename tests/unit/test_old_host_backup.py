"""A rebuild from backup while the old host answers takes the backup from the old host's backup directory."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from relaunch.errors import RelaunchError
from relaunch.pipeline.steps import data, old_host_backup

OLD = {"name": "example-prod", "address": "192.0.2.10", "host_key": "ssh-ed25519 AAAA", "user": "admin"}


class Host:
    def __init__(self, name: str, out: str = "") -> None:
        self.host, self.out, self.scripts = name, out, []

    def run(self, script: str, **kw: object) -> SimpleNamespace:
        self.scripts.append(script)
        return SimpleNamespace(ok=True, stdout=self.out, stderr="")


def context(old_conn, kind: str = "rebuild", backup_id: str | None = None):
    said: list[str] = []
    ctx = SimpleNamespace(
        state={"old": OLD}, options={"backup_id": backup_id}, journal=SimpleNamespace(kind=kind, id="R1"),
        said=said, say=lambda step, msg: said.append(msg), mask=lambda s: s, drop_conn=lambda which: None,
        bytes=lambda *a: None, old_conn=old_conn, new_conn=lambda: Host("new"))
    return ctx


@pytest.fixture
def pulls(monkeypatch):
    seen: list[tuple] = []

    @contextlib.contextmanager
    def fake_link(src, host_key, dst, src_address=None):
        seen.append(("link", src.host, host_key, src_address))
        yield SimpleNamespace()

    monkeypatch.setattr(old_host_backup.transfer, "link", fake_link)
    monkeypatch.setattr(old_host_backup.transfer, "pull_dump_into",
                        lambda ln, src_cmd, dst, dst_cmd, progress=None: seen.append((src_cmd.argv, dst_cmd.argv)))
    return seen


def test_the_newest_backup_of_the_old_host_is_pulled_host_to_host(pulls) -> None:
    old = Host("old", "20261127T100000Z\n20261127T101500Z\n")
    ctx = context(lambda timeout: old)
    new = Host("new")
    got = old_host_backup.fetch_from_old_host(ctx, new, None, "/var/lib/relaunch/rebuild/R1/old-host")
    assert got == ("/var/lib/relaunch/rebuild/R1/old-host/20261127T101500Z", "20261127T101500Z",
                   ["20261127T100000Z", "20261127T101500Z"])
    assert pulls[0] == ("link", "old", OLD["host_key"], OLD["address"])
    assert pulls[1] == (("tar", "-C", "/var/backups/relaunch", "-cf", "-", "--", "20261127T101500Z"),
                        ("tar", "-C", "/var/lib/relaunch/rebuild/R1/old-host", "-xf", "-", "--no-same-owner"))


def test_an_old_host_that_does_not_answer_or_lacks_the_backup_leaves_it_to_the_store(pulls) -> None:
    def gone(timeout):
        raise RelaunchError("192.0.2.10: SSH did not answer")

    ctx = context(gone)
    assert old_host_backup.fetch_from_old_host(ctx, Host("new"), None, "/w") is None
    assert "does not answer" in ctx.said[-1] and "off-host store" in ctx.said[-1]
    ctx = context(lambda timeout: Host("old", "20261127T100000Z\n"))
    assert old_host_backup.fetch_from_old_host(ctx, Host("new"), "20261126T000000Z", "/w") is None
    assert "no backup 20261126T000000Z" in ctx.said[-1] and pulls == []


def test_data_backup_uses_the_old_host_in_a_rebuild_and_never_in_a_drill(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(data.old_host_backup, "fetch_from_old_host",
                        lambda ctx, new, wanted, dest: calls.append("old host") or ("/w/old-host/B1", "B1", ["B1"]))
    monkeypatch.setattr(data.offsite, "verify_remote_dir", lambda conn, d: SimpleNamespace(ok=True))
    monkeypatch.setattr(data, "_backup_outputs", lambda ctx, new, d, held, origin: {"from": origin, "dir": d})
    monkeypatch.setattr(data, "_data_from_store", lambda ctx, new, work: calls.append("store") or {"from": "store"})
    monkeypatch.setattr(data, "workdir", lambda ctx: "/w")
    assert data.data_backup(context(None)) == {"from": "the old host's /var/backups/relaunch", "dir": "/w/old-host/B1"}
    assert data.data_backup(context(None, kind="drill")) == {"from": "store"}
    assert calls == ["old host", "store"]
    # a copy that does not match its manifest: the store instead
    monkeypatch.setattr(data.offsite, "verify_remote_dir",
                        lambda conn, d: SimpleNamespace(ok=False, describe=lambda: "db.dump: sha256 differs"))
    assert data.data_backup(context(None)) == {"from": "store"}
