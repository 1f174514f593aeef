"""The contract tests in a clone without DigitalOcean's spec: skipped there, required in CI.

Each test runs pytest on a copy of tests/contract in a fresh "clone" under tmp_path (so
whether ``../shared/digitalocean-openapi`` is beside it is up to the test), with
``RELAUNCH_DO_OPENAPI_DIR`` pointing at an empty directory. The spec fixtures run before
any Docker work, so these runs are quick and touch no sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relaunch.sandbox.spec import REQUIRE_ENV, SPEC_COMMIT, SPEC_ENV, SPEC_REPOSITORY

REPO = Path(__file__).resolve().parents[2]
#: The contract modules that do not check answers' shapes: they run (unchecked) without the spec.
NOT_NEEDING_THE_SPEC = ("test_dns_server", "test_restart", "test_python_digitalocean")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "tests").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root)  # the pytest settings and markers
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests")
    shutil.copytree(REPO / "tests" / "contract", root / "tests" / "contract",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "empty").mkdir()
    return root


def _pytest(clone: Path, *args: str, require: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (REQUIRE_ENV, "PYTEST_ADDOPTS")}
    env[SPEC_ENV] = str(clone.parent / "empty")
    if require is not None:
        env[REQUIRE_ENV] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/contract", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=300,
    )


def _counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", last)}


def test_contract_tests_needing_the_spec_skip_with_one_line_saying_how_to_get_it(clone: Path) -> None:
    # The contract tests that do not need the spec would start Docker work: left out here
    # (the next test checks that they are the ones not marked to skip).
    done = _pytest(clone, "-k", " and ".join(f"not {m}" for m in NOT_NEEDING_THE_SPEC))
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    counts = _counts(out)
    assert counts.get("skipped", 0) > 10 and "errors" not in counts and "error" not in counts, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == 1, lines
    assert "OpenAPI spec" in lines[0] and SPEC_REPOSITORY in lines[0] and SPEC_COMMIT in lines[0]
    assert str(clone.parent / "shared" / "digitalocean-openapi") in lines[0]


def test_contract_tests_not_needing_the_spec_are_not_marked_to_skip(clone: Path) -> None:
    done = _pytest(clone, "-m", "not spec", "--collect-only", "-q")
    assert done.returncode == 0, done.stdout[-3000:]
    for module in NOT_NEEDING_THE_SPEC:
        assert f"{module}.py" in done.stdout
    for module in ("test_droplets.py", "test_resources.py", "test_spec_checker.py"):
        assert module not in done.stdout


@pytest.mark.parametrize("how", ["env", "shared-beside-the-clone"])
def test_a_missing_spec_fails_every_contract_test_where_it_is_required(clone: Path, how: str) -> None:
    if how == "env":
        done = _pytest(clone, require="1")
    else:
        (clone.parent / "shared" / "digitalocean-openapi").mkdir(parents=True)  # as in CI, but empty
        done = _pytest(clone)
    out = done.stdout
    assert done.returncode != 0
    counts = _counts(out)
    assert counts.get("errors", 0) > 40 and "passed" not in counts and "skipped" not in counts, out[-3000:]
    assert "OpenAPI spec is required here" in out and SPEC_COMMIT in out
