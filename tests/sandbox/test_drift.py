"""Sandbox: `fab drift` of the example site against the reference a drill recorded.

Production is the session's example site (backups installed, as `fab sandbox-up --site` leaves
it). A drill records the reference (the manifest of the host it rebuilt from the inventory)
and runs the drift check itself: nothing drifts. Then changes are made by hand over SSH — a
package installed (cron, with its dependencies: exim4 and friends), a cron job, an edited
/etc file, an extra systemd timer, an extra container, an extra database, a new file in an
app's tree outside its `files` — and the check reports exactly these, one finding each, and
nothing else; its draft holds no secret value.

Then the draft's additions are put in place as a user would: its inventory entries completed
(secret references, their files filled from where the values live on production), its
runbook steps among the site's own runbooks (with a step for the unit files and the /etc
edit it lists), one site template (the Compose app's file, now with a port and a health
check); production is brought in line (`fab sandbox-up` again: its bootstrap, what a deploy
is) and its backup reinstalled. A rebuild rehearsed into a fresh host from the backups (a
drill, kept: a real rebuild would move the session's production away from the tests that
follow) carries every one of them, and the drift check it runs reports nothing.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
import time
from pathlib import Path

import pytest
import yaml

from relaunch.backup.site import connect_production, install_site
from relaunch.drift.check import NoReference, check, drift
from relaunch.drift.collect import references_dir
from relaunch.drill import DrillOptions, cleanup, drill
from relaunch.inventory import load_site
from relaunch.provision import open_host
from relaunch.rebuild import Where
from relaunch.sandbox.site import bring_up
from relaunch.state import load_hosts
from tests.conftest import SEED_MB

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]
log = logging.getLogger(__name__)

TOKEN = "s3cret-set-by-hand"
#: The units made by hand on production; the site's drafted step writes the same bytes (cmp finds no change after).
HAND_SERVICE = """[Unit]
Description=a cleanup made by hand
[Service]
Type=oneshot
ExecStart=/bin/true
"""
HAND_TIMER = """[Unit]
Description=a cleanup made by hand
[Timer]
OnCalendar=daily
[Install]
WantedBy=timers.target
"""
CRON_LINE = '17 3 * * * /usr/bin/find /srv/blog/uploads -name "*.tmp" -delete'
HAND = r"""
set -e
DEBIAN_FRONTEND=noninteractive apt-get install -y -q cron >/dev/null 2>&1
echo '%(cron)s' | crontab -
echo '# raised by hand' >> /etc/nginx/nginx.conf
cat > /etc/systemd/system/hand-cleanup.service <<'UNIT'
%(service)sUNIT
cat > /etc/systemd/system/hand-cleanup.timer <<'UNIT'
%(timer)sUNIT
systemctl daemon-reload
systemctl enable --now hand-cleanup.timer
# a Compose project started by hand, the way a project's README says
read -ra compose < /etc/relaunch/compose-command
mkdir -p /opt/hand-extra
cat > /opt/hand-extra/docker-compose.yml <<YML
version: "3.7"
services:
  extra:
    image: $(docker inspect --format '{{.Config.Image}}' blog_web_1)
    entrypoint: [sleep, infinity]
    environment:
      HAND_API_TOKEN: %(token)s
      HAND_MODE: nightly
YML
COMPOSE_HTTP_TIMEOUT=600 "${compose[@]}" -p hand-extra -f /opt/hand-extra/docker-compose.yml up -d >/dev/null 2>&1
mariadb -e 'CREATE DATABASE handmade; CREATE TABLE handmade.kept (v VARCHAR(20)); INSERT INTO handmade.kept VALUES ("by hand")'
mkdir -p /srv/blog/notes-by-hand
echo 'remember to renew the certificate' > /srv/blog/notes-by-hand/renew.txt
""" % {"cron": CRON_LINE, "token": TOKEN, "service": HAND_SERVICE, "timer": HAND_TIMER}

#: What the draft lists for /etc and the units without a step of its own, written as the site's own step.
UNITS_STEP = """# 44 — Set up by hand once, now written down

The cleanup timer and the nginx.conf line `fab drift --draft` found on production.

