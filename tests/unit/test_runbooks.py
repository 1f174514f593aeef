"""runbooks: the parser, rendering with the inventory (quoted, strict, secret-free), the step runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from invoke import Context

from relaunch.inventory.model import Inventory
from relaunch.render import TEMPLATES_DIR, RenderContext, RenderError
from relaunch.runbooks import (
    CHANGED_MARKER,
    RunbookError,
    Step,
    load_steps,
    parse,
    render_runbook,
    run_steps,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"


def inventory(**changes: object) -> Inventory:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(changes)
    return Inventory.model_validate(data)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """Stand-in app templates (the runbooks list each app's files)."""
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "nginx", root / "nginx")
    (root / "apps" / "blog").mkdir(parents=True)
    (root / "apps" / "blog" / "compose.yml.j2").write_text("services: {}\n")
    for name in ("stats", "notes"):
        (root / "apps" / name).mkdir(parents=True)
        (root / "apps" / name / f"{name}.service.j2").write_text("[Service]\n")
        (root / "apps" / name / "app.py").write_text("print('hi')\n")
    return root


def context(templates: Path, inv: Inventory | None = None) -> RenderContext:
    return RenderContext(inventory=inv or inventory(), images={"blog": {"web": "r/blog@sha256:1", "db": "r/pg@sha256:2"}},
                         sandbox=True, templates_dir=templates)


def write_book(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# --- parse ------------------------------------------------------------------------------


def test_parse_tagged_and_untagged_blocks() -> None:
    text = (
        "# Title\n"
        "prose\n"
        "```sh {step=first}\n"
        "echo one\n"
        "```\n"
        "```sh\n"
        "echo documentation only\n"
        "```\n"
        "```bash {step=second}\n"
        "echo two\n"
        "```\n"
        "```\n"
        "plain\n"
        "```\n"
    )
    segments = parse(text, "x.md")
    codes = [s for s in segments if s.kind == "code"]
    assert [(s.step, s.line, s.body) for s in codes] == [
        ("first", 3, "echo one\n"),
        (None, 6, "echo documentation only\n"),
        ("second", 9, "echo two\n"),
        (None, 12, "plain\n"),
    ]
    assert segments[0].kind == "text" and segments[0].body == "# Title\nprose\n"


def test_parse_tilde_fences_and_longer_fences_hold_inner_ones() -> None:
    text = (
        "~~~sh {step=tilde}\n"
        "echo '```'\n"
        "~~~\n"
        "````bash {step=outer}\n"
        "```\n"
        "echo inside\n"
        "```\n"
        "````\n"
    )
    steps = [(s.step, s.body) for s in parse(text, "x.md") if s.kind == "code"]
    assert steps == [("tilde", "echo '```'\n"), ("outer", "```\necho inside\n```\n")]


def test_parse_closing_fence_must_match_kind() -> None:
    text = "~~~sh {step=a}\necho a\n```\nstill inside\n~~~\n"
    [code] = [s for s in parse(text, "x.md") if s.kind == "code"]
    assert code.body == "echo a\n```\nstill inside\n"


def test_parse_indented_fence_body_is_dedented() -> None:
    text = "  ```sh {step=a}\n  echo a\n    nested\n  ```\n"
    [code] = [s for s in parse(text, "x.md") if s.kind == "code"]
    assert code.body == "echo a\n  nested\n"


def test_parse_unterminated_fence_names_file_and_line() -> None:
    with pytest.raises(RunbookError, match=r"x\.md:3: code block opened with ``` is never closed"):
        parse("a\nb\n```sh {step=a}\necho\n", "x.md")


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ("python {step=a}", "must be a sh or bash block"),
        ("{step=a}", "must be a sh or bash block"),
        ("sh {step=Bad_Name!}", "step name"),
        ("sh {stepp=a}", "unknown attribute"),
        ("sh {step}", "malformed attribute"),
    ],
)
def test_parse_bad_step_tags(info: str, message: str) -> None:
    with pytest.raises(RunbookError, match=rf"x\.md:2: .*{message}"):
        parse(f"text\n```{info}\necho\n```\n", "x.md")


