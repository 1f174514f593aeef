"""backup prune: the operator's off-host retention (the policy's decision, scoping, restic calls, secrets, locks)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from relaunch.backup import prune
from relaunch.errors import RelaunchError
from relaunch.inventory import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"
PASSWORD = "restic-Pw$ 'q\"9"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake-operator-key\n-----END OPENSSH PRIVATE KEY-----\n"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


class FakeSecret:
    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value


def snap(n: int, backup_id: str | None, host: str = "example", site: str | None = "example") -> dict:
    tags = ["relaunch", *([f"site:{site}"] if site else []), *([backup_id] if backup_id else [])]
    return {"id": f"{n:064x}", "short_id": f"{n:08x}", "hostname": host, "tags": tags, "paths": ["/x"],
            "time": "2026-11-27T00:00:00Z"}


FAKE_RESTIC = r'''#!PYTHON
import json, os, stat, sys
state_path = os.environ["FAKE_RESTIC_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
pw = os.environ.get("RESTIC_PASSWORD_FILE", "")
state["calls"].append({"argv": args, "password": open(pw).read() if pw else None,
                       "password_mode": stat.S_IMODE(os.stat(pw).st_mode) if pw else None,
                       "config": open(args[args.index("-o") + 1].split("-F ")[1].split()[0]).read() if "-o" in args else None})
i = args.index("-r") + 2
while i < len(args) and args[i] == "-o":
    i += 2
cmd, rest = args[i], args[i + 1:]
def save():
    json.dump(state, open(state_path, "w"))
if state.get("locked", {}).get(cmd, 0) > 0:
    state["locked"][cmd] -= 1
    save()
    sys.exit("Fatal: unable to create lock in backend: repository is already locked by PID 7 on prod")
if cmd == "snapshots":
    hosts = [rest[j + 1] for j, a in enumerate(rest) if a == "--host"]
    print(json.dumps([s for s in state["snapshots"] if s["hostname"] in hosts and "relaunch" in s["tags"]]))
elif cmd == "forget":
    state["snapshots"] = [s for s in state["snapshots"] if s["id"] not in rest]
elif cmd == "prune":
    print("this removes:  3 blobs / 1 KiB\ntotal prune:   3 blobs / 1 KiB\nremaining:   9 blobs")
save()
'''


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(inventory, secrets, state file, restic path): the example site with its operator key and pinned store."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    restic = bindir / "restic"
    restic.write_text(FAKE_RESTIC.replace("PYTHON", sys.executable))
    restic.chmod(0o755)
    state = tmp_path / "state.json"
    monkeypatch.setenv("FAKE_RESTIC_STATE", str(state))
    known = tmp_path / "known_hosts"
    known.write_text("backup.example.test,10.9.8.7 ssh-ed25519 AAAAstorekey\n")
    inv = load(EXAMPLE)
    off = inv.backups.offsite.model_copy(update={"known_hosts": str(known)})
    inv = inv.model_copy(update={"backups": inv.backups.model_copy(update={"offsite": off})})
    secrets = {off.password: FakeSecret(PASSWORD), off.ssh_key: FakeSecret(KEY)}
    return inv, secrets, state, str(restic)


def write_state(state: Path, snapshots: list[dict], **extra) -> None:
    state.write_text(json.dumps({"snapshots": snapshots, "calls": [], **extra}))


def test_decide_keeps_by_the_policy_and_never_forgets_what_is_not_a_relaunch_backup() -> None:
    snaps = [{"snapshot": "a", "full_id": "A", "id": "20200101T000000Z"},
             {"snapshot": "b", "full_id": "B", "id": "20261127T110000Z"},
             {"snapshot": "c", "full_id": "C", "id": None}]
    keep, forget = prune.decide(snaps, {"keep_within_hours": 24, "daily": 14, "weekly": 8}, NOW)
    assert forget == [("a", "20200101T000000Z", "A")]
    assert [k[0] for k in keep] == ["c", "b"] and "newest" in keep[1][2] and keep[0][2] == ("not a relaunch backup",)


def test_prune_site_forgets_only_this_sites_dropped_snapshots_by_full_id_then_prunes(world) -> None:
    inv, secrets, state, restic = world
    old, new = snap(1, "20200101T000000Z"), snap(2, "20261127T110000Z")
    others = [snap(3, "20200101T000000Z", host="other", site="other"), snap(4, "20200102T000000Z", site="other")]
    write_state(state, [old, new, *others])
    result = prune.prune_site(inv, secrets, now=NOW, restic=restic)
    after = json.loads(state.read_text())
    assert {s["id"] for s in after["snapshots"]} == {new["id"], *(s["id"] for s in others)}
    assert [c["argv"][c["argv"].index("-o") + 2] for c in after["calls"]] == ["snapshots", "forget", "prune"]
    forget = next(c["argv"] for c in after["calls"] if "forget" in c["argv"])
    assert forget[forget.index("forget") + 1:] == [old["id"]]  # the exact, full ID
    assert result.forgotten and result.pruned and result.forget == [(old["short_id"], "20200101T000000Z", old["id"])]
    assert "total prune" in result.prune_output


def test_prune_site_reaches_the_store_with_the_operators_key_and_pinned_host_key_no_secret_in_argv(world) -> None:
    inv, secrets, state, restic = world
    write_state(state, [snap(2, "20261127T110000Z")])
    prune.prune_site(inv, secrets, now=NOW, restic=restic)
    calls = json.loads(state.read_text())["calls"]
    for call in calls:
        argv = " ".join(call["argv"])
        assert PASSWORD not in argv and "fake-operator-key" not in argv
        assert call["argv"][0:2] == ["-r", "sftp:restic@backup.example.test:/srv/restic/example"]
        assert call["password"] == PASSWORD and call["password_mode"] == 0o600
        assert "StrictHostKeyChecking yes" in call["config"] and "HostName 10.9.8.7" in call["config"]
        assert "-s sftp" in argv
    workdir = calls[0]["argv"][calls[0]["argv"].index("-o") + 1].split("-F ")[1].split("/config")[0]
    assert not os.path.exists(workdir)  # the key and the password are gone


def test_prune_site_dry_run_decides_and_changes_nothing(world) -> None:
    inv, secrets, state, restic = world
    write_state(state, [snap(1, "20200101T000000Z"), snap(2, "20261127T110000Z")])
    result = prune.prune_site(inv, secrets, now=NOW, dry_run=True, restic=restic)
    after = json.loads(state.read_text())
    assert len(after["snapshots"]) == 2 and [c["argv"][-1] for c in after["calls"]][0] != "forget"
    assert not [c for c in after["calls"] if "forget" in c["argv"] or "prune" in c["argv"]]
    assert result.dry_run and not result.forgotten and not result.pruned and len(result.forget) == 1


def test_prune_site_waits_for_a_backup_holding_the_lock_then_fails_clearly_when_it_never_ends(
        world, monkeypatch: pytest.MonkeyPatch) -> None:
    inv, secrets, state, restic = world
    monkeypatch.setattr(prune, "LOCK_POLL_FIRST", 0.05)
    write_state(state, [snap(1, "20200101T000000Z"), snap(2, "20261127T110000Z")], locked={"forget": 2})
    assert prune.prune_site(inv, secrets, now=NOW, restic=restic, lock_wait=20).forgotten
    write_state(state, [snap(1, "20200101T000000Z"), snap(2, "20261127T110000Z")], locked={"prune": 1000})
    with pytest.raises(RelaunchError, match="still locked after 1 s"):
        prune.prune_site(inv, secrets, now=NOW, restic=restic, lock_wait=1)


def test_prune_site_needs_the_operators_credentials_and_restic(world) -> None:
    inv, secrets, _, restic = world
    off = inv.backups.offsite.model_copy(update={"ssh_key": None})
    bare = inv.model_copy(update={"backups": inv.backups.model_copy(update={"offsite": off})})
    with pytest.raises(RelaunchError, match="full SFTP access"):
        prune.prune_site(bare, secrets, restic=restic)
    with pytest.raises(RelaunchError, match="not on this machine"):
        prune.prune_site(inv, secrets, restic="/nonexistent/restic")
