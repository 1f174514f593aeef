"""Sandbox: a site whose app nobody on the project wrote — MediaWiki from Debian's archive on MariaDB.

Described the way a new user would: `fab init wiki` (relaunch.init_site) makes the scaffold,
then the inventory, a site runbook (the packages, MediaWiki's one-time installer tagged
``when=fresh``, the link to its configuration) and two site templates (the unit,
LocalSettings.php) from ``examples/own-site/wiki/`` take the scaffold's example's place.
The app is served by PHP-FPM as ``www-data`` (``systemd.php_fpm``: relaunch writes its unit, its
pool and a FastCGI virtual host).
`fab sandbox-up --site wiki` brings it up with its default flags (no seeding flag), with
the backup installed and a first backup taken (what `fab sandbox-up` does); a page and an
uploaded file are made with MediaWiki's own maintenance scripts, a backup runs again, a
drill passes from the off-host store, and a rebuild carries the page and the file to a new
host whose bootstrap left the installer out.
"""

from __future__ import annotations

import json
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import pytest
import requests

from relaunch.drill import DrillOptions, drill
from relaunch.init_site import init_site
from relaunch.inventory import load_site
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.sandbox.site import bring_up
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "own-site" / "wiki"
ENV = "set -a; . /etc/relaunch/wiki.env; set +a"
MAINT = "/usr/share/mediawiki/maintenance"


def png(width: int = 3, height: int = 2, seed: int = 7) -> bytes:
    """A small valid PNG (MediaWiki checks an upload's type by its content)."""
    raw = b"".join(b"\x00" + bytes((seed * (x + y)) % 256 for x in range(width * 3)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def wiki_root(tmp_path: Path) -> Path:
    """A checkout with site `wiki` made by `fab init`, then described as the guide does."""
    root = tmp_path / "checkout"
    made = init_site("wiki", root)
    own = made.site_dir
    shutil.rmtree(own / "templates" / "apps" / "hello")  # the scaffold's example app, and its example notes
    (own / "runbooks" / "50-example.md").unlink()
    (own / "templates" / "apps").mkdir(exist_ok=True)
    shutil.copy(EXAMPLE / "wiki.yml", made.inventory)
    shutil.copytree(EXAMPLE / "runbooks", own / "runbooks", dirs_exist_ok=True)
    shutil.copytree(EXAMPLE / "templates", own / "templates", dirs_exist_ok=True)
    return root


def get(address: str, path: str, **kw) -> requests.Response:
    return requests.get(f"http://{address}{path}", headers={"Host": "wiki.test"}, timeout=20, **kw)


def page_and_file(address: str, title: str, name: str) -> tuple[str, bytes]:
    text = get(address, f"/index.php?title={title}&action=raw").text
    redirect = get(address, f"/index.php?title=Special:Redirect/file/{name}", allow_redirects=False)
    assert redirect.status_code in (301, 302), redirect.status_code
    location = redirect.headers["Location"].split("wiki.test", 1)[-1]
    return text, get(address, location).content


def test_a_third_party_app_from_debian_comes_up_backs_up_and_is_rebuilt(target, sandbox_api, tmp_path) -> None:
    root = wiki_root(tmp_path)
    inv = load_site("wiki", root)
    try:
        up = bring_up("wiki", root=root, target=target, backups=True)  # the defaults of `fab sandbox-up --site wiki`
        assert up.seeded_mb == 0 and up.health is not None and up.health.ok
        assert "mediawiki-install" in up.bootstrap.runbook.changed and up.bootstrap.skipped == []
        conn = open_host(up.host, target.key_path)
        try:  # the PHP-FPM relaunch wrote for the app: as www-data, never root
            owner = conn.run("ps -o user= -p $(systemctl show -p MainPID --value wiki.service)", hide=True,
                             in_stream=False).stdout.strip()
            assert owner == "www-data"
        finally:
            conn.close()
        steps = [r.step.name for r in up.bootstrap.runbook.steps]
        assert steps.index("mariadb") < steps.index("mediawiki-install") < steps.index("systemd-apps")

        title, name = f"Relaunch_{uuid.uuid4().hex[:8]}", "Relaunch_upload.png"
        body, image = f"A page made before the break ({title}).", png()
        conn = open_host(up.host, target.key_path)
        try:
            sftp = conn.sftp()
            with sftp.open("/tmp/page.txt", "w") as fh:
                fh.write(body.encode())
            sftp.mkdir("/tmp/upload")
            with sftp.open(f"/tmp/upload/{name}", "wb") as fh:
                fh.write(image)
            conn.run(f"{ENV}; php {MAINT}/edit.php --user Admin --summary relaunch {title} < /tmp/page.txt && "
                     f"php {MAINT}/importImages.php --user Admin --comment relaunch /tmp/upload", hide=True,
                     in_stream=False, timeout=300)
            assert page_and_file(up.host.ipv4, title, name) == (body, image)
            # `fab backup` on the host: the unit the install put there, run now (a failed run fails the start)
            conn.run("systemctl start relaunch-backup.service", hide=True, in_stream=False, timeout=600)
            listed = conn.run("ls /var/backups/relaunch", hide=True,
                              in_stream=False, warn=True).stdout
            assert listed.strip(), "no backup on the host"
        finally:
            conn.close()

        where = Where(target.cloud, sandbox_api.dns_port, target.key_path)
        rehearsal = drill("wiki", DrillOptions(), root=root, where=where)  # from the off-host backups alone
        assert rehearsal.status == "passed", rehearsal.error
        drilled = json.loads(Path(rehearsal.report_json).read_text())
        assert [(d["name"], d["fingerprint_match"]) for d in drilled["databases"]] == [("wiki", True)]
        assert drilled["files"] and all(f["match"] for f in drilled["files"])
        assert drilled["scratch_destroyed"] is True

        result = rebuild("wiki", RebuildOptions(settle=0), root=root, where=where)
        assert result.status == "passed", result.error
        assert result.journal.state.get("skipped_fresh_steps") == ["mediawiki-install"]  # restored, never reinstalled
        assert all(d["fingerprint_match"] for d in result.record["databases"]), result.record["databases"]
        new = load_hosts("wiki")[result.journal.state["new_name"]]
        assert page_and_file(new.ipv4, title, name) == (body, image)
    finally:
        target.cloud.destroy_droplets_by_tag("relaunch-wiki")
