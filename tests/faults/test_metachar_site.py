"""Faults 12 and 9 and the secrets test, on ONE site brought up once (the CI budget allows one).

The site ``meta`` (made with `fab init`, then described by hand) has a MariaDB, a PostgreSQL
and an SQLite database whose names, users, passwords and paths are full of shell and format
metacharacters (quotes, ``$(...)``, backticks, backslashes, spaces, leading dashes,
non-ASCII, ``%s`` and ``{0}``), and file trees (one with such a path) holding files whose
names have newlines, leading dashes, globs and the rest. Its secrets are distinctive
values (every one holds a marker this test searches for).

One drill (from the off-host store) and one rebuild (live) run on it. The rebuild's first
attempt meets a full disk: a 128 KiB tmpfs is mounted over the SQLite database's directory
on the new host when the data step starts (case 9): putting the file in place there fails,
and so does the restore step's second try. The error must name the host and the
path, nothing may be switched; the tmpfs is then removed and ``--resume`` finishes (case 12
then compares the new host's data with production's byte for byte).

While everything runs, the process arguments on every sandbox host and on this machine
are sampled (``ps``); afterwards every file relaunch wrote here, every file readable by
others on the old and the new host, both hosts' systemd journals, the run's progress
events and its log records are searched for the secrets.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaunch.backup.install import STATUS_FILE
from relaunch.backup.site import install_site
from relaunch.drill import DrillOptions, drill
from relaunch.init_site import init_site
from relaunch.inventory import load_site
from relaunch.pipeline.events import Event
from relaunch.pipeline.journal import Journal
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.sandbox.site import bring_up
from relaunch.state import load_hosts, state_dir

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

TOKEN = "sandbox-test-token"  # the session's sandbox API token (tests/conftest.py): the API token relaunch holds
MARK = uuid.uuid4().hex[:10]
META = "'q' \"d\" \\b ü %s {0}"  # the metacharacters every name carries (plus its own $(...) and dashes)
MY_DB = f"my $(touch pwned-mydb) {META}"
MY_USER = f"-u `touch pwned-myu` {META}"[:80]
PG_DB = "pg $(touch pwned-pg) 'q' \"d\" \\ ü"
PG_USER = "-p `pwned` 'q' \"d\" \\ ü"
LITE_DIR = "/var/lib/meta data/$(touch pwned-lite) 'q' \"d\" \\b ü"
LITE = f"{LITE_DIR}/-lite %s.db"
ODD_TREE = "/srv/hello/it's \"a\" $(touch pwned-tree) \\ -ü tree"
TREES = ["/srv/hello/public", ODD_TREE]
FILE_NAMES = ["new\nline.txt", "-rf", "--help", "$(touch pwned-file)", "`touch pwned-bt`", "back\\slash",
              "quo'te\"s", "sp ace ", " lead", "ü-ñ-日本.txt", "*glob?[x]", "%s%n{0}{{x}}", "a;b&c|d>e", "-dir $HOME"]
SECRETS = {  # file name -> value; the marker inside each is what the search looks for
    "my-password": f"MYPW-{MARK} $(touch pwned-pw) {META} -x",
    "pg-password": f"PGPW-{MARK} `touch pwned-pgpw` {META}",
    "restic-password": f"RESTICPW-{MARK} $HOME {META}",
}
PWNED = "pwned-"


def inventory(site: str) -> dict[str, Any]:
    return {
        "site": site,
        "description": "metacharacters everywhere",
        "provider": {"kind": "sandbox", "region": "fra1", "size": "s-1vcpu-2gb", "tags": [f"relaunch-{site}"]},
        "production": {"droplet_name": f"{site}-prod"},
        "proxy": {"kind": "nginx", "tls": {"certificate": f"../secrets/{site}/tls/site.crt",
                                           "key": f"file:../secrets/{site}/tls/site.key",
                                           "ca": f"../secrets/{site}/tls/ca.crt"}},
        "apps": [{
            "name": "hello", "kind": "systemd", "domain": f"{site}.test", "port": 8090, "files": TREES,
            "databases": ["my", "pg", "lite"],
            "health": [{"scheme": "https", "path": "/", "contains": "Hello"}],
            "systemd": {"unit_template": "apps/hello/hello.service.j2", "packages": ["python3"]},
        }],
        "databases": [
            {"name": "my", "engine": "mariadb", "database": MY_DB, "user": MY_USER,
             "password": f"file:../secrets/{site}/my-password"},
            {"name": "pg", "engine": "postgresql", "database": PG_DB, "user": PG_USER,
             "password": f"file:../secrets/{site}/pg-password"},
            {"name": "lite", "engine": "sqlite", "path": LITE},
        ],
        "dns": {"zone": f"{site}.test", "records": [{"name": "@", "type": "A"}], "ttl": 1800, "switch_ttl": 60},
        "backups": {"interval_minutes": 15, "offsite": {
            "kind": "sftp", "repository": f"sftp:restic@backup.{site}.test:/srv/restic/{site}",
            "password": f"file:../secrets/{site}/restic-password",
            "ssh_key": f"file:../secrets/{site}/offsite/id_ed25519",
            "known_hosts": f"../secrets/{site}/offsite/known_hosts"}},
        "objectives": {"rto_minutes": 60, "rpo_minutes": 60},
    }


# --- on the hosts (scripts travel on stdin, values as JSON: nothing on a command line) -----------

SEED = r"""
import json, os, subprocess, sqlite3, sys
a = json.load(sys.stdin)
def hexs(s): return s.encode().hex()
for tree in a["trees"]:
    os.makedirs(os.path.join(tree, a["names"][-1]), exist_ok=True)
    for i, name in enumerate(a["names"][:-1]):  # the last one is the directory
        with open(os.path.join(tree, name), "wb") as f:
            f.write(("%s %d\n" % (name, i)).encode() + bytes(range(256)))
        with open(os.path.join(tree, a["names"][-1], name), "wb") as f:
            f.write(name.encode()[::-1])
