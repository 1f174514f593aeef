"""Backups of the example site on its sandbox production Droplet: install, runs while the apps write,
the manifest and its checksums, the timer, overlapping runs, a corrupted artifact, and the
off-host restic copy restored on the backup host alone (the production host not involved).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from relaunch.backup import install as inst
from relaunch.backup.manifest import parse
from relaunch.backup.offsite import Repository, fetch, verify_remote_dir
from relaunch.backup.sandbox_store import backup_host_record
from relaunch.backup.site import connect_production, install_site
from relaunch.backup.status import (
    list_backups,
    read_runs,
    run_now,
    status,
    verify_backup,
)
from relaunch.inventory import load_site
from relaunch.inventory.secrets import Secret, resolve_all
from relaunch.provision import open_host
from relaunch.sandbox.site import Target

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)


def sh(conn, command: str, timeout: float = 300) -> str:
    return conn.run(command, hide=True, in_stream=False, timeout=timeout).stdout.strip()


@pytest.fixture(scope="module")
def inv(up, site_root: Path):
    return load_site("example", site_root)


@pytest.fixture(scope="module")
def installed(up, inv, target: Target) -> Iterator[inst.InstallResult]:
    """The backup installed with a 1-minute timer; put back to the inventory's interval afterwards."""
    result = install_site(inv, target.key_path, interval_minutes=1)
    yield result
    install_site(inv, target.key_path)


@pytest.fixture(scope="module")
def conn(installed, inv, target: Target):
    c = connect_production(inv, target.key_path)
    yield c
    c.close()


def secret_values(inv) -> list[str]:
    return [s.reveal() for s in resolve_all(inv).values()]


def backup_dirs(conn) -> list[str]:
    return sh(conn, f"ls {inst.BACKUP_ROOT} 2>/dev/null || true").split()


def wait_idle(conn, timeout: float = 120) -> None:
    """Wait until no backup is running (the timer may have started one)."""
    deadline = time.monotonic() + timeout
    while sh(conn, f"systemctl is-active {inst.SERVICE} || true") in ("activating", "active", "deactivating"):
        assert time.monotonic() < deadline, "a backup run did not finish"
        time.sleep(0.5)


def test_install_puts_runner_config_units_and_store_key_in_place(installed, conn, inv) -> None:
    assert installed.store_key_authorized or installed.repository_created is not None
    assert sh(conn, f"stat -c %a {inst.CONFIG_PATH} {inst.RESTIC_PASSWORD_FILE} {inst.STORE_KEY}").split() == ["600"] * 3
    assert sh(conn, f"systemctl is-enabled {inst.TIMER}; systemctl is-active {inst.TIMER}").split() == ["enabled", "active"]
    assert "OnCalendar=*-*-* *:*:00" in sh(conn, f"cat /etc/systemd/system/{inst.TIMER}")
    assert installed.next_run and installed.next_run != "n/a"  # when the timer fires next, as systemd says
    config = sh(conn, f"cat {inst.CONFIG_PATH}")
    assert all(v not in config for v in secret_values(inv))
    assert sh(conn, "command -v restic") == "/usr/bin/restic"


def test_two_overlapping_runs_make_exactly_one_backup(conn) -> None:
    sh(conn, f"systemctl stop {inst.TIMER}")
    try:
        wait_idle(conn)
        before = set(backup_dirs(conn))
        runner = shlex.join(["python3", inst.RUNNER_PATH, "--config", inst.CONFIG_PATH, "run"])
        out = sh(conn, f"({runner} >/tmp/r1.log 2>&1; echo $? >/tmp/r1.rc) & ({runner} >/tmp/r2.log 2>&1; echo $? >/tmp/r2.rc) & wait; "
                       "cat /tmp/r1.rc /tmp/r2.rc; cat /tmp/r1.log /tmp/r2.log", timeout=600)
        codes = sorted(int(x) for x in out.splitlines()[:2])
        assert codes == [0, 75], out
        assert "another backup is already running" in out
        assert len(set(backup_dirs(conn)) - before) == 1
    finally:
        sh(conn, f"systemctl start {inst.TIMER}")


def test_a_run_stopped_by_systemd_records_its_end_and_leaves_nothing_half_done(conn) -> None:
    sh(conn, f"systemctl stop {inst.TIMER}")
    try:
        wait_idle(conn)
        before = len(read_runs(conn))
        sh(conn, f"systemctl start --no-block {inst.SERVICE}")
        deadline = time.monotonic() + 60
        while not ((runs := read_runs(conn))[before:] and runs[-1].state == "running"):
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        sh(conn, f"systemctl stop {inst.SERVICE}")  # SIGTERM to the runner and its children
        last = read_runs(conn)[-1]
        assert last.state == "finished" and not last.ok and last.step == "stopped", last
        assert "SIGTERM" in (last.error or "")
        assert sh(conn, f"ls -A {inst.BACKUP_ROOT} | grep '^\\.' || true") == ""  # no .tmp-ID, no .work
    finally:
        sh(conn, f"systemctl start {inst.TIMER}")


