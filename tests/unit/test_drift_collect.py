"""The drift collector's readers on a directory laid out like a host, the script as sent, references, drafts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from relaunch.drift import hostscript
from relaunch.drift.collect import carried, newest_reference, save_reference, script
from relaunch.drift.compare import Finding
from relaunch.drift.draft import draft
from relaunch.inventory import load_site
from relaunch.pipeline.report import render_markdown
from relaunch.remote import new_ed25519

SECRET = "hunter2-very-secret"


@pytest.fixture
def fresh_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state directory of the test's own (references of other tests are not there)."""
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake host root: dpkg's database, /etc with a secret file, a crontab, a user's keys, nginx, an app tree."""
    root = tmp_path / "host"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/apt").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: nginx\nStatus: install ok installed\nVersion: 1.22\n\n"
        "Package: libc6\nStatus: install ok installed\nPriority: required\nVersion: 2.36\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n")
    (root / "var/lib/apt/extended_states").write_text("Package: libc6\nArchitecture: amd64\nAuto-Installed: 1\n")
    (root / "var/lib/dpkg/info/nginx.list").write_text("/.\n/etc\n/etc/nginx\n/etc/nginx/nginx.conf\n/usr/sbin/nginx\n")
    (root / "etc/nginx/sites-enabled").mkdir(parents=True)
    (root / "etc/nginx/nginx.conf").write_text("worker_processes auto;\n")
    (root / "etc/nginx/sites-enabled/blog").write_text("server {\n  server_name example.test www.example.test; # x\n"
                                                       "  # server_name commented.test;\n}\n")
    (root / "etc/alternatives").mkdir()
    (root / "etc/alternatives/httpd").symlink_to("/usr/sbin/nginx")
    (root / "etc/relaunch").mkdir()
    secret = root / "etc/relaunch/blog.env"
    secret.write_text(f"POSTGRES_PASSWORD={SECRET}\n")
    secret.chmod(0o600)
    (root / "etc/cron.d").mkdir()
    (root / "etc/cron.d/report").write_text(f"# a comment\nMAILTO=root\n17 3 * * * root mysqldump -p{SECRET} x\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n"
                                     "deploy:x:1000:1000::/home/deploy:/usr/sbin/nologin\n")
    (root / "home/deploy/.ssh").mkdir(parents=True)
    (root / "home/deploy/.ssh/authorized_keys").write_text(f"{new_ed25519()[1]} laptop\n")
    (root / "srv/blog/uploads").mkdir(parents=True)
    (root / "srv/blog/uploads/a.jpg").write_text("image")
    (root / "srv/blog/compose.yml").write_text("services: {}\n")
    env = root / "srv/blog/.env"
    env.write_text(f"API_TOKEN={SECRET}\nexport MODE=prod\n")
    env.chmod(0o600)
    monkeypatch.setattr(hostscript, "PARAMS", {"trees": ["/srv/blog"], "exclude": ["/srv/blog/uploads"], "root": str(root)})
    monkeypatch.setattr(hostscript, "errors", [])
    return root


def test_packages_reads_dpkg_status_manual_marks_and_owners(host: Path) -> None:
    pkgs, owners = hostscript.packages()
    installed = int((host / "var/lib/dpkg/info/nginx.list").stat().st_mtime)
    assert pkgs == {"nginx": {"version": "1.22", "manual": True, "priority": "", "installed_at": installed},
                    "libc6": {"version": "2.36", "manual": False, "priority": "required"}}
    assert owners["/etc/nginx/nginx.conf"] == "nginx"
    assert hostscript.owner(owners, "/usr/sbin/nginx") == "nginx"


def test_etc_files_hashes_readable_files_and_only_lists_secret_ones(host: Path) -> None:
    _pkgs, owners = hostscript.packages()
    etc = hostscript.etc_files(owners)
    assert etc["/etc/nginx/nginx.conf"]["package"] == "nginx" and len(etc["/etc/nginx/nginx.conf"]["sha256"]) == 64
    assert etc["/etc/relaunch/blog.env"] == {"mode": "0o600", "package": None, "type": "file", "secret": True,
                                             "sha256": None, "changed": int((host / "etc/relaunch/blog.env").stat().st_ctime)}
    assert etc["/etc/alternatives/httpd"]["target_package"] == "nginx" and etc["/etc/alternatives/httpd"]["package"] is None
    assert SECRET not in json.dumps(etc)


def test_crontabs_skip_comments_and_variables_and_mask_credentials(host: Path) -> None:
    entries = hostscript.crontabs({})
    assert entries == [{"source": "/etc/cron.d/report", "entry": "17 3 * * * root mysqldump -p*** x", "package": None}]


def test_users_with_a_login_shell_or_keys_and_server_names(host: Path) -> None:
    users = hostscript.users()
    assert set(users) == {"root", "deploy"}
    assert users["deploy"]["keys"][0].startswith("ssh-ed25519 SHA256:") and users["deploy"]["keys"][0].endswith("laptop")
    assert [s["name"] for s in hostscript.server_names()] == ["example.test", "www.example.test"]


def test_trees_leave_out_carried_paths_and_keep_env_keys_not_values(host: Path) -> None:
    trees = hostscript.trees()["/srv/blog"]
    assert set(trees) == {"compose.yml", ".env"}
    assert trees[".env"]["env_keys"] == ["API_TOKEN", "MODE"] and trees[".env"]["sha256"] is None
    assert SECRET not in json.dumps(trees)


def test_container_env_keeps_names_and_only_values_that_look_harmless() -> None:
    names, plain = hostscript._env(["POSTGRES_PASSWORD=x", "MODE=prod", "DATABASE_URL=postgres://u:pw@db/x",
                                    "API_KEY=k"])
    assert names == ["API_KEY", "DATABASE_URL", "MODE", "POSTGRES_PASSWORD"] and plain == {"MODE": "prod"}


def test_script_carries_its_parameters_as_a_string_literal(tmp_path: Path) -> None:
    tricky = "/srv/it's \"$(rm -rf /)\""
    source = script({"trees": [tricky], "exclude": [], "root": str(tmp_path)})
    compile(source, "hostscript", "exec")
    probe = source.replace('if __name__ == "__main__":\n    main()', 'print(json.dumps(PARAMS))')
    out = subprocess.run([sys.executable, "-"], input=probe.encode(), capture_output=True, check=True).stdout
    assert json.loads(out)["trees"] == [tricky]


def test_whole_script_runs_read_only_on_a_fake_root(host: Path) -> None:
    """python3 - with the script on stdin prints one manifest; the fake root is left as it was."""
    before = sorted((p, p.lstat().st_mtime_ns) for p in host.rglob("*"))
    source = script({"trees": ["/srv/blog"], "exclude": ["/srv/blog/uploads"], "root": str(host)})
    run = subprocess.run([sys.executable, "-"], input=source.encode(), capture_output=True, check=True,
                         env={**os.environ, "PATH": "/nonexistent"})  # no systemctl, docker or database clients
    manifest = json.loads(run.stdout)
    assert manifest["format"] == 1 and "nginx" in manifest["packages"] and manifest["trees"]["/srv/blog"]
    assert SECRET not in run.stdout.decode()
    assert sorted((p, p.lstat().st_mtime_ns) for p in host.rglob("*")) == before


def test_carried_lists_files_and_sqlite_databases() -> None:
    inv = load_site("example")
    assert {"/srv/blog/uploads", "/srv/notes", "/srv/notes/notes.db-wal"} <= set(carried(inv))


def test_references_newest_by_collection_time_and_private(fresh_state: Path) -> None:
    assert newest_reference("example") is None
    save_reference("example", {"collected_at": "2026-11-27T10:00:00Z"}, kind="drill", run_id="B")
    path = save_reference("example", {"collected_at": "2026-11-27T11:00:00Z"}, kind="rebuild", run_id="A")
    found = newest_reference("example")
    assert found is not None and found[0] == path and found[1]["reference"]["kind"] == "rebuild"
    assert path.stat().st_mode & 0o777 == 0o600


def test_health_records_a_reference_for_rebuilds_and_drills_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from relaunch.pipeline.steps import apps as app_steps

    recorded = []
    monkeypatch.setattr(app_steps, "host_addresses", lambda inv, rec: ["10.0.0.2"])
    monkeypatch.setattr(app_steps, "wait_healthy", lambda *a, **k: SimpleNamespace(ok=True, results=[]))
    monkeypatch.setattr(app_steps.drift, "record_reference",
                        lambda conn, inv, kind, run_id: recorded.append(kind) or Path(f"/x/{kind}.json"))
    for kind in ("rebuild", "drill", "sandbox-up"):
        journal = SimpleNamespace(kind=kind, id="R1", record=lambda **kw: None)
        ctx = SimpleNamespace(inv=load_site("example"), journal=journal, results={}, new_record=lambda: None,
                              new_conn=lambda: "conn", say=lambda *a: None, mask=str, options={"switch": False})
        out = app_steps.health(ctx)
        assert out == ({"drift_reference": f"/x/{kind}.json"} if kind != "sandbox-up" else {})
    assert recorded == ["rebuild", "drill"]


def test_a_rebuild_that_switches_records_its_reference_in_the_handover_outside_the_rto(monkeypatch) -> None:
    # the reference is bookkeeping for `fab drift`: a rebuild takes it once the site answers from the new host,
    # first thing in the handover (the host as health left it, before the backup is installed there)
    from relaunch.pipeline.steps import apps as app_steps
    from relaunch.pipeline.steps import switch as switch_step

    order = []
    monkeypatch.setattr(app_steps, "host_addresses", lambda inv, rec: ["10.0.0.2"])
    monkeypatch.setattr(app_steps, "wait_healthy", lambda *a, **k: SimpleNamespace(ok=True, results=[]))
    monkeypatch.setattr(app_steps.drift, "record_reference",
                        lambda conn, inv, kind, run_id: order.append("reference") or Path(f"/x/{kind}.json"))
    monkeypatch.setattr(switch_step, "_retire_old", lambda ctx: order.append("retire") or ["old off"])
    monkeypatch.setattr(switch_step, "_backups_on_new", lambda ctx: order.append("backup") or ["backup on"])
    journal = SimpleNamespace(kind="rebuild", id="R1", record=lambda **kw: None)
    ctx = SimpleNamespace(inv=load_site("example"), journal=journal, results={}, new_record=lambda: None,
                          new_conn=lambda: "conn", say=lambda *a: None, mask=str, options={})
    assert app_steps.health(ctx) == {} and order == []
    assert switch_step.handover(ctx) == {"handover": ["old off", "backup on"], "drift_reference": "/x/rebuild.json"}
    assert order == ["reference", "retire", "backup"]


def test_draft_names_secret_references_never_values() -> None:
    findings = [
        Finding("package", "cron", "extra", "dpkg", "d", "a", data={"version": "3.0"}),
        Finding("cron", "/var/spool/cron/crontabs/root: 17 3 * * * x", "extra", "s", "d", "a",
                data={"source": "/var/spool/cron/crontabs/root", "entry": "17 3 * * * /usr/bin/find /srv -delete"}),
        Finding("unit", "hand.timer", "extra", "/etc/systemd/system/hand.timer", "d", "a", ["unit hand.service"]),
        Finding("container", "hand-extra", "extra", "c", "d", "a",
                data={"image": "reg/example/blog@sha256:1", "env": {"MODE": "prod"},
                      "env_names": ["MODE", "DB_PASSWORD"], "mounts": ["bind:/opt/data:/data"]}),
        Finding("database", "native mariadb/handmade", "extra", "native mariadb", "d", "a",
                data={"server": "native mariadb", "engine": "mariadb", "name": "handmade"}),
        Finding("file", "/srv/blog/notes", "extra", "/srv/blog", "d", "a",
                data={"app_tree": "/srv/blog", "rel": "notes", "directory": True, "env_keys": [], "secret": False}),
    ]
    d = draft("example", findings, "example-prod (10.0.0.1)")
    doc = yaml.safe_load(d.inventory_yaml)
    assert doc["files_to_add"] == {"blog": ["/srv/blog/notes"]}
    assert doc["databases"][0]["password"] == "file:../secrets/example/handmade-db-password"
    assert doc["apps"][0]["secret_env"] == {"DB_PASSWORD": "file:../secrets/example/hand-extra-db-password"}
    assert doc["apps"][0]["env"] == {"MODE": "prod"}
    assert "DRAFT" in d.inventory_yaml and "DRAFT" in d.runbook_md
    assert "docker inspect hand-extra" in d.inventory_yaml
    for step in ("drift-packages", "drift-units", "drift-cron"):
        assert f"```sh {{step={step}}}" in d.runbook_md
    assert "crontab -u root -" in d.runbook_md


def test_report_says_a_passing_drill_has_drift() -> None:
    record = {"kind": "drill", "site": "example", "status": "passed",
              "drift": {"drifted": True, "site": "example", "summary": "production has 1 thing(s) ...",
                        "findings": [{"kind": "package", "subject": "cron", "change": "extra", "detail": "installed",
                                      "advice": "install it in a runbook step"}]}}
    md = render_markdown(record)
    assert "**Drift**: production has 1 thing(s)" in md and "## Drift" in md and "| package | cron |" in md
    clean = render_markdown({**record, "drift": {"drifted": False, "findings": []}})
    assert "**Drift**" not in clean and "None: production has nothing" in clean


class FakeConn:
    """Answers the collector's one command with a canned manifest (or a failure)."""

    host = "10.0.0.1"

    def __init__(self, manifest: dict | None, exited: int = 0) -> None:
        self.manifest, self.exited, self.sent = manifest, exited, ""

    def run(self, command: str, in_stream=None, **kwargs):
        assert command == "python3 -" and kwargs.get("pty") is False
        self.sent = in_stream.read()
        return SimpleNamespace(exited=self.exited, stdout=json.dumps(self.manifest), stderr="Traceback: boom")


