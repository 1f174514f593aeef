"""relaunch.inventory.secrets: references resolve to Secrets that never show their value."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

from relaunch.inventory import InventoryError, Secret, Secrets, ensure_sandbox_secrets, load, load_site, load_text, masked, resolve_all
from relaunch.inventory.secrets import missing_sandbox_secrets, references

REPO = Path(__file__).resolve().parents[2]
# The example without its TLS section (those secrets are tested in test_tls.py).
_FULL = (REPO / "inventory" / "example.yml").read_text()
EXAMPLE_TEXT = (_FULL[: _FULL.index("  # HTTPS on 443")] + _FULL[_FULL.index("\napps:") + 1:]).replace("scheme: https", "scheme: http")
# ... and without the store's login key for rebuilds (tested below on its own).
EXAMPLE_TEXT = "\n".join(line for line in EXAMPLE_TEXT.splitlines()
                         if not line.strip().startswith(("ssh_key: file:../secrets/example/offsite", "known_hosts:")))
BLOG = "file:../secrets/example/blog-db-password"
STATS = "file:../secrets/example/stats-db-password"
RESTIC = "file:../secrets/example/restic-password"  # backups.offsite.password


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of the example inventory in a temporary root; returns the inventory file."""
    (tmp_path / "inventory").mkdir()
    path = tmp_path / "inventory" / "example.yml"
    path.write_text(EXAMPLE_TEXT)
    return path


def write_secret(path: Path, value: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)
    path.chmod(mode)


def test_secret_never_shows_its_value(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("hunter2", "env:DB_PASSWORD")
    assert s.reveal() == "hunter2"
    shown = [str(s), repr(s), f"{s}", f"{s!r}", f"{s:>20}", "%s" % s, "%r" % (s,), "{}".format(s), str([s]), str({"k": s})]
    assert all("hunter2" not in text for text in shown)
    assert str(s) == "***" and f"{s:>20}" == "***"
    assert repr(s) == "Secret('env:DB_PASSWORD', ***)"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("relaunch.test").info("password %s %r", s, s)
        logging.getLogger("relaunch.test").info("password %s", {"pw": s})
    assert "hunter2" not in caplog.text and "***" in caplog.text


def test_secret_is_not_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("hunter2"))


def test_secret_equality_by_value() -> None:
    assert Secret("a", "env:X") == Secret("a", "file:y")
    assert Secret("a") != Secret("b")


def test_masked_replaces_every_value_longest_first() -> None:
    secrets = Secrets({"env:A": Secret("pass"), "env:B": Secret("password123")})
    text = "mysql -ppassword123 && echo pass; PGPASSWORD=pass"
    assert masked(text, secrets) == "mysql -p*** && echo ***; PGPASSWORD=***"
    assert secrets.mask(text) == masked(text, secrets)
    assert masked("nothing here", [Secret("x" * 10), ""]) == "nothing here"
    assert masked("a b", ["b"]) == "a ***"


def test_references_lists_every_secret_field(site: Path) -> None:
    inv = load(site)
    refs = {(p, r) for p, r in references(inv)}
    assert (("databases", 0, "password"), BLOG) in refs
    assert (("apps", 0, "secret_env", "POSTGRES_PASSWORD"), BLOG) in refs
    assert (("backups", "offsite", "password"), RESTIC) in refs
    assert len(refs) == 5


def test_resolve_all_reads_files_relative_to_the_inventory(site: Path) -> None:
    write_secret(site.parent.parent / "secrets/example/blog-db-password", "blog-pw\n")
    write_secret(site.parent.parent / "secrets/example/stats-db-password", "stats-pw")
    write_secret(site.parent.parent / "secrets/example/restic-password", "restic-pw")
    secrets = resolve_all(load(site))
    assert secrets[BLOG].reveal() == "blog-pw"  # trailing newline dropped
    assert secrets[STATS].reveal() == "stats-pw"
    assert "blog-pw" not in repr(secrets)


