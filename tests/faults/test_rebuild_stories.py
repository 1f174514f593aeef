"""Fault cases 7, 2 and 1 on whole `fab rebuild` stories of the example site (moved here from tests/sandbox/test_rebuild.py).

The interruption story (7, with 2 inside it): a rebuild is killed (SIGTERM) during its data step; on the first
`--resume` the old host dies in the middle of the data step (its sshd and every SSH session killed) and the run
stops with the exact commands to go on, DNS untouched; the old host comes back, the next `--resume` is killed
during the restore, and the last `--resume` finishes with the end state of an uninterrupted run; no journal ever
holds a secret. Then (RELAUNCH_FAULTS=all only) a rebuild interrupted at every step, Ctrl-C and SIGTERM in turn,
and a rebuild whose old host dies mid-data with --fallback-to-backup.

The broken-host story (1): production breaks (apps and MariaDB stopped after a marker row went into every
database), a rebuild brings the site back from a final sync (RPO 0) and switches; then that host is destroyed too
and, from a clean operator machine, the site is rebuilt from the off-host backup (RPO its age).

These tests switch the site to the hosts they build, retiring the session's production: marked
``retires_production``, they run after every other test of the session.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import threading
import uuid
from pathlib import Path

import dns.message
import dns.query
import pytest

from relaunch import apps
from relaunch.backup.site import install_site
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.pipeline import PHASES
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal, runs_dir
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.state import forget_host, load_hosts, production_record

# whole rebuilds, several per test (and the session's `up` when this module comes first): more than the 900 s default
pytestmark = [pytest.mark.sandbox, pytest.mark.heavy, pytest.mark.retires_production, pytest.mark.timeout(2700)]

COMPOSE = "$(cat /etc/relaunch/compose-command) -p blog -f /srv/blog/compose.yml --env-file /etc/relaunch/blog.env"
ALL_STEPS = ["preflight", "provision", "boot", "bootstrap", "data", "restore", "verify", "start", "health", "switch", "handover"]

# The old host dies as far as SSH can tell: no new connection, every open one cut.
KILL_SSH = r"""systemctl stop ssh.service ssh.socket 2>/dev/null
for p in /proc/[0-9]*; do
  case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in "sshd:"*) kill -KILL "${p#/proc/}" 2>/dev/null;; esac
done; exit 0"""


def write_markers(conn, value: str) -> None:
    """A marker row with ``value`` in each of the three databases (apps stopped first: the last rows before the break)."""
    v = shlex.quote(value)
    script = f"""set -e
{COMPOSE} exec -T db psql -U blog -d blog -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS relaunch_marker (v text)" \
  -c "INSERT INTO relaunch_marker VALUES ('"{v}"')"
mysql stats -e "CREATE TABLE IF NOT EXISTS relaunch_marker (v varchar(64)); INSERT INTO relaunch_marker VALUES ('"{v}"')"
python3 -c 'import sqlite3, sys; c = sqlite3.connect("/srv/notes/notes.db"); c.execute("CREATE TABLE IF NOT EXISTS relaunch_marker (v text)"); c.execute("INSERT INTO relaunch_marker VALUES (?)", (sys.argv[1],)); c.commit()' {v}
"""
    conn.run(script, hide=True, in_stream=False, timeout=120)


def read_markers(conn) -> dict[str, list[str]]:
    script = f"""set -e