def test_check_compares_production_with_the_newest_reference_and_the_inventory_ignore_list(fresh_state: Path) -> None:
    from relaunch.drift.check import NoReference, check
    from relaunch.inventory.model import Drift
    from relaunch.errors import RelaunchError

    inv = load_site("example")
    ref = {"collected_at": "2026-11-27T10:00:00Z", "packages": {}, "etc": {}, "trees": {}}
    prod = {**ref, "collected_at": "2026-11-27T12:00:00Z", "seconds": 1.5, "packages": {"cron": {"manual": True}},
            "etc": {"/etc/x.conf": {"type": "file", "sha256": "1" * 64, "mode": "0o644", "package": None}}}
    with pytest.raises(NoReference, match="fab drill --site example"):
        check(inv, Path("/nonexistent"), conn=FakeConn(prod))
    save_reference("example", ref, kind="drill", run_id="R1")
    conn = FakeConn(prod)
    result = check(inv, Path("/nonexistent"), conn=conn)
    assert {f.key for f in result.findings} == {"package:cron", "etc:/etc/x.conf"} and result.drifted
    assert "/srv/blog" in conn.sent and result.reference["run_id"] == "R1" and result.host_seconds == 1.5
    assert result.to_json()["findings"][0]["kind"] == "package"
    quiet = inv.model_copy(update={"drift": Drift(ignore=["package:cron", "etc:/etc/x.*"])})
    assert check(quiet, Path("/nonexistent"), conn=FakeConn(prod)).findings == []
    with pytest.raises(RelaunchError, match="reading the host's state failed.*boom"):
        check(inv, Path("/nonexistent"), conn=FakeConn(prod, exited=1))