def test_resolve_all_env_and_home(site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    write_secret(home / "relaunch-test-secret", "from-home")
    write_secret(site.parent.parent / "secrets/example/restic-password", "restic-pw")
    text = site.read_text().replace(BLOG, "env:RELAUNCH_TEST_PW").replace(STATS, "file:~/relaunch-test-secret")
    site.write_text(text)
    monkeypatch.setenv("RELAUNCH_TEST_PW", "from-env")
    secrets = resolve_all(load(site))
    assert secrets["env:RELAUNCH_TEST_PW"].reveal() == "from-env"
    assert secrets["file:~/relaunch-test-secret"].reveal() == "from-home"


def test_resolve_all_reports_every_problem_with_key_paths(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site.write_text(site.read_text().replace(STATS, "env:RELAUNCH_UNSET_PW"))
    write_secret(site.parent.parent / "secrets/example/restic-password", "restic-pw")
    monkeypatch.delenv("RELAUNCH_UNSET_PW", raising=False)
    with pytest.raises(InventoryError) as info:
        resolve_all(load(site))
    lines = str(info.value).splitlines()
    assert lines[0] == f"{info.value.file}: 2 problems"
    assert "apps[blog].secret_env.POSTGRES_PASSWORD, databases[blog].password: file ../secrets/example/blog-db-password" in lines[1]
    assert lines[1].endswith("does not exist")
    assert "apps[stats].secret_env.STATS_DB_PASSWORD, databases[stats].password: environment variable RELAUNCH_UNSET_PW is not set" in lines[2]
    first_use = next(i for i, line in enumerate(site.read_text().splitlines(), 1) if "POSTGRES_PASSWORD:" in line)
    assert f":{first_use}: " in lines[1]  # the line of the first key that uses it
    assert [p.code for p in info.value.problems] == ["secret-missing-file", "secret-missing-env"]


def test_resolve_all_refuses_empty_env(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site.write_text(site.read_text().replace(BLOG, "env:RELAUNCH_EMPTY_PW").replace(STATS, "env:RELAUNCH_EMPTY_PW"))
    monkeypatch.setenv("RELAUNCH_EMPTY_PW", "")
    with pytest.raises(InventoryError, match="environment variable RELAUNCH_EMPTY_PW is empty"):
        resolve_all(load(site))


def test_resolve_all_refuses_a_group_readable_file_with_chmod_hint(site: Path) -> None:
    root = site.parent.parent
    write_secret(root / "secrets/example/blog-db-password", "leaky-value", mode=0o644)
    write_secret(root / "secrets/example/stats-db-password", "ok")
    with pytest.raises(InventoryError) as info:
        resolve_all(load(site))
    msg = str(info.value)
    assert "databases[blog].password: file ../secrets/example/blog-db-password" in msg
    assert "accessible by group or others (mode 0644); run: chmod 600 " + str(root / "secrets/example/blog-db-password") in msg
    assert "leaky-value" not in msg


@pytest.mark.parametrize(("content", "why"), [("", "is empty"), ("\n", "is empty"), (b"\xff\xfe", "is not UTF-8 text")])
def test_resolve_all_refuses_unusable_files(site: Path, content: str | bytes, why: str) -> None:
    root = site.parent.parent
    for name in ("blog-db-password", "stats-db-password"):
        p = root / "secrets/example" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        p.chmod(0o600)
    with pytest.raises(InventoryError, match=why):
        resolve_all(load(site))


def test_resolve_all_refuses_a_directory(site: Path) -> None:
    root = site.parent.parent
    (root / "secrets/example/blog-db-password").mkdir(parents=True)
    write_secret(root / "secrets/example/stats-db-password", "ok")
    with pytest.raises(InventoryError, match="blog-db-password .* is not a regular file"):
        resolve_all(load(site))


def test_resolve_all_needs_base_dir_for_inventory_from_text() -> None:
    inv = load_text(EXAMPLE_TEXT)
    with pytest.raises(ValueError, match="base_dir"):
        resolve_all(inv)


def test_ensure_sandbox_secrets_creates_private_files_once(site: Path) -> None:
    inv = load(site)
    root = site.parent.parent
    assert missing_sandbox_secrets(inv) == [
        root / "secrets/example/blog-db-password", root / "secrets/example/stats-db-password",
        root / "secrets/example/restic-password",
    ]
    created = ensure_sandbox_secrets(inv)
    assert [p.name for p in created] == ["blog-db-password", "stats-db-password", "restic-password"]
    for p in created:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    for d in (root / "secrets", root / "secrets/example"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    secrets = resolve_all(inv)
    assert len(secrets[BLOG].reveal()) >= 32 and secrets[BLOG] != secrets[STATS]
    assert ensure_sandbox_secrets(inv) == []  # idempotent: nothing left to create
    assert missing_sandbox_secrets(inv) == []


def test_ensure_sandbox_secrets_does_nothing_for_digitalocean(site: Path) -> None:
    text = site.read_text().replace("kind: sandbox", "kind: digitalocean\n  token: env:DO_TOKEN\n  ssh_key: ~/.ssh/id_ed25519")
    site.write_text(text)
    inv = load(site)
    assert ensure_sandbox_secrets(inv) == []
    assert not (site.parent.parent / "secrets").exists()


def test_ensure_sandbox_secrets_keeps_existing_files(site: Path) -> None:
    existing = site.parent.parent / "secrets/example/blog-db-password"
    write_secret(existing, "mine")
    created = ensure_sandbox_secrets(load(site))
    assert [p.name for p in created] == ["stats-db-password", "restic-password"]
    assert existing.read_text() == "mine"


def test_ensure_sandbox_secrets_makes_the_store_login_key_an_ssh_key(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "example.yml").write_text(_FULL)
    inv = load_site("example", tmp_path)
    created = ensure_sandbox_secrets(inv)
    key = tmp_path / "secrets/example/offsite/id_ed25519"
    assert key in created
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (key.stat().st_mode & 0o777) == 0o600 and (key.parent.stat().st_mode & 0o777) == 0o700