echo "pg $({COMPOSE} exec -T db psql -U blog -d blog -At -c 'SELECT v FROM relaunch_marker' | tr '\\n' ' ')"
echo "my $(mysql stats -N -e 'SELECT v FROM relaunch_marker' | tr '\\n' ' ')"
echo "lite $(python3 -c 'import sqlite3; print(" ".join(r[0] for r in sqlite3.connect("file:/srv/notes/notes.db?mode=ro", uri=True).execute("SELECT v FROM relaunch_marker")))')"
"""
    out = conn.run(script, hide=True, in_stream=False, timeout=120).stdout
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1].split() for line in out.splitlines() if line.strip()}


def authoritative_a(sandbox_api, name: str) -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=sandbox_api.dns_port, timeout=5)
    return sorted(item.address for rrset in reply.answer for item in rrset)


def zone(cloud, name: str) -> dict:
    return {r.id: (r.type, r.name, r.data, r.ttl) for r in cloud.list_records(name)}


def check_report(result) -> dict:
    record = result.record
    assert result.report_md is not None and result.report_json is not None
    for path in (result.report_md, result.report_json):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert json.loads(Path(result.report_json).read_text())["status"] == "passed"
    assert "gantt" in Path(result.report_md).read_text()
    names = [p["name"] for p in record["phases"]]
    assert set(names) <= set(PHASES) and names[0] == "preflight" and names[-2:] == ["switch", "handover"]
    assert len(record["databases"]) == 3 and all(d["fingerprint_match"] for d in record["databases"]), record["databases"]
    assert record["files"] and all(f["match"] for f in record["files"]), record["files"]
    assert record["health_checks"] and all(h["passed"] for h in record["health_checks"])
    return record


def secrets_in_runs(site_root) -> list[str]:
    """Every file of the site's runs (journals open and closed, their artifacts) that holds a secret value."""
    values = [s.reveal() for s in resolve_all(load_site("example", site_root)).values()]
    values = [v for v in values if len(v) >= 6]
    assert values
    found = []
    for path in runs_dir("example").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            found += [f"{path.name}: secret #{i}" for i, v in enumerate(values) if v in text]
    return found


def interrupt_in(step: str, sig: int = signal.SIGTERM):
    """A progress sink that sends this process ``sig`` once ``step`` reports progress (what `kill` or Ctrl-C does)."""
    sent = []

    def progress(event: Event) -> None:
        if event.step == step and event.kind in ("info", "bytes") and not sent:
            sent.append(event)
            os.kill(os.getpid(), sig)

    return progress


class Aim:
    """A progress sink that sends ``sig`` to this process during ``step``: at its first progress line, or 0.3 s after
    it starts for a step that says nothing (once)."""

    def __init__(self, step: str, sig: int) -> None:
        self.step, self.sig = step, sig
        self.sent = False
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.step != self.step or self.sent:
            return
        if event.kind == "start" and self.timer is None:
            self.timer = threading.Timer(0.3, self.fire)
            self.timer.start()
        elif event.kind in ("info", "bytes"):
            self.fire()

    def fire(self) -> None:
        with self.lock:
            if self.sent:
                return
            self.sent = True
        self.cancel()
        os.kill(os.getpid(), self.sig)

    def cancel(self) -> None:
        if self.timer is not None and self.timer is not threading.current_thread():
            self.timer.cancel()


def container(backend, droplet_id: int):
    return backend.client.containers.get(backend.container_name(int(droplet_id)))


def lose_old_host_in_data(backend, droplet_id: int, seen: list):
    """A progress sink that kills the old host's SSH (server and every session) once the data step moves bytes
    (or, with data too small to report bytes, once its first dump or tree has landed: the others are on their way)."""
    def progress(event: Event) -> None:
        moving = event.kind == "bytes" or (event.kind == "info" and event.message.startswith(("database ", "tree ")))
        if event.step == "data" and moving and not seen:
            seen.append(event)
            container(backend, droplet_id).exec_run(["sh", "-c", KILL_SSH])

    return progress


def revive(backend, droplet_id: int, record, key_path) -> None:
    """The old host answers SSH again."""
    container(backend, droplet_id).exec_run(["systemctl", "start", "ssh.service"])
    open_host(record, key_path, timeout=120).close()


# --- the interruption story (cases 7 and 2) ------------------------------------------------


def test_story_rebuild_killed_during_its_data_step_is_paused(up, site_root, target, sandbox_api) -> None:
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    with pytest.raises(KeyboardInterrupt):
        rebuild("example", RebuildOptions(settle=0), root=site_root, where=where, progress=interrupt_in("data"))
    paused = Journal.load("example", "rebuild")
    assert paused is not None and paused.steps["data"]["status"] == "failed"
    assert paused.steps["data"]["error"] == "interrupted (SIGTERM)"
    with pytest.raises(RelaunchError, match="--resume"):
        rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    assert secrets_in_runs(site_root) == []