def test_run_now_while_a_run_is_going_waits_for_it_and_makes_its_own(conn, inv) -> None:
    """A backup that began before the call (the timer's) cannot hold what the caller wrote just before: run_now
    waits for it and returns a run that began after it ended (a drill's canary was missed so)."""
    sh(conn, f"systemctl stop {inst.TIMER}")
    try:
        wait_idle(conn)
        before = len(read_runs(conn))
        sh(conn, f"systemctl start --no-block {inst.SERVICE}")
        deadline = time.monotonic() + 60
        while not ((runs := read_runs(conn))[before:] and runs[-1].state == "running"):
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        going = runs[-1]
        run = run_now(conn, inv.site)
        earlier = next(r for r in read_runs(conn) if r.pid == going.pid)
        assert run.ok and run.pid != going.pid and run.id != earlier.id
        assert earlier.finished_at is not None and run.started_at >= earlier.finished_at.replace(microsecond=0)
    finally:
        sh(conn, f"systemctl start {inst.TIMER}")


def test_backup_while_apps_write_lists_every_database_and_tree_and_verifies(conn, inv, up) -> None:
    count = "sqlite3 /srv/notes/notes.db 'SELECT count(*) FROM notes'"
    first = int(sh(conn, count))
    started = time.monotonic()
    run = run_now(conn, inv.site)
    seconds = time.monotonic() - started
    assert run.ok and run.id
    assert int(sh(conn, count)) > first  # the apps kept writing meanwhile
    manifest = parse(sh(conn, f"cat {inst.BACKUP_ROOT}/{run.id}/manifest.json"))
    assert [a.name for a in manifest.artifacts if a.kind == "database"] == ["blog", "stats", "notes"]
    assert {a.name: a.extra["paths"] for a in manifest.artifacts if a.kind == "archive"} == {
        "blog": ["/srv/blog/uploads", "/var/lib/docker/volumes/blog_thumbs/_data"],  # its named volume too
        "stats": ["/srv/stats"], "notes": ["/srv/notes"]}
    assert {a.extra["engine"] for a in manifest.artifacts if a.kind == "database"} == {"postgresql", "mariadb", "sqlite"}
    assert all(a.size > 0 and len(a.sha256) == 64 for a in manifest.artifacts)
    assert manifest.raw["inventory_sha256"] and manifest.raw["relaunch_version"]
    assert manifest.archive("blog").extra["files"] > 0
    # fingerprints of exactly what was dumped: PostgreSQL through one exported snapshot, SQLite of the copy,
    # MariaDB through two snapshots taken while its writes paused; tests/sandbox/test_backup_restore.py
    # restores each dump and compares
    blog, stats, notes = (manifest.database(n).extra for n in ("blog", "stats", "notes"))
    assert blog["fingerprint"]["tables"] and blog["fingerprint"]["taken_at"] == blog["snapshot_at"]
    assert notes["fingerprint"]["integrity"] == "ok" and notes["fingerprint"]["tables"]
    assert stats["fingerprint"]["tables"] and stats["fingerprint_method"] == "paired-snapshot"
    assert 0 <= stats["writes_paused_s"] < 30 and "fingerprint_unpaired" not in stats
    assert [blog["fingerprint_method"], notes["fingerprint_method"]] == ["shared-snapshot", "dumped-copy"]
    # what a deploy needs: the image of every service of the compose app, by digest, read from its containers
    assert set(manifest.images) == {"blog"} and set(manifest.images["blog"]) == {"web", "db"}, manifest.raw["deploy"]
    assert all("@sha256:" in ref for ref in manifest.images["blog"].values())
    assert "problems" not in manifest.raw["deploy"]
    result = verify_backup(conn, inv.site, run.id, offsite=True)
    assert result["ok"], result
    assert result["offsite"]["ok"]
    listed = list_backups(conn, inv.site)
    assert run.id in [b["id"] for b in listed["local"]]
    assert run.id in [s["id"] for s in listed["offsite"]], listed
    st = status(conn, inv)
    assert st.healthy and st.timer_active, st.warnings
    log.warning("backup %s: %.1f s, %d bytes (%s added off-host)", run.id, seconds, manifest.size, run.offsite)
    # no secret value in what the backup logged, recorded or configured
    logged = sh(conn, f"journalctl -u {inst.SERVICE} -o cat --no-pager; cat {inst.STATUS_FILE} {inst.CONFIG_PATH}")
    assert all(v not in logged for v in secret_values(inv))


def test_the_timer_fires(conn) -> None:
    before = len(read_runs(conn))
    deadline = time.monotonic() + 150  # next minute plus RandomizedDelaySec, plus the run
    while True:
        trigger = sh(conn, f"systemctl show -P LastTriggerUSec {inst.TIMER}")
        runs = read_runs(conn)
        # a run is recorded as running when it starts: wait for its end
        if len(runs) > before and runs[-1].state != "running" and trigger not in ("", "n/a", "0"):
            break
        assert time.monotonic() < deadline, f"the timer did not fire (last trigger {trigger!r})"
        time.sleep(2)
    assert runs[-1].ok, runs[-1]