def test_draft_never_proposes_a_lone_file_as_a_files_entry() -> None:
    """``files`` entries are directories (backups, copies and listings carry trees): a lone file would be lost."""
    lone = Finding("file", "/srv/blog/notes.txt", "extra", "/srv/blog", "d", "a",
                   data={"app_tree": "/srv/blog", "rel": "notes.txt", "directory": False, "env_keys": [], "secret": False})
    d = draft("example", [lone], "example-prod (10.0.0.1)")
    doc = yaml.safe_load(d.inventory_yaml)
    assert "files_to_add" not in (doc or {})
    assert "/srv/blog/notes.txt" in d.inventory_yaml and "into a directory" in d.inventory_yaml


def test_etc_checksums_leave_the_hosts_own_name_out(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """exim4 writes the host's name into its config when installed: the same config on a rebuilt host is no drift."""
    conf = host / "etc/exim4/update-exim4.conf.conf"
    conf.parent.mkdir(parents=True)
    sums = []
    for name in ("example-prod", "example-drill-20261127t180307z"):
        monkeypatch.setattr(hostscript.os, "uname", lambda n=name: type("U", (), {"nodename": n})())
        conf.write_text(f"dc_eximconfig_configtype='local'\ndc_other_hostnames='{name}'\n")
        sums.append(hostscript.etc_files({})["/etc/exim4/update-exim4.conf.conf"]["sha256"])
    assert sums[0] == sums[1]
    conf.write_text("dc_eximconfig_configtype='smarthost'\ndc_other_hostnames='example-drill-20261127t180307z'\n")
    assert hostscript.etc_files({})["/etc/exim4/update-exim4.conf.conf"]["sha256"] != sums[0]  # a real change shows
