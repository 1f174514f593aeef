"""Sandbox: drills that must FAIL, and say where — on the session's `up` site, cheaply.

Nothing here brings up a site of its own: each test tampers with a COPY of one of the
session's backups (on the store, or on the production host for ``--from host``), and each
drill stops before start/health (the flipped byte at the data step, the missing rows at
verify), or is killed after provisioning. Every copy is removed afterwards; while a copy
sits in production's backup directory the backup runner's lock is held, so no scheduled run
carries it off-host or prunes it mid-test.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from relaunch.backup.install import BACKUP_ROOT, CONFIG_PATH, LOCK_PATH, RUNNER_PATH
from relaunch.backup.prune import prune_site
from relaunch.backup.site import install_site
from relaunch.backup.status import run_now
from relaunch.drill import DRILL_TAG, DrillOptions, cleanup, drill
from relaunch.drill_host import host_backups
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.provision import open_host
from relaunch.rebuild import Where
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

TOKEN = "sandbox-test-token"  # tests/conftest.py's sandbox token

#: IDs for the tampered copies: valid backup IDs of the year 2000, so they never pass for the newest backup
#: (a rebuild or drill picks the newest) and the retention policy drops them from the store by itself.
FLIPPED_ID = "20000101T000000Z-71"
SHORT_ID = "20000101T000000Z-72"


@pytest.fixture(scope="module")
def prod(up, site_root, target):
    install_site(load_site("example", site_root), target.key_path)  # idempotent; as tests/sandbox/test_drill.py
    conn = open_host(up.host, target.key_path)
    if not host_backups(conn):  # the session's site may not have taken one yet
        assert run_now(conn, "example").ok
    yield conn
    conn.close()


def sh(conn, command: str, timeout: float = 300) -> str:
    run = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    assert run.ok, f"{command}: {run.stdout[-800:]} {run.stderr[-800:]}"
    return run.stdout


#: Runs on production: copy backup SRC into DEST_ROOT/NEW with the manifest's id set to NEW, then tamper with it.
#: mode "flip": one byte of the first database artifact flipped (manifest left as it was);
#: mode "short": the SQLite artifact loses a third of its largest table's rows (a well-formed file),
#: and the manifest gets its new sha256 and size. Prints JSON: what was changed.
TAMPER = r'''
import hashlib, json, os, shutil, sqlite3, sys
src, dest_root, new, mode = sys.argv[1:]
dest = os.path.join(dest_root, new)
shutil.copytree(src, dest)
path = os.path.join(dest, "manifest.json")
m = json.load(open(path))
m["id"] = new
out = {}
if mode == "flip":
    art = m["databases"][0]
    f = os.path.join(dest, art["file"])
    with open(f, "r+b") as fh:
        fh.seek(art["size"] // 2)
        b = fh.read(1)
        fh.seek(art["size"] // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    out = {"file": art["file"], "database": art["name"]}
else:
    art = [a for a in m["databases"] if a["engine"] == "sqlite"][0]
    f = os.path.join(dest, art["file"])
    db = sqlite3.connect(f)
    tables = [r[0] for r in db.execute("select name from sqlite_master where type='table' and name not like 'sqlite_%'")]
    counts = {t: db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
    table = max(counts, key=counts.get)
    db.execute(f'delete from "{table}" where rowid in (select rowid from "{table}" order by rowid desc limit ?)',
               (max(1, counts[table] // 3),))
    db.commit()
    db.execute("vacuum")
    db.close()
    h = hashlib.sha256(open(f, "rb").read()).hexdigest()
    art["sha256"], art["size"] = h, os.path.getsize(f)
    out = {"file": art["file"], "database": art["name"], "table": table, "rows": counts[table]}
json.dump(m, open(path, "w"))
print(json.dumps(out))
'''


def tamper(conn, backup_id: str, dest_root: str, new_id: str, mode: str) -> dict:
    out = sh(conn, "python3 -c " + shlex.quote(TAMPER) + " " + shlex.join(
        [f"{BACKUP_ROOT}/{backup_id}", dest_root, new_id, mode]))
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def runner_lock_held(prod) -> Iterator[None]:
    """Hold the backup runner's lock on production (a scheduled run then does nothing: exit 75) for the test."""
    # -o: only flock itself holds the lock (not its sleep), so ending flock frees it
    sh(prod, f"nohup flock -o {shlex.quote(LOCK_PATH)} sleep 900 >/dev/null 2>&1 & echo $! > /run/relaunch-test-lock.pid; "
             f"for i in $(seq 50); do flock -n {shlex.quote(LOCK_PATH)} true || exit 0; sleep 0.1; done; exit 1")
    yield
    sh(prod, "p=$(cat /run/relaunch-test-lock.pid); pkill -P \"$p\" sleep; kill \"$p\"; rm -f /run/relaunch-test-lock.pid; "
             f"for i in $(seq 50); do flock -n {shlex.quote(LOCK_PATH)} true && exit 0; sleep 0.1; done; exit 1")


