"""The example site: seed size split and commands, its templates rendered, the notes app's seeding."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from relaunch.errors import RelaunchError
from relaunch.example_site import SHARES, parse_compose_command, seed_commands, split_mb
from relaunch.inventory.model import Inventory
from relaunch.render import compose_environment, environment

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def example() -> Inventory:
    return Inventory.model_validate(yaml.safe_load((ROOT / "inventory/example.yml").read_text()))


def render(name: str, app: str) -> str:
    # the environments render_host uses (compose files have their own: `| compose`, no `| tojson`)
    env = (compose_environment if name.endswith("compose.yml.j2") else environment)(ROOT / "templates")
    inv = example()
    images = {"web": f"relaunch-sandbox-registry:5000/example/blog@{DIGEST}", "db": f"relaunch-sandbox-registry:5000/example/postgres@{DIGEST}"}
    values = {"inventory": inv, "app": inv.app(app), "images": images if app == "blog" else {}, "env_file": f"/etc/relaunch/{app}.env", "sandbox": True}
    return env.get_template(name).render(values)


def test_split_mb_follows_the_documented_shares() -> None:
    assert sum(SHARES.values()) == pytest.approx(1.0)
    assert split_mb(100, ["blog", "stats", "notes"]) == {"blog": 60.0, "stats": 30.0, "notes": 10.0}
    assert split_mb(5, ["notes", "blog"]) == {"notes": 0.5, "blog": 3.0}


def test_split_mb_leaves_out_unknown_apps_and_refuses_negative_sizes() -> None:
    assert split_mb(10, ["wiki"]) == {}
    with pytest.raises(RelaunchError):
        split_mb(-1, ["blog"])


def test_seed_commands_run_blog_in_its_container_and_native_apps_with_their_env_file() -> None:
    commands = dict(seed_commands(example(), 10))
    assert commands["blog"] == [
        "docker-compose", "-f", "/srv/blog/compose.yml", "exec", "-T", "web", "python3", "/app/app.py", "seed", "--mb", "6",
    ]
    assert commands["stats"] == ["python3", "/srv/stats/app.py", "--env-file", "/etc/relaunch/stats.env", "seed", "--mb", "3"]
    assert commands["notes"][-2:] == ["--mb", "1"]


def test_seed_commands_take_the_hosts_compose_command() -> None:
    compose = parse_compose_command("docker compose\n")
    assert compose == ["docker", "compose"]
    blog = dict(seed_commands(example(), 1, compose))["blog"]
    assert blog[:4] == ["docker", "compose", "-f", "/srv/blog/compose.yml"]
    with pytest.raises(RelaunchError):
        parse_compose_command("rm -rf /")


def test_seed_commands_leave_out_apps_that_get_nothing() -> None:
    assert [name for name, _ in seed_commands(example(), 0.2)] == ["blog", "stats"]  # notes: 0.02 -> 0.0


def test_compose_template_pins_images_by_digest_and_publishes_on_loopback_only() -> None:
    compose = yaml.safe_load(render("apps/blog/compose.yml.j2", "blog"))
    web, db = compose["services"]["web"], compose["services"]["db"]
    assert web["image"].endswith(f"example/blog@{DIGEST}") and db["image"].endswith(f"example/postgres@{DIGEST}")
    assert web["ports"] == ["127.0.0.1:8081:8080"]
    assert "ports" not in db
    assert web["env_file"] == db["env_file"] == "/etc/relaunch/blog.env"
    assert web["volumes"] == ["/srv/blog/uploads:/srv/blog/uploads", "thumbs:/var/lib/blog/thumbs"]
    assert web["environment"]["BLOG_THUMBS"] == "/var/lib/blog/thumbs"
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"] and set(compose["volumes"]) == {"pgdata", "thumbs"}
    # the thumbnails' named volume travels with the trees; the database's moves as a dump
    assert example().app("blog").trees() == ["/srv/blog/uploads", "/var/lib/docker/volumes/blog_thumbs/_data"]
    assert compose["version"] == "3.7"  # docker-compose 1.29 (Debian 12) needs one


@pytest.mark.parametrize("app", ["stats", "notes"])
def test_unit_templates_read_the_env_file_and_listen_on_the_apps_port(app: str) -> None:
    unit = render(f"apps/{app}/{app}.service.j2", app)
    port = example().app(app).port
    assert f"EnvironmentFile=/etc/relaunch/{app}.env" in unit
    assert f"ExecStart=/usr/bin/python3 /srv/{app}/app.py serve --port {port}" in unit
    assert "PASSWORD" not in unit.replace("STATS_DB_PASSWORD (", "")
    config = json.loads(render(f"apps/{app}/config.json.j2", app))
    assert config["port"] == port


def _notes_app():
    spec = importlib.util.spec_from_file_location("example_notes_app", ROOT / "templates/apps/notes/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notes_seed_fills_about_the_size_asked_once(tmp_path: Path) -> None:
    notes = _notes_app()
    db = str(tmp_path / "notes.db")
    added = notes.seed(db, 0.5)
    assert 0.5 * 1048576 <= added < 0.6 * 1048576
    assert notes.seed(db, 0.5) == 0  # recorded: no double seeding
    assert 0 < notes.seed(db, 0.7) < 0.3 * 1048576  # only the difference
    status, body = notes.health(db)
    assert status == 200 and body["notes"] > 100 and body["integrity"] == "ok"
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_notes_health_is_503_without_a_database(tmp_path: Path) -> None:
    status, body = _notes_app().health(str(tmp_path / "missing.db"))
    assert status == 503 and body["db"] == "error"


def _blog_app():
    import sys
    import types

    fake = types.ModuleType("psycopg2")  # the image has it; seeding the thumbnails does not use it
    fake.extras = types.ModuleType("psycopg2.extras")
    saved = {k: sys.modules.get(k) for k in ("psycopg2", "psycopg2.extras")}
    sys.modules.update({"psycopg2": fake, "psycopg2.extras": fake.extras})
    try:
        spec = importlib.util.spec_from_file_location("example_blog_app", ROOT / "examples/images/blog/app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to uid 33: needs root")
def test_blog_seeds_its_thumbnails_volume_with_links_owners_and_modes_the_same_every_time(tmp_path: Path) -> None:
    from relaunch import transfer

    blog = _blog_app()
    root = tmp_path / "thumbs"
    assert blog.seed_thumbs(str(root)) == 4
    first = transfer._listing(transfer._json_rows(None, subprocess.run(
        ["python3", "-", str(root), "-1"], input=transfer._TREE_LISTING.encode(), capture_output=True, check=True).stdout,
        "thumbs"))
    assert first["current"][:1] == ("l",) and first["current"].content == "2026"
    assert first["latest.jpg"].content == "2026/a.jpg"
    assert first["2026/a-copy.jpg"].hardlink == "2026/a-copy.jpg" == first["2026/a.jpg"].hardlink
    assert (first["private"].uid, first["private"].mode) == (33, 0o750)
    assert (first["private/cache.bin"].uid, first["private/cache.bin"].gid, first["private/cache.bin"].mode) == (33, 33, 0o640)
    # production's backup archives the volume as it is (tests/unit/test_transfer.py: its listing against the archive's)
    from relaunch.backup.runner import archive_files
    from tests.unit.test_transfer import local_archive

    archive_files({"app": "blog", "paths": [str(root)]}, tmp_path / "blog-files.tar.gz")
    assert transfer.compare_listings(first, local_archive(tmp_path / "blog-files.tar.gz", [str(root)])[str(root)]) == []
    blog.seed_thumbs(str(root))
    again = transfer._listing(transfer._json_rows(None, subprocess.run(
        ["python3", "-", str(root), "-1"], input=transfer._TREE_LISTING.encode(), capture_output=True, check=True).stdout,
        "thumbs"))
    assert transfer.compare_listings(first, again) == []
