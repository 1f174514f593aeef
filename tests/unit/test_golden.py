"""Golden images: the recipe hash, choosing a snapshot (never a stale one), the held tag, the clean, the guard."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from relaunch import golden
from relaunch.cloud import Droplet
from relaunch.cloud.models import Snapshot
from relaunch.drill import DRILL_TAG, DrillGuardError, GuardedCloud
from relaunch.inventory import load_site
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.report_record import record_from_run

REPO = Path(__file__).resolve().parents[2]


def checkout(dest: Path) -> Path:
    """A copy of what a recipe is made from: the inventory, relaunch's runbooks and templates."""
    (dest / "inventory").mkdir(parents=True)
    shutil.copy(REPO / "inventory" / "example.yml", dest / "inventory" / "example.yml")
    shutil.copytree(REPO / "runbooks", dest / "runbooks")
    shutil.copytree(REPO / "templates", dest / "templates")
    return dest


def recipe(root: Path) -> str:
    return golden.recipe_hash(load_site("example", root), root / "runbooks", root / "templates")


# --- the recipe hash --------------------------------------------------------------------------


def test_recipe_hash_is_the_same_for_two_checkouts_and_ignores_the_provider_tags(tmp_path: Path) -> None:
    a, b = checkout(tmp_path / "a"), checkout(tmp_path / "b")
    assert recipe(a) == recipe(b)
    inv = load_site("example", a)
    tagged = inv.model_copy(update={"provider": inv.provider.model_copy(update={"tags": ["x", DRILL_TAG]})})
    assert golden.recipe_hash(tagged, a / "runbooks", a / "templates") == recipe(a)


@pytest.mark.parametrize("change", ["runbook", "template", "inventory", "new template"])
def test_recipe_hash_changes_with_the_runbooks_templates_and_inventory(tmp_path: Path, change: str) -> None:
    root = checkout(tmp_path)
    before = recipe(root)
    if change == "runbook":
        path = root / "runbooks" / "00-base.md"
        path.write_text(path.read_text() + "\nOne more line of notes.\n")
    elif change == "template":
        path = root / "templates" / "nginx" / "site.conf.j2"
        path.write_text(path.read_text() + "\n# changed\n")
    elif change == "new template":
        (root / "templates" / "apps" / "extra.conf").write_text("x\n")
    else:
        path = root / "inventory" / "example.yml"
        path.write_text(path.read_text().replace("rto_minutes: 30", "rto_minutes: 31"))
    assert recipe(root) != before


# --- choosing ---------------------------------------------------------------------------------


def snap(id_: int, created: str, recipe_: str, held: str | None = "relaunch-held-0-1", site: str = "example",
         regions: tuple[str, ...] = ("fra1",)) -> Snapshot:
    tags = [golden.GOLDEN_TAG, golden.site_tag(site), golden.recipe_tag(recipe_)] + ([held] if held else [])
    return Snapshot(id_, f"golden-{id_}", created, "7", 1.0, tuple(tags), regions)


def test_choose_takes_the_newest_snapshot_of_the_current_recipe_and_never_a_stale_one() -> None:
    current, old = "a" * 64, "b" * 64
    snaps = [snap(1, "2026-11-01T00:00:00Z", current), snap(2, "2026-11-03T00:00:00Z", current),
             snap(3, "2026-11-05T00:00:00Z", old),  # newer, but made from other runbooks: stale
             snap(4, "2026-11-06T00:00:00Z", current, site="other"),
             snap(5, "2026-11-07T00:00:00Z", current, held=None),  # its drill did not finish it
             Snapshot(6, "someone's own", "2026-11-08T00:00:00Z", "7", 1.0, ())]
    choice = golden.choose(snaps, "example", current, "fra1")
    assert choice.snapshot is not None and choice.snapshot.id == 2
    assert choice.stale == (3,)
    assert choice.to_json()["held_indices"] == [0, 1]


def test_choose_with_only_stale_snapshots_chooses_none_and_says_why() -> None:
    choice = golden.choose([snap(3, "2026-11-05T00:00:00Z", "b" * 64)], "example", "a" * 64)
    assert choice.snapshot is None and "1 stale" in choice.reason
    assert golden.choose([], "example", "a" * 64).snapshot is None


def test_choose_skips_a_snapshot_in_another_region() -> None:
    current = "a" * 64
    assert golden.choose([snap(1, "2026-11-01T00:00:00Z", current, regions=("nyc3",))], "example", current,
                         "fra1").snapshot is None


