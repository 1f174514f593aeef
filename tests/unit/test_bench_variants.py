"""bench.variants.plain_restore: the baselines restore with the database clients alone."""

from __future__ import annotations

import sys
from pathlib import Path

from relaunch.databases import engine
from relaunch.inventory.model import Database

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ lives beside src/, not in the package

from bench.variants import plain_restore  # noqa: E402


def test_a_baseline_restores_mariadb_with_its_client_alone_and_other_engines_as_relaunch_does() -> None:
    maria = Database.model_validate({"name": "stats", "engine": "mariadb", "runs": "native", "database": "stats",
                                     "user": "stats", "password": "file:x"})
    pg = Database.model_validate({"name": "blog", "engine": "postgresql", "runs": "native", "database": "blog",
                                  "user": "blog", "password": "file:x"})
    relaunch = engine("mariadb").restore_command(maria, [])
    plain = plain_restore(maria, [])
    assert relaunch.argv[:2] == ("python3", "-c") and plain.argv == relaunch.argv[3:]
    assert plain.argv[0] == "mariadb" and plain.env == relaunch.env
    assert plain_restore(pg, []) == engine("postgresql").restore_command(pg, [])
