"""render: strict templates, the host's files with the right modes, secrets only where they belong."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from relaunch.inventory.model import Inventory
from relaunch.inventory.tls import make_sandbox_certificate
from relaunch.remote import HostKey
from relaunch.render import (
    TEMPLATES_DIR,
    RenderContext,
    RenderedFile,
    RenderError,
    render_host,
    render_user_data,
    write_local,
)
from relaunch.runbooks import render_runbook

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"

# Distinctive values: any of them found outside a secret file is a leak.
BLOG_PW = "blogpw-Zq81$x y"
STATS_PW = "statspw-Kk27\\\"w"


class FakeSecret:
    """Stands in for relaunch.inventory.secrets.Secret: masked, revealed on demand."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"


TLS = make_sandbox_certificate("example", ["example.test", "stats.example.test", "notes.example.test"])


@pytest.fixture(scope="module", autouse=True)
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's proxy.tls certificate, in a file (its key is a fake secret below)."""
    path = tmp_path_factory.mktemp("tls") / "site.crt"
    path.write_text(TLS.certificate)
    global TLS_FILE
    TLS_FILE = path
    return path


TLS_FILE: Path | None = None


def example_inventory(**changes: object) -> Inventory:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["proxy"]["tls"] = {**data["proxy"]["tls"], "certificate": str(TLS_FILE), "ca": None}
    data.update(changes)
    return Inventory.model_validate(data)


def fake_secrets(inv: Inventory) -> dict[str, FakeSecret]:
    values = {"blog-db-password": BLOG_PW, "stats-db-password": STATS_PW, "site.key": TLS.key}
    refs = {ref for app in inv.apps for ref in app.secret_env.values()}
    refs |= {db.password for db in inv.databases if db.password}
    refs |= {inv.proxy.tls.key} if inv.proxy.tls else set()
    return {ref: FakeSecret(values[ref.rsplit("/", 1)[-1]]) for ref in refs}


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A templates/ with the repository's generic templates and small stand-in apps."""
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "cloud-init", root / "cloud-init")
    shutil.copytree(TEMPLATES_DIR / "nginx", root / "nginx")
    blog = root / "apps" / "blog"
    blog.mkdir(parents=True)
    (blog / "compose.yml.j2").write_text(
        "services:\n  web:\n    image: {{ images.web }}\n    env_file: {{ env_file }}\n"
        "    ports: ['127.0.0.1:{{ app.port }}:8080']\n  db:\n    image: {{ images.db }}\n"
        "# site {{ inventory.site }} sandbox={{ sandbox }}\n"
    )
    (blog / "static").mkdir()
    (blog / "static" / "logo.png").write_bytes(bytes(range(256)))
    (blog / "__pycache__").mkdir()
    (blog / "__pycache__" / "x.pyc").write_bytes(b"junk")
    for name, port in (("stats", 8082), ("notes", 8083)):
        app = root / "apps" / name
        app.mkdir(parents=True)
        (app / f"{name}.service.j2").write_text(
            "[Service]\nEnvironmentFile={{ env_file }}\nExecStart=/srv/{{ app.name }}/run.sh {{ app.port }}\n"
        )
        run = app / "run.sh"
        run.write_text("#!/bin/sh\nexec python3 /srv/app.py \"$@\"\n")
        run.chmod(0o755)
        (app / "config.json.j2").write_text('{"port": {{ app.port }}, "domain": "{{ app.domain }}"}\n')
    return root


@pytest.fixture
def ctx(templates: Path) -> RenderContext:
    inv = example_inventory()
    return RenderContext(
        inventory=inv,
        secrets=fake_secrets(inv),
        images={"blog": {"web": "relaunch-sandbox-registry:5000/example/blog@sha256:" + "a" * 64,
                         "db": "relaunch-sandbox-registry:5000/example/postgres@sha256:" + "b" * 64}},
        sandbox=True,
        host_key=HostKey.generate(),
        authorized_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlahBlahBlah relaunch"],
        templates_dir=templates,
    )


def by_path(files: list[RenderedFile]) -> dict[str, RenderedFile]:
    return {f.path: f for f in files}


def test_render_host_missing_value_names_template_line_and_variable(ctx: RenderContext, templates: Path) -> None:
    (templates / "apps" / "stats" / "config.json.j2").write_text('{\n  "port": {{ app.port }},\n  "x": {{ nowhere }}\n}\n')
    with pytest.raises(RenderError, match=r"apps/stats/config\.json\.j2:3: 'nowhere' is undefined"):
        render_host(ctx)


def test_render_host_missing_attribute_is_an_error_not_empty(ctx: RenderContext, templates: Path) -> None:
    (templates / "apps" / "blog" / "compose.yml.j2").write_text("image: {{ images.cache }}\n")
    with pytest.raises(RenderError, match=r"apps/blog/compose\.yml\.j2:1: .*'cache'"):
        render_host(ctx)


