"""relaunch.inventory.load: the example loads; every kind of bad input is one InventoryError naming file, line, key path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaunch.errors import RelaunchError
from relaunch.inventory import (
    Inventory,
    InventoryError,
    UnknownNameError,
    inventory_path,
    load,
    load_site,
    load_text,
    source_of,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"
EXAMPLE_TEXT = EXAMPLE.read_text()


def edited(old: str, new: str) -> str:
    assert old in EXAMPLE_TEXT, old
    return EXAMPLE_TEXT.replace(old, new, 1)


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing ``fragment``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def error_of(text: str, file: str = "inventory/example.yml") -> InventoryError:
    with pytest.raises(InventoryError) as info:
        load_text(text, file)
    return info.value


@pytest.fixture
def site_root(tmp_path: Path) -> Path:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "example.yml").write_text(EXAMPLE_TEXT)
    return tmp_path


def test_load_example_gives_the_example_site() -> None:
    inv = load(EXAMPLE)
    assert isinstance(inv, Inventory)
    assert inv.site == "example"
    assert [a.name for a in inv.apps] == ["blog", "stats", "notes"]
    assert inv.app("stats").port == 8082
    assert inv.database("blog").engine == "postgresql"
    assert inv.app("blog").compose is not None and inv.app("blog").compose.images["web"] == "example/blog"


def test_load_records_where_keys_are() -> None:
    inv = load(EXAMPLE)
    src = source_of(inv)
    assert src.origin == EXAMPLE.resolve()
    stats = [a.name for a in inv.apps].index("stats")
    assert src.line_of(("apps", stats, "port")) == line_of(EXAMPLE_TEXT, "port: 8082")
    assert src.describe(("apps", stats, "health", 0, "status")) == "apps[stats].health[0].status"


def test_load_site_reads_inventory_dir_under_root(site_root: Path) -> None:
    assert inventory_path("example", site_root) == site_root / "inventory" / "example.yml"
    assert load_site("example", site_root).site == "example"


def test_load_site_rejects_a_site_name_that_is_a_path(site_root: Path) -> None:
    with pytest.raises(InventoryError, match=r"site: expected a site name"):
        load_site("../etc/passwd", site_root)


def test_load_site_rejects_a_file_for_another_site(site_root: Path) -> None:
    (site_root / "inventory" / "other.yml").write_text(EXAMPLE_TEXT)
    with pytest.raises(InventoryError) as info:
        load_site("other", site_root)
    msg = str(info.value)
    assert f"inventory/other.yml:{line_of(EXAMPLE_TEXT, 'site: example')}: site: expected 'other'" in msg
    assert "got 'example'" in msg


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load(tmp_path / "nope.yml")
    assert "nope.yml: no such inventory file" in str(info.value)
    assert isinstance(info.value, RelaunchError)


def test_load_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="is a directory"):
        load(tmp_path)


def test_load_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yml"
    path.write_bytes(b"site: example\ndescription: caf\xe9\n")
    with pytest.raises(InventoryError, match=r"x\.yml:2: not UTF-8 text"):
        load(path)


def test_load_yaml_syntax_error_names_file_and_line() -> None:
    text = edited("port: 8082", "port: [8082")
    err = error_of(text)
    assert str(err).startswith(f"inventory/example.yml:{line_of(text, 'port: [8082') + 1}: not valid YAML")
    assert err.problems[0].code == "yaml"


def test_load_tab_indentation_names_line() -> None:
    text = edited("    port: 8082", "\tport: 8082")
    assert f"example.yml:{line_of(text, 'port: 8082')}: not valid YAML" in str(error_of(text))


@pytest.mark.parametrize(
    ("text", "got"),
    [("", "an empty file"), ("- a\n- b\n", "a list"), ("just text\n", "'just text'"), ("# only a comment\n", "an empty file")],
)
def test_load_not_a_mapping_says_what_was_expected(text: str, got: str) -> None:
    msg = str(error_of(text))
    assert "inventory/example.yml" in msg
    assert "expected a mapping with keys site, provider" in msg
    assert msg.endswith(f"got {got}")


def test_load_wrong_type_names_line_path_expectation_and_input() -> None:
    text = edited("port: 8082", "port: eighty")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'port: eighty')}: apps[stats].port: "
        "expected an integer between 1024 and 65535, got 'eighty'"
    )


def test_load_value_out_of_range() -> None:
    text = edited("status: 200", "status: 999")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'status: 999')}: apps[blog].health[0].status: "
        "expected an integer between 100 and 599, got 999"
    )


def test_load_unknown_key_lists_known_keys_and_suggests() -> None:
    text = edited("    port: 8083\n", "    port: 8083\n    prot: 8084\n")
    msg = str(error_of(text))
    assert msg.startswith(f"inventory/example.yml:{line_of(text, 'prot: 8084')}: apps[notes].prot: unknown key 'prot'")
    assert "expected one of: name, kind, domain, port" in msg
    assert "did you mean 'port'?" in msg


def test_load_unknown_top_level_key() -> None:
    text = EXAMPLE_TEXT + "\nbackup:\n  interval_minutes: 5\n"
    msg = str(error_of(text))
    assert f"example.yml:{line_of(text, 'backup:')}: backup: unknown key 'backup'" in msg
    assert "did you mean 'backups'?" in msg


def test_load_missing_required_key_points_at_its_parent() -> None:
    text = edited("  - name: notes\n    kind: systemd\n", "  - name: notes\n")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, '- name: notes')}: apps[notes]: missing required key 'kind' "
        "(a Docker Compose project or a native systemd service)"
    )


def test_load_bad_literal_lists_choices() -> None:
    text = edited("engine: mariadb", "engine: mysql8")
    msg = str(error_of(text))
    assert f":{line_of(text, 'engine: mysql8')}: databases[stats].engine: expected one of 'postgresql', 'mariadb', 'mysql', 'sqlite', got 'mysql8'" in msg


def test_load_bad_mariadb_fingerprint_lists_the_ways() -> None:
    text = edited("backups:\n", "backups:\n  mariadb_fingerprint: fast\n")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'mariadb_fingerprint: fast')}: backups.mariadb_fingerprint: "
        "expected one of 'paired', 'scratch' or true or false, got 'fast'")


def test_load_bad_name_value_uses_validator_expectation() -> None:
    text = edited("- name: notes", "- name: Notes")
    msg = str(error_of(text))
    assert f":{line_of(text, 'name: Notes')}: apps[Notes].name: expected a lowercase name" in msg
    assert msg.endswith("got 'Notes'")


def test_load_yaml_boolean_where_text_expected_gets_a_hint() -> None:
    text = edited("{name: stats, type: A}", "{name: no, type: A}")
    msg = str(error_of(text))
    assert f":{line_of(text, '{name: no,')}: dns.records[2].name: expected text, got false" in msg
    assert "quote the value" in msg


def test_load_union_field_scalar_form() -> None:
    text = edited("runs: {app: blog, service: db}", "runs: docker")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'runs: docker')}: databases[blog].runs: "
        "expected 'native' or a mapping with keys app, service, got 'docker'"
    )


def test_load_union_field_mapping_form_reports_only_mapping_errors() -> None:
    text = edited("runs: {app: blog, service: db}", "runs: {app: blog}")
    err = error_of(text)
    assert len(err.problems) == 1
    assert "databases[blog].runs: missing required key 'service'" in str(err)


def test_load_duplicate_key_is_an_error() -> None:
    text = edited("    port: 8082\n", "    port: 8082\n    port: 8084\n")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'port: 8084')}: duplicate key 'port' (first at line {line_of(text, 'port: 8082')})"
    )


def test_load_merge_keys_may_be_overridden() -> None:
    text = edited("retention: {keep_within_hours: 24, daily: 14, weekly: 8}",
                  "retention: &r {keep_within_hours: 24, daily: 14, weekly: 8}\n  x: &y {<<: *r, daily: 3}")
    msg = str(error_of(text))  # only the unknown key 'x', no duplicate-key complaint
    assert "backups.x: unknown key 'x'" in msg and "duplicate" not in msg


def test_load_dangling_database_reference_points_at_the_item() -> None:
    text = edited("databases: [stats]", "databases: [stats, nope]")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'databases: [stats, nope]')}: apps[stats].databases[1]: "
        "app 'stats' refers to database 'nope', which does not exist (known: blog, notes, stats)"
    )


def test_load_compose_database_in_a_systemd_app_points_at_runs_app() -> None:
    text = edited("runs: {app: blog, service: db}", "runs: {app: stats, service: db}")
    msg = str(error_of(text))
    assert f":{line_of(text, 'runs: {app: stats')}: databases[blog].runs.app: database 'blog' runs in compose app 'stats'" in msg


def test_load_duplicate_names_point_at_the_repeat() -> None:
    text = edited("  - name: blog\n    engine: postgresql", "  - name: stats\n    engine: postgresql")
    err = error_of(text)
    assert any(p.path == "databases[1].name" and "already used by databases[0]" in p.message for p in err.problems)


def test_load_model_rule_points_at_the_key() -> None:
    text = edited("path: /srv/notes/notes.db", "path: /srv/notes/notes.db\n    user: notes")
    assert str(error_of(text)) == (
        f"inventory/example.yml:{line_of(text, 'user: notes')}: databases[notes].user: "
        "a sqlite database takes only 'path' (no user)"
    )


def test_load_digitalocean_without_token_says_what_is_needed() -> None:
    msg = str(error_of(edited("kind: sandbox", "kind: digitalocean")))
    assert "provider.kind: provider.token is required for digitalocean" in msg
    assert "provider.ssh_key is required" in msg


def test_load_lists_every_problem_with_a_summary_line() -> None:
    text = edited("port: 8082", "port: eighty").replace("status: 200", "status: ok").replace("engine: mariadb", "engine: x")
    err = error_of(text)
    lines = str(err).splitlines()
    assert lines[0] == "inventory/example.yml: 3 problems"
    assert len(lines) == 4 and all(line.startswith("  inventory/example.yml:") for line in lines[1:])
    assert [p.path for p in err.problems] == ["apps[blog].health[0].status", "apps[stats].port", "databases[stats].engine"]


def test_load_inline_secret_is_refused_without_echoing_it() -> None:
    text = edited("STATS_DB_PASSWORD: file:../secrets/example/stats-db-password", "STATS_DB_PASSWORD: hunter2-inline")
    msg = str(error_of(text))
    assert "apps[stats].secret_env.STATS_DB_PASSWORD: expected a secret reference" in msg
    assert "hunter2" not in msg


def test_load_inline_password_is_not_echoed() -> None:
    msg = str(error_of(edited("password: file:../secrets/example/stats-db-password", "password: s3cr3t-value")))
    assert "databases[stats].password" in msg and "s3cr3t" not in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: !foo bar\n", "inventory/example.yml:1: not valid YAML: could not determine a constructor for the tag '!foo'"),
        ("a: &x [*x]\n", "inventory/example.yml:1: not usable YAML: an alias refers to a value that contains it"),
        ("site: example\nwhen: 2024-02-30\n", "inventory/example.yml:2: not usable YAML: 2024-02-30: day is out of range for month"),
        ("? [a, b]\n: c\n", "inventory/example.yml:1: a key must be a plain value, not a list or mapping"),
    ],
)
def test_load_unusable_yaml(text: str, expected: str) -> None:
    assert str(error_of(text)) == expected


def test_load_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 9)]
    assert "too large" in str(error_of("\n".join(lines) + "\n"))


def test_load_deep_nesting_is_an_inventory_error() -> None:
    assert "nested too deeply" in str(error_of("a: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_inventory_lookup_of_unknown_name() -> None:
    inv = load(EXAMPLE)
    with pytest.raises(UnknownNameError, match=r"no app named 'nope' \(known: blog, stats, notes\)"):
        inv.app("nope")
    with pytest.raises(KeyError):
        inv.database("nope")
