"""A store of the user's own, relaunch having no login there: production reaches it append-only with the inventory's
``backups.offsite.append_only_key`` (the user authorized it so), and a bad combination is refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relaunch.backup.site import own_store_access
from relaunch.inventory import load_site
from relaunch.inventory.errors import InventoryError
from relaunch.inventory.secrets import Secret

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
KNOWN = "backup.example.test,10.9.8.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDs8kc0ycLSbDv8zG7zV8Kx1S7Xq0PAxr9yC4jUeK0mB\n"


def site(tmp_path: Path, offsite: dict):
    (tmp_path / "inventory").mkdir(exist_ok=True)
    (tmp_path / "known_hosts").write_text(KNOWN)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["backups"]["offsite"].update({"known_hosts": "../known_hosts", **offsite})
    (tmp_path / "inventory" / "example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_site("example", tmp_path)


def secrets_for(inv) -> dict:
    off = inv.backups.offsite
    return {off.ssh_key: Secret("OPERATOR-KEY", off.ssh_key),
            **({off.append_only_key: Secret("APPEND-KEY", off.append_only_key)} if off.append_only_key else {})}


def test_with_an_append_only_key_the_host_reaches_the_store_through_rclone_with_that_key(tmp_path) -> None:
    inv = site(tmp_path, {"append_only_key": "env:STORE_APPEND_KEY"})
    access = own_store_access(inv, secrets_for(inv))
    host = access["store_host"]
    assert host.append_only and (host.alias, host.address) == ("backup.example.test", "10.9.8.7")
    assert access["store_key"].reveal() == "APPEND-KEY"


def test_without_it_the_host_gets_the_full_access_ssh_key_as_before(tmp_path) -> None:
    inv = site(tmp_path, {})
    access = own_store_access(inv, secrets_for(inv))
    assert not access["store_host"].append_only and access["store_key"].reveal() == "OPERATOR-KEY"


@pytest.mark.parametrize(("offsite", "expected"), [
    ({"append_only_key": "env:K", "known_hosts": None}, "append_only_key needs known_hosts"),
    ({"append_only_key": "file:../secrets/example/offsite/id_ed25519"}, "append_only_key must be another key than ssh_key"),
    ({"append_only_key": "env:K", "kind": "s3"}, "append_only_key is for an sftp store"),
])
def test_the_schema_refuses_what_cannot_work_naming_file_and_key(tmp_path, offsite, expected) -> None:
    with pytest.raises(InventoryError) as exc:
        site(tmp_path, offsite)
    text = str(exc.value)
    assert expected in text and "example.yml" in text and "backups.offsite" in text, text


def test_the_append_only_key_is_a_key_file_of_lines_like_the_ssh_key() -> None:
    from relaunch.inventory.secrets import usage_problem
    from relaunch.remote import new_ed25519

    private = new_ed25519()[0].decode()
    assert usage_problem(("backups", "offsite", "append_only_key"), private) is None
    assert usage_problem(("backups", "offsite", "password"), private) is not None  # a password is one line
