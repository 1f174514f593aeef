"""A site of the user's own: its runbooks and templates beside relaunch's, when=fresh steps, `fab init`, no seeding.

The site here is made by `fab init`'s scaffold (relaunch.init_site) in a temporary checkout,
then given its own runbooks and templates the way the guide does.
"""

from __future__ import annotations

import re
import stat
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from relaunch import example_site
from relaunch.bootstrap import bootstrap
from relaunch.errors import RelaunchError
from relaunch.init_site import init_site, planned_files
from relaunch.inventory import InventoryError, load_site
from relaunch.inventory.model import Inventory
from relaunch.pipeline.context import RunContext
from relaunch.pipeline.journal import Journal
from relaunch.pipeline.steps import host
from relaunch.render import RenderContext, app_host_paths, render_host
from relaunch.runbooks import RunbookError, load_steps, parse, render_runbook, steps_to_run
from relaunch.sandbox import site as sandbox_site

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A checkout with a site made by `fab init mysite`."""
    init_site("mysite", tmp_path)
    return tmp_path


def own(root: Path, what: str) -> Path:
    return root / "sites" / "mysite" / what


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class FakeSecret:
    def __init__(self, value: str) -> None:
        self.value = value

    def reveal(self) -> str:
        return self.value


def secrets_for(inv: Inventory) -> dict[str, FakeSecret]:
    from relaunch.inventory.secrets import references

    return {ref: FakeSecret("pw") for _, ref in references(inv)}


# --- the inventory: where the site's own files are ---------------------------------------


def test_own_dir_defaults_to_sites_beside_the_inventory(root: Path) -> None:
    inv = load_site("mysite", root)
    assert inv.own_dir("runbooks") == own(root, "runbooks")
    assert inv.own_dir("templates") == own(root, "templates")
    copy = inv.model_copy(update={"description": "x"})  # a rebuild's region override copies the inventory
    assert copy.own_dir("runbooks") == own(root, "runbooks")


def test_own_dir_given_in_the_inventory_is_relative_to_it_and_must_exist(root: Path) -> None:
    path = root / "inventory" / "mysite.yml"
    text = path.read_text()
    path.write_text(text.replace("# runbooks: ../sites/mysite/runbooks", "runbooks: ../notes/mysite"))
    with pytest.raises(InventoryError) as exc:
        load_site("mysite", root)
    assert "inventory/mysite.yml:" in str(exc.value) and "runbooks" in str(exc.value)
    (root / "notes" / "mysite").mkdir(parents=True)
    assert load_site("mysite", root).own_dir("runbooks") == root / "notes" / "mysite"


def test_an_inventory_without_a_file_has_no_own_dirs() -> None:
    inv = Inventory.model_validate(__import__("yaml").safe_load((REPO / "inventory/example.yml").read_text()))
    assert inv.own_dir("runbooks") is None and inv.own_dir("templates") is None


# --- runbooks: relaunch's and the site's, merged by number --------------------------------


def test_site_runbooks_merge_by_number_between_relaunchs(root: Path) -> None:
    write(own(root, "runbooks") / "25-install.md", "# 25\n```sh {step=app-install when=fresh}\necho install\n```\n")
    write(own(root, "runbooks") / "35-after-apps.md", "```sh {step=after-apps}\necho {{ inventory.site }}\n```\n")
    steps = load_steps(RenderContext(inventory=load_site("mysite", root)))
    files = [s.file for s in steps]
    names = [s.name for s in steps]
    assert names.index("app-install") > names.index("compose-command")  # after 10-docker (and 20-databases)
    assert names.index("app-install") < names.index("systemd-apps") < names.index("after-apps") < names.index("nginx")
    assert names[-1] == "mysite-first-page"  # the scaffold's 50-example.md, after the proxy
    assert "sites/mysite/runbooks/25-install.md" in files[names.index("app-install")]
    by_name = {s.name: s for s in steps}
    assert by_name["app-install"].fresh_only and not by_name["after-apps"].fresh_only
    assert by_name["after-apps"].script == "echo mysite\n"  # same rendering, same quoting as relaunch's


def test_relaunchs_own_order_is_unchanged_without_site_runbooks(tmp_path: Path) -> None:
    init_site("bare", tmp_path)
    for path in (tmp_path / "sites" / "bare" / "runbooks").iterdir():
        path.unlink()
    steps = load_steps(RenderContext(inventory=load_site("bare", tmp_path)))
    ours = [s.file for s in steps]
    assert ours == sorted(ours) and all("/" not in f for f in ours)


def test_site_runbook_without_number_is_refused(root: Path) -> None:
    write(own(root, "runbooks") / "install.md", "```sh {step=x}\ntrue\n```\n")
    with pytest.raises(RunbookError, match=r"install\.md: a site's runbook is named NN-name\.md"):
        load_steps(RenderContext(inventory=load_site("mysite", root)))


def test_site_step_named_like_relaunchs_is_refused_naming_both(root: Path) -> None:
    write(own(root, "runbooks") / "45-x.md", "```sh {step=nginx}\ntrue\n```\n")
    with pytest.raises(RunbookError) as exc:
        load_steps(RenderContext(inventory=load_site("mysite", root)))
    assert "40-proxy.md" in str(exc.value) and "sites/mysite/runbooks/45-x.md" in str(exc.value)


def test_fab_runbook_prints_the_merged_whole_with_each_files_origin(root: Path) -> None:
    write(own(root, "runbooks") / "25-install.md", "# Install\n```sh {step=app-install when=fresh}\necho x\n```\n")
    text = render_runbook(RenderContext(inventory=load_site("mysite", root)))
    marks = [line for line in text.splitlines() if line.startswith("<!-- ")]
    assert marks[:3] == ["<!-- runbooks/00-base.md -->", "<!-- runbooks/10-docker.md -->", "<!-- runbooks/20-databases.md -->"]
    assert marks[3].endswith("sites/mysite/runbooks/25-install.md -->")
    assert "{step=app-install when=fresh}" in text  # the reader sees which steps make data


@pytest.mark.parametrize("info, message", [
    ("sh {step=x when=always}", "when='always'; the one value is 'fresh'"),
    ("sh {when=fresh}", "'when' without 'step'"),
    ("sh {step=x fresh=yes}", "unknown attribute(s) fresh"),
])
def test_when_attribute_is_checked(info: str, message: str) -> None:
    with pytest.raises(RunbookError) as exc:
        parse(f"```{info}\ntrue\n```\n", "25-x.md")
    assert message in str(exc.value) and "25-x.md:1" in str(exc.value)


def test_steps_to_run_leaves_fresh_steps_out_unless_fresh(root: Path) -> None:
    steps = load_steps(RenderContext(inventory=load_site("mysite", root)))
    run, skipped = steps_to_run(steps, fresh_site=False)
    assert [s.name for s in skipped] == ["mysite-first-page"] and "mysite-first-page" not in [s.name for s in run]
    run, skipped = steps_to_run(steps, fresh_site=True)
    assert skipped == [] and run == steps


@pytest.mark.parametrize("kind, fresh", [("sandbox-up", True), ("rebuild", False), ("drill", False)])
def test_pipeline_bootstrap_runs_fresh_steps_only_for_a_new_site(root: Path, tmp_path: Path, monkeypatch, kind, fresh) -> None:
    """The defect: a rebuild or drill would run an app's one-time installer over the restored data."""
    inv = load_site("mysite", root)
    journal = Journal.ephemeral(inv.site, kind, {})
    journal.state["new_name"] = "mysite-new"
    ctx = RunContext(inv, secrets_for(inv), None, tmp_path / "key", journal, {})  # type: ignore[arg-type]
    ran: list[str] = []
    monkeypatch.setattr("relaunch.bootstrap.wait_for_cloud_init", lambda conn: None)
    monkeypatch.setattr("relaunch.bootstrap.upload", lambda conn, files: [])
    monkeypatch.setattr("relaunch.bootstrap.run_steps",
                        lambda conn, steps, progress=None: ran.extend(s.name for s in steps) or __import__(
                            "relaunch.runbooks", fromlist=["RunbookResult"]).RunbookResult([]))
    monkeypatch.setattr(RunContext, "new_conn", lambda self, timeout=180: RecordingConn())
    result = host.bootstrap_host(ctx)
    assert ("mysite-first-page" in ran) is fresh
    assert result["skipped_fresh_steps"] == ([] if fresh else ["mysite-first-page"])


