"""A failed backup run posts ``backup_failed`` itself, from the host, the minute it fails.

The runner is run as it is installed on production: backup.py, relaunch_retention.py and
relaunch_webhook.py side by side, Python without site-packages (only the stdlib), the URL
and token in 0600 files. The webhook is a receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from relaunch import webhook
from relaunch.backup import retention, runner
from relaunch.backup.install import ALERT_TOKEN_FILE, ALERT_URL_FILE, WEBHOOK_PATH, backup_config, render_backup_files
from relaunch.backup.status import Run, Status
from relaunch.inventory import load_site
from relaunch.inventory.secrets import Secret
from tests.unit.test_alerts import EXAMPLE, receiver  # noqa: F401 - the fixture
from tests.unit.test_backup_runner import make_config

SECRET_PATH = "/hook/Zq8-secret-path"
TOKEN = "tk_Zq8-token-value"


def installed(tmp_path: Path) -> Path:
    """The runner and the two modules beside it, as backup --install lays them out."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(runner.__file__, lib / "backup.py")
    shutil.copy(retention.__file__, lib / "relaunch_retention.py")
    shutil.copy(webhook.__file__, lib / Path(WEBHOOK_PATH).name)
    return lib / "backup.py"


def alert_files(tmp_path: Path, url: str, token: str | None) -> dict:
    (tmp_path / "alert.url").write_text(url + "\n")
    spec = {"site": "unit", "host": "unit-prod", "topic": None, "url_file": str(tmp_path / "alert.url"), "token_file": None}
    if token:
        (tmp_path / "alert.token").write_text(token + "\n")
        spec["token_file"] = str(tmp_path / "alert.token")
    return spec


def run_stdlib_only(script: Path, config: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-S", str(script), "--config", str(config), "run"],  # no site-packages
                          capture_output=True, text=True, timeout=60, env=env)


def failing(tmp_path: Path, alert: dict) -> Path:
    boom = [sys.executable, "-c", "import sys; print('pg_dump: connection refused', file=sys.stderr); sys.exit(3)"]
    return make_config(tmp_path, dumps={"pg": boom}, alert=alert)


def test_a_failed_run_posts_backup_failed_with_step_and_error_and_records_that_it_did(tmp_path, receiver) -> None:  # noqa: F811
    config = failing(tmp_path, alert_files(tmp_path, receiver.url + SECRET_PATH, TOKEN))
    res = run_stdlib_only(installed(tmp_path), config)
    assert res.returncode == 1, res.stderr
    (got,) = receiver.got
    assert got["path"] == SECRET_PATH and got["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = got["json"]
    assert body["event"] == "backup_failed" and body["site"] == "unit" and body["priority"] == 5
    assert body["details"]["step"] == "dump pg" and "connection refused" in body["details"]["error"]
    assert body["title"] == "relaunch unit: backup failed on unit-prod"
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["ok"] is False and last["alert"]["sent"] is True and last["alert"]["status"] == 200
    # the URL's path and the token are secrets: neither in the status file nor in the runner's output
    for text in ((tmp_path / "state" / "status.json").read_text(), res.stdout, res.stderr):
        assert SECRET_PATH not in text and TOKEN not in text
    assert Run.from_json(last).alerted


def test_a_webhook_that_fails_is_recorded_and_the_run_fails_as_it_would_have(tmp_path, receiver) -> None:  # noqa: F811
    receiver.status["code"] = 503
    config = failing(tmp_path, alert_files(tmp_path, receiver.url + SECRET_PATH, None))
    res = run_stdlib_only(installed(tmp_path), config)
    assert res.returncode == 1 and "backup_failed alert NOT sent" in res.stderr and "HTTP 503" in res.stderr
    last = json.loads((tmp_path / "state" / "status.json").read_text())["runs"][-1]
    assert last["step"] == "dump pg" and last["alert"]["sent"] is False
    assert not Run.from_json(last).alerted  # so the next status check sends it


def test_a_good_run_posts_nothing(tmp_path, receiver) -> None:  # noqa: F811
    config = make_config(tmp_path, alert=alert_files(tmp_path, receiver.url, None))
    res = run_stdlib_only(installed(tmp_path), config)
    assert res.returncode == 0, res.stderr
    assert receiver.got == []


def test_the_status_check_does_not_repeat_a_failure_the_runner_posted() -> None:
    from datetime import datetime, timedelta, timezone

    from relaunch.alerts import backup_alerts

    now = datetime.now(timezone.utc)
    good = Run(id="A", started_at=now - timedelta(minutes=30), finished_at=now, ok=True, local_ok=True, step=None,
               error=None, size=1, seconds=1.0, offsite=None)

    def failed(alerted: bool) -> Run:
        return Run(id=None, started_at=now - timedelta(minutes=5), finished_at=now, ok=False, local_ok=False,
                   step="dump pg", error="boom", size=None, seconds=1.0, offsite=None, alerted=alerted)

    def status(last: Run) -> Status:
        return Status(runs=[good, last], rpo_minutes=60, now=now, timer_active=True)

    assert [a.event for a in backup_alerts("s", "h", status(failed(False)))] == ["backup_failed"]
    assert backup_alerts("s", "h", status(failed(True))) == []


def test_install_gives_the_runner_the_webhook_by_file_0600_never_in_its_config(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    data = yaml.safe_load(EXAMPLE.read_text())
    data["alerts"] = {"webhook_url": "env:HOOK_URL", "token": "env:HOOK_TOKEN", "topic": "t1"}
    (tmp_path / "inventory" / "example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    inv = load_site("example", tmp_path)
    url = "https://hooks.example.test" + SECRET_PATH
    secrets = {"env:HOOK_URL": Secret(url, "env:HOOK_URL"), "env:HOOK_TOKEN": Secret(TOKEN, "env:HOOK_TOKEN")}
    config = backup_config(inv, ["docker-compose"])
    assert config["alert"] == {"site": "example", "host": inv.production.droplet_name, "topic": "t1",
                               "url_file": ALERT_URL_FILE, "token_file": ALERT_TOKEN_FILE}
    files = {f.path: f for f in render_backup_files(inv, {**_other_secrets(inv), **secrets}, ["docker-compose"])}
    assert files[ALERT_URL_FILE].content.decode().strip() == url and files[ALERT_URL_FILE].mode == 0o600
    assert files[ALERT_URL_FILE].secret and files[ALERT_TOKEN_FILE].secret
    assert files[WEBHOOK_PATH].content == Path(webhook.__file__).read_bytes()
    for f in files.values():
        if not f.secret:
            assert SECRET_PATH.encode() not in f.content and TOKEN.encode() not in f.content


def _other_secrets(inv) -> dict:
    """Stand-ins for every other reference the backup files need (the store's password and keys)."""
    from relaunch.inventory.secrets import references

    return {ref: Secret("stand-in", ref) for _, ref in references(inv)}
