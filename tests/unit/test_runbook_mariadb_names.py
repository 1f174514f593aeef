"""MariaDB names in the runbooks arrive as written (found by the fault suite's metacharacter site, case 12).

Every MariaDB/MySQL client the runbooks run speaks utf8mb4 (over SSH there is no locale: latin1
otherwise). Without it a non-ASCII database or user name is created under one spelling (its UTF-8
bytes read as latin1) and logged in with another: the bootstrap of a site with such names
failed at its `mariadb` step. And GRANT ... ON `db`.* reads the database name as a pattern
(``_`` and ``%`` wildcards, ``\\`` escapes): unescaped, a name with a backslash was granted to
no database (and one with ``%`` to many).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import yaml

from relaunch.inventory.model import Inventory
from relaunch.render import TEMPLATES_DIR, RenderContext
from relaunch.runbooks import load_steps

REPO = Path(__file__).resolve().parents[2]
CLIENT = re.compile(r"(?:^|[\s|;&(])(mariadb|mysql)(?=\s|$)")


def mariadb_steps(tmp_path: Path, database: str) -> list:
    data = yaml.safe_load((REPO / "inventory" / "example.yml").read_text())
    data["databases"][1].update(database=database, user="ü-user")
    inv = Inventory.model_validate(data)
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "nginx", templates / "nginx")
    (templates / "apps" / "blog").mkdir(parents=True)
    (templates / "apps" / "blog" / "compose.yml.j2").write_text("services: {}\n")
    for name in ("stats", "notes"):
        (templates / "apps" / name).mkdir(parents=True)
        (templates / "apps" / name / f"{name}.service.j2").write_text("[Service]\n")
    ctx = RenderContext(inventory=inv, images={"blog": {"web": "r/blog@sha256:1", "db": "r/pg@sha256:2"}},
                        sandbox=True, templates_dir=templates)
    return load_steps(ctx)


def test_every_mariadb_client_in_the_runbooks_says_utf8mb4(tmp_path: Path) -> None:
    calls = []
    for step in mariadb_steps(tmp_path, "stätistik 'x' $y"):
        for line in step.script.splitlines():
            if line.lstrip().startswith("#") or not CLIENT.search(line):
                continue
            calls.append(line)
            assert "--default-character-set=utf8mb4" in line, f"{step.where} {step.name}: {line.strip()}"
    assert len(calls) >= 2, calls  # the login check and the SQL that creates the database and user


def test_the_grant_names_exactly_the_database_its_wildcards_and_backslashes_escaped(tmp_path: Path) -> None:
    name = "st_ats%\\b `x`"
    script = {s.name: s.script for s in mariadb_steps(tmp_path, name)}["mariadb"]
    grants = [line for line in script.splitlines() if "GRANT ALL PRIVILEGES ON" in line]
    assert grants and all('"$db_grant"' in line for line in grants), grants
    pattern = "`st\\_ats\\%\\\\b ``x```"
    assert f"db_grant={shlex.quote(pattern)}" in script