def test_bootstrap_defaults_to_not_fresh(root: Path, monkeypatch) -> None:
    """A caller that does not say the site is new never runs a step that makes data."""
    inv = load_site("mysite", root)
    ran: list[str] = []
    monkeypatch.setattr("relaunch.bootstrap.wait_for_cloud_init", lambda conn: None)
    monkeypatch.setattr("relaunch.bootstrap.upload", lambda conn, files: [])
    monkeypatch.setattr("relaunch.bootstrap.run_steps", lambda conn, steps, progress=None: ran.extend(s.name for s in steps))
    result = bootstrap(RecordingConn(), RenderContext(inventory=inv, secrets=secrets_for(inv)))  # type: ignore[arg-type]
    assert "mysite-first-page" not in ran and result.skipped == ["mysite-first-page"]


def test_the_pipeline_bootstrap_waits_for_cloud_init_only_when_its_boot_step_did_not_see_it_finish(
        root: Path, tmp_path: Path, monkeypatch) -> None:
    # boot waits for cloud-init (one cloud-init process); the bootstrap right after in the same process need not
    # ask again. A resumed run (boot journaled, the host may have rebooted since) does.
    inv = load_site("mysite", root)
    journal = Journal.ephemeral(inv.site, "rebuild", {})
    journal.state.update(new_name="mysite-new", host_key_rotated=True)
    ctx = RunContext(inv, secrets_for(inv), None, tmp_path / "key", journal, {})  # type: ignore[arg-type]
    conn = RecordingConn()
    waited: list[object] = []
    monkeypatch.setattr(host, "wait_for_cloud_init", lambda c: waited.append("boot"))
    monkeypatch.setattr("relaunch.bootstrap.wait_for_cloud_init", lambda c: waited.append("bootstrap"))
    monkeypatch.setattr("relaunch.bootstrap.upload", lambda c, files: [])
    monkeypatch.setattr("relaunch.bootstrap.run_steps", lambda c, steps, progress=None: __import__(
        "relaunch.runbooks", fromlist=["RunbookResult"]).RunbookResult([]))
    monkeypatch.setattr(RunContext, "new_conn", lambda self, timeout=180: conn)
    host.boot(ctx)
    host.bootstrap_host(ctx)
    assert waited == ["boot"]
    host.bootstrap_host(ctx)  # as a resumed run's bootstrap: no boot before it in this process
    assert waited == ["boot", "bootstrap"]


