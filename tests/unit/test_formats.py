"""relaunch.formats: every value a writer accepts is read back byte for byte by the real readers.

Compose v1 (Debian 12's docker-compose 1.29: its env-file parser, python-dotenv, and its
interpolation) reads env files and compose files through ``docker-compose config``, which
parses and interpolates without starting anything; MariaDB's option-file parser through
``my_print_defaults``; YAML through PyYAML. Compose v2 and systemd are not run here
(the module docstring of relaunch.formats says what their documented grammars need).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from relaunch import formats
from relaunch.runbooks import _pg_ident, _pg_string

COMPOSE = shutil.which("docker-compose")
MY_PRINT_DEFAULTS = shutil.which("my_print_defaults")
needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose (Compose v1) is not installed: apt-get install -y docker-compose (scripts/setup.sh does)"
)
needs_mariadb_client = pytest.mark.skipif(
    MY_PRINT_DEFAULTS is None, reason="my_print_defaults is not installed: apt-get install -y mariadb-client-core (scripts/setup.sh does)"
)

# Few examples, each a batch of values: one docker-compose run costs about half a second.
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FAST = settings(max_examples=300, deadline=None)

# Text with what the readers treat specially: quotes, backslashes, $, {, }, #, spaces, '=' ...
special = st.sampled_from(list("$${}'\"\\#= `:;!*?&|<>()[]~%@,.-_/\t\n\r\x00\x7f\x85\u2028\ufeff") + ["${A}", "${", "$HOME", "\\n", "é", "€", "😀"])
values = st.lists(special | st.characters(), max_size=24).map("".join)
batches = st.lists(values, min_size=1, max_size=12)


def compose_config(tmp: Path, compose: str, env_file: str) -> dict:
    """Run ``docker-compose config`` on ``compose`` with ``env_file`` as --env-file and as the service's env_file."""
    (tmp / "compose.yml").write_text(compose, encoding="utf-8")
    (tmp / "app.env").write_text(env_file, encoding="utf-8")
    run = subprocess.run(
        [COMPOSE, "-f", str(tmp / "compose.yml"), "--project-directory", str(tmp), "--env-file", str(tmp / "app.env"), "config"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)},
    )
    assert run.returncode == 0, run.stderr
    # `config` prints the interpolated result with every literal '$' written '$$' again
    out = yaml.safe_load(run.stdout)
    return out


def unescape_config(value: str) -> str:
    return value.replace("$$", "$")


