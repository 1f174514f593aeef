"""rebuild.secrets_only_on_production: preflight warns when a secret the rebuild needs exists only on production."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from relaunch import rebuild
from relaunch.inventory import load_site

PASSWORD = "correct horse"


class Production:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.scripts: list[str] = []

    def run(self, script: str, **kw: object) -> SimpleNamespace:
        self.scripts.append(script)
        lines = [f"{name} {hashlib.sha256(content.encode()).hexdigest()}" for name, content in self.files.items()]
        return SimpleNamespace(ok=True, stdout="\n".join(lines) + "\n", stderr="")


@pytest.fixture
def inv(tmp_path, monkeypatch):
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))  # no sandbox store recorded
    site = load_site("example")
    off = site.backups.offsite.model_copy(update={"ssh_key": None, "known_hosts": None})
    return site.model_copy(update={"backups": site.backups.model_copy(update={"offsite": off})})


def secrets(password: str = PASSWORD):
    return {"file:../secrets/example/restic-password": SimpleNamespace(reveal=lambda: password)}


def test_warns_when_the_store_key_exists_only_on_production(inv) -> None:
    host = Production({"store_key": "PRIVATE", "restic_password": PASSWORD})
    (warning,) = rebuild.secrets_only_on_production(inv, secrets(), host)
    assert "exists only on production (/etc/relaunch/" in warning and "backups.offsite.ssh_key" in warning
    assert "PRIVATE" not in " ".join(host.scripts)  # only presence and hashes are read


def test_warns_when_productions_store_password_is_not_the_inventorys(inv) -> None:
    host = Production({"restic_password": "another one"})
    warnings = rebuild.secrets_only_on_production(inv, secrets(), host)
    assert any("backups.offsite.password is not the password production's backups use" in w for w in warnings)
    assert not any(PASSWORD in w or "another one" in w for w in warnings)


def test_no_warning_when_the_inventory_holds_what_a_rebuild_needs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))
    site = load_site("example")  # ssh_key and known_hosts given
    assert rebuild.secrets_only_on_production(site, secrets(), Production({"store_key": "K",
                                                                          "restic_password": PASSWORD})) == []