```sh {step=hand-units}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/hand-cleanup.service" <<'UNIT'
""" + HAND_SERVICE + """UNIT
cat > "$tmp/hand-cleanup.timer" <<'UNIT'
""" + HAND_TIMER + """UNIT
for f in hand-cleanup.service hand-cleanup.timer; do
  if ! cmp -s "$tmp/$f" "/etc/systemd/system/$f"; then
    install -m 0644 "$tmp/$f" "/etc/systemd/system/$f"
    systemctl daemon-reload
    echo "relaunch: changed"
  fi
done
if ! grep -qxF '# raised by hand' /etc/nginx/nginx.conf; then
  echo '# raised by hand' >> /etc/nginx/nginx.conf
  echo "relaunch: changed"
fi
```
"""

#: The Compose app's file, from production's /opt/hand-extra/docker-compose.yml, given a port for its health check.
EXTRA_COMPOSE = """version: "3.7"
services:
  extra:
    image: {{ images.extra | compose }}
    entrypoint: ["python3", "-m", "http.server", "8099"]
    env_file: {{ env_file | compose }}
    ports: ["127.0.0.1:{{ app.port }}:8099"]
    restart: unless-stopped
"""

UNDO = r"""
crontab -r || true
ids=$(docker ps -aq --filter label=com.docker.compose.project=hand-extra); [ -z "$ids" ] || docker rm -f $ids
docker network rm hand-extra_default >/dev/null 2>&1 || true
rm -rf /opt/hand-extra /srv/hand-extra /etc/relaunch/hand-extra.env /etc/relaunch/secrets/handmade.password
rm -f /etc/nginx/sites-enabled/relaunch-hand-extra.conf /etc/nginx/sites-available/relaunch-hand-extra.conf
systemctl reload nginx || true
mariadb -e 'DROP DATABASE IF EXISTS handmade; DROP USER IF EXISTS handmade@localhost'
rm -rf /srv/blog/notes-by-hand
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


@pytest.mark.timeout(1800)  # two drills and a bring-up: about 10 minutes on a quiet machine
def test_drift_reports_exactly_what_was_changed_by_hand(with_backups, site_root, target, sandbox_api) -> None:
    inv = load_site("example", site_root)
    shutil.rmtree(references_dir("example"), ignore_errors=True)  # an earlier drill of the session may have made one
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
            "project:hand-extra",
            "database:native mariadb/handmade",
            "file:/srv/blog/notes-by-hand",
        }, json.dumps([f.to_json() for f in found.findings], indent=1)
        assert "container hand-extra_extra_1" in got["project:hand-extra"].related
        assert got["etc:/etc/nginx/nginx.conf"].change == "differs"
        assert "unit cron.service" in got["package:cron"].related
        assert "unit hand-cleanup.service" in got["unit:hand-cleanup.timer"].related
        assert "not backed up" in got["database:native mariadb/handmade"].detail
        # the draft: what to add, with secret references and never a secret value
        assert paths is not None
        inventory_yaml, runbook_md = (p.read_text() for p in paths)
        doc = yaml.safe_load(inventory_yaml)
        assert doc["files_to_add"] == {"blog": ["/srv/blog/notes-by-hand"]}
        assert doc["databases"][0]["database"] == "handmade"
        assert doc["apps"][0]["secret_env"] == {"HAND_API_TOKEN": "file:../secrets/example/hand-extra-hand-api-token"}
        assert doc["apps"][0]["env"]["HAND_MODE"] == "nightly"
        assert doc["apps"][0]["compose"]["images"] == {"extra": "relaunch-sandbox-registry:5000/example/blog"}
        assert TOKEN not in inventory_yaml + runbook_md and TOKEN not in json.dumps(found.manifest)
        assert "```sh {step=drift-packages}" in runbook_md and "crontab -u root -" in runbook_md
        for ref in ("blog-db-password", "stats-db-password", "restic-password"):
            secret = (site_root / "secrets/example" / ref) if (site_root / "secrets/example" / ref).exists() else None
            value = secret.read_text().strip() if secret else None
            assert not value or (value not in inventory_yaml and value not in runbook_md)

        put_in_place_then_rehearse(site_root, target, where, doc, runbook_md)
    finally:
        conn.run("bash", in_stream=io.StringIO(UNDO), hide=True, warn=True, timeout=600)
        conn.close()
        restore_site(site_root, target)


