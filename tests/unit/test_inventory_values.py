"""What `fab check` accepts, every later command carries through unchanged (issue 9, items 12-17).

- values reach the files they are written to byte for byte (the rendered compose file and env
  file read back by Compose v1 itself), or check refuses them with file:line;
- what check accepts, render and runbook render (never a traceback, whatever the inventory);
- inventory text is printed as written (no rich markup read from it);
- a symlinked secret is refused by name;
- every number of the schema is bounded, and retention works at the bounds;
- provider.token is the token a DigitalOcean site's Cloud is opened with.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from invoke import Context, Exit
from pydantic import BaseModel
from rich.console import Console

from relaunch import render
from relaunch.backup import retention
from relaunch.errors import RelaunchError
from relaunch.inventory import InventoryError, load_site, resolve_all
from relaunch.inventory import model as inventory_model
from relaunch.inventory.check import check_site
from relaunch.inventory.tls import ensure_sandbox_certificate
from relaunch.remote import ensure_client_key

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "inventory" / "example.yml").read_text())
COMPOSE = shutil.which("docker-compose")
SECRET_FILES = ("blog-db-password", "stats-db-password", "restic-password")


def tasks_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relaunch_tasks_values_test", REPO / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TASKS = tasks_module()


def write_site(root: Path, data: dict, secrets: dict[str, str] | None = None) -> Path:
    """Write inventory/example.yml (from ``data``) and its secret files under ``root``; return the inventory file."""
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    path = root / "inventory" / "example.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    values = {name: f"value-of-{name}" for name in SECRET_FILES} | (secrets or {})
    for name, value in values.items():
        secret = root / "secrets" / "example" / name
        secret.parent.mkdir(parents=True, exist_ok=True)
        if secret.exists():
            secret.unlink()
        secret.write_text(value + "\n", encoding="utf-8")
        secret.chmod(0o600)
    store_key = root / "secrets/example/offsite/id_ed25519"
    if not store_key.exists():
        store_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_client_key(store_key)
    key = root / "secrets/example/tls/site.key"
    if not key.exists():
        # for the example's domains (a superset of any variation's)
        ensure_sandbox_certificate(inventory_model.Inventory.model_validate(EXAMPLE, context={"base_dir": root / "inventory"}), key)
    return path


def example_data(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(EXAMPLE, sort_keys=False))
    data.update(changes)
    return data


def line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


@contextlib.contextmanager
def cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# --- 12: values arrive byte for byte, or check refuses them -------------------------------


def compose_environment(root: Path, out: Path) -> dict[str, dict[str, str]]:
    """``docker-compose config`` on the rendered blog compose file with its rendered env file; service -> environment."""
    compose = (out / "srv/blog/compose.yml").read_text()
    env_file = out / "etc/relaunch/blog.env"
    compose = compose.replace('"/etc/relaunch/blog.env"', f'"{env_file}"')
    (out / "compose.yml").write_text(compose)
    run = subprocess.run(
        [COMPOSE, "-f", str(out / "compose.yml"), "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(root)},
    )
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    # `config` writes every literal '$' of its result as '$$'
    return {name: {k: str(v).replace("$$", "$") for k, v in s["environment"].items()} for name, s in services.items()}


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose (Compose v1) is not installed: apt-get install -y docker-compose (scripts/setup.sh does)")
@pytest.mark.parametrize(("database", "user", "password"), [
    ("blog$db", "blog$user", "pa$$word$x"),
    ("blog", "o'brien", "back\\\\slash\\'s"),
    ("my blog", 'say "hi"', 'quote"and#hash'),
])
def test_rendered_compose_app_gets_names_and_password_unchanged_in_compose_v1(
    tmp_path: Path, database: str, user: str, password: str
) -> None:
    data = example_data()
    data["databases"][0].update(database=database, user=user)
    write_site(tmp_path, data, {"blog-db-password": password})
    check_site("example", tmp_path)  # accepted...
    inv = load_site("example", tmp_path)
    out = tmp_path / "out"
    render.render_site_locally(inv, resolve_all(inv), out)  # ... so rendered
    env = compose_environment(tmp_path, out)
    assert env["db"]["POSTGRES_DB"] == env["web"]["BLOG_DB_NAME"] == database
    assert env["db"]["POSTGRES_USER"] == env["web"]["BLOG_DB_USER"] == user
    assert env["db"]["POSTGRES_PASSWORD"] == env["web"]["POSTGRES_PASSWORD"] == password
    assert (out / "etc/relaunch/secrets/blog.password").read_text() == password


@pytest.mark.parametrize(("where", "value", "fragment", "message"), [
    ("env", "a${HOME}b", "GREETING:", "Compose v1 expands"),
    ("env", "two\nlines", "GREETING:", "control character"),
    ("env", "it's $5", "GREETING:", "'$' together with a quote"),
    ("secret", "pa${X}ss", "POSTGRES_PASSWORD:", "Compose v1 expands"),
    ("secret", "it's $5", "POSTGRES_PASSWORD:", "'$' together with a quote"),
    ("secret-password", "tab\there", "STATS_DB_PASSWORD:", "control character"),
])
def test_check_refuses_a_value_an_env_file_cannot_carry_with_file_and_line(
    tmp_path: Path, where: str, value: str, fragment: str, message: str
) -> None:
    data = example_data()
    secrets = {}
    if where == "env":
        data["apps"][0]["env"] = {"GREETING": value}
    elif where == "secret":
        secrets["blog-db-password"] = value
    else:
        secrets["stats-db-password"] = value
    path = write_site(tmp_path, data, secrets)
    with pytest.raises(InventoryError) as info:
        check_site("example", tmp_path)
    text = str(info.value)
    assert f"inventory/example.yml:{line_of(path, fragment)}:" in text or f"example.yml:{line_of(path, fragment)}:" in text
    assert message in text
    assert value not in text


def test_check_refuses_a_database_name_postgresql_would_cut(tmp_path: Path) -> None:
    data = example_data()
    data["databases"][0]["database"] = "b" * 64
    path = write_site(tmp_path, data)
    with pytest.raises(InventoryError, match=rf"example.yml:{line_of(path, 'b' * 64)}: databases\[blog\]\.database: .*PostgreSQL keeps only 63"):
        check_site("example", tmp_path)


env_values = st.lists(st.sampled_from(list("$'\"\\{}# =`é\t")) | st.characters(codec="utf-8"), max_size=12).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(env=env_values, secret=env_values)
@example(env="it's", secret="a\\b")
def test_what_check_accepts_render_accepts(tmp_path_factory: pytest.TempPathFactory, env: str, secret: str) -> None:
    root = tmp_path_factory.mktemp("site")
    data = example_data()
    data["apps"][1]["env"] = {"GREETING": env}
    try:
        write_site(root, data, {"stats-db-password": secret})
    except (UnicodeEncodeError, ValueError):
        return
    try:
        check_site("example", root)
    except InventoryError:
        return  # refused by check, with its reasons: fine
    inv = load_site("example", root)
    files = render.render_site_locally(inv, resolve_all(inv), root / "out")
    assert files.files


# --- 13: inventory text is printed as written ------------------------------------------


def run_task(root: Path, task: str, **kwargs: object) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=300, emoji=False)
    old, TASKS.console = TASKS.console, console
    try:
        with cwd(root):
            getattr(TASKS, task)(Context(), **kwargs)
    finally:
        TASKS.console = old
    return buffer.getvalue()


def test_check_prints_inventory_text_as_written(tmp_path: Path) -> None:
    odd = "A [beta] site [/old] with [bold]markup[/bold] and :smile: \\"
    data = example_data(description=odd)
    data["apps"][0]["health"][0]["contains"] = '"posts":[/x]'
    data["databases"][0]["user"] = "[red]blog"
    write_site(tmp_path, data)
    out = run_task(tmp_path, "check", site="example")
    assert odd in out
    assert "[/x]" in out and "[red]blog" in out


def test_render_prints_paths_as_written(tmp_path: Path) -> None:
    write_site(tmp_path, example_data())
    out = run_task(tmp_path, "render", site="example", out=str(tmp_path / "[out]"))
    assert "[out]" in out


# --- 14: nothing check accepts ends in a traceback ----------------------------------------


def test_compose_app_without_files_is_refused_by_check_and_render_without_traceback(tmp_path: Path) -> None:
    data = example_data()
    data["apps"][0]["files"] = []
    path = write_site(tmp_path, data)
    with pytest.raises(InventoryError) as info:
        check_site("example", tmp_path)
    assert f"example.yml:{line_of(path, '- name: blog')}: apps[blog]: cannot be rendered" in str(info.value)
    assert "uploads directory" in str(info.value)
    with pytest.raises(Exit) as done:
        run_task(tmp_path, "render", site="example", out=str(tmp_path / "out"))
    assert "compose.yml.j2" in str(done.value.message) and "uploads directory" in str(done.value.message)


def test_a_template_error_of_any_kind_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("a\n{{ missing | tojson }}\n")
    with pytest.raises(render.RenderError, match=r"t\.j2:2: 'missing' is undefined"):
        render.render_template(render.environment(tmp_path), "t.j2", {})
    (tmp_path / "u.j2").write_text("{{ 1 / 0 }}\n")
    with pytest.raises(render.RenderError, match=r"u\.j2:1: ZeroDivisionError"):
        render.render_template(render.environment(tmp_path), "u.j2", {})


def test_compose_templates_refuse_tojson(tmp_path: Path) -> None:
    (tmp_path / "c.j2").write_text('x: {{ "a$b" | tojson }}\n')
    with pytest.raises(render.RenderError, match=r"c\.j2:1: use '\| compose'"):
        render.render_template(render.compose_environment(tmp_path), "c.j2", {})


names = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"], max_codepoint=0xFFFF), min_size=1, max_size=20)


@st.composite
def inventories(draw: st.DrawFn) -> dict:
    """The example, varied: apps left out, files and databases emptied, names, paths, env and numbers changed."""
    data = example_data()
    apps = [0, *draw(st.lists(st.sampled_from([1, 2]), max_size=2, unique=True))]  # the blog: its database runs in it
    data["apps"] = [data["apps"][i] for i in sorted(apps)]
    def sometimes() -> bool:
        return draw(st.integers(0, 3)) == 0

    for app in data["apps"]:
        if sometimes():
            app["files"] = draw(st.lists(st.sampled_from(["/srv/x", "/srv/a b", "/srv/$x", "/srv/x/", "/srv/a:b"]), max_size=2, unique=True))
        if sometimes():
            app["env"] = {draw(st.sampled_from(["A", "B_1", "C", "1X"])): draw(env_values)}
        if sometimes():
            app["health"][0]["path"] = draw(st.sampled_from(["/", "/h?x=[1]", "/%41", "/a b"]))
        if sometimes():
            app["databases"] = []
    for db in data["databases"]:
        if db["engine"] != "sqlite" and sometimes():
            db["database"] = draw(names)
            db["user"] = draw(names)
    data["backups"]["retention"]["keep_within_hours"] = draw(st.sampled_from([1, 24, 8784, 8784, 10**8]))
    data["description"] = draw(names)
    return data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=inventories())
def test_check_render_and_runbook_over_varied_inventories(tmp_path_factory: pytest.TempPathFactory, data: dict) -> None:
    root = tmp_path_factory.mktemp("site")
    write_site(root, data)
    try:
        run_task(root, "check", site="example")
    except Exit as exc:
        assert exc.code == 1 and "check failed: " in str(exc.message)
        return
    # accepted: every command that needs no host works, and none ends in a traceback
    run_task(root, "render", site="example", out=str(root / "out"))
    run_task(root, "runbook", site="example", plain=False)


# --- 15: a symlinked secret is refused by name ---------------------------------------------


def test_check_refuses_a_symlinked_secret_by_name(tmp_path: Path) -> None:
    path = write_site(tmp_path, example_data())
    real = tmp_path / "elsewhere" / "pw"
    real.parent.mkdir()
    real.write_text("secret-value\n")
    real.chmod(0o644)  # the target's mode is not the question; the link is
    link = tmp_path / "secrets/example/stats-db-password"
    link.unlink()
    link.symlink_to(real)
    with pytest.raises(InventoryError) as info:
        check_site("example", tmp_path)
    text = str(info.value)
    assert "is a symlink" in text and str(real) in text
    assert f"example.yml:{line_of(path, 'STATS_DB_PASSWORD')}:" in text
    assert "chmod" not in text
    assert real.stat().st_mode & 0o777 == 0o644


# --- 16: every number is bounded ------------------------------------------------------------


def numeric_fields() -> list[tuple[str, str, typing.Any]]:
    found = []
    models = [m for m in vars(inventory_model).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    for model in models:
        for name, field in model.model_fields.items():
            ann = field.annotation
            args = typing.get_args(ann) or (ann,)
            if any(a in (int, float) for a in args):
                found.append((model.__name__, name, field))
    return found


@pytest.mark.parametrize(("model", "name", "field"), numeric_fields(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_number_of_the_schema_has_both_bounds(model: str, name: str, field: typing.Any) -> None:
    bounds = {k for m in field.metadata for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
    assert bounds & {"ge", "gt"} and bounds & {"le", "lt"}, f"{model}.{name} needs a lower and an upper bound"


def test_check_refuses_a_retention_beyond_its_bound(tmp_path: Path) -> None:
    data = example_data()
    data["backups"]["retention"]["keep_within_hours"] = 100000000
    path = write_site(tmp_path, data)
    with pytest.raises(InventoryError, match=rf"example.yml:{line_of(path, 'keep_within_hours')}: backups.retention.keep_within_hours: expected an integer between 1 and"):
        check_site("example", tmp_path)


def test_retention_works_at_the_schema_bounds() -> None:
    fields = inventory_model.Retention.model_fields
    top = {k: next(m.le for m in fields[k].metadata if getattr(m, "le", None) is not None) for k in fields}
    policy = retention.Policy(**top)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    times = {i: now - timedelta(days=i * 30) for i in range(200)}
    plan = retention.plan(times, policy, now)
    assert plan.keep | plan.remove == frozenset(times)


# --- 17: provider.token is the token ---------------------------------------------------------


def do_site(root: Path, token_ref: str) -> Path:
    data = example_data()
    data["provider"] = {"kind": "digitalocean", "region": "fra1", "size": "s-1vcpu-1gb", "token": token_ref, "ssh_key": "~/.ssh/id"}
    return write_site(root, data)


def test_open_site_cloud_uses_the_inventorys_token_and_warns_when_the_environment_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from relaunch.cloud import client, open_site_cloud

    do_site(tmp_path, "file:../secrets/example/do-token")
    token = tmp_path / "secrets/example/do-token"
    token.write_text("dop_v1_inventorytoken\n")
    token.chmod(0o600)
    made: dict = {}
    monkeypatch.setattr(client, "Cloud", lambda **kw: made.update(kw) or "cloud")
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "dop_v1_environmenttoken")
    monkeypatch.delenv("DIGITALOCEAN_END_POINT", raising=False)
    with caplog.at_level(logging.WARNING):
        assert open_site_cloud(load_site("example", tmp_path)) == "cloud"
    assert made["token"] == "dop_v1_inventorytoken"
    assert "different token" in caplog.text and "file:../secrets/example/do-token" in caplog.text
    assert "dop_v1" not in caplog.text


def test_open_site_cloud_names_an_unresolvable_token_by_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relaunch.cloud import open_site_cloud

    path = do_site(tmp_path, "env:RELAUNCH_TEST_DO_TOKEN")
    monkeypatch.delenv("RELAUNCH_TEST_DO_TOKEN", raising=False)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "dop_v1_environmenttoken")
    with pytest.raises(RelaunchError, match=rf"example.yml:{line_of(path, 'token:')}: provider.token: environment variable RELAUNCH_TEST_DO_TOKEN is not set"):
        open_site_cloud(load_site("example", tmp_path))


def test_dns_switch_opens_a_digitalocean_site_with_its_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relaunch.cloud import client
    from relaunch.dns import switch

    do_site(tmp_path, "env:RELAUNCH_TEST_DO_TOKEN")
    monkeypatch.setenv("RELAUNCH_TEST_DO_TOKEN", "dop_v1_fromref")
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    made: dict = {}
    monkeypatch.setattr(client, "Cloud", lambda **kw: made.update(kw) or "cloud")
    assert switch.open_cloud(load_site("example", tmp_path)) == ("cloud", None)
    assert made["token"] == "dop_v1_fromref"


def test_token_file_that_is_a_symlink_is_refused_by_name(tmp_path: Path) -> None:
    from relaunch.cloud import read_token_file

    real = tmp_path / "real-token"
    real.write_text("dop_v1_x\n")
    real.chmod(0o644)
    link = tmp_path / "token"
    link.symlink_to(real)
    with pytest.raises(RelaunchError, match="is a symlink") as info:
        read_token_file(link)
    assert "chmod" not in str(info.value) and "dop_v1" not in str(info.value)