def test_render_host_missing_template_is_a_render_error(ctx: RenderContext, templates: Path) -> None:
    (templates / "apps" / "notes" / "notes.service.j2").unlink()
    with pytest.raises(RenderError, match=r"template not found: apps/notes/notes\.service\.j2"):
        render_host(ctx)


def test_render_host_places_every_file(ctx: RenderContext) -> None:
    files = by_path(render_host(ctx))
    assert sorted(files) == sorted([
        "/srv/blog/compose.yml",
        "/srv/blog/static/logo.png",
        "/etc/systemd/system/stats.service",
        "/srv/stats/run.sh",
        "/srv/stats/config.json",
        "/etc/systemd/system/notes.service",
        "/srv/notes/run.sh",
        "/srv/notes/config.json",
        "/etc/relaunch/blog.env",
        "/etc/relaunch/stats.env",
        "/etc/relaunch/notes.env",
        "/etc/relaunch/secrets/blog.password",
        "/etc/relaunch/secrets/stats.password",
        "/etc/nginx/sites-available/relaunch-blog.conf",
        "/etc/nginx/sites-available/relaunch-default.conf",
        "/etc/nginx/sites-available/relaunch-stats.conf",
        "/etc/nginx/sites-available/relaunch-notes.conf",
        "/etc/relaunch/site.json",
        "/etc/relaunch/tls/site.crt",
        "/etc/relaunch/secrets/tls.key",
    ])
    assert files["/srv/blog/static/logo.png"].content == bytes(range(256))  # copied byte for byte
    assert files["/srv/stats/config.json"].content == b'{"port": 8082, "domain": "stats.example.test"}\n'


def test_render_host_modes_and_secret_flags(ctx: RenderContext) -> None:
    files = by_path(render_host(ctx))
    for path in ("/etc/relaunch/blog.env", "/etc/relaunch/notes.env", "/etc/relaunch/secrets/stats.password"):
        assert (files[path].mode, files[path].secret) == (0o600, True), path
    assert files["/srv/stats/run.sh"].mode == 0o755  # the source template is executable
    assert files["/srv/blog/compose.yml"].mode == 0o644
    assert files["/etc/relaunch/site.json"].mode == 0o644
    assert not any(f.secret for f in files.values() if f.mode != 0o600)


def test_render_host_app_context_names(ctx: RenderContext) -> None:
    compose = by_path(render_host(ctx))["/srv/blog/compose.yml"].content.decode()
    assert f"image: {ctx.images['blog']['web']}" in compose
    assert "env_file: /etc/relaunch/blog.env" in compose
    assert "127.0.0.1:8081:8080" in compose
    assert "# site example sandbox=True" in compose
    unit = by_path(render_host(ctx))["/etc/systemd/system/stats.service"].content.decode()
    assert "EnvironmentFile=/etc/relaunch/stats.env" in unit


def test_render_host_env_file_holds_env_and_resolved_secret_env(ctx: RenderContext) -> None:
    files = by_path(render_host(ctx))
    blog = files["/etc/relaunch/blog.env"].content.decode().splitlines()
    assert f"POSTGRES_PASSWORD='{BLOG_PW}'" in blog  # single quotes: $ and spaces taken literally
    stats = files["/etc/relaunch/stats.env"].content.decode().splitlines()
    # a backslash or double quote: double quotes, both escaped (systemd, python-dotenv and Compose v2 agree)
    assert 'STATS_DB_PASSWORD="statspw-Kk27\\\\\\"w"' in stats
    assert files["/etc/relaunch/secrets/blog.password"].content == BLOG_PW.encode()


def test_render_host_env_value_with_quote_is_refused_without_showing_it(ctx: RenderContext) -> None:
    ref = ctx.inventory.app("blog").secret_env["POSTGRES_PASSWORD"]
    ctx.secrets = {**ctx.secrets, ref: FakeSecret("it's-$ecret")}
    with pytest.raises(RenderError, match=r"secret_env\.POSTGRES_PASSWORD: the value holds '\$' together with a quote") as info:
        render_host(ctx)
    assert "ecret" not in str(info.value).replace("secret_env", "")


def test_render_host_unresolved_secret_is_an_error(ctx: RenderContext) -> None:
    ctx.secrets = {}
    with pytest.raises(RenderError, match="was not resolved"):
        render_host(ctx)