with open(os.path.join(a["trees"][0], "index.html"), "w") as f:
    f.write("<p>Hello from meta</p>\n")
rows = a["names"] + [a["meta"] * 3]
ident = lambda s: "`" + s.replace("`", "``") + "`"
sql = "CREATE TABLE IF NOT EXISTS %s.%s (id int primary key, v longtext);\n" % (ident(a["my_db"]), ident(a["table"]))
sql += "".join("REPLACE INTO %s.%s VALUES (%d, CONVERT(X'%s' USING utf8mb4));\n" % (ident(a["my_db"]), ident(a["table"]), i, hexs(r))
               for i, r in enumerate(rows))
subprocess.run(["mariadb", "--default-character-set=utf8mb4"], input=sql.encode(), check=True)
q = lambda s: '"' + s.replace('"', '""') + '"'
sql = "CREATE TABLE IF NOT EXISTS %s (id int primary key, v text);\n" % q(a["table"])
sql += "".join("INSERT INTO %s VALUES (%d, convert_from(decode('%s', 'hex'), 'UTF8')) ON CONFLICT DO NOTHING;\n" % (q(a["table"]), i, hexs(r))
               for i, r in enumerate(rows))
sql += "ALTER TABLE %s OWNER TO %s;\n" % (q(a["table"]), q(a["pg_user"]))
subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", a["pg_db"]],
               input=sql.encode(), check=True)
