"""Sandbox: `fab rebuild` of the example site, the story itself, then again with the old host gone.

First a rebuild is killed (SIGTERM) during its data step and again during its restore, and
`--resume` finishes it. Then the production host (the one that rebuild made) breaks: its apps and its MariaDB are
stopped after a marker row went into every database. `rebuild` brings the site back on a
new Droplet from a final sync (RPO 0), verifies it, switches DNS and hands production over.
Then that host is destroyed and, from a fresh state directory (a clean operator machine),
the site is rebuilt from the off-host backup its first backup made.

This module retires the session's production host: it runs after the modules that use
`up` as it is (pytest runs test files in name order).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import uuid
from pathlib import Path

import dns.message
import dns.query
import pytest

from relaunch.backup.site import install_site
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.pipeline import PHASES
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.state import load_hosts, production_record

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

COMPOSE = "$(cat /etc/relaunch/compose-command) -p blog -f /srv/blog/compose.yml --env-file /etc/relaunch/blog.env"


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


def check_report(result) -> dict:
    record = result.record
    assert result.report_md is not None and result.report_json is not None
    for path in (result.report_md, result.report_json):
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert json.loads(Path(result.report_json).read_text())["status"] == "passed"
    assert "gantt" in Path(result.report_md).read_text()
    names = [p["name"] for p in record["phases"]]
    assert set(names) <= set(PHASES) and names[0] == "preflight" and names[-1] == "switch"
    assert len(record["databases"]) == 3 and all(d["fingerprint_match"] for d in record["databases"]), record["databases"]
    assert record["files"] and all(f["match"] for f in record["files"]), record["files"]
    assert record["health_checks"] and all(h["passed"] for h in record["health_checks"])
    return record


def interrupt_in(step: str):
    """A progress sink that sends this process SIGTERM once ``step`` reports progress (what `kill` does)."""
    sent = []

    def progress(event: Event) -> None:
        if event.step == step and event.kind in ("info", "bytes") and not sent:
            sent.append(event)
            os.kill(os.getpid(), signal.SIGTERM)

    return progress


def test_rebuild_killed_during_data_and_during_restore_resumes_to_the_same_end(up, site_root, target, sandbox_api) -> None:
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    with pytest.raises(KeyboardInterrupt):
        rebuild("example", RebuildOptions(settle=0), root=site_root, where=where, progress=interrupt_in("data"))
    paused = Journal.load("example", "rebuild")
    assert paused is not None and paused.steps["data"]["status"] == "failed"
    assert paused.steps["data"]["error"] == "interrupted (SIGTERM)"
    with pytest.raises(RelaunchError, match="--resume"):
        rebuild("example", RebuildOptions(settle=0), root=site_root, where=where)
    with pytest.raises(KeyboardInterrupt):
        rebuild("example", root=site_root, where=where, resume=True, progress=interrupt_in("restore"))
    assert Journal.load("example", "rebuild").steps["restore"]["error"] == "interrupted (SIGTERM)"

    done = rebuild("example", root=site_root, where=where, resume=True)
    assert done.status == "passed", done.error
    record = check_report(done)
    assert record["attempts"] == 3 and record["source"] == "live" and record["rpo_seconds"] == 0
    assert [p["name"] for p in record["phases"]] == [
        "preflight", "provision", "boot", "bootstrap", "data", "restore", "verify", "start", "health", "switch"]
    new = load_hosts("example")[done.journal.state["new_name"]]
    assert authoritative_a(sandbox_api, "example.test.") == [new.ipv4]
    assert [d.name for d in target.cloud.list_droplets("relaunch-example")].count(new.name) == 1


def test_rebuild_from_the_broken_host_then_from_the_store_alone(up, site_root, target, sandbox_api, monkeypatch,
                                                                 tmp_path) -> None:
    inv = load_site("example", site_root)
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    install_site(inv, target.key_path)
    old = production_record("example", inv.production.droplet_name)  # the host the test above built, if it ran
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