def test_render_host_nginx_vhost_per_app(ctx: RenderContext) -> None:
    conf = by_path(render_host(ctx))["/etc/nginx/sites-available/relaunch-stats.conf"].content.decode()
    assert "server_name stats.example.test;" in conf
    assert "proxy_pass http://127.0.0.1:8082;" in conf
    for header in ("Host $host", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in conf
    assert "client_max_body_size" in conf
    assert "listen [::]:80;" in conf and "listen [::]:443 ssl;" in conf  # the example has an AAAA record
    v4_only = example_inventory(dns={**example_inventory().dns.model_dump(), "records": [{"name": "@", "type": "A"}]})
    ctx4 = RenderContext(**{**ctx.__dict__, "inventory": v4_only})
    conf4 = by_path(render_host(ctx4))["/etc/nginx/sites-available/relaunch-stats.conf"].content.decode()
    assert "listen [::]" not in conf4 and "listen 443 ssl;" in conf4


def test_render_host_site_json_facts(ctx: RenderContext) -> None:
    facts = json.loads(by_path(render_host(ctx))["/etc/relaunch/site.json"].content)
    assert facts["site"] == "example"
    blog = next(a for a in facts["apps"] if a["name"] == "blog")
    assert blog["port"] == 8081 and blog["images"] == ctx.images["blog"]


def test_no_secret_value_outside_secret_files(ctx: RenderContext) -> None:
    secrets = [BLOG_PW.encode(), STATS_PW.encode()]
    for f in render_host(ctx):
        if not f.secret:
            assert not any(s in f.content for s in secrets), f.path
    user_data = render_user_data(ctx)
    without_host_key = user_data.replace(ctx.host_key.private_openssh, "")  # type: ignore[union-attr]
    assert not any(s.decode() in without_host_key for s in secrets)


def test_no_secret_value_in_rendered_runbook(ctx: RenderContext) -> None:
    text = render_runbook(ctx)
    assert BLOG_PW not in text and STATS_PW not in text
    assert "/etc/relaunch/secrets/stats.password" in text  # it reads the file on the host instead


def test_user_data_is_yaml_and_pins_the_host_key(ctx: RenderContext) -> None:
    text = render_user_data(ctx)
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert ctx.host_key is not None
    pinned = ctx.host_key.cloud_config()
    assert data["ssh_keys"] == pinned["ssh_keys"]
    assert data["ssh_genkeytypes"] == [] and data["ssh_deletekeys"] is True
    assert data["disable_root"] is False
    assert data["timezone"] == "UTC"
    assert data["hostname"] == "example"
    assert {"ca-certificates", "curl", "rsync", "gnupg"} <= set(data["packages"])
    assert data["ssh_authorized_keys"] == ctx.authorized_keys


def test_user_data_leaves_docker_daemon_json_alone_in_the_sandbox(ctx: RenderContext) -> None:
    assert "write_files" not in yaml.safe_load(render_user_data(ctx))
    ctx.sandbox = False
    paths = [f["path"] for f in yaml.safe_load(render_user_data(ctx))["write_files"]]
    assert paths == ["/etc/docker/daemon.json"]


def test_user_data_needs_a_host_key(ctx: RenderContext) -> None:
    ctx.host_key = None
    with pytest.raises(RenderError, match="host key"):
        render_user_data(ctx)


def test_write_local_modes_from_creation(ctx: RenderContext, tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        write_local(render_host(ctx), out)
    finally:
        os.umask(old)
    def mode(p: str) -> int:
        return stat.S_IMODE((out / p.lstrip("/")).stat().st_mode)
    assert mode("/etc/relaunch/blog.env") == 0o600
    assert mode("/etc/relaunch/secrets/stats.password") == 0o600
    assert mode("/etc/relaunch/site.json") == 0o644
    assert mode("/etc/nginx/sites-available/relaunch-blog.conf") == 0o644
    assert mode("/srv/stats/run.sh") == 0o755
    assert (out / "srv/blog/static/logo.png").read_bytes() == bytes(range(256))


def test_write_local_replaces_a_looser_file_with_a_0600_one(tmp_path: Path) -> None:
    target = tmp_path / "etc/relaunch/x.env"
    target.parent.mkdir(parents=True)
    target.write_text("old")
    target.chmod(0o666)
    write_local([RenderedFile("/etc/relaunch/x.env", b"new", 0o600, True)], tmp_path)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"new"


@pytest.mark.parametrize("path", ["/../escape", "relative/path", "/etc/../../escape", "/"])
def test_write_local_refuses_paths_outside_out_dir(tmp_path: Path, path: str) -> None:
    with pytest.raises(RenderError, match="refusing to write"):
        write_local([RenderedFile(path, b"x", 0o644, False)], tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_write_local_refuses_to_follow_a_symlinked_directory_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "etc").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "etc" / "relaunch").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RenderError, match="outside"):
        write_local([RenderedFile("/etc/relaunch/a.env", b"s", 0o600, True)], out)
    assert not (tmp_path / "elsewhere" / "a.env").exists()


@pytest.mark.skipif(
    not (TEMPLATES_DIR / "apps" / "blog" / "compose.yml.j2").exists(), reason="the example apps' templates are not there yet"
)
def test_render_host_with_the_repository_templates() -> None:
    inv = example_inventory()
    images = {"blog": {"web": "r:5000/example/blog@sha256:" + "c" * 64, "db": "r:5000/example/postgres@sha256:" + "d" * 64}}
    files = render_host(RenderContext(inv, fake_secrets(inv), images, sandbox=True))
    paths = {f.path for f in files}
    assert {"/srv/blog/compose.yml", "/etc/systemd/system/stats.service", "/etc/systemd/system/notes.service"} <= paths
    for f in files:
        if not f.secret:
            assert BLOG_PW.encode() not in f.content and STATS_PW.encode() not in f.content, f.path