def test_a_corrupted_artifact_is_reported_by_name(conn) -> None:
    wait_idle(conn)
    newest = backup_dirs(conn)[-1]
    path = f"{inst.BACKUP_ROOT}/{newest}/stats.sql"
    # flip one byte in the middle, same size
    flip = "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 2] ^= 1; open(p, 'wb').write(b)"
    sh(conn, shlex.join(["python3", "-c", flip, path]))
    result = verify_backup(conn, "example", newest, offsite=False)
    assert not result["ok"]
    assert [a["file"] for a in result["artifacts"] if not a["ok"]] == ["stats.sql"]
    assert any(p.startswith("stats.sql: sha256") for p in result["problems"])
    # written over SSH, outside systemd's UMask=: still root's alone (they hold stderr tails)
    assert sh(conn, f"stat -c %a {inst.STATUS_FILE} {inst.VERIFIED_FILE}").split() == ["600", "600"]


def test_the_off_host_copy_restores_on_the_backup_host_alone(conn, inv, site_root: Path, target: Target) -> None:
    run = run_now(conn, inv.site)
    local = parse(sh(conn, f"cat {inst.BACKUP_ROOT}/{run.id}/manifest.json"))
    record = backup_host_record(inv)
    assert record is not None
    store = open_host(record, target.key_path)
    try:
        password = (site_root / "secrets/example/restic-password").read_text().strip()
        repo = Repository("/srv/restic/example", Secret(password, "restic"), ("--no-lock",))
        directory = fetch(store, run.id, "/var/tmp/relaunch-fetch", repo, site=inv.site)
        check = verify_remote_dir(store, directory)
        assert check.ok, check.problems
        fetched = parse(sh(store, f"cat {directory}/manifest.json"))
        assert [(a.file, a.sha256) for a in fetched.artifacts] == [(a.file, a.sha256) for a in local.artifacts]
        assert password not in sh(store, "ls -la /tmp; ps -eo args")  # the password file is gone, not on argv
    finally:
        store.close()


HOOK = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(sys.argv[2], "ab") as f:
            f.write(self.path.encode() + b" " + self.headers.get("Authorization", "-").encode() + b" " + body + b"\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_failed_run_posts_backup_failed_from_the_host(conn, inv, site_root: Path, target: Target, tmp_path) -> None:
    """The runner as installed (backup.py, relaunch_webhook.py, the URL in a 0600 file) posts a failed run to a
    receiver on the host's own loopback. The failing run has a config of its own (a backup root it cannot
    create, its own status file and lock): production's runs and status are left alone."""
    port = 18765
    (tmp_path / "inventory").mkdir()
    (tmp_path / "secrets").symlink_to((site_root / "secrets").resolve())  # its file: references resolve the same
    data = yaml.safe_load((site_root / "inventory/example.yml").read_text())
    data["alerts"] = {"webhook": f"http://127.0.0.1:{port}/hook-a"}
    (tmp_path / "inventory/example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    with_hook = load_site("example", tmp_path)
    install_site(with_hook, target.key_path, interval_minutes=1)
    try:
        assert sh(conn, f"stat -c %a {inst.ALERT_URL_FILE}") == "600"
        sh(conn, f"rm -f /tmp/hook.jsonl; (setsid python3 -c {shlex.quote(HOOK)} {port} /tmp/hook.jsonl "
                 ">/dev/null 2>&1 < /dev/null &)")
        sh(conn, f"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1")
        bad = ("import json, sys; c = json.load(open(sys.argv[1])); "
               "c.update(root='/proc/relaunch-cannot', status_file='/tmp/bad-status.json', lock='/tmp/bad.lock'); "
               "json.dump(c, open('/tmp/bad-backup.json', 'w'))")
        sh(conn, shlex.join(["python3", "-c", bad, inst.CONFIG_PATH]))
        out = conn.run(f"python3 {inst.RUNNER_PATH} --config /tmp/bad-backup.json run", warn=True, hide=True,
                       in_stream=False, timeout=120)
        assert out.exited != 0
        assert "backup_failed alert sent to http://127.0.0.1" in out.stdout + out.stderr
        (line,) = sh(conn, "cat /tmp/hook.jsonl").splitlines()
        path, auth, body = line.split(" ", 2)
        assert (path, auth) == ("/hook-a", "-")
        got = json.loads(body)
        assert got["event"] == "backup_failed" and got["site"] == "example" and got["details"]["error"]
        last = json.loads(sh(conn, "cat /tmp/bad-status.json"))["runs"][-1]
        assert last["alert"]["sent"] is True and last["alert"]["to"] == f"http://127.0.0.1:{port}"
    finally:
        sh(conn, f"pkill -f '[s]erve_forever' || true; rm -f /tmp/bad-backup.json /tmp/bad-status.json /tmp/hook.jsonl "
                 f"{inst.ALERT_URL_FILE}")
        install_site(inv, target.key_path, interval_minutes=1)