# --- templates: the site's beside relaunch's ----------------------------------------------


def test_site_template_of_the_same_path_wins_and_site_files_are_added(root: Path) -> None:
    write(own(root, "templates") / "nginx" / "site.conf.j2", "# the site's own vhost for {{ app.name }}\n")
    write(own(root, "templates") / "apps" / "hello" / "extra.conf.j2", "port={{ app.port }}\n")
    inv = load_site("mysite", root)
    ctx = RenderContext(inventory=inv, secrets=secrets_for(inv))
    files = {f.path: f.content.decode() for f in render_host(ctx)}
    assert files["/etc/nginx/sites-available/relaunch-hello.conf"] == "# the site's own vhost for hello\n"
    assert "server_name" in files["/etc/nginx/sites-available/relaunch-default.conf"]  # relaunch's, not overridden
    assert files["/srv/hello/extra.conf"] == "port=8090\n"
    assert "ExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1" in files["/etc/systemd/system/hello.service"]
    assert "Hello from mysite" in files["/srv/hello/index.html"]
    assert "/srv/hello/extra.conf" in app_host_paths(ctx)["hello"]


def test_site_app_file_overrides_relaunchs_app_file_of_the_same_path(tmp_path: Path) -> None:
    relaunch_dir = tmp_path / "relaunch-templates"
    write(relaunch_dir / "apps" / "hello" / "a.txt", "relaunch's\n")
    write(relaunch_dir / "apps" / "hello" / "b.txt", "only relaunch's\n")
    init_site("mysite", tmp_path / "co")
    write(tmp_path / "co" / "sites" / "mysite" / "templates" / "apps" / "hello" / "a.txt", "the site's\n")
    inv = load_site("mysite", tmp_path / "co")
    from relaunch.render import app_sources

    ctx = RenderContext(inventory=inv, templates_dir=relaunch_dir)
    sources = dict(app_sources(ctx.template_dirs, inv.app("hello")))
    assert sources["/srv/hello/a.txt"].read_text() == "the site's\n"
    assert sources["/srv/hello/b.txt"].read_text() == "only relaunch's\n"


