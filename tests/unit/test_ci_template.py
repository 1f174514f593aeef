"""templates/ci: the workflow passes actionlint (pinned in the test extras); its script runs here with a stand-in fab."""

from __future__ import annotations

import base64
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "templates" / "ci"

FAB = """#!/bin/sh
# stand-in for fab: checks what the script set up, writes a report, exits as told
set -e
[ "$1 $2 $3" = "drill --site mysite" ]
[ "$DIGITALOCEAN_ACCESS_TOKEN" = "tok" ] && [ "$RESTIC_PASSWORD" = "pw" ]
[ "$(stat -c %a "$HOME/.ssh/relaunch_ed25519")" = 600 ] && grep -q PRIVATE "$HOME/.ssh/relaunch_ed25519"
[ "$(stat -c %a secrets/mysite/db.password)" = 600 ] && [ "$(cat secrets/mysite/db.password)" = s3cret ]
grep -q pinned "$RELAUNCH_STATE_DIR/sites/mysite/hosts.json"
ls "$RELAUNCH_STATE_DIR/sites/mysite/reports/" > "$RELAUNCH_STATE_DIR/seen-before"
echo '{"status": "failed"}' > "$RELAUNCH_STATE_DIR/sites/mysite/reports/drill-2.json"
exit "${STANDIN_EXIT:-0}"
"""


def test_the_workflow_passes_actionlint() -> None:
    lint = shutil.which("actionlint") or str(Path(os.sys.executable).with_name("actionlint"))
    done = subprocess.run([lint, "-no-color", str(CI / "github-drill.yml")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_script_sets_up_every_secret_restores_the_trend_and_keeps_the_reports(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    fab = tmp_path / "fab"
    fab.write_text(FAB)
    fab.chmod(0o755)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"s3cret"
        info = tarfile.TarInfo("secrets/mysite/db.password")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    (work / "ci-reports").mkdir()
    (work / "ci-reports" / "drill-1.json").write_text('{"status": "passed"}')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "RELAUNCH_SITE": "mysite", "RELAUNCH_FAB": str(fab),
           "RELAUNCH_STATE_DIR": str(tmp_path / "state"), "DIGITALOCEAN_ACCESS_TOKEN": "tok", "RESTIC_PASSWORD": "pw",
           "RELAUNCH_SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----",
           "RELAUNCH_HOSTS_JSON": '{"mysite-prod": "pinned"}',
           "RELAUNCH_SECRET_FILES": base64.b64encode(buf.getvalue()).decode()}
    for code in (0, 1):
        done = subprocess.run(["bash", str(CI / "drill.sh")], cwd=work, env={**env, "STANDIN_EXIT": str(code)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == code, done.stdout + done.stderr
    assert "drill-1.json" in (tmp_path / "state" / "seen-before").read_text()  # the earlier report, for the trend
    assert sorted(p.name for p in (work / "ci-reports").iterdir()) == ["drill-1.json", "drill-2.json"]
    assert stat.S_IMODE((work / "secrets/mysite/db.password").stat().st_mode) == 0o600
