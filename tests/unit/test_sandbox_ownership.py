"""relaunch.sandbox.ownership: a sandbox site brought up from one checkout is not taken over by another.

Two "clones" under tmp_path, each with its own copy of the example inventory (so each makes
its own secrets beside it), one sandbox state directory for both, as on a machine with two
clones. The bring-up's real work is replaced by a recorder: these tests check that a
second bring-up with other secrets stops before any of it.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from relaunch.errors import RelaunchError
from relaunch.inventory import load_site
from relaunch.inventory.secrets import ensure_sandbox_secrets, resolve_all
from relaunch.sandbox import manage, ownership
from relaunch.sandbox import site as sandbox_site

REPO = Path(__file__).resolve().parents[2]


def _clone(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    (root / "inventory").mkdir(parents=True)
    shutil.copy(REPO / "inventory" / "example.yml", root / "inventory")
    return root


@pytest.fixture
def clones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("RELAUNCH_SANDBOX_DIR", str(tmp_path / "sandbox-state"))
    return _clone(tmp_path, "first"), _clone(tmp_path, "second")


@pytest.fixture
def touched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a bring-up did past its start: starting the sandbox, or working on a host."""
    calls: list[str] = []

    def up(**kw):
        calls.append("sandbox started")
        raise AssertionError("the test passes a target")

    def work(inv, *args, **kw):
        calls.append(f"host work for {inv.site}")
        return sandbox_site.SiteUp(site=inv.site)

    monkeypatch.setattr(manage, "up", up)
    monkeypatch.setattr(sandbox_site, "_bring_up", work)
    return calls


def _target(tmp_path: Path) -> sandbox_site.Target:
    return sandbox_site.Target(cloud=None, network="relaunch-sandbox-unused", key_path=tmp_path / "key")  # type: ignore[arg-type]


def test_bring_up_from_a_second_checkout_with_its_own_secrets_stops_before_touching_anything(
        clones, touched, tmp_path) -> None:
    first, second = clones
    sandbox_site.bring_up("example", data_mb=0, root=first, target=_target(tmp_path))
    assert touched == ["host work for example"]
    with pytest.raises(RelaunchError) as exc:
        sandbox_site.bring_up("example", data_mb=0, root=second, target=_target(tmp_path))
    message = str(exc.value)
    assert touched == ["host work for example"]  # nothing more
    assert str(first / "inventory" / "example.yml") in message and str(second / "inventory" / "example.yml") in message
    assert "that checkout" in message and "fab sandbox-down" in message and "Nothing was changed" in message
    for value in resolve_all(load_site("example", second)).values():
        assert value.reveal() not in message
    sandbox_site.bring_up("example", data_mb=0, root=first, target=_target(tmp_path))  # the owner goes on
    assert touched == ["host work for example"] * 2


def test_claim_records_no_secret_value_and_is_private(clones) -> None:
    first, _ = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    secrets = resolve_all(inv)
    ownership.claim(inv, secrets)
    path = ownership.claim_path("example")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert str(first / "inventory" / "example.yml") in text
    for value in secrets.values():
        assert value.reveal() not in text
    assert [p.name for p in path.parent.iterdir()] == ["example.json"]  # no temporary file left


def test_claim_same_secrets_from_another_checkout_goes_on(clones) -> None:
    first, second = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    ownership.claim(inv, resolve_all(inv))
    shutil.copytree(first / "secrets", second / "secrets")  # the other checkout got the same secret files
    other = load_site("example", second)
    ownership.claim(other, resolve_all(other))


def test_claim_refuses_this_checkout_with_its_secrets_remade(clones) -> None:
    first, _ = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    ownership.claim(inv, resolve_all(inv))
    (first / "secrets" / "example" / "blog-db-password").unlink()
    ensure_sandbox_secrets(inv)
    with pytest.raises(RelaunchError, match=r"from this checkout .* other secret values"):
        ownership.claim(inv, resolve_all(inv))


def test_claim_a_remade_tls_key_alone_is_no_conflict(clones) -> None:
    first, _ = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    ownership.claim(inv, resolve_all(inv))
    key = first / "secrets" / "example" / "tls" / "site.key"
    before = key.read_text()
    key.unlink()
    ensure_sandbox_secrets(inv)  # the sandbox makes a new certificate and key
    assert key.read_text() != before
    ownership.claim(inv, resolve_all(inv))


def test_claim_unreadable_record_is_named(clones) -> None:
    first, _ = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    path = ownership.claim_path("example")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(RelaunchError, match="unreadable sandbox site claim"):
        ownership.claim(inv, resolve_all(inv))


def test_secrets_digest_is_salted() -> None:
    inv = load_site("example", REPO)
    from relaunch.inventory.secrets import Secret, Secrets

    secrets = Secrets({"file:x": Secret("same", "file:x")})
    assert ownership.secrets_digest(inv, secrets, b"a" * 16) != ownership.secrets_digest(inv, secrets, b"b" * 16)


def test_claim_a_secret_the_inventory_gained_is_no_conflict_and_then_holds(clones) -> None:
    """Adopting `fab drift --draft`'s additions adds secret references: sandbox-up goes on; a later change refuses."""
    first, _ = clones
    inv = load_site("example", first)
    ensure_sandbox_secrets(inv)
    ownership.claim(inv, resolve_all(inv))
    text = (first / "inventory" / "example.yml").read_text()
    new = first / "secrets" / "example" / "handmade-db-password"
    new.write_text("made-for-the-new-database")
    new.chmod(0o600)
    (first / "inventory" / "example.yml").write_text(text.replace(
        "\ndatabases:\n", "\ndatabases:\n  - {name: handmade, engine: mariadb, database: handmade, user: handmade,\n"
        "     password: 'file:../secrets/example/handmade-db-password'}\n", 1))
    grown = load_site("example", first)
    assert len(grown.databases) == len(inv.databases) + 1
    ownership.claim(grown, resolve_all(grown))  # the new secret joins the claim
    ownership.claim(grown, resolve_all(grown))
    new.write_text("changed-afterwards")
    with pytest.raises(RelaunchError, match="other secret values"):
        ownership.claim(grown, resolve_all(grown))