@needs_compose
@SLOW
@given(batches)
@example(["pa$$w0rd", "a${HOME}b", "back\\slash", "it's", 'say "hi"', "a\\'b", "a\\\\b", "end\\", "x #y", " lead"])
def test_env_file_values_reach_a_compose_v1_container_unchanged(tmp_path_factory: pytest.TempPathFactory, batch: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("env")
    accepted = {f"V{i}": v for i, v in enumerate(batch) if formats.env_value_problem(v) is None}
    refused = [v for v in batch if formats.env_value_problem(v) is not None]
    for v in refused:
        with pytest.raises(formats.Unrepresentable):
            formats.env_assignment("K", v)
    assume(accepted)
    env_file = "".join(formats.env_assignment(k, v) + "\n" for k, v in accepted.items())
    compose = 'version: "3.7"\nservices:\n  s:\n    image: busybox\n    env_file: app.env\n'
    environment = compose_config(tmp, compose, env_file)["services"]["s"]["environment"]
    assert {k: unescape_config(str(v)) for k, v in environment.items()} == accepted


@needs_compose
@SLOW
@given(batches)
@example(["$", "$$", "${A}", "$A", "a\\b", '"', "'", "#", "x: y", "- z", "{a}", "~", "null", "yes", "0x10", "é😀"])
def test_compose_strings_survive_yaml_and_interpolation(tmp_path_factory: pytest.TempPathFactory, batch: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("yml")
    accepted = {f"V{i}": v for i, v in enumerate(batch) if formats.text_problem(v) is None}
    assume(accepted)
    lines = ['version: "3.7"', "services:", "  s:", "    image: busybox", "    environment:"]
    lines += [f"      {k}: {formats.compose_string(v)}" for k, v in accepted.items()]
    lines += ["    command: [" + ", ".join(formats.compose_string(v) for v in accepted.values()) + "]"]
    service = compose_config(tmp, "\n".join(lines) + "\n", "")["services"]["s"]
    assert {k: unescape_config(str(v)) for k, v in service["environment"].items()} == accepted
    assert [unescape_config(v) for v in service["command"]] == list(accepted.values())


@FAST
@given(st.text())
def test_yaml_string_reads_back_as_written(value: str) -> None:
    assume(formats.text_problem(value) is None or "\x00" not in value)
    try:
        value.encode()
    except UnicodeEncodeError:
        assume(False)
    assert yaml.safe_load("k: " + formats.yaml_string(value))["k"] == value


@FAST
@given(values)
def test_env_assignment_refuses_exactly_what_env_value_problem_names(value: str) -> None:
    problem = formats.env_value_problem(value)
    if problem is None:
        line = formats.env_assignment("K", value)
        assert line.startswith("K=") and "\n" not in line
    else:
        with pytest.raises(formats.Unrepresentable) as info:
            formats.env_assignment("K", value)
        assert problem in str(info.value)
        if len(value) > 3:
            assert value not in str(info.value)


@needs_mariadb_client
@SLOW
@given(batches)
@example(['a"b', "a\\b", "#x", "x#", " sp ", "'q'", "\\\"", "end\\"])
def test_option_file_values_read_back_by_mariadbs_parser(tmp_path_factory: pytest.TempPathFactory, batch: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("cnf")
    accepted = [v for v in batch if formats.text_problem(v) is None and v]
    assume(accepted)
    for i, v in enumerate(accepted):
        (tmp / f"{i}.cnf").write_text(f"[client]\npassword={formats.option_file_value(v)}\n", encoding="utf-8")
    for i, v in enumerate(accepted):
        out = subprocess.run([MY_PRINT_DEFAULTS, f"--defaults-file={tmp / f'{i}.cnf'}", "client"],
                             capture_output=True, timeout=30, check=True).stdout.decode()
        assert out == f"--password={v}\n"


@FAST
@given(values)
def test_standard_sql_quoting_reads_back_in_sqlite(value: str) -> None:
    # PostgreSQL's literals and quoted identifiers (standard_conforming_strings) are standard SQL; SQLite reads those too
    assume(formats.text_problem(value) is None and value)
    conn = sqlite3.connect(":memory:")
    cur = conn.execute(f"SELECT {_pg_string(value)} AS {_pg_ident(value)}")
    assert cur.fetchone()[0] == value
    assert cur.description[0][0] == value


@pytest.mark.parametrize(("engine", "what", "value", "why"), [
    ("postgresql", "database", "x" * 64, "63"),
    ("postgresql", "user", "é" * 32, "64 bytes"),
    ("mariadb", "database", "x" * 65, "at most 64"),
    ("mysql", "user", "u" * 33, "at most 32"),
    ("mariadb", "user", "😀", "U+FFFF"),
    ("postgresql", "user", " blog", "whitespace"),
    ("postgresql", "user", "a\nb", "control character"),
])
def test_sql_name_problem_names_each_servers_limit(engine: str, what: str, value: str, why: str) -> None:
    assert why in formats.sql_name_problem(value, engine, what)


@pytest.mark.parametrize("value", ["blog$db", "o'brien", 'say"hi"', "back\\slash", "x" * 63, "日本語"])
def test_sql_name_problem_accepts_printable_names(value: str) -> None:
    assert formats.sql_name_problem(value, "postgresql", "database") is None


# --- the option files the runbook and the Compose wrapper write on the host --------------------

option_names = st.lists(special | st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1, max_size=16).map("".join)


def mariadb_step(user: str) -> str:
    """The runbook's mariadb step, rendered for one native MariaDB database with ``user``."""
    from relaunch.inventory.model import Inventory
    from relaunch.render import RenderContext
    from relaunch.runbooks import load_steps

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "inventory" / "example.yml").read_text())
    data["proxy"]["tls"] = None
    for app in data["apps"]:
        for check in app["health"]:
            check["scheme"] = "http"
    data["databases"][1]["user"] = user
    steps = load_steps(RenderContext(inventory=Inventory.model_validate(data), sandbox=True))
    return next(s.script for s in steps if s.name == "mariadb")


@needs_mariadb_client
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(user=option_names, password=option_names)
@example(user='o"brien\\', password='p#ss"w\\rd$')
def test_runbook_option_file_carries_user_and_password(tmp_path_factory: pytest.TempPathFactory, user: str, password: str) -> None:
    assume(formats.sql_name_problem(user, "mariadb", "user") is None and formats.text_problem(password) is None)
    tmp = tmp_path_factory.mktemp("rb")
    (tmp / "pw").write_text(password + "\n", encoding="utf-8")
    script = mariadb_step(user)
    start = script.index("pw=$(cat ")
    end = script.index("\n", script.index("cnf=$(printf"))
    fragment = script[start:end].replace("/etc/relaunch/secrets/stats.password", str(tmp / "pw"))
    subprocess.run(["bash", "-euo", "pipefail", "-c", fragment + f'\nprintf "%s\\n" "$cnf" > {tmp}/my.cnf'], check=True, timeout=30)
    out = subprocess.run([MY_PRINT_DEFAULTS, f"--defaults-file={tmp / 'my.cnf'}", "client"], capture_output=True, check=True, timeout=30)
    assert out.stdout.decode() == f"--user={user}\n--password={password}\n"


@needs_mariadb_client
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(user=option_names, password=option_names)
@example(user='o"brien\\', password='p#ss"w\\rd$')
@example(user="tab\\tname\\", password="x")
def test_compose_option_file_wrapper_carries_user_and_password(tmp_path_factory: pytest.TempPathFactory, user: str, password: str) -> None:
    from relaunch.databases.mariadb import _OPTION_FILE

    assume(formats.sql_name_problem(user, "mariadb", "user") is None and formats.text_problem(password) is None)
    tmp = tmp_path_factory.mktemp("wrap")
    prog = tmp / "client"
    prog.write_text(f'#!/bin/sh\ncp "${{1#--defaults-extra-file=}}" {tmp}/my.cnf\n')
    prog.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "MARIADB_PASSWORD": password}
    subprocess.run(["sh", "-c", _OPTION_FILE, "sh", "MARIADB_PASSWORD", "MYSQL_PASSWORD", user, str(prog)], env=env, check=True, timeout=30)
    out = subprocess.run([MY_PRINT_DEFAULTS, f"--defaults-file={tmp / 'my.cnf'}", "client"], capture_output=True, check=True, timeout=30)
    assert out.stdout.decode() == f"--user={user}\n--password={password}\n"


@needs_compose
def test_a_value_ending_in_a_backslash_is_refused_not_lost_with_the_next_line(tmp_path: Path) -> None:
    # found by hypothesis: V0="\\" followed by any line made Compose v1 drop the whole env file
    assert formats.env_value_problem("end\\") and formats.env_value_problem("\\")
    env_file = formats.env_assignment("V0", "a\\b") + "\n" + formats.env_assignment("V1", "it's") + "\n"
    compose = 'version: "3.7"\nservices:\n  s:\n    image: busybox\n    env_file: app.env\n'
    assert compose_config(tmp_path, compose, env_file)["services"]["s"]["environment"] == {"V0": "a\\b", "V1": "it's"}