INVENTORY = "inventory/example.yml"
ADDED = ("sites/example", "secrets/example/handmade-db-password", "secrets/example/hand-extra-hand-api-token")


def put_in_place_then_rehearse(site_root, target, where, doc: dict, runbook_md: str) -> None:
    """The draft's additions adopted (completed where it says TODO), production brought in line, a rehearsed rebuild."""
    inv_file = site_root / INVENTORY
    (site_root / f"{INVENTORY}.before-drift").write_text(inv_file.read_text())
    data = yaml.safe_load(inv_file.read_text())
    blog = next(a for a in data["apps"] if a["name"] == "blog")
    blog["files"] += doc["files_to_add"]["blog"]
    db = dict(doc["databases"][0], user="handmade")  # the draft's TODO: the user the database gets
    data["databases"].append(db)
    app = dict(doc["apps"][0], domain="extra.example.test", port=8099, health=[{"path": "/"}])
    app["compose"] = dict(app["compose"], images={"extra": "example/blog"})  # the sandbox's own image, by repository
    data["apps"].append(app)
    inv_file.write_text(yaml.safe_dump(data, sort_keys=False))
    # the secret files the draft names, filled from where the values live (the container's environment)
    for ref, value in ((db["password"], secrets.token_hex(12)), (app["secret_env"]["HAND_API_TOKEN"], TOKEN)):
        path = (inv_file.parent / ref.removeprefix("file:")).resolve()
        path.write_text(value)
        path.chmod(0o600)
    own = site_root / "sites/example"
    (own / "runbooks").mkdir(parents=True)
    (own / "runbooks/44-by-hand.md").write_text(UNITS_STEP)
    (own / "runbooks/45-drift-draft.md").write_text(runbook_md)  # the draft's steps, as drafted
    (own / "templates/apps/hand-extra").mkdir(parents=True)
    (own / "templates/apps/hand-extra/compose.yml.j2").write_text(EXTRA_COMPOSE)
    inv = load_site("example", site_root)

    # production brought in line with its description (the handmade user and password file, the app deployed)
    again = bring_up("example", data_mb=SEED_MB, root=site_root, target=target)
    assert again.health is not None and again.health.ok
    install_site(inv, target.key_path)

    result = drill("example", DrillOptions(keep=True), root=site_root, where=where)
    try:
        assert result.status == "passed", result.error
        # the drift check the drill ran: production against the host rebuilt from the description
        assert result.record["drift"]["drifted"] is False, json.dumps(result.record["drift"], indent=1)
        scratch = open_host(load_hosts("example")[result.journal.state["new_name"]], target.key_path)
        try:
            carried = scratch.run(
                "dpkg-query -W -f='${db:Status-Status}' cron; echo; crontab -l | grep -vc '^#'; "
                "grep -c '# raised by hand' /etc/nginx/nginx.conf; systemctl is-enabled hand-cleanup.timer; "
                "docker ps --filter label=com.docker.compose.project=hand-extra --format '{{.Names}}'; "
                "mariadb -N -e 'SELECT v FROM handmade.kept'; cat /srv/blog/notes-by-hand/renew.txt",
                hide=True, in_stream=False, timeout=60).stdout.split("\n")
        finally:
            scratch.close()
        assert carried[:7] == ["installed", "1", "1", "enabled", "hand-extra_extra_1", "by hand",
                               "remember to renew the certificate"], carried
        assert TOKEN not in Path(result.report_json).read_text() + Path(result.report_md).read_text()
    finally:
        cleanup("example", root=site_root, where=where)


def restore_site(site_root, target) -> None:
    """The session's example site as it was: its inventory, no site files, its rendered files, the backup config."""
    before = site_root / f"{INVENTORY}.before-drift"
    if not before.exists():
        return
    (site_root / INVENTORY).write_text(before.read_text())
    before.unlink()
    for rel in ADDED:
        path = site_root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    # production's rendered files and runbook state back to the original inventory's (the draft's bring-up
    # changed them): later tests of the session bring the site up again and expect no change
    bring_up("example", data_mb=0, root=site_root, target=target)
    install_site(load_site("example", site_root), target.key_path)
