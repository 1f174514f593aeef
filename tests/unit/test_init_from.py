"""`fab init NAME --from ADDRESS`: a new site's drafts from a manifest of the host alone (no reference)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from relaunch.adopt import ScannedKey
from relaunch.drift.draft import draft
from relaunch.drift.host_only import baseline, from_host
from relaunch.errors import RelaunchError
from relaunch.init_site import init_from_host
from tests.unit.test_drift_compare import manifest

SECRET = "s3cr3t-value-never-drafted"


def hand_built() -> dict[str, Any]:
    """A server set up by hand: a plain Debian plus nginx, MariaDB with a database, a Compose app, a cron job."""
    m = copy.deepcopy(manifest())
    m["packages"].update({
        "bash": {"version": "5.2", "manual": True, "priority": "required"},
        "openssh-server": {"version": "9.2", "manual": True, "priority": "optional"},
        "mariadb-server": {"version": "10.11", "manual": True, "priority": "optional"},
        "htop": {"version": "3.2", "manual": True, "priority": "optional"},
        "libc6": {"version": "2.36", "manual": False, "priority": "required"},
        "libmariadb3": {"version": "10.11", "manual": False, "priority": "optional"},
    })
    m["etc"]["/etc/mysql/conf.d/tuning.cnf"] = {"type": "file", "sha256": "9" * 64, "mode": "0o644", "secret": False,
                                                "package": None}
    m["etc"]["/etc/ssh/sshd_config"] = {"type": "file", "sha256": "8" * 64, "mode": "0o644", "secret": False,
                                        "package": "openssh-server"}
    m["cron"].append({"source": "/var/spool/cron/crontabs/root", "entry": "0 3 * * * /root/cleanup.sh", "package": None})
    m["containers"]["blog_web_1"].update(image="docker.io/library/wordpress:6.4", env={"WORDPRESS_DB_HOST": "db"},
                                         env_names=["WORDPRESS_DB_HOST", "WORDPRESS_DB_PASSWORD"])
    m["databases"].append({"server": "native mariadb", "engine": "mariadb", "name": "shop"})
    return m


def test_baseline_keeps_a_plain_debian_and_leaves_what_was_set_up_by_hand() -> None:
    m = hand_built()
    base = baseline(m)
    assert {"bash", "openssh-server", "libc6", "libmariadb3"} <= set(base["packages"])
    assert not {"nginx", "mariadb-server", "htop", "docker.io"} & set(base["packages"])
    assert "/etc/ssh/sshd_config" in base["etc"] and "/etc/mysql/conf.d/tuning.cnf" not in base["etc"]
    keys = {f"{f.kind}:{f.subject}" for f in from_host(m).findings}
    assert {"package:nginx", "package:mariadb-server", "package:htop", "package:docker.io",
            "etc:/etc/mysql/conf.d/tuning.cnf", "unit:stats.service", "project:blog",
            "database:native mariadb/shop", "database:native mariadb/stats", "server_name:example.test"} <= keys, keys
    assert "package:openssh-server" not in keys and "package:bash" not in keys and "package:libc6" not in keys
    assert not any(k.startswith("user:root") for k in keys)


def test_drafts_from_the_host_name_secret_references_never_values() -> None:
    m = hand_built()
    d = draft("shop", from_host(m).findings, "203.0.113.7")
    text = d.inventory_yaml + d.runbook_md
    assert "file:../secrets/shop/" in d.inventory_yaml and "WORDPRESS_DB_PASSWORD" in d.inventory_yaml
    assert "docker.io/library/wordpress:6.4" in d.inventory_yaml  # a public image stays named by its tag
    assert "apt-get install" in d.runbook_md and "mariadb-server" in d.runbook_md and "cleanup.sh" in d.runbook_md
    assert SECRET not in text


def test_init_from_host_refuses_an_unconfirmed_key_writing_nothing(tmp_path: Path) -> None:
    scanned = ScannedKey("192.0.2.10", 22, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZxZ1bI0Ke4x7i4qf7+0qGd8r0cG5O7o9v3yQx8sY0B")
    with pytest.raises(RelaunchError, match="nothing was written or pinned"):
        init_from_host("shop", scanned, "SHA256:not-it", tmp_path / "key", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_init_from_host_refuses_an_existing_site_before_any_connection(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "shop.yml").write_text("site: shop\n")
    scanned = ScannedKey("192.0.2.10", 22, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZxZ1bI0Ke4x7i4qf7+0qGd8r0cG5O7o9v3yQx8sY0B")
    with pytest.raises(RelaunchError, match="never overwrites"):
        init_from_host("shop", scanned, scanned.fingerprint, tmp_path / "key", root=tmp_path)


def test_init_from_host_writes_scaffold_and_drafts_then_pins(tmp_path: Path, monkeypatch) -> None:
    import relaunch.init_site as mod

    scanned = ScannedKey("192.0.2.10", 22, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZxZ1bI0Ke4x7i4qf7+0qGd8r0cG5O7o9v3yQx8sY0B")

    class Conn:
        def run(self, *_a, **_k):
            return type("R", (), {"stdout": "0\n"})()

        def close(self) -> None:
            pass

    pinned: list[Any] = []
    monkeypatch.setattr(mod, "connect", lambda *a, **k: Conn())
    monkeypatch.setattr(mod, "wait_for_ssh", lambda *a, **k: 0.0)
    monkeypatch.setattr(mod, "collect_host", lambda *a, **k: hand_built())
    monkeypatch.setattr(mod, "pin", lambda inv, s, c, k: pinned.append((inv.site, str(inv.production.address), c)) or "rec")
    made = init_from_host("shop", scanned, scanned.fingerprint, tmp_path / "key", root=tmp_path)
    assert pinned == [("shop", "192.0.2.10", scanned.fingerprint)]
    assert made.inventory_draft == tmp_path / "sites" / "shop" / "draft" / "inventory-additions.yml"
    assert made.inventory_draft.stat().st_mode & 0o777 == 0o600
    assert "mariadb-server" in made.runbook_draft.read_text()
    assert "address: 192.0.2.10" in made.scaffold.inventory.read_text()
    assert not (tmp_path / "sites" / "shop" / "runbooks" / "runbook-additions.md").exists()  # a draft never runs as is
