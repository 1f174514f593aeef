"""The example site's three apps on one sandbox Droplet: images from the sandbox registry, real databases.

The images are built FROM the sandbox base image and pushed to the sandbox registry; the
Droplet installs Docker, Compose v1, MariaDB and sqlite3 from Debian's archive (through
the sandbox package cache), gets the app files rendered from templates/apps (a minimal
Jinja call here; the real renderer is ``relaunch.render``), runs the blog under Compose
and stats/notes under systemd, seeds about 5 MB, and answers /health with rows read
from each database, rows that keep growing.
"""

from __future__ import annotations

import io
import json
import secrets
import shlex
import time
from pathlib import Path

import docker
import jinja2
import pytest
import yaml

from relaunch.cloud import Cloud
from relaunch.example_site import seed_commands
from relaunch.inventory.model import Inventory
from relaunch.remote import HostKey, connect, wait_for_ssh
from relaunch.sandbox.images import build_example_images
from relaunch.sandbox.registry import Registry

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
#: Faster background writers than the defaults, so growth shows within seconds.
FAST_WRITES = {
    "blog": {"BLOG_COMMENT_INTERVAL": "0.5"},
    "stats": {"STATS_WRITE_INTERVAL": "0.5"},
    "notes": {"NOTES_WRITE_INTERVAL": "0.5"},
}


def example_inventory() -> Inventory:
    inv = Inventory.model_validate(yaml.safe_load((ROOT / "inventory/example.yml").read_text()))
    apps = [a.model_copy(update={"env": {**a.env, **FAST_WRITES[a.name]}}) for a in inv.apps]
    return inv.model_copy(update={"apps": apps})


