"""relaunch.inventory.tls: the site's certificate (sandbox-made or the user's), checked against the inventory."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from relaunch.inventory import InventoryError, load_site, load_text
from relaunch.inventory.check import check_site
from relaunch.inventory.secrets import ensure_sandbox_secrets, resolve_all
from relaunch.inventory.tls import (
    SandboxCertificate,
    key_matches,
    make_sandbox_certificate,
    names_to_cover,
    problems,
    read_certificate,
)
from relaunch.render import TLS_CERTIFICATE, TLS_KEY, RenderContext, preview_images, render_host

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (REPO / "inventory" / "example.yml").read_text()
NAMES = ["example.test", "stats.example.test", "notes.example.test"]


def leaf(made: SandboxCertificate) -> x509.Certificate:
    """The certificate ``made`` is for (the first of its PEM chain)."""
    return x509.load_pem_x509_certificates(made.certificate.encode())[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "example.yml").write_text(EXAMPLE_TEXT)
    return tmp_path


def test_loader_makes_tls_paths_absolute_beside_the_inventory(root: Path) -> None:
    tls = load_site("example", root).proxy.tls
    assert tls is not None
    assert tls.certificate == str(root / "secrets/example/tls/site.crt")
    assert tls.ca == str(root / "secrets/example/tls/ca.crt")
    assert tls.key == "file:../secrets/example/tls/site.key"  # a reference stays as written


def test_an_https_check_without_proxy_tls_is_refused_at_its_key() -> None:
    text = EXAMPLE_TEXT.replace("  tls:\n", "  tls_off:\n", 1)
    with pytest.raises(InventoryError):
        load_text(text)
    start = text.index("  tls_off:")
    end = text.index("\napps:")
    with pytest.raises(InventoryError) as info:
        load_text(text[:start] + text[end:], "inventory/example.yml")
    shown = str(info.value)
    assert "apps[blog].health[0].scheme" in shown and "needs proxy.tls" in shown
    assert "inventory/example.yml:" in shown


def test_names_to_cover_are_every_app_domain(root: Path) -> None:
    assert names_to_cover(load_site("example", root)) == NAMES


def test_sandbox_certificate_covers_the_names_and_matches_its_key() -> None:
    made = make_sandbox_certificate("example", NAMES)
    inv = load_text(EXAMPLE_TEXT)
    cert = leaf(made)
    assert problems(inv, cert) == []
    assert key_matches(cert, made.key)
    assert not key_matches(cert, make_sandbox_certificate("example", NAMES).key)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
    assert any(p.startswith("expired ") for p in problems(inv, cert, now=later))


def test_a_certificate_missing_a_name_says_which() -> None:
    made = make_sandbox_certificate("example", ["example.test", "*.example.org"])
    cert = leaf(made)
    found = problems(load_text(EXAMPLE_TEXT), cert)
    assert found == ["does not cover stats.example.test, notes.example.test (it covers example.test, *.example.org)"]


def test_a_wildcard_covers_one_label_only() -> None:
    made = make_sandbox_certificate("example", ["example.test", "*.example.test"])
    cert = leaf(made)
    assert problems(load_text(EXAMPLE_TEXT), cert) == []
    deeper = load_text(EXAMPLE_TEXT.replace("domain: notes.example.test", "domain: a.notes.example.test"))
    assert problems(deeper, cert)[0].startswith("does not cover a.notes.example.test")


def test_ensure_sandbox_secrets_makes_the_certificate_once_and_remakes_it_when_a_domain_is_added(root: Path) -> None:
    inv = load_site("example", root)
    made = ensure_sandbox_secrets(inv)
    tls_dir = root / "secrets/example/tls"
    assert {tls_dir / "site.key", tls_dir / "site.crt", tls_dir / "ca.crt"} <= set(made)
    assert stat.S_IMODE(os.stat(tls_dir / "site.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tls_dir).st_mode) == 0o700
    secrets = resolve_all(inv)  # the key resolves as a secret (0600, PEM text)
    assert secrets["file:../secrets/example/tls/site.key"].reveal().startswith("-----BEGIN PRIVATE KEY-----")
    first = (tls_dir / "site.crt").read_text()

    assert ensure_sandbox_secrets(load_site("example", root)) == []  # it fits: nothing made
    assert (tls_dir / "site.crt").read_text() == first

    text = (root / "inventory/example.yml").read_text().replace("domain: notes.example.test", "domain: notes2.example.test")
    (root / "inventory/example.yml").write_text(text)
    inv2 = load_site("example", root)
    assert tls_dir / "site.crt" in ensure_sandbox_secrets(inv2)
    _, cert = read_certificate(tls_dir / "site.crt")
    assert problems(inv2, cert) == []
    assert check_site("example", root).missing_sandbox_secrets == []


def test_check_reports_a_real_sites_certificate_problems(root: Path) -> None:
    sandbox_inv = load_site("example", root)
    ensure_sandbox_secrets(sandbox_inv)
    tls_dir = root / "secrets/example/tls"
    # The same files, for a site that is not the sandbox's: relaunch no longer makes them.
    text = (root / "inventory/example.yml").read_text()
    text = text.replace("  kind: sandbox\n", "  kind: digitalocean\n  token: env:RELAUNCH_TEST_TOKEN\n"
                        "  ssh_key: ~/.ssh/id_ed25519\n", 1)
    (root / "inventory/example.yml").write_text(text)
    os.environ["RELAUNCH_TEST_TOKEN"] = "t"
    try:
        assert check_site("example", root).inventory.proxy.tls is not None  # everything fits

        other = make_sandbox_certificate("example", ["example.test"])
        (tls_dir / "site.crt").write_text(other.certificate)
        with pytest.raises(InventoryError) as info:
            check_site("example", root)
        shown = str(info.value)
        assert "proxy.tls.certificate" in shown and "does not cover stats.example.test, notes.example.test" in shown
        assert "proxy.tls.key: file:../secrets/example/tls/site.key is not the private key of" in shown

        (tls_dir / "ca.crt").unlink()
        with pytest.raises(InventoryError, match=r"proxy.tls.ca: .*ca.crt: expected PEM CA certificates"):
            check_site("example", root)
        (tls_dir / "site.crt").write_text("not a certificate\n")
        with pytest.raises(InventoryError, match=r"proxy.tls.certificate: expected a PEM certificate: .* holds no PEM"):
            check_site("example", root)
    finally:
        del os.environ["RELAUNCH_TEST_TOKEN"]


def test_render_puts_the_certificate_and_its_key_on_the_host(root: Path) -> None:
    inv = load_site("example", root)
    ensure_sandbox_secrets(inv)
    ctx = RenderContext(inventory=inv, secrets=resolve_all(inv), images=preview_images(inv, True), sandbox=True)
    files = {f.path: f for f in render_host(ctx)}
    cert, key = files[TLS_CERTIFICATE], files[TLS_KEY]
    assert (cert.mode, cert.secret) == (0o644, False) and cert.content.decode() == (root / "secrets/example/tls/site.crt").read_text()
    assert (key.mode, key.secret) == (0o600, True) and key.content.startswith(b"-----BEGIN PRIVATE KEY-----")
    vhost = files["/etc/nginx/sites-available/relaunch-blog.conf"].content.decode()
    assert "listen 443 ssl;" in vhost and f"ssl_certificate {TLS_CERTIFICATE};" in vhost and f"ssl_certificate_key {TLS_KEY};" in vhost
    default = files["/etc/nginx/sites-available/relaunch-default.conf"].content.decode()
    assert "listen 443 ssl default_server;" in default and "ssl_reject_handshake on;" in default
    assert b"PRIVATE KEY" not in b"".join(f.content for f in files.values() if not f.secret)
