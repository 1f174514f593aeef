"""Sandbox: the rebuild story from a production host relaunch did not build, reached as a passwordless sudoer.

The host serving the site (found through the authoritative DNS, as a user knows his server
by its address) is given to a machine that has never seen it: a fresh state directory, an
inventory naming only `production.address` and `production.user: admin`. On the host, through
its console (docker exec, as one reads a Droplet's fingerprint in the provider's web
console), `admin` becomes a sudoer with NOPASSWD holding relaunch's login key, and root no
longer takes that key: every command relaunch runs there must go through sudo. That host
was set up by running the runbooks (by relaunch; nothing here depends on who ran them).

Then, as a user would: `fab adopt --fingerprint` pins its key; `fab backup --install` puts the
backup on it; the host breaks (apps and MariaDB stopped after a last marker row, SSH still
answering) and `fab rebuild` brings the site back on a new Droplet with a final sync over
sudo (RPO 0, every fingerprint and tree matching); the old host's apps and timer are left
disabled. Finally `fab dns-switch --to old` puts the old host back in service: its apps and
backup timer on again, the records back, what was undone said.

Marked ``retires_production``: it runs after every other test of the session but the rebuild
stories of tests/faults/test_rebuild_stories.py, and like them leaves the session's site changed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from relaunch.adopt import pin, scan
from relaunch.backup.site import install_site
from relaunch.handback import switch_to_old
from relaunch.inventory import load_site
from relaunch.provision import open_host
from relaunch.rebuild import RebuildOptions, Where, rebuild
from relaunch.state import load_hosts

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy, pytest.mark.retires_production]

_spec = importlib.util.spec_from_file_location(
    "rebuild_story", Path(__file__).parents[1] / "faults" / "test_rebuild_stories.py")
_story = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_story)  # the story's helpers: one copy
COMPOSE, write_markers, read_markers = _story.COMPOSE, _story.write_markers, _story.read_markers
authoritative_a, check_report = _story.authoritative_a, _story.check_report

MAKE_SUDOER = r"""set -e
id admin >/dev/null 2>&1 || useradd -m -s /bin/bash admin
install -d -m 0700 -o admin -g admin /home/admin/.ssh
install -m 0600 -o admin -g admin /root/.ssh/authorized_keys /home/admin/.ssh/authorized_keys
printf 'admin ALL=(ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/admin && chmod 0440 /etc/sudoers.d/admin
mv -f /root/.ssh/authorized_keys /root/.ssh/authorized_keys.before-adopt
ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2
"""


class Console:
    """A Droplet's console (docker exec as root): what a user has besides SSH; ``run`` as Fabric's, for the helpers."""

    def __init__(self, container) -> None:
        self.container = container

    def run(self, script: str, **kw) -> SimpleNamespace:
        code, out = self.container.exec_run(["bash", "-c", script], demux=True)
        stdout = (out[0] or b"").decode()
        if code != 0 and not kw.get("warn"):
            raise AssertionError(f"console: exit {code}: {(out[1] or b'').decode()[-800:]}")
        return SimpleNamespace(ok=code == 0, stdout=stdout, exited=code)


@pytest.mark.timeout(1800)  # run alone it brings the example site up first (minutes on a loaded machine)
def test_rebuild_of_a_hand_built_host_reached_as_a_sudoer_then_back_to_it(
        up, site_root, target, sandbox_api, sandbox_backend, monkeypatch, tmp_path) -> None:
    started = time.monotonic()
    # The serving host, as the world sees it; a machine that has never seen it.
    (address,) = authoritative_a(sandbox_api, "example.test.")
    droplet = next(d for d in target.cloud.list_droplets("relaunch-example") if d.ipv4 == address)
    console = Console(sandbox_backend.client.containers.get(sandbox_backend.container_name(droplet.id)))
    fingerprint = console.run(MAKE_SUDOER).stdout.strip()
    assert fingerprint.startswith("SHA256:")
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "never-seen-it"))
    root = tmp_path / "site"
    (root / "inventory").mkdir(parents=True)
    data = yaml.safe_load((site_root / "inventory/example.yml").read_text())
    data["production"] = {"address": address, "user": "admin"}
    secrets = str((site_root / "secrets").resolve())
    (root / "inventory/example.yml").write_text(yaml.safe_dump(_moved(data, secrets), sort_keys=False))
    inv = load_site("example", root)
    where = Where(target.cloud, sandbox_api.dns_port, target.key_path)

    # fab adopt --fingerprint SHA256:...  then  fab backup --install
    record = pin(inv, scan(address), fingerprint, target.key_path)
    assert record.user == "admin" and record.adopted
    installed = install_site(inv, target.key_path)
    assert installed.next_run
    admin = open_host(record, target.key_path)
    try:
        assert admin.run("id -u", hide=True, in_stream=False).stdout.strip() == "0"  # through sudo
        assert admin.run_as_login("id -un", hide=True, in_stream=False).stdout.strip() == "admin"
    finally:
        admin.close()

    # The break, then the rebuild.
    marker = f"hand-built-{tmp_path.name[-8:]}"
    before = read_markers(console)  # earlier tests of the session may have left rows of their own
    console.run(f"systemctl stop stats notes && {COMPOSE} stop web")
    write_markers(console, marker)
    console.run("systemctl stop mariadb")
    done = rebuild("example", RebuildOptions(settle=0), root=root, where=where)
    assert done.status == "passed", done.error
    report = check_report(done)
    assert report["source"] == "live" and report["rpo_seconds"] == 0
    new = load_hosts("example")[done.journal.state["new_name"]]
    assert authoritative_a(sandbox_api, "example.test.") == [new.ipv4]
    fresh = open_host(new, target.key_path)
    try:
        after = {engine: sorted(rows) for engine, rows in read_markers(fresh).items()}
        assert after == {engine: sorted([*rows, marker]) for engine, rows in before.items()}
    finally:
        fresh.close()
    enabled = console.run("systemctl is-enabled stats.service notes.service relaunch-backup.timer", warn=True)
    assert enabled.stdout.split() == ["disabled", "disabled", "disabled"]
    assert "relaunch-link" not in console.run("cat /home/admin/.ssh/authorized_keys").stdout  # the link key is gone

    # fab dns-switch --to old: the old host back in service.
    back = switch_to_old(target.cloud, inv, target.key_path, dns_port=sandbox_api.dns_port)
    assert back.result.ok
    assert authoritative_a(sandbox_api, "example.test.") == [address]
    enabled = console.run("systemctl is-enabled stats.service notes.service relaunch-backup.timer; "
                          "systemctl is-active stats.service notes.service relaunch-backup.timer", warn=True)
    assert enabled.stdout.split() == ["enabled"] * 3 + ["active"] * 3
    assert any("started and enabled again" in line for line in back.undone)
    assert any("backup timer on again" in line for line in back.undone)
    hosts = load_hosts("example")
    assert hosts[record.name].role == "production" and hosts[new.name].role == "spare"
    print(f"\nadopted-host story: {time.monotonic() - started:.0f} s (site already up); rebuild phases: "
          + ", ".join(f"{p['name']} {p['seconds']:.0f} s" for p in report["phases"]))


def _moved(value, secrets: str):
    """The inventory's references to ../secrets/ made absolute (the inventory moved; its secrets did not)."""
    if isinstance(value, dict):
        return {k: _moved(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, secrets) for v in value]
    if isinstance(value, str) and "../secrets/" in value:
        return value.replace("../secrets", secrets, 1)
    return value