def render_app_files(inv: Inventory, app, images: dict[str, str]) -> dict[str, bytes]:
    """Host path -> content of an app's files, by the rendering contract (see relaunch.render)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    values = {"inventory": inv, "app": app, "images": images, "env_file": f"/etc/relaunch/{app.name}.env", "sandbox": True}
    special = {}
    if app.compose:
        special[app.compose.template] = f"/srv/{app.name}/compose.yml"
    if app.systemd:
        special[app.systemd.unit_template] = f"/etc/systemd/system/{app.name}.service"
    files: dict[str, bytes] = {}
    for source in sorted((TEMPLATES / "apps" / app.name).rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts:
            continue
        name = source.relative_to(TEMPLATES).as_posix()
        rel = source.relative_to(TEMPLATES / "apps" / app.name).as_posix()
        dest = special.get(name, f"/srv/{app.name}/{rel.removesuffix('.j2')}")
        if name.endswith(".j2"):
            files[dest] = env.get_template(name).render(values).encode()
        else:
            files[dest] = source.read_bytes()
    return files


def env_file(app, secret_values: dict[str, str]) -> bytes:
    lines = [f"{k}={v}" for k, v in app.env.items()] + [f"{k}={secret_values[k]}" for k in app.secret_env]
    return ("\n".join(lines) + "\n").encode()


def health(conn, port: int) -> dict:
    out = conn.run(f"curl -s --max-time 5 http://127.0.0.1:{port}/health", warn=True).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {"raw": out}


def wait_healthy(conn, port: int, key: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = health(conn, port)
        if body.get("db") == "ok" and key in body:
            return body
        time.sleep(1)
    raise AssertionError(f"no healthy answer on port {port} in {timeout:.0f} s: {body}")


@pytest.fixture(scope="module")
def images(sandbox_backend) -> dict[str, str]:
    client = docker.from_env()
    base = sandbox_backend._base()  # noqa: SLF001 - the session's base image tag
    return build_example_images(client, base, Registry(client, sandbox_backend.network, base))


def test_example_images_are_pinned_by_digest_and_cached(images, sandbox_backend) -> None:
    assert set(images) == {"example/blog", "example/postgres"}
    for repo, ref in images.items():
        assert ref.startswith(f"relaunch-sandbox-registry:5000/{repo}@sha256:")
    client = docker.from_env()
    base = sandbox_backend._base()  # noqa: SLF001
    started = time.monotonic()
    again = build_example_images(client, base, Registry(client, sandbox_backend.network, base))
    assert again == images
    assert time.monotonic() - started < 20  # warm: no build, pushes find every layer present


def test_example_apps_run_seed_and_keep_writing(images, cloud: Cloud, client_key) -> None:
    inv = example_inventory()
    key_path, public = client_key
    key = cloud.ensure_ssh_key(public, "relaunch-test")
    host_key = HostKey.generate()
    droplet = cloud.create_droplet(
        name="example-apps",
        region="fra1",
        size="s-2vcpu-4gb",
        image="debian-12-x64",
        ssh_keys=[key.fingerprint],
        user_data="#cloud-config\n" + yaml.safe_dump(host_key.cloud_config()),
        tags=["relaunch-test"],
        ssh_timeout=180,
    )
    conn = connect(droplet.ipv4, host_key.public_line, key_path)
    try:
        wait_for_ssh(conn, timeout=120)
        conn.run(
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -q"
            " && apt-get install -y -q --no-install-recommends docker.io docker-compose mariadb-server sqlite3"
            " python3-pymysql curl",
            timeout=600,
        )
        conn.run("for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker info >/dev/null")

        passwords = {"POSTGRES_PASSWORD": secrets.token_urlsafe(18), "STATS_DB_PASSWORD": secrets.token_urlsafe(18)}
        # MariaDB db and user: the SQL (with the password) on stdin, never on a command line
        stats_db = inv.database("stats")
        sql = (
            f"CREATE DATABASE IF NOT EXISTS `{stats_db.database}` CHARACTER SET utf8mb4;\n"
            f"CREATE USER IF NOT EXISTS '{stats_db.user}'@'localhost' IDENTIFIED BY '{passwords['STATS_DB_PASSWORD']}';\n"
            f"GRANT ALL PRIVILEGES ON `{stats_db.database}`.* TO '{stats_db.user}'@'localhost';\n"
        )
        conn.run("systemctl enable --now mariadb && mariadb", in_stream=io.StringIO(sql))

        conn.run("install -d -m 0700 /etc/relaunch && install -d -m 0755 /srv/blog/uploads /srv/stats /srv/notes")
        for app in inv.apps:
            refs = {svc: images[repo] for svc, repo in (app.compose.images.items() if app.compose else [])}
            for path, content in render_app_files(inv, app, refs).items():
                conn.run(f"install -d {shlex.quote(str(Path(path).parent))}")
                conn.put(io.BytesIO(content), path)
            conn.put(io.BytesIO(env_file(app, passwords)), f"/etc/relaunch/{app.name}.env")
        conn.run("chmod 0600 /etc/relaunch/*.env")
        assert conn.run("stat -c %a /etc/relaunch/blog.env").stdout.strip() == "600"
        compose_yml = conn.run("cat /srv/blog/compose.yml").stdout
        assert images["example/blog"] in compose_yml and "127.0.0.1:8081:8080" in compose_yml
        assert passwords["POSTGRES_PASSWORD"] not in compose_yml

        started = time.monotonic()
        conn.run("docker-compose -f /srv/blog/compose.yml up -d", timeout=600)
        pulled = time.monotonic() - started
        conn.run("systemctl daemon-reload && systemctl enable --now stats.service notes.service")
        wait_healthy(conn, 8081, "posts")
        wait_healthy(conn, 8082, "views")
        wait_healthy(conn, 8083, "notes")

        for name, argv in seed_commands(inv, 5):
            result = conn.run(shlex.join(argv), timeout=600)
            assert "seed" in result.stderr, (name, result.stderr)

        blog = health(conn, 8081)
        stats = health(conn, 8082)
        notes = health(conn, 8083)
        assert blog["db"] == "ok" and blog["posts"] > 50 and blog["uploads"] > 3, blog
        files = int(conn.run("find /srv/blog/uploads -type f | wc -l").stdout)
        assert files == blog["uploads"]  # every metadata row has its file
        assert stats["db"] == "ok" and stats["views"] > 1000, stats
        assert notes["db"] == "ok" and notes["integrity"] == "ok" and notes["notes"] > 100, notes
        # the notes database is in WAL mode, as the backup code must expect
        assert conn.run("sqlite3 /srv/notes/notes.db 'PRAGMA journal_mode'").stdout.strip() == "wal"

        # seeding again to the same size adds nothing (only the background writers add rows)
        _, argv = next(c for c in seed_commands(inv, 5) if c[0] == "notes")
        assert "nothing to do" in conn.run(shlex.join(argv)).stderr

        time.sleep(3)
        assert health(conn, 8081)["comments"] > blog["comments"]
        assert health(conn, 8082)["views"] > stats["views"]
        assert health(conn, 8083)["notes"] > notes["notes"]
        # the blog answers through its own pages too (a post, a stored upload)
        assert conn.run("curl -sf -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/posts/1").stdout == "200"
        assert conn.run("curl -sf -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/uploads/1").stdout == "200"
        # no database, no health: the blog's check proves its data is there, not just the process
        conn.run("docker-compose -f /srv/blog/compose.yml stop db")
        assert conn.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8081/health", warn=True).stdout == "503"
        conn.run("docker-compose -f /srv/blog/compose.yml start db")
        assert wait_healthy(conn, 8081, "posts")["posts"] == blog["posts"]
        print(f"compose up (pull from the sandbox registry) took {pulled:.1f} s")
    finally:
        conn.close()
