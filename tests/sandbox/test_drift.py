"""Sandbox: `fab drift` of the example site against the reference a drill recorded.

Production is the session's example site (backups installed, as `fab sandbox-up --site` leaves
it). A drill records the reference (the manifest of the host it rebuilt from the inventory)
and runs the drift check itself: nothing drifts. Then changes are made by hand over SSH — a
package installed (cron, with its dependencies: exim4 and friends), a cron job, an edited
/etc file, an extra systemd timer, an extra container, an extra database, a new file in an
app's tree outside its `files` — and the check reports exactly these, one finding each, and
nothing else; its draft holds no secret value.
"""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import yaml

from relaunch.backup.site import connect_production, install_site
from relaunch.drill import DrillOptions, drill
from relaunch.drift.check import NoReference, check, drift
from relaunch.inventory import load_site
from relaunch.rebuild import Where

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)

TOKEN = "s3cret-set-by-hand"
CRON_LINE = '17 3 * * * /usr/bin/find /srv/blog/uploads -name "*.tmp" -delete'
HAND = r"""
set -e
DEBIAN_FRONTEND=noninteractive apt-get install -y -q cron >/dev/null 2>&1
echo '%(cron)s' | crontab -
echo '# raised by hand' >> /etc/nginx/nginx.conf
cat > /etc/systemd/system/hand-cleanup.service <<'UNIT'
[Unit]
Description=a cleanup made by hand
[Service]
Type=oneshot
ExecStart=/bin/true
UNIT
cat > /etc/systemd/system/hand-cleanup.timer <<'UNIT'
[Unit]
Description=a cleanup made by hand
[Timer]
OnCalendar=daily
[Install]
WantedBy=timers.target
UNIT
systemctl daemon-reload
systemctl enable --now hand-cleanup.timer
docker run -d --name hand-extra -e HAND_API_TOKEN=%(token)s -e HAND_MODE=nightly --entrypoint sleep "$(docker inspect --format '{{.Image}}' blog_web_1)" infinity >/dev/null
mariadb -e 'CREATE DATABASE handmade'
echo 'remember to renew the certificate' > /srv/blog/notes-by-hand.txt
""" % {"cron": CRON_LINE, "token": TOKEN}

UNDO = r"""
crontab -r || true
docker rm -f hand-extra || true
mariadb -e 'DROP DATABASE IF EXISTS handmade'
rm -f /srv/blog/notes-by-hand.txt
systemctl disable --now hand-cleanup.timer || true
rm -f /etc/systemd/system/hand-cleanup.timer /etc/systemd/system/hand-cleanup.service
systemctl daemon-reload
sed -i '/# raised by hand/d' /etc/nginx/nginx.conf
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove cron >/dev/null 2>&1 || true
"""


@pytest.fixture(scope="module")
def with_backups(up, site_root, target):
    install_site(load_site("example", site_root), target.key_path)
    return up


def test_drift_reports_exactly_what_was_changed_by_hand(with_backups, site_root, target, sandbox_api) -> None:
    inv = load_site("example", site_root)
    with pytest.raises(NoReference, match="run a drill first"):
        check(inv, target.key_path)

    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
    result = drill("example", DrillOptions(), root=site_root, where=where)
    assert result.status == "passed", result.error
    # the drill recorded the reference and checked production against it: straight from sandbox-up, nothing drifts
    assert result.record["drift"]["drifted"] is False, result.record["drift"]
    assert result.record["drift"]["reference"]["kind"] == "drill"

    started = time.monotonic()
    clean = check(inv, target.key_path)
    seconds = time.monotonic() - started
    log.warning("drift check of a host straight from sandbox-up: %.1f s (%.1f s on the host), %d ignored",
                seconds, clean.host_seconds, len(clean.comparison.ignored))
    assert clean.findings == [], [f.to_json() for f in clean.findings]

    conn = connect_production(inv, target.key_path)
    try:
        run = conn.run("bash -euo pipefail", in_stream=io.StringIO(HAND), hide=True, warn=True, timeout=600)
        assert run.ok, run.stdout + run.stderr
        found, paths = drift("example", root=site_root, key_path=target.key_path, write_draft=True)
        got = {f.key: f for f in found.findings}
        assert set(got) == {
            "package:cron",
            f"cron:/var/spool/cron/crontabs/root: {CRON_LINE}",
            "etc:/etc/nginx/nginx.conf",
            "unit:hand-cleanup.timer",
            "container:hand-extra",
            "database:native mariadb/handmade",
            "file:/srv/blog/notes-by-hand.txt",
        }, json.dumps([f.to_json() for f in found.findings], indent=1)
        assert got["etc:/etc/nginx/nginx.conf"].change == "differs"
        assert "unit cron.service" in got["package:cron"].related
        assert "unit hand-cleanup.service" in got["unit:hand-cleanup.timer"].related
        assert "not backed up" in got["database:native mariadb/handmade"].detail
        # the draft: what to add, with secret references and never a secret value
        assert paths is not None
        inventory_yaml, runbook_md = (p.read_text() for p in paths)
        doc = yaml.safe_load(inventory_yaml)
        assert doc["files_to_add"] == {"blog": ["/srv/blog/notes-by-hand.txt"]}
        assert doc["databases"][0]["database"] == "handmade"
        assert doc["apps"][0]["secret_env"] == {"HAND_API_TOKEN": "file:../secrets/example/hand-extra-hand-api-token"}
        assert doc["apps"][0]["env"]["HAND_MODE"] == "nightly"
        assert TOKEN not in inventory_yaml + runbook_md and TOKEN not in json.dumps(found.manifest)
        assert "```sh {step=drift-packages}" in runbook_md and "crontab -u root -" in runbook_md
        for ref in ("blog-db-password", "stats-db-password", "restic-password"):
            secret = (site_root / "secrets/example" / ref) if (site_root / "secrets/example" / ref).exists() else None
            value = secret.read_text().strip() if secret else None
            assert not value or (value not in inventory_yaml and value not in runbook_md)
    finally:
        conn.run("bash", in_stream=io.StringIO(UNDO), hide=True, warn=True, timeout=600)
        conn.close()
