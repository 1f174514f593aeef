"""`fab check` and its library half, run on temporary copies of the example site (never the real secrets/)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from invoke import Context, Exit

from relaunch.inventory import InventoryError
from relaunch.inventory.check import check_site

REPO = Path(__file__).resolve().parents[2]
FAB = Path(sys.executable).parent / "fab"
EXAMPLE_TEXT = (REPO / "inventory" / "example.yml").read_text()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A temporary site root holding a copy of the example inventory and no secrets."""
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "example.yml").write_text(EXAMPLE_TEXT)
    return tmp_path


@pytest.fixture
def tasks_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relaunch_tasks_under_test", REPO / "tasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_secrets(root: Path) -> None:
    for name in ("blog-db-password", "stats-db-password", "restic-password"):
        path = root / "secrets" / "example" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"value-of-{name}\n")
        path.chmod(0o600)
    from relaunch.inventory import load_site
    from relaunch.inventory.tls import ensure_sandbox_certificate
    from relaunch.remote import ensure_client_key

    (root / "secrets/example/offsite").mkdir(mode=0o700, exist_ok=True)
    ensure_client_key(root / "secrets/example/offsite/id_ed25519")

    ensure_sandbox_certificate(load_site("example", root), root / "secrets/example/tls/site.key")


def test_check_site_reports_missing_sandbox_secrets_without_creating_them(root: Path) -> None:
    report = check_site("example", root)
    assert report.inventory.site == "example"
    assert report.missing_sandbox_secrets == [
        root / "secrets/example/tls/site.key", root / "secrets/example/blog-db-password",
        root / "secrets/example/stats-db-password", root / "secrets/example/restic-password",
        root / "secrets/example/offsite/id_ed25519",
        root / "secrets/example/tls/site.crt", root / "secrets/example/tls/ca.crt",
    ]
    assert report.secrets_resolved == 0
    assert not (root / "secrets").exists()
    titles = [t.title for t in report.tables]
    assert titles == ["apps", "databases", "DNS zone example.test", "backups", "objectives"]
    apps = report.tables[0]
    assert ("stats", "systemd", "stats.example.test", "8082", "stats") == apps.rows[1][:5]
    assert report.tables[1].rows[0][:3] == ("blog", "postgresql", "compose blog/db")


def test_check_site_resolves_secrets(root: Path) -> None:
    make_secrets(root)
    report = check_site("example", root)
    assert report.secrets_resolved == 5 and report.missing_sandbox_secrets == []


def test_check_site_fails_on_other_secret_problems(root: Path) -> None:
    make_secrets(root)
    (root / "secrets/example/stats-db-password").chmod(0o640)
    with pytest.raises(InventoryError, match=r"databases\[stats\]\.password: .*chmod 600"):
        check_site("example", root)


def test_check_site_missing_file_is_an_error_for_digitalocean(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = root / "inventory" / "example.yml"
    path.write_text(EXAMPLE_TEXT.replace("kind: sandbox", "kind: digitalocean\n  token: env:DO_TEST_TOKEN\n  ssh_key: ~/.ssh/k"))
    monkeypatch.setenv("DO_TEST_TOKEN", "t")
    with pytest.raises(InventoryError, match="does not exist"):
        check_site("example", root)


def test_check_task_prints_summary(root: Path, tasks_module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    make_secrets(root)
    monkeypatch.chdir(root)
    tasks_module.check(Context(), site="example")
    out = capsys.readouterr().out
    assert "inventory/example.yml" in out and "is valid" in out
    assert "stats.example.test" in out and "postgresql" in out and "RTO" in out
    assert "secrets: 5 resolved" in out
    assert "value-of-" not in out


def test_check_task_bad_input_exits_with_the_message(root: Path, tasks_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "inventory" / "example.yml").write_text(EXAMPLE_TEXT.replace("port: 8082", "port: eighty"))
    monkeypatch.chdir(root)
    with pytest.raises(Exit) as info:
        tasks_module.check(Context(), site="example")
    assert info.value.code == 1
    assert "inventory/example.yml:" in str(info.value.message) and "apps[stats].port: expected an integer" in str(info.value.message)


def run_fab(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(FAB), "-r", str(REPO), "check", *args], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_fab_check_command_line(root: Path) -> None:
    done = run_fab(root, "--site", "example")
    assert done.returncode == 0, done.stderr
    assert "7 sandbox secret file(s) do not exist yet" in done.stdout
    assert "fab sandbox-up --site example" in done.stdout
    assert not (root / "secrets").exists()


def test_fab_check_command_line_unknown_site(root: Path) -> None:
    done = run_fab(root, "--site", "nope")
    assert done.returncode == 1
    assert "inventory/nope.yml: no such inventory file" in done.stderr