@pytest.mark.fault(case=2, ci=True, expected="old host dies in the middle of the data step: the step stops cleanly "
                   "with the exact `--resume` / `--resume --source backup` commands; DNS untouched")
def test_old_host_lost_in_the_middle_of_the_data_step_stops_with_the_commands_to_go_on(
        up, site_root, target, sandbox_api, sandbox_backend, observed) -> None:
    paused = Journal.load("example", "rebuild")
    if paused is None or paused.done("data"):
        pytest.skip("needs the story's rebuild paused before its data step (run the module in order)")
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    inv = load_site("example", site_root)
    old = paused.state["old"]
    record = load_hosts("example")[old["name"]]
    records = zone(target.cloud, inv.dns.zone)
    seen: list = []
    try:
        result = rebuild("example", root=site_root, where=where, resume=True,
                         progress=lose_old_host_in_data(sandbox_backend, old["droplet_id"], seen))
        assert seen, "the old host was killed while the data step moved bytes"
        assert result.status == "failed"
        assert "the final sync from the old host failed" in result.error
        assert "`fab rebuild --resume --site example`" in result.error
        assert "`fab rebuild --resume --source backup --site example`" in result.error
        assert "Nothing was switched" in result.error
        journal = Journal.load("example", "rebuild")
        assert journal.status == "paused" and journal.steps["data"]["status"] == "failed"
        assert zone(target.cloud, inv.dns.zone) == records and authoritative_a(sandbox_api, "example.test.") == [old["address"]]
        # stopped cleanly: nothing left on the new host that still reaches for the old one, the link's key gone
        new = open_host(load_hosts("example")[journal.state["new_name"]], target.key_path)
        try:
            left = new.run(
                "ls -A /run/relaunch 2>/dev/null | grep '^link-' || true; "
                "for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = \"$$\" ] && continue; "
                "c=$(tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null); "
                f"case \"$c\" in *{shlex.quote(old['address'])}*) echo \"$c\";; esac; done",
                hide=True, in_stream=False, timeout=60).stdout.splitlines()
        finally:
            new.close()
        assert left == [], left
        assert secrets_in_runs(site_root) == []
    finally:
        revive(sandbox_backend, old["droplet_id"], record, target.key_path)
    observed(f"killed at {seen[0].kind} {seen[0].what or seen[0].message[:40]}; run paused at data: "
             f"{result.error.splitlines()[0][:100]}...; commands printed; DNS still {old['address']}; no link left")


@pytest.mark.fault(case=7, ci=True, expected="Ctrl-C / SIGTERM during a step: `--resume` finishes with the same end "
                   "state; the journal never holds a secret")
def test_story_resumed_killed_during_restore_then_resumed_ends_as_one_run(up, site_root, target, sandbox_api,
                                                                          observed) -> None:
    if Journal.load("example", "rebuild") is None:
        pytest.skip("needs the story's paused rebuild (run the module in order)")
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    with pytest.raises(KeyboardInterrupt):
        rebuild("example", root=site_root, where=where, resume=True, progress=interrupt_in("restore"))
    assert Journal.load("example", "rebuild").steps["restore"]["error"] == "interrupted (SIGTERM)"
    assert secrets_in_runs(site_root) == []

    done = rebuild("example", root=site_root, where=where, resume=True)
    assert done.status == "passed", done.error
    record = check_report(done)
    assert record["attempts"] >= 3 and record["source"] == "live" and record["rpo_seconds"] == 0
    assert [p["name"] for p in record["phases"]] == ALL_STEPS
    new = load_hosts("example")[done.journal.state["new_name"]]
    assert authoritative_a(sandbox_api, "example.test.") == [new.ipv4]
    assert [d.name for d in target.cloud.list_droplets("relaunch-example")].count(new.name) == 1
    assert secrets_in_runs(site_root) == []
    observed(f"{record['attempts']} attempts (SIGTERM in data, old host lost in data, SIGTERM in restore), then "
             f"passed: live, RPO 0, {len(record['databases'])} fingerprints match, DNS on the new host; no secret "
             "in any journal")


