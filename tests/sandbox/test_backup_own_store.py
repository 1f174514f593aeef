"""A store of the user's own (relaunch has no login on it) made append-only by the line `fab backup --install` gives.

On the session's example site, from a state directory that knows only the production host
(not the backup Droplet: relaunch cannot log in to the store), with a new key pair as
``backups.offsite.append_only_key``: the first install stops with the exact line to add to
the store user's authorized_keys, production left as it was; the user adds it (through the store's console); the
second install passes, production's backup reaches the store through rclone's append-only
restic server with that key, and a ``restic forget`` from production fails (403) with the
snapshot still there. Afterwards the site's backup is installed again as it was.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from relaunch.backup import install as inst
from relaunch.backup.install import parse_sftp
from relaunch.backup.sandbox_store import backup_host_record
from relaunch.backup.site import connect_production, install_site
from relaunch.backup.status import list_backups, run_now
from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.remote import new_ed25519
from relaunch.state import load_hosts, save_host

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]


def test_a_store_of_your_own_becomes_append_only_with_the_line_install_gives(
        up, site_root: Path, target, sandbox_backend, monkeypatch, tmp_path: Path) -> None:
    inv = load_site("example", site_root)
    store = backup_host_record(inv)
    assert store is not None
    console = sandbox_backend.client.containers.get(sandbox_backend.container_name(store.droplet_id))
    production = load_hosts("example")[inv.production.droplet_name]
    repo = parse_sftp(inv.backups.offsite.repository)

    # this machine knows the production host only; the store is the user's
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))
    save_host("example", production)
    private, public = new_ed25519()
    key_file = tmp_path / "append_only_key"
    key_file.write_bytes(private)
    key_file.chmod(0o600)
    (tmp_path / "site" / "inventory").mkdir(parents=True)
    (tmp_path / "site" / "secrets").symlink_to((site_root / "secrets").resolve())
    data = yaml.safe_load((site_root / "inventory/example.yml").read_text())
    data["backups"]["offsite"]["append_only_key"] = f"file:{key_file}"
    (tmp_path / "site" / "inventory/example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    own = load_site("example", tmp_path / "site")
    line = f'restrict,command="{inst.APPEND_ONLY_SERVER} {repo.path}" {public}'
    def production_files() -> str:
        conn = connect_production(own, target.key_path)
        try:
            done = conn.run(f"sha256sum {inst.CONFIG_PATH} {inst.STORE_KEY}", hide=True, in_stream=False, warn=True)
            return done.stdout + done.stderr  # run alone, the site's backup is not installed yet: both missing
        finally:
            conn.close()

    try:
        before = production_files()
        with pytest.raises(RelaunchError) as refused:
            install_site(own, target.key_path)
        assert line in str(refused.value) and f"~{repo.user}/.ssh/authorized_keys" in str(refused.value), refused.value
        assert "nothing was changed on the production host" in str(refused.value)
        assert private.decode().strip() not in str(refused.value)
        assert production_files() == before

        # the user adds the line on the store, as root there
        add = f"printf '%s relaunch-own-store\\n' {shlex.quote(line)} >> ~{repo.user}/.ssh/authorized_keys"
        code, out = console.exec_run(["sh", "-c", add])
        assert code == 0, out
        done = install_site(own, target.key_path)
        assert done.store_append_only and done.store_line is not None and done.store_line.startswith(line)
        conn = connect_production(own, target.key_path)
        try:
            config = json.loads(conn.run(f"cat {inst.CONFIG_PATH}", hide=True, in_stream=False).stdout)["offsite"]
            assert config["repository"] == f"rclone:{repo.host}:{repo.path}" and config["append_only"]
            run = run_now(conn, "example")
            assert run.ok and run.id in [u["id"] for u in run.offsite["uploaded"]], run
            snapshot = next(s["full_id"] for s in list_backups(conn, "example")["offsite"] if s["id"] == run.id)
            argv = ["restic", "-r", config["repository"], *config["options"], "forget", snapshot]
            forget = conn.run(f"RESTIC_PASSWORD_FILE={inst.RESTIC_PASSWORD_FILE} RESTIC_CACHE_DIR={inst.RESTIC_CACHE} "
                              + shlex.join(argv), hide=True, in_stream=False, warn=True, timeout=300)
            assert not forget.ok and "403 Forbidden" in forget.stderr, forget.stderr[-1500:]
            assert run.id in [s["id"] for s in list_backups(conn, "example")["offsite"]]
        finally:
            conn.close()
    finally:
        monkeypatch.undo()
        install_site(inv, target.key_path)  # the site's own install again (the store authorizes the host's key)