c = sqlite3.connect(a["lite"])
c.execute("CREATE TABLE IF NOT EXISTS %s (id integer primary key, v text)" % q(a["table"]))
c.executemany("INSERT OR REPLACE INTO %s VALUES (?, ?)" % q(a["table"]), list(enumerate(rows)))
c.executemany("INSERT OR REPLACE INTO %s VALUES (?, ?)" % q(a["table"]), [(1000 + i, os.urandom(1000).hex()) for i in range(1000)])
c.commit()
print("seeded")
"""

READ = r"""
import hashlib, json, os, subprocess, sqlite3, sys
a = json.load(sys.stdin)
out = {"trees": {}, "my": None, "pg": None, "lite": None}
for tree in a["trees"]:
    listing = {}
    for d, dirs, files in os.walk(tree):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, tree).encode("utf-8", "surrogateescape").hex()
            body = hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "dir"
            listing[rel] = [oct(st.st_mode), body]
    out["trees"][tree] = listing
ident = lambda s: "`" + s.replace("`", "``") + "`"
my = subprocess.run(["mariadb", "--default-character-set=utf8mb4", "-N", "-B", "-r"], input=("SELECT id, HEX(v) FROM %s.%s ORDER BY id" % (ident(a["my_db"]), ident(a["table"]))).encode(),
                    capture_output=True, check=True)
out["my"] = my.stdout.decode()
q = lambda s: '"' + s.replace('"', '""') + '"'
pg = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-At", "--dbname", a["pg_db"]],
                    input=("SELECT id, encode(convert_to(v, 'UTF8'), 'hex') FROM %s ORDER BY id" % q(a["table"])).encode(),
                    capture_output=True, check=True)
out["pg"] = pg.stdout.decode()
c = sqlite3.connect("file:" + a["lite"].replace("?", "%3f").replace("#", "%23") + "?mode=ro", uri=True)
out["lite"] = [[i, v.encode().hex()] for i, v in c.execute("SELECT id, v FROM %s ORDER BY id" % q(a["table"]))]
out["users"] = subprocess.run(["mariadb", "--default-character-set=utf8mb4", "-N", "-B", "-r"], input=b"SELECT User FROM mysql.user ORDER BY User",
                              capture_output=True, check=True).stdout.decode().splitlines()
print(json.dumps(out))
"""

SEARCH = r"""
import json, os, stat, subprocess, sys
a = json.load(sys.stdin)
needles = {k: v.encode() for k, v in a["needles"].items()}
found = []
skip = ("/proc", "/sys", "/dev", "/usr", "/var/lib/dpkg", "/var/lib/apt", "/var/cache", "/var/lib/docker",
        "/var/lib/mysql", "/var/lib/postgresql")
for top in ("/etc", "/srv", "/var", "/tmp", "/run", "/root", "/home", "/opt"):
    for d, dirs, files in os.walk(top):
        if d.startswith(skip):
            dirs[:] = []
            continue
        for n in files:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
                    continue
                data = open(p, "rb").read()
            except OSError:
                continue
            for k, v in needles.items():
                if v in data:
                    found.append({"path": p, "secret": k, "mode": oct(stat.S_IMODE(st.st_mode))})