class Receiver:
    """An HTTP receiver on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                bodies.append({"path": self.path, "headers": dict(self.headers),
                               "json": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def where_of(target, sandbox_api) -> Where:
    return Where(target.cloud, sandbox_api.dns_port, target.key_path)


def test_a_backup_on_the_store_with_a_flipped_byte_fails_the_drill_at_the_checksum_naming_the_artifact(
        prod, site_root, target, sandbox_api, runner_lock_held) -> None:
    newest = host_backups(prod)[-1]["id"]
    work = sh(prod, "mktemp -d /tmp/relaunch-test-flip.XXXXXX").strip()
    changed = tamper(prod, newest, work, FLIPPED_ID, "flip")
    # the copy goes to the store exactly as the runner uploads a backup (its own upload(), its restic config)
    upload = ("import json, pathlib, sys; sys.path.insert(0, %r); import backup; "
              "c = json.load(open(%r)); print(json.dumps(backup.upload(c, pathlib.Path(%r), %r)))"
              % (str(Path(RUNNER_PATH).parent), CONFIG_PATH, work, FLIPPED_ID))
    snapshot = None
    cloud = target.cloud
    before = {d.id for d in cloud.list_droplets()}
    try:
        snapshot = json.loads(sh(prod, "python3 -c " + shlex.quote(upload)).strip().splitlines()[-1])["snapshot"]
        result = drill("example", DrillOptions(backup_id=FLIPPED_ID, canary=False), root=site_root,
                       where=where_of(target, sandbox_api))
    finally:
        if snapshot:  # production's store key is append-only: the operator's prune forgets it (dated 2000, the policy drops it)
            inv = load_site("example", site_root)
            pruned = prune_site(inv, resolve_all(inv))
            assert FLIPPED_ID in {f[1] for f in pruned.forget}, pruned
        sh(prod, f"rm -rf -- {shlex.quote(work)}")
    assert result.status == "failed"
    assert result.record["phases"][[p["name"] for p in result.record["phases"]].index("data")]["status"] == "failed"
    assert "does not match its manifest" in result.error and changed["file"] in result.error, result.error
    assert result.record["scratch_destroyed"] is True
    assert {d.id for d in cloud.list_droplets()} == before


def test_a_drill_from_the_host_of_a_dump_lacking_rows_fails_at_verify_naming_database_and_table_and_alerts(
        prod, site_root, target, sandbox_api, runner_lock_held) -> None:
    """--from host: the backup comes from production's backup directory (read only); the dump is well-formed and
    its checksum right, so only verify can tell; the webhook on 127.0.0.1 receives the failure."""
    newest = host_backups(prod)[-1]["id"]
    changed = tamper(prod, newest, BACKUP_ROOT, SHORT_ID, "short")
    receiver = Receiver()
    path = site_root / "inventory" / "example.yml"
    original = path.read_text()
    data = yaml.safe_load(original)
    data["alerts"] = {"webhook": receiver.url}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    listing_before = sh(prod, f"find {BACKUP_ROOT} -path '*/.work' -prune -o -printf '%p %s %T@\\n' | sort")
    try:
        result = drill("example", DrillOptions(backup_id=SHORT_ID, canary=False, source="host"), root=site_root,
                       where=where_of(target, sandbox_api))
        listing_after = sh(prod, f"find {BACKUP_ROOT} -path '*/.work' -prune -o -printf '%p %s %T@\\n' | sort")
    finally:
        path.write_text(original)
        sh(prod, f"rm -rf -- {shlex.quote(BACKUP_ROOT + '/' + SHORT_ID)}")
        receiver.close()
    record = result.record
    assert result.status == "failed"
    phases = {p["name"]: p["status"] for p in record["phases"]}
    assert phases["data"] == "passed" and phases["restore"] == "passed" and phases["verify"] == "failed", phases
    assert f"database {changed['database']}: table {changed['table']}:" in result.error, result.error
    assert f"expected {changed['rows']}" in result.error
    # the other databases and the trees came over from the host intact
    assert {d["name"]: d["fingerprint_match"] for d in record["databases"]} == {
        "blog": True, "stats": True, changed["database"]: False}
    assert record["backup_id"] == SHORT_ID and "on the production host" in record["rpo_basis"]
    assert listing_after == listing_before, "a drill --from host changed production's backup directory"
    assert record["scratch_destroyed"] is True
    # the alert
    assert [b["json"]["event"] for b in receiver.bodies] == ["drill_failed"]
    body = receiver.bodies[0]["json"]
    assert body["site"] == "example" and body["details"]["failed_phase"] == "verify"
    assert changed["table"] in body["message"] and body["priority"] >= 4 and "title" in body
    assert [s.ok for s in result.notified] == [True]


KILLED = """
import sys
from pathlib import Path
from relaunch.cloud import Cloud
from relaunch.drill import DrillOptions, drill
from relaunch.rebuild import Where
url, token, dns_port, key, root = sys.argv[1:]
with Cloud(token=token, endpoint=url, poll_interval=0.2, poll_max_interval=1.0) as c:
    drill("example", DrillOptions(canary=False), root=root, where=Where(c, int(dns_port), Path(key)))
"""


def test_a_drill_killed_part_way_leaves_nothing_behind_after_cleanup(prod, site_root, target, sandbox_api) -> None:
    cloud = target.cloud
    before = {d.id for d in cloud.list_droplets()}
    hosts_before = set(load_hosts("example"))
    proc = subprocess.Popen([sys.executable, "-c", KILLED, sandbox_api.url, TOKEN, str(sandbox_api.dns_port),
                             str(target.key_path), str(site_root)], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not cloud.list_droplets(DRILL_TAG):
            assert proc.poll() is None, f"the drill ended before it made its scratch Droplet: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no scratch Droplet within 300 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # no finally, no clean-up of its own: killed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert cloud.list_droplets(DRILL_TAG), "the killed drill left its scratch Droplet (what --cleanup is for)"
    done = cleanup("example", root=site_root, where=where_of(target, sandbox_api))
    assert len(done) == 1 and "left by an earlier drill" in done[0]
    assert not cloud.list_droplets(DRILL_TAG)
    assert {d.id for d in cloud.list_droplets()} == before
    assert set(load_hosts("example")) == hosts_before
    assert cleanup("example", root=site_root, where=where_of(target, sandbox_api)) == []