def test_held_tag_round_trips_and_rejects_junk() -> None:
    assert golden.parse_held([golden.held_tag([5, 0, 2, 2])]) == [0, 2, 5]
    assert golden.parse_held([golden.held_tag([])]) == []
    assert golden.parse_held(["relaunch-held-1-x"]) is None
    assert golden.parse_held(["relaunch-golden"]) is None


def test_choose_for_honours_no_golden_and_make(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = load_site("example", REPO)
    listed = []
    cloud = SimpleNamespace(list_snapshots=lambda: listed.append(1) or [])
    for option, reason in (("off", "--no-golden"), ("make", "--golden")):
        ctx = SimpleNamespace(inv=inv, options={"golden": option}, cloud=cloud, say=lambda *a: None)
        out = golden.choose_for(ctx)
        assert out["golden_image"] is None and reason in out["golden_reason"] and len(out["recipe"]) == 64
    assert listed == []  # neither looked


# --- the check of a bootstrap on a golden host ---------------------------------------------------


class FakeConn:
    host = "10.0.0.5"

    def __init__(self, facts: str) -> None:
        self.facts = facts

    def run(self, command: str, **kw):
        return SimpleNamespace(ok=True, stdout=self.facts)


def bootstrap_result(changed: dict[str, bool]):
    from relaunch.bootstrap import BootstrapResult
    from relaunch.runbooks import RunbookResult, Step, StepResult

    return BootstrapResult([], RunbookResult([StepResult(Step(n, "f.md", 1, ""), c, 0.1, "") for n, c in changed.items()]))


def golden_ctx(kind: str, recipe_on_host: str = "r" * 64):
    journal = Journal.ephemeral("example", kind, {})
    journal.state.update(recipe="r" * 64, golden_image={"id": 9, "name": "g", "held_indices": [0, 1]})
    said = []
    conn = FakeConn(f'{{"recipe": "{recipe_on_host}"}}')
    return SimpleNamespace(state=journal.state, journal=journal, inv=SimpleNamespace(site="example"),
                           new_conn=lambda: conn, say=lambda step, m: said.append(m)), said


def test_check_bootstrap_passes_when_the_held_steps_changed_nothing() -> None:
    ctx, said = golden_ctx("drill")
    out = golden.check_bootstrap(ctx, bootstrap_result({"apt": False, "docker": False, "apps": True}))
    assert out["golden_check"]["passed"] and out["golden_check"]["held"] == ["apt", "docker"]
    assert out["golden_check"]["other_changed"] == ["apps"]


def test_check_bootstrap_fails_a_drill_and_reports_in_a_rebuild_when_a_held_step_changed() -> None:
    ctx, _ = golden_ctx("drill")
    with pytest.raises(golden.RelaunchError, match="docker changed the host"):
        golden.check_bootstrap(ctx, bootstrap_result({"apt": False, "docker": True}))
    ctx, said = golden_ctx("rebuild")
    out = golden.check_bootstrap(ctx, bootstrap_result({"apt": False, "docker": True}))
    assert out["golden_check"]["passed"] is False and out["golden_check"]["held_changed"] == ["docker"]
    assert any("docker changed" in m for m in said)


def test_check_bootstrap_refuses_a_host_made_from_another_recipe() -> None:
    ctx, _ = golden_ctx("drill", recipe_on_host="x" * 64)
    with pytest.raises(golden.RelaunchError, match="recipe xxxxxxxxxxxx"):
        golden.check_bootstrap(ctx, bootstrap_result({"apt": False}))


def test_check_bootstrap_does_nothing_on_the_base_image() -> None:
    ctx, _ = golden_ctx("rebuild")
    ctx.state["golden_image"] = None
    assert golden.check_bootstrap(ctx, bootstrap_result({"apt": True})) == {}


# --- the clean and the scan ---------------------------------------------------------------------


def test_clean_script_removes_secrets_data_and_identity_with_every_value_quoted() -> None:
    inv = load_site("example", REPO)
    script = golden.clean_script(inv, ["/var/lib/relaunch/drill"])
    assert "down -v --remove-orphans" in script                      # containers hold the env files' values
    assert "rm -f /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db" in script  # freed pages held the env
    sql = next(shlex.split(line)[2] for line in script.splitlines() if line.startswith("printf"))
    assert "DROP USER IF EXISTS 'stats'@'localhost';" in sql           # native MariaDB: no password hash kept
    assert "rm -rf /etc/relaunch/secrets/* /etc/relaunch/blog.env" in script
    assert "rm -f /srv/notes/notes.db" in script                      # SQLite data
    assert "/var/lib/relaunch/drill" in script
    for identity, aside in (("/etc/ssh/ssh_host_*", "ssh_host_*"), ("/var/lib/relaunch/host-key-rotated", "host-key-rotated"),
                            ("/var/lib/cloud", "/cloud")):
        assert identity in script and f"{golden.ASIDE}/{aside}".replace("//", "/") in golden.restore_script(inv)
    assert "still on the host after the clean" in script
    evil = inv.model_copy(update={"apps": [inv.apps[1].model_copy(update={"name": "a;b"})]})
    assert "'a;b.service'" in golden.clean_script(evil, [])


def test_clean_script_leaves_docker_stopped_without_the_state_it_renames_at_start_and_restore_starts_it() -> None:
    # Found in a sandbox run: dockerd renames /var/lib/docker/runtimes at start; on a host booted from the
    # snapshot that directory came from the image, and on an overlay root (a sandbox Droplet) a directory of a
    # lower layer cannot be renamed (EXDEV): docker never started. Docker makes that state anew at each start.
    inv = load_site("example", REPO)
    lines = golden.clean_script(inv, []).splitlines()
    stop = lines.index("systemctl stop docker.socket docker.service containerd.service")
    removed = " ".join(lines[stop + 1:])
    for state in ("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db", "/var/lib/docker/runtimes",
                  "/var/lib/docker/tmp", "/var/lib/docker/gen-runtimes*"):
        assert state in removed
    assert not [line for line in lines[stop:] if "systemctl start" in line or "systemctl restart" in line]
    assert "systemctl start containerd.service docker.socket docker.service" in golden.restore_script(inv)
    native = inv.model_copy(update={"apps": [a for a in inv.apps if a.kind != "compose"]})
    assert "docker" not in golden.clean_script(native, []) and "docker" not in golden.restore_script(native)


def test_secret_patterns_take_each_line_of_a_key_but_not_its_armour() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\n-----END PRIVATE KEY-----\n"
    assert golden.secret_patterns([pem, "correct-horse-battery", "pw", "correct-horse-battery"]) == [
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "correct-horse-battery"]
    assert "grep -l -F -f" in golden.scan_command() and "/var/lib/docker/vfs" in golden.scan_command()


# --- the guard and the report -------------------------------------------------------------------


class SnapCloud:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.droplets = {1: Droplet(1, "example-prod", "active", "10.0.0.1", "fra1", ("relaunch-example",), None),
                         2: Droplet(2, "example-drill-x", "active", "10.0.0.2", "fra1", (DRILL_TAG,), None)}

    def get_droplet(self, droplet_id: int) -> Droplet:
        return self.droplets[droplet_id]

    def snapshot_droplet(self, droplet_id: int, name: str) -> str:
        self.calls.append(("snapshot", droplet_id))
        return "ok"

    def list_snapshots(self) -> list[Snapshot]:
        return [snap(7, "2026-11-01T00:00:00Z", "a" * 64), Snapshot(8, "prod-backup", None, "1", 1.0, ())]

    def delete_snapshot(self, snapshot_id: int) -> bool:
        self.calls.append(("delete", snapshot_id))
        return True


def test_guard_snapshots_only_scratch_droplets_and_deletes_only_golden_snapshots() -> None:
    cloud = SnapCloud()
    guarded = GuardedCloud(cloud)
    with pytest.raises(DrillGuardError, match="example-prod"):
        guarded.snapshot_droplet(1, "x")
    with pytest.raises(DrillGuardError, match="prod-backup"):
        guarded.delete_snapshot(8)
    assert guarded.snapshot_droplet(2, "x") == "ok" and guarded.delete_snapshot(7)
    assert cloud.calls == [("snapshot", 2), ("delete", 7)]


def test_the_golden_phase_is_reported_but_not_counted_in_the_rto() -> None:
    inv = load_site("example", REPO)
    journal = Journal.ephemeral("example", "drill", {})
    journal.steps.update({"provision": {"status": "done", "seconds": 10.0},
                          "golden": {"status": "done", "seconds": 500.0},
                          "restore": {"status": "done", "seconds": 5.0}})
    journal.state.update(golden={"id": 7, "name": "g", "snapshot_seconds": 40.0, "held": []})
    ctx = SimpleNamespace(inv=inv, journal=journal, state=journal.state, mask=lambda s: s)
    record = record_from_run(ctx, "passed", None, [])
    assert record["rto_seconds"] == 15.0
    assert [p["name"] for p in record["phases"]] == ["provision", "golden", "restore"]
    assert record["golden_made"]["snapshot_seconds"] == 40.0


def test_the_report_says_how_much_of_provision_was_the_cloud_making_the_droplet() -> None:
    inv = load_site("example", REPO)
    journal = Journal.ephemeral("example", "rebuild", {})
    journal.steps.update({"provision": {"status": "done", "seconds": 8.4}, "boot": {"status": "done", "seconds": 6.0}})
    journal.state.update(provision_cloud_seconds=7.9)
    ctx = SimpleNamespace(inv=inv, journal=journal, state=journal.state, mask=lambda s: s)
    provision, boot = record_from_run(ctx, "passed", None, [])["phases"]
    assert provision["cloud_seconds"] == 7.9 and provision["detail"] == "7.9 s of it the cloud making the Droplet"
    assert "cloud_seconds" not in boot and boot["detail"] == ""


def test_the_rebuild_plan_says_which_image_the_new_host_starts_from() -> None:
    from relaunch.rebuild import plan_rebuild

    inv = load_site("example", REPO)
    journal = Journal.ephemeral("example", "rebuild", {})
    journal.state.update(new_name="example-x", source="backup", golden_image={"id": 42, "name": "relaunch-golden-x",
                         "created_at": "2026-11-27T10:00:00Z", "held_indices": [0]},
                         golden_reason="golden snapshot relaunch-golden-x matches")
    ctx = SimpleNamespace(inv=inv, options={}, state=journal.state, journal=journal)
    plan = plan_rebuild(ctx)
    lines = "\n".join(plan.lines())
    assert "golden snapshot relaunch-golden-x (42" in lines and "must report no change" in lines
    assert dict(plan.facts)["starts from"].startswith("golden snapshot relaunch-golden-x")
    journal.state.update(golden_image=None, golden_reason="not used (--no-golden)")
    plan = plan_rebuild(ctx)
    assert dict(plan.facts)["starts from"] == "not used (--no-golden)" and "image debian-12-x64" in "\n".join(plan.lines())


# --- making one: a half-made snapshot is never left behind ------------------------------------------


class MakeCloud:
    def __init__(self, fail_tag: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail_tag = fail_tag

    def snapshot_droplet(self, droplet_id: int, name: str) -> Snapshot:
        self.calls.append(("snapshot", droplet_id))
        return Snapshot(77, name, "2026-11-27T10:00:00Z", str(droplet_id), 1.0)

    def tag_snapshot(self, snapshot_id: int, tags: list[str]) -> None:
        if self.fail_tag:
            raise golden.RelaunchError("tagging failed (503)")
        self.calls.append(("tag", snapshot_id, tuple(tags)))

    def delete_snapshot(self, snapshot_id: int) -> bool:
        self.calls.append(("delete", snapshot_id))
        return True

    def list_snapshots(self) -> list[Snapshot]:
        return []


def make_ctx(cloud: MakeCloud, monkeypatch: pytest.MonkeyPatch, bootstrap_fails: bool):
    import relaunch.bootstrap
    import relaunch.pipeline.steps.host as host_steps

    inv = load_site("example", REPO)
    journal = Journal.ephemeral("example", "drill", {})
    journal.state.update(recipe="r" * 64, new_id=5)
    conn = SimpleNamespace(host="10.0.0.5", run=lambda *a, **k: SimpleNamespace(ok=True, stdout=""))
    scripts: list[str] = []
    monkeypatch.setattr(golden, "_sh", lambda c, script, what, timeout: scripts.append(what))

    def again(*a, **k):
        if bootstrap_fails:
            raise golden.RelaunchError("apt-get failed")
        return bootstrap_result({"docker": False, "apps": True})

    monkeypatch.setattr(relaunch.bootstrap, "bootstrap", again)
    monkeypatch.setattr(host_steps, "render_context", lambda ctx: None)
    ctx = SimpleNamespace(inv=inv, state=journal.state, journal=journal, cloud=cloud, new_conn=lambda: conn,
                          drop_conn=lambda which: None, say=lambda step, m: None,
                          secrets={"x": SimpleNamespace(reveal=lambda: "a-long-secret-value")})
    return ctx, scripts


@pytest.mark.parametrize("where", ["bootstrap", "tag"])
def test_make_deletes_its_snapshot_when_it_fails_before_the_snapshot_is_finished(
        monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    cloud = MakeCloud(fail_tag=where == "tag")
    ctx, scripts = make_ctx(cloud, monkeypatch, bootstrap_fails=where == "bootstrap")
    with pytest.raises(golden.RelaunchError, match="apt-get failed" if where == "bootstrap" else "tagging failed"):
        golden.make(ctx)
    assert cloud.calls[0] == ("snapshot", 5) and cloud.calls[-1] == ("delete", 77)
    assert "putting the host's identity back" in scripts  # the drill's host got its identity back all the same