journal = subprocess.run(["journalctl", "--no-pager", "-o", "cat"], capture_output=True).stdout
found += [{"path": "systemd journal", "secret": k, "mode": ""} for k, v in needles.items() if v in journal]
pwned = subprocess.run(["find", "/", "-xdev", "-name", a["pwned"] + "*"], capture_output=True).stdout.decode().split("\n")
print(json.dumps({"found": found, "pwned": [p for p in pwned if p]}))
"""


def host_python(container: str, script: str, payload: dict, timeout: float = 600) -> str:
    """Run ``script`` with python3 in a sandbox Droplet (docker exec); ``payload`` arrives on its stdin."""
    body = json.dumps(payload).encode()
    wrapper = ("import sys, runpy; src = sys.stdin.buffer.read(%d).decode(); sys.stdin = __import__('io').TextIOWrapper("
               "__import__('io').BytesIO(sys.stdin.buffer.read())); exec(compile(src, 'script', 'exec'))")
    code = script.encode()
    proc = subprocess.run(["docker", "exec", "-i", container, "python3", "-c", wrapper % len(code)],
                          input=code + body, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


def backup_runs(container: str) -> list[dict]:
    out = subprocess.run(["docker", "exec", container, "cat", STATUS_FILE],
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out or '{"runs": []}').get("runs", [])


def wait_backup_idle(container: str, timeout: float = 900) -> list[dict]:
    deadline = time.monotonic() + timeout
    while subprocess.run(["docker", "exec", container, "systemctl", "is-active", "relaunch-backup.service"],
                         capture_output=True, text=True, timeout=60).stdout.strip() in ("active", "activating"):
        assert time.monotonic() < deadline, "the backup run did not end"
        time.sleep(1)
    return backup_runs(container)


# --- sampling the process arguments ------------------------------------------------------------


class PsSampler:
    """Every second, ``ps`` on every sandbox Droplet of this session and on this machine; keep lines holding a secret."""

    def __init__(self, backend: Any, needles: dict[str, str]) -> None:
        self.backend, self.needles = backend, needles
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ps-sampler", daemon=True)

    def __enter__(self) -> PsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _check(self, where: str, text: str) -> None:
        for name, value in self.needles.items():
            for line in text.splitlines():
                if value in line:
                    self.hits.append(f"{where}: {name}: {line[:300]}")

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                local = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True, timeout=20)
                self._check("this machine", local.stdout)
                for container in self.backend.droplet_containers():
                    if container.status != "running":
                        continue
                    out = subprocess.run(["docker", "exec", container.name, "ps", "-eww", "-o", "args="],
                                         capture_output=True, text=True, timeout=20)
                    self._check(container.name, out.stdout)
                self.samples += 1
            except (subprocess.SubprocessError, OSError, Exception):  # a Droplet going away mid-sample
                continue


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a record that cannot format is still searched by its template
            self.lines.append(str(record.msg))


# --- the one run --------------------------------------------------------------------------------


@dataclass
class MetaRun:
    root: Path
    prod_container: str
    new_container: str = ""
    drill: Any = None
    first: Any = None
    final: Any = None
    records_before: dict = field(default_factory=dict)
    records_after_failure: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    ps_hits: list[str] = field(default_factory=list)
    ps_samples: int = 0
    needles: dict[str, str] = field(default_factory=dict)
    user_data_key: str = ""
    timer: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _middle_line(pem: str) -> str:
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return max(body[len(body) // 2: len(body) // 2 + 1] or body, key=len)


def _records(cloud, zone: str) -> dict:
    return {r.id: (r.type, r.name, r.data) for r in cloud.list_records(zone)}


@pytest.fixture(scope="module")
def meta(target, sandbox_api, sandbox_backend, tmp_path_factory) -> Iterator[MetaRun]:
    site = "meta"
    root = tmp_path_factory.mktemp("meta-checkout")
    made = init_site(site, root)
    made.inventory.write_text(yaml.safe_dump(inventory(site), sort_keys=False, allow_unicode=True))
    public = made.site_dir / "templates" / "apps" / "hello" / "public"  # the scaffold's app serves this tree
    public.mkdir(parents=True)
    (public / "index.html").write_text("<p>Hello from meta</p>\n")
    for name, value in SECRETS.items():
        path = made.secrets_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
    needles = {"api token": TOKEN, **{name: value.split(" ")[0] for name, value in SECRETS.items()}}
    sampler = PsSampler(sandbox_backend, dict(needles))
    recorder = Recorder()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(recorder)
    root_logger.setLevel(logging.DEBUG)
    run: MetaRun | None = None
    events: list[str] = []
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    try:
        with sampler:
            t0 = time.monotonic()
            up = bring_up(site, data_mb=0, root=root, target=target)  # backups once there is data to back up
            secrets = made.secrets_dir
            needles["tls key"] = _middle_line((secrets / "tls" / "site.key").read_text())
            needles["store ssh key"] = _middle_line((secrets / "offsite" / "id_ed25519").read_text())
            sampler.needles.update(needles)
            prod = sandbox_backend.container_name(up.host.droplet_id)
            run = MetaRun(root=root, prod_container=prod, needles=needles)
            run.seconds["bring up"] = time.monotonic() - t0
            payload = {"trees": TREES, "names": FILE_NAMES, "meta": META, "my_db": MY_DB, "pg_db": PG_DB,
                       "pg_user": PG_USER, "lite": LITE, "table": f"t $(x) {META}"}
            assert "seeded" in host_python(prod, SEED, payload)
            install_site(load_site(site, root), target.key_path)  # what `fab sandbox-up` does (`fab backup --install`)
            # a backup carries the seeded rows and files off-host (the drill reads them there)
            subprocess.run(["docker", "exec", prod, "systemctl", "start", "relaunch-backup.service"], check=True,
                           capture_output=True, timeout=900)
            run.before = json.loads(host_python(prod, READ, payload))

            fired: dict[str, Any] = {}

            def timer_fires(event: Event) -> None:  # case 13: production's backup starts while the drill reads
                events.append(f"{event.kind} {event.step} {event.message}")
                if event.kind == "info" and event.step == "data" and "fetching" in event.message and not fired:
                    fired["runs_before"] = backup_runs(prod)
                    subprocess.run(["docker", "exec", prod, "systemctl", "start", "--no-block", "relaunch-backup.service"],
                                   check=True, capture_output=True, timeout=60)
                    fired["active"] = subprocess.run(["docker", "exec", prod, "systemctl", "is-active",
                                                      "relaunch-backup.service"], capture_output=True, text=True,
                                                     timeout=60).stdout.strip()

            t0 = time.monotonic()
            run.drill = drill(site, DrillOptions(), root=root, where=where, progress=timer_fires)
            run.seconds["drill"] = time.monotonic() - t0
            run.timer = {**fired, "runs_after": wait_backup_idle(prod)}

            zone = f"{site}.test"
            run.records_before = _records(target.cloud, zone)
            state: dict[str, Any] = {}

            def disk_full(event: Event) -> None:
                events.append(f"{event.kind} {event.step} {event.message}")
                # the SQLite file is put in place by the data step (once its dump is here), else by the restore step
                if event.kind == "start" and event.step == "data" and "mounted" not in state:
                    journal = Journal.load(site, "rebuild")
                    new = load_hosts(site)[journal.state["new_name"]]
                    state["container"] = sandbox_backend.container_name(new.droplet_id)
                    subprocess.run(["docker", "exec", state["container"], "sh", "-c",
                                    'mkdir -p "$1" && mount -t tmpfs -o size=128k tmpfs "$1"', "sh", LITE_DIR],
                                   check=True, capture_output=True, timeout=60)
                    state["mounted"] = True

            t0 = time.monotonic()
            run.first = rebuild(site, RebuildOptions(settle=0), root=root, where=where, progress=disk_full)
            run.seconds["rebuild until the disk is full"] = time.monotonic() - t0
            run.records_after_failure = _records(target.cloud, zone)
            assert state.get("mounted"), (f"the data step never started, so no disk filled: the rebuild "
                                          f"{run.first.status}: {run.first.error}")
            run.new_container = state.get("container", "")
            if run.new_container:
                subprocess.run(["docker", "exec", run.new_container, "umount", LITE_DIR], check=True,
                               capture_output=True, timeout=60)
            t0 = time.monotonic()
            run.final = rebuild(site, root=root, where=where, resume=True,
                                progress=lambda e: events.append(f"{e.kind} {e.step} {e.message}"))
            run.seconds["rebuild --resume"] = time.monotonic() - t0
            if run.final.status == "passed":
                run.after = json.loads(host_python(run.new_container, READ, payload))
                seed = subprocess.run(["docker", "exec", run.new_container, "cat", "/var/lib/cloud/seed/nocloud/user-data"],
                                      capture_output=True, text=True, timeout=60).stdout
                run.user_data_key = seed
        run.ps_hits, run.ps_samples = sampler.hits, sampler.samples
        run.events, run.logs = events, recorder.lines
    finally:
        root_logger.removeHandler(recorder)
        root_logger.setLevel(old_level)
    yield run
    target.cloud.destroy_droplets_by_tag(f"relaunch-{site}")


def _user_data_host_key(user_data: str) -> tuple[str, str]:
    """The (public line, private key PEM) of the ed25519 host key in a cloud-config user-data."""
    doc = yaml.safe_load(user_data.split("\n", 1)[1] if user_data.startswith("#cloud-config") else user_data)
    keys = doc.get("ssh_keys") or {}
    return keys.get("ed25519_public", "").strip(), keys.get("ed25519_private", "")


# --- case 9: the disk fills on the new host during restore ---------------------------------------


@pytest.mark.fault(case=9, ci=True, expected="restore onto a full disk: error names host and path; nothing switched; "
                   "--resume finishes once there is room")
def test_a_full_disk_during_restore_names_host_and_path_and_switches_nothing(meta, observed) -> None:
    first = meta.first
    assert meta.new_container, "the data step never started"
    assert first.status == "failed", "the restore onto a 128 KiB tmpfs passed"
    # the data step tried first, and left the file to the restore step, which failed on it too
    assert any(e.startswith("info data ") and "putting it in place failed" in e for e in meta.events), meta.events
    new_ip = first.journal.state.get("new_ipv4")
    observed(f"error: {first.error[:220]}")
    assert new_ip and new_ip in first.error, first.error
    assert LITE_DIR in first.error, first.error
    assert "No space left on device" in first.error or "disk is full" in first.error, first.error
    assert first.journal.steps["restore"]["status"] == "failed"
    assert "switch" not in first.journal.steps or first.journal.steps["switch"]["status"] != "done"
    assert meta.records_after_failure == meta.records_before
    assert meta.final.status == "passed", meta.final.error
    observed(f"records unchanged after the failure; --resume passed (attempt {meta.final.record.get('attempts')})")


# --- case 13: the backup timer fires while the drill reads the backups ------------------------------


@pytest.mark.fault(case=13, ci=True, expected="production's backup starts while a drill fetches from the store: both "
                   "finish; the drill's backup verifies against its manifest")
def test_the_backup_timer_firing_while_a_drill_reads_the_store(meta, observed) -> None:
    timer = meta.timer
    assert timer.get("runs_before") is not None, "the drill never reached its fetch"
    new_runs = timer["runs_after"][len(timer["runs_before"]):]
    assert new_runs, "the fired backup left no run"
    assert timer["active"] in ("active", "activating") or len(new_runs) >= 1
    assert all(r.get("ok") for r in new_runs), new_runs
    observed(f"backup {new_runs[-1].get('id')} ran during the drill's fetch ({timer['active']} when the fetch began) "
             "and passed")
    assert meta.drill.status == "passed", meta.drill.error
    assert all(d["fingerprint_match"] for d in meta.drill.record["databases"])
    observed(f"the drill passed from backup {meta.drill.record.get('backup_id')}: manifest and fingerprints verified")


# --- case 12: metacharacters carried byte for byte -------------------------------------------------


@pytest.mark.fault(case=12, ci=True, expected="names, passwords, paths, file names full of metacharacters: "
                   "carried byte for byte (drill and rebuild), never interpreted")
def test_metacharacters_are_carried_byte_for_byte_never_interpreted(meta, observed) -> None:
    assert meta.drill.status == "passed", meta.drill.error
    drilled = meta.drill.record
    assert all(d["fingerprint_match"] for d in drilled["databases"]) and len(drilled["databases"]) == 3
    assert drilled["files"] and all(f["match"] for f in drilled["files"])
    assert meta.final.status == "passed", meta.final.error
    before, after = meta.before, meta.after
    assert set(before["trees"]) == set(TREES)
    for tree in TREES:
        names = {bytes.fromhex(k).decode("utf-8", "surrogateescape") for k in before["trees"][tree]}
        assert set(FILE_NAMES) <= names, sorted(set(FILE_NAMES) - names)
        assert after["trees"][tree] == before["trees"][tree], tree
    for key in ("my", "pg", "lite"):
        assert after[key] == before[key] and before[key], key
    assert MY_USER in after["users"]
    observed(f"{sum(len(t) for t in before['trees'].values())} files and dirs, {len(before['lite'])} SQLite rows, "
             "MariaDB and PostgreSQL rows identical on the new host; the drill's fingerprints matched")
    pwned = []
    for container in (meta.prod_container, meta.new_container):
        pwned += json.loads(host_python(container, SEARCH, {"needles": {}, "pwned": PWNED}))["pwned"]
    assert pwned == [], f"a value was run as a command: {pwned}"
    observed("no $(...) or `...` inside a value ran on either host")


# --- secrets ---------------------------------------------------------------------------------


def test_no_secret_in_any_file_log_output_or_process_argument_and_the_host_key_rotated(meta) -> None:
    needles = meta.needles
    assert meta.final.status == "passed", meta.final.error
    assert meta.ps_samples >= 10, f"only {meta.ps_samples} ps samples"
    problems: list[str] = list(meta.ps_hits)

    # every file relaunch wrote on this machine: its state (journals, reports, hosts, artifacts, logs) and the checkout
    for base in (state_dir(), meta.root):
        for path in Path(base).rglob("*"):
            if path.is_file() and not path.is_symlink() and "secrets" not in path.relative_to(base).parts:
                data = path.read_bytes()
                problems += [f"{path}: {name}" for name, value in needles.items() if value.encode() in data]
    # its output and its logs
    for what, lines in (("progress", meta.events), ("log", meta.logs)):
        text = "\n".join(lines)
        problems += [f"{what}: {name}" for name, value in needles.items() if value in text]
    for result in (meta.drill, meta.first, meta.final):
        text = json.dumps(result.record, default=str) + str(result.error)
        problems += [f"result: {name}" for name, value in needles.items() if value in text]

    # on both hosts: every file others may read, the systemd journal; a file holding a secret must be 0600
    userdata_public, userdata_private = _user_data_host_key(meta.user_data_key)
    host_needles = dict(needles)
    if userdata_private:
        host_needles["user-data host key"] = _middle_line(userdata_private)
    for container in (meta.prod_container, meta.new_container):
        found = json.loads(host_python(container, SEARCH, {"needles": host_needles, "pwned": PWNED}))["found"]
        for hit in found:
            if hit["secret"] == "user-data host key" and hit["path"].startswith("/var/lib/cloud/"):
                continue  # the metadata service's copy and cloud-init's own: why the key is rotated (checked below)
            if hit["path"] == "systemd journal" or hit["mode"] not in ("0o600", "0o400"):
                problems.append(f"{container}: {hit['path']} ({hit['mode']}): {hit['secret']}")
    assert problems == [], "\n".join(problems)

    # the host key that travelled in user-data is no longer the new host's: rotated, and the new one pinned
    assert userdata_public.startswith("ssh-ed25519 ")
    current = subprocess.run(["docker", "exec", meta.new_container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()[:2]
    pinned = load_hosts("meta")[meta.final.journal.state["new_name"]].host_key.split()[:2]
    assert current == pinned
    assert current != userdata_public.split()[:2]
    # the secret files relaunch rendered on the hosts are 0600
    for container in (meta.prod_container, meta.new_container):
        listing = subprocess.run(["docker", "exec", container, "find", "/etc/relaunch", "-type", "f", "-name", "*password*",
                                  "-printf", "%m %p\\n"], capture_output=True, text=True, timeout=60, check=True).stdout
        assert listing.strip(), "no password files under /etc/relaunch"
        assert all(line.startswith("600 ") for line in listing.splitlines()), listing