# --- fab init ------------------------------------------------------------------------------


def _schema_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for arg in _models_in(field.annotation):
            keys |= _schema_keys(arg)
    return keys


def _models_in(ann: object) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in typing.get_args(ann) for m in _models_in(arg)]


def test_init_scaffold_names_every_key_of_the_schema(tmp_path: Path) -> None:
    text = planned_files("mysite", tmp_path)[tmp_path / "inventory" / "mysite.yml"]
    written = set(re.findall(r"\b([a-z_]+):(?: |$)", text, re.M))  # each key as written, in the YAML or its comments
    missing = sorted(_schema_keys(Inventory) - written)
    assert missing == [], f"fab init's inventory leaves out {missing}"


def test_init_makes_a_valid_site_that_check_accepts(root: Path) -> None:
    from relaunch.inventory.check import render_problems
    from relaunch.inventory.secrets import references

    inv = load_site("mysite", root)
    assert [a.name for a in inv.apps] == ["hello"] and inv.provider.kind == "sandbox"
    assert render_problems(inv, {ref: FakeSecret("x") for _, ref in references(inv)}) == []


def test_init_secrets_dir_is_private_and_ignored_by_git(root: Path) -> None:
    secrets = root / "secrets" / "mysite"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert (secrets / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


def test_init_refuses_to_overwrite_and_writes_nothing(root: Path) -> None:
    runbook = own(root, "runbooks") / "50-example.md"
    runbook.write_text("mine\n")
    with pytest.raises(RelaunchError, match="never overwrites"):
        init_site("mysite", root)
    assert runbook.read_text() == "mine\n"


def test_init_refuses_when_only_the_site_dir_exists(tmp_path: Path) -> None:
    (tmp_path / "sites" / "other").mkdir(parents=True)
    with pytest.raises(RelaunchError, match="never overwrites"):
        init_site("other", tmp_path)
    assert not (tmp_path / "inventory" / "other.yml").exists()


def test_init_refuses_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(RelaunchError):
        init_site("../evil", tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- sandbox-up of a site without the example's apps --------------------------------------


class RecordingConn:
    host = "203.0.113.5"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, **kw):
        self.commands.append(command)
        return type("R", (), {"stdout": "", "stderr": "", "ok": True, "exited": 0})()


def test_sandbox_seed_of_a_site_without_the_examples_apps_does_nothing(root: Path) -> None:
    """The defect: `fab sandbox-up --site NAME` failed unless --data-mb 0 ("none of the example apps")."""
    conn = RecordingConn()
    said: list[str] = []
    assert sandbox_site._seed(conn, load_site("mysite", root), 100, said.append) == 0.0
    assert conn.commands == [] and said == ["no example apps to seed (the site's data is its own)"]


def test_an_app_named_like_the_examples_with_its_own_template_is_not_seeded(root: Path) -> None:
    path = root / "inventory" / "mysite.yml"
    path.write_text(path.read_text().replace("- name: hello", "- name: blog").replace("apps/hello/", "apps/blog/"))
    (own(root, "templates") / "apps" / "hello").rename(own(root, "templates") / "apps" / "blog")
    inv = load_site("mysite", root)
    assert example_site.example_apps(inv) == [] and example_site.seed_commands(inv, 100) == []


def test_the_example_site_is_still_seeded() -> None:
    inv = load_site("example", REPO)
    assert example_site.example_apps(inv) == ["blog", "stats", "notes"]
    assert [name for name, _ in example_site.seed_commands(inv, 10)] == ["blog", "stats", "notes"]


# --- apps: any command under systemd, as a user of the inventory's ------------------------


def _with_app(root: Path, app_yaml: str) -> Path:
    path = root / "inventory" / "mysite.yml"
    text = path.read_text()
    start = text.index("  - name: hello")
    end = text.index("databases: []")
    path.write_text(text[:start] + app_yaml + "\n" + text[end:])
    return path


def test_systemd_command_gets_relaunchs_unit_with_the_user_and_every_word_as_written(root: Path) -> None:
    _with_app(root, """  - name: wiki
    kind: systemd
    domain: mysite.test
    port: 8091
    user: www-data
    env: {LANG: C.UTF-8}
    health: [{path: /}]
    systemd:
      command: [/usr/bin/php, -S, "127.0.0.1:8091", -t, /usr/share/mediawiki, 'a "b" $HOME 50% \\x']
      working_directory: /usr/share/mediawiki
      packages: [php-cli]
""")
    inv = load_site("mysite", root)
    files = {f.path: f.content.decode() for f in render_host(RenderContext(inventory=inv, secrets=secrets_for(inv)))}
    unit = files["/etc/systemd/system/wiki.service"]
    assert "User=www-data\n" in unit and "DynamicUser" not in unit
    assert "WorkingDirectory=/usr/share/mediawiki\n" in unit and "EnvironmentFile=/etc/relaunch/wiki.env\n" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line == ('ExecStart="/usr/bin/php" "-S" "127.0.0.1:8091" "-t" "/usr/share/mediawiki" '
                         '"a \\"b\\" $$HOME 50%% \\\\x"')
    assert files["/etc/relaunch/wiki.env"].splitlines()[1:] == ["LANG=C.UTF-8"]
    assert "/etc/systemd/system/wiki.service" in app_host_paths(RenderContext(inventory=inv))["wiki"]


def test_systemd_command_without_user_runs_as_a_dynamic_user(root: Path) -> None:
    _with_app(root, """  - name: tool
    kind: systemd
    domain: mysite.test
    port: 8091
    health: [{path: /}]
    systemd: {command: [/usr/bin/python3, -m, http.server, "8091"]}
""")
    inv = load_site("mysite", root)
    unit = {f.path: f for f in render_host(RenderContext(inventory=inv, secrets=secrets_for(inv)))}[
        "/etc/systemd/system/tool.service"].content.decode()
    assert "DynamicUser=yes" in unit and "WorkingDirectory=/srv/tool\n" in unit


@pytest.mark.parametrize("app_yaml, message", [
    ("    user: root\n    systemd: {command: [/bin/true]}\n", "a user other than root"),
    ("    systemd: {packages: [php-cli]}\n", "give one of systemd.unit_template"),
    ("    systemd: {unit_template: apps/x.service.j2, command: [/bin/true]}\n", "give one of systemd.unit_template"),
    ("    systemd: {unit_template: apps/x.service.j2, working_directory: /srv/x}\n", "working_directory goes with command"),
])
def test_systemd_app_section_is_checked(root: Path, app_yaml: str, message: str) -> None:
    _with_app(root, "  - name: tool\n    kind: systemd\n    domain: mysite.test\n    port: 8091\n    health: [{path: /}]\n"
              + app_yaml)
    with pytest.raises(InventoryError) as exc:
        load_site("mysite", root)
    assert message in str(exc.value) and "inventory/mysite.yml:" in str(exc.value)