def test_load_steps_in_file_name_order(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(books, "10-second.md", "```sh {step=b}\necho b\n```\n")
    write_book(books, "00-first.md", "intro\n\n```sh {step=a}\necho a\n```\n```sh {step=a2}\necho a2\n```\n")
    write_book(books, "README.txt", "```sh {step=ignored}\n```\n")
    steps = load_steps(context(templates), books)
    assert [(s.name, s.where) for s in steps] == [("a", "00-first.md:3"), ("a2", "00-first.md:6"), ("b", "10-second.md:1")]


def test_load_steps_duplicate_names_across_files_name_both(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(books, "00-a.md", "```sh {step=same}\necho a\n```\n")
    write_book(books, "10-b.md", "x\n```bash {step=same}\necho b\n```\n")
    with pytest.raises(RunbookError, match=r"'same' is defined twice: 00-a\.md:1 and 10-b\.md:2"):
        load_steps(context(templates), books)


def test_load_steps_duplicate_in_one_file(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(books, "00-a.md", "```sh {step=same}\necho a\n```\n```sh {step=same}\necho b\n```\n")
    with pytest.raises(RunbookError, match="'same' is defined twice"):
        load_steps(context(templates), books)


def test_load_steps_undefined_value_names_file_line_and_name(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(books, "00-a.md", "# t\n\n```sh {step=a}\necho {{ inventory.site }}\necho {{ inventory.nope }}\n```\n")
    with pytest.raises(RenderError, match=r"00-a\.md:5: .*'nope'"):
        load_steps(context(templates), books)


def test_load_steps_quotes_inventory_values_for_the_shell(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(
        books,
        "00-a.md",
        "```sh {step=a}\n"
        "echo {{ value }} {{ inventory.site }} {{ port }}\n"
        "for p in {{ items | words }}; do :; done\n"
        "echo {{ '$(x)' | verbatim }}\n"
        "```\n",
    )
    ctx = context(templates)
    from relaunch import runbooks

    original = runbooks.runbook_values
    try:
        runbooks.runbook_values = lambda c: {**original(c), "value": "a b'; rm -rf /", "port": 8081,  # type: ignore[assignment]
                                              "items": ["x y", "z"]}
        [step] = load_steps(ctx, books)
    finally:
        runbooks.runbook_values = original  # type: ignore[assignment]
    assert step.script.splitlines() == [
        "echo 'a b'\"'\"'; rm -rf /' example 8081",
        "for p in 'x y' z; do :; done",
        "echo $(x)",
    ]


def test_load_steps_jinja_may_wrap_whole_sections(tmp_path: Path, templates: Path) -> None:
    books = tmp_path / "books"
    write_book(
        books,
        "00-a.md",
        "{% if sandbox %}\n## Sandbox only\n\n```sh {step=s}\necho s\n```\n{% endif %}\n"
        "{% if not sandbox %}\n```sh {step=n}\necho n\n```\n{% endif %}\n",
    )
    steps = load_steps(context(templates), books)
    assert [(s.name, s.line) for s in steps] == [("s", 4)]  # the line is the fence's in the source


# --- the repository's runbooks ------------------------------------------------------------


def _variants() -> list[Inventory]:
    base = yaml.safe_load(EXAMPLE.read_text())
    docker_ce = {**base, "docker": {"packages": "docker", "compose": "v2"}}
    native_pg = {**base, "databases": [
        *base["databases"][1:],
        {"name": "blog", "engine": "postgresql", "runs": "native", "database": "blog's db", "user": "blog",
         "password": "file:../secrets/example/blog-db-password"},
    ]}
    return [Inventory.model_validate(v) for v in (base, docker_ce, native_pg)]


@pytest.mark.parametrize("inv", _variants(), ids=["example", "docker-ce", "native-postgresql"])
def test_repository_runbooks_render_to_valid_bash(inv: Inventory, templates: Path) -> None:
    steps = load_steps(context(templates, inv))
    assert [s.name for s in steps][:4] == ["apt-lists", "base-packages", "timezone", "relaunch-dirs"]
    for step in steps:
        check = subprocess.run(["bash", "-n"], input=step.script, text=True, capture_output=True)
        assert check.returncode == 0, f"{step.where} {step.name}: {check.stderr}"
        assert CHANGED_MARKER in step.script, f"{step.name} never reports a change"


def test_repository_runbooks_follow_the_inventory(templates: Path) -> None:
    example, docker_ce, native_pg = _variants()
    by_name = {s.name: s.script for s in load_steps(context(templates, example))}
    assert "docker.io docker-compose" in by_name["docker"]
    assert "/etc/relaunch/secrets/stats.password" in by_name["mariadb"]
    assert "postgresql" not in by_name  # the blog's PostgreSQL runs in Compose
    assert "-f /srv/blog/compose.yml --env-file /etc/relaunch/blog.env" in by_name["compose-apps"]
    assert "relaunch-notes.conf" in by_name["nginx"]
    ce = {s.name: s.script for s in load_steps(context(templates, docker_ce))}
    assert "docker-compose-plugin" in ce["docker"] and "want=v2" in ce["compose-command"]
    pg = {s.name: s.script for s in load_steps(context(templates, native_pg))}
    assert "-v db='blog'\"'\"'s db'" in pg["postgresql"]  # a name with a quote stays one shell word


def test_repository_runbooks_put_no_password_in_argv_positions(templates: Path) -> None:
    """Passwords are read into variables and reach servers on stdin or /dev/fd, never as an argument."""
    for step in load_steps(context(templates, _variants()[2])):
        for line in step.script.splitlines():
            if "$pw" in line or "$sql_pw" in line or "$psql_pw" in line or "$cnf" in line:
                assert line.lstrip().startswith(("printf", "sql_pw=", "cnf_pw=", "cnf=", "psql_pw=", "if ! PGPASSWORD=",
                                                 "PGPASSWORD=", "mariadb --defaults-extra-file=/dev/fd/3")), line


def test_render_runbook_is_the_whole_markdown(templates: Path) -> None:
    text = render_runbook(context(templates))
    assert text.index("# 00 — Base system") < text.index("# 40 — Reverse proxy")
    assert "`stats.example.test` → 127.0.0.1:8082" in text
    assert "```sh {step=nginx}" in text


# --- run_steps (locally, through invoke's runner: the same run() interface as Fabric) ------


def step(name: str, script: str, line: int = 1) -> Step:
    return Step(name, "00-test.md", line, script)


def test_run_steps_reports_changed_and_times_each_step(tmp_path: Path) -> None:
    marker = tmp_path / "made"
    steps = [
        step("make", f"if [ ! -e {marker} ]; then touch {marker}; echo '{CHANGED_MARKER}'; fi\n"),
        step("look", f"test -e {marker}\necho 'relaunch: changed (not really: the line must be exact)' \n"),
    ]
    seen: list[tuple[str, bool | None]] = []
    first = run_steps(Context(), steps, progress=lambda s, r: seen.append((s.name, None if r is None else r.changed)))
    assert first.changed == ["make"]
    assert seen == [("make", None), ("make", True), ("look", None), ("look", False)]
    assert all(r.seconds >= 0 for r in first.steps)
    second = run_steps(Context(), steps)
    assert second.changed == []


def test_run_steps_script_goes_on_stdin_not_argv(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class Recorder:
        def run(self, command: str, **kwargs: object):
            calls.append((command, kwargs["in_stream"].read()))  # type: ignore[union-attr]
            return Context().run("true", hide=True, in_stream=False)

    secret_looking = "echo distinctive-script-text-91827"
    run_steps(Recorder(), [step("a", secret_looking)])  # type: ignore[arg-type]
    command, stdin = calls[0]
    assert "distinctive-script-text-91827" not in command
    assert stdin == secret_looking


def test_run_steps_strict_bash_and_stdin_of_commands_is_not_the_script(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f"cat > {out}\necho after-cat\n"  # a command reading stdin must not eat the rest of the script
    result = run_steps(Context(), [step("a", script)])
    assert "after-cat" in result.steps[0].output and out.read_text() == ""
    with pytest.raises(RunbookError, match="step unset"):
        run_steps(Context(), [step("unset", "echo $NOT_SET_ANYWHERE\n")])
    with pytest.raises(RunbookError, match="step pipe"):
        run_steps(Context(), [step("pipe", "false | true\n")])


def test_run_steps_stops_at_the_first_failure_naming_step_place_and_output(tmp_path: Path) -> None:
    after = tmp_path / "after"
    steps = [
        step("ok", "echo fine\n"),
        step("broken", "for i in $(seq 1 50); do echo line-$i; done\necho oops >&2\nexit 3\n", line=42),
        step("never", f"touch {after}\n"),
    ]
    with pytest.raises(RunbookError) as info:
        run_steps(Context(), steps)
    message = str(info.value)
    assert "step broken (00-test.md:42) failed with exit status 3" in message
    assert "line-50" in message and "oops" in message and "line-1\n" not in message  # the tail only
    assert info.value.step is not None and info.value.step.name == "broken"
    assert not after.exists()


def test_compose_steps_give_a_busy_docker_api_time(templates: Path) -> None:
    """Compose v1 gives up after 60 s by default: a loaded host timed out `up -d` in a drill."""
    [step] = [s for s in load_steps(context(templates)) if s.name == "compose-apps"]
    assert "export COMPOSE_HTTP_TIMEOUT=600" in step.script