# --- RELAUNCH_FAULTS=all only -------------------------------------------------------------------


@pytest.mark.fault(case=7, expected="Ctrl-C and SIGTERM at every step: `--resume` finishes with the same end state; "
                   "the journal never holds a secret")
def test_rebuild_interrupted_at_every_step_resumes_to_the_same_end(up, site_root, target, sandbox_api,
                                                                   observed) -> None:
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    assert Journal.load("example", "rebuild") is None
    signals = [signal.SIGINT, signal.SIGTERM]
    hits: list[tuple[str, str]] = []  # (step the signal was aimed at, where the journal says it landed)
    resume = False
    for attempt, step in enumerate(ALL_STEPS):
        sig = signals[attempt % 2]
        journal = Journal.load("example", "rebuild")
        if journal is not None and journal.done(step):
            continue  # an earlier signal landed after this step had finished
        aimed = Aim(step, sig)
        with pytest.raises(KeyboardInterrupt):
            try:
                rebuild("example", RebuildOptions(settle=0), root=site_root, where=where, resume=resume,
                        progress=aimed)
            finally:
                aimed.cancel()
        resume = True
        journal = Journal.load("example", "rebuild")
        assert journal is not None
        landed = [n for n, s in journal.steps.items() if s.get("status") == "failed" and "interrupted" in (s.get("error") or "")]
        hits.append((f"{step}/{signal.Signals(sig).name}", ",".join(landed) or "between steps"))
        assert secrets_in_runs(site_root) == [], step
    done = rebuild("example", root=site_root, where=where, resume=True)
    assert done.status == "passed", done.error
    record = check_report(done)
    assert [p["name"] for p in record["phases"]] == ALL_STEPS and record["source"] == "live"
    new = load_hosts("example")[done.journal.state["new_name"]]
    assert authoritative_a(sandbox_api, "example.test.") == [new.ipv4]
    assert [d.name for d in target.cloud.list_droplets("relaunch-example")].count(new.name) == 1
    assert secrets_in_runs(site_root) == []
    observed(f"{len(hits)} interruptions (aimed → landed): " + "; ".join(f"{a} → {b}" for a, b in hits)
             + f"; then passed in {record['attempts']} attempts, DNS on the new host, no secret in any journal")


@pytest.mark.fault(case=2, expected="old host dies in the middle of the data step with --fallback-to-backup: the "
                   "rebuild goes on from the newest backup; DNS untouched")
def test_old_host_lost_in_the_middle_of_the_data_step_falls_back_to_the_newest_backup(
        up, site_root, target, sandbox_api, sandbox_backend, observed) -> None:
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    inv = load_site("example", site_root)
    old = production_record("example", inv.production.droplet_name)
    records = zone(target.cloud, inv.dns.zone)
    seen: list = []
    result = None
    try:
        result = rebuild("example", RebuildOptions(settle=0, switch=False, fallback_to_backup=True), root=site_root,
                         where=where, progress=lose_old_host_in_data(sandbox_backend, old.droplet_id, seen))
        assert seen
        assert result.status == "passed", result.error
        record = result.record
        assert record["source"] == "backup" and "fell back to the newest backup" in record["source_reason"]
        assert record["rpo_seconds"] > 0 and all(d["fingerprint_match"] for d in record["databases"])
        assert zone(target.cloud, inv.dns.zone) == records
        assert authoritative_a(sandbox_api, "example.test.") == [old.ipv4]
    finally:
        revive(sandbox_backend, old.droplet_id, old, target.key_path)
        conn = open_host(old, target.key_path)
        try:  # production as it was: its writers and timer back on
            apps.start_apps(conn, inv)
            apps.enable_backup_timer(conn, True)
        finally:
            conn.close()
        state = result.journal.state if result is not None else (Journal.load("example", "rebuild") or Journal.new(
            "example", "rebuild", {})).state
        if Journal.load("example", "rebuild") is not None:
            from relaunch.rebuild import abort
            abort("example", root=site_root, destroy=True, where=where)
        elif state.get("new_id"):
            target.cloud.destroy_droplet(int(state["new_id"]))
            forget_host("example", state["new_name"])
    observed(f"old host killed in data at {seen[0].kind} {seen[0].what or seen[0].message[:40]}; "
             f"{record['source_reason'][:110]}; backup "
             f"{record['backup_id']}, RPO {record['rpo_seconds']} s; DNS unchanged")


# --- the broken-host story (case 1) -------------------------------------------------------------


@pytest.mark.fault(case=1, ci=True, expected="old host broken, then gone: rebuild from a final sync (RPO 0), then from a "
                   "clean machine from the newest verified off-host backup; RPO reported")
def test_rebuild_from_the_broken_host_then_from_the_store_alone(up, site_root, target, sandbox_api, monkeypatch,
                                                                 tmp_path, observed) -> None:
    inv = load_site("example", site_root)
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    install_site(inv, target.key_path)
    old = production_record("example", inv.production.droplet_name)  # the host the tests above built, if they ran
    conn = open_host(old, target.key_path)
    marker = f"before-the-break-{uuid.uuid4().hex[:8]}"
    try:
        # The break: writers stop, a last row goes in, the apps and MariaDB stay down (SSH still answers).
        conn.run(f"systemctl stop stats notes && {COMPOSE} stop web", hide=True, in_stream=False, timeout=120)
        write_markers(conn, marker)
        conn.run("systemctl stop mariadb", hide=True, in_stream=False, timeout=120)

        first = rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
        assert first.status == "passed", first.error
        record = check_report(first)
        assert record["source"] == "live" and record["rpo_seconds"] == 0
        new = load_hosts("example")[first.journal.state["new_name"]]
        assert new.role == "production" and load_hosts("example")[old.name].role == "retired"
        new_conn = open_host(new, target.key_path)
        try:
            assert read_markers(new_conn) == {"pg": [marker], "my": [marker], "lite": [marker]}
            timer = new_conn.run("systemctl is-enabled relaunch-backup.timer", hide=True, in_stream=False, warn=True)
            assert timer.stdout.strip() == "enabled"
        finally:
            new_conn.close()
        assert authoritative_a(sandbox_api, "example.test.") == [new.ipv4]
        # The old host: data untouched, apps and timer disabled (a reboot brings no second writer).
        conn.run("systemctl start mariadb", hide=True, in_stream=False, timeout=120)
        assert read_markers(conn) == {"pg": [marker], "my": [marker], "lite": [marker]}
        enabled = conn.run("systemctl is-enabled stats.service notes.service relaunch-backup.timer", hide=True,
                           in_stream=False, warn=True).stdout.split()
        assert enabled == ["disabled", "disabled", "disabled"]
    finally:
        conn.close()

    # The host relaunch just built is gone too; this machine forgot everything (a new laptop).
    target.cloud.destroy_droplet(new.droplet_id)
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "fresh-state"))
    second = rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    assert second.status == "passed", second.error
    record = check_report(second)
    assert record["source"] == "backup" and record["backup_id"]
    assert record["rpo_seconds"] > 0 and "its age" in record["rpo_basis"]
    newest = load_hosts("example")[second.journal.state["new_name"]]
    assert authoritative_a(sandbox_api, "example.test.") == [newest.ipv4]
    again = open_host(newest, target.key_path)
    try:
        assert read_markers(again) == {"pg": [marker], "my": [marker], "lite": [marker]}
    finally:
        again.close()
    observed(f"live from the broken host (RPO 0, markers carried); then host gone, clean machine: backup "
             f"{record['backup_id']}, RPO {record['rpo_seconds']} s ({record['source_reason']}); markers carried")
