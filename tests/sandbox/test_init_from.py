"""Sandbox: `fab init NAME --from ADDRESS` against the session's production host (read only).

The example site's production Droplet plays a server met for the first time: a new site,
``adopted``, is started from it. Its host key is trusted only after the fingerprint is
confirmed (a wrong one: nothing written, nothing pinned); then what it runs beyond a plain
Debian is drafted (the packages relaunch's bootstrap installed look hand-installed to a
plain Debian; the blog's Compose project with its images and secret environment named by
reference; its databases; its nginx server names), no secret value anywhere in the drafts,
and the key is pinned for the new site. Seconds: one SSH session, one collection.
"""

from __future__ import annotations

import time

import pytest
import yaml

from relaunch.adopt import scan
from relaunch.errors import RelaunchError
from relaunch.init_site import init_from_host
from relaunch.inventory import load_site
from relaunch.state import load_hosts

pytestmark = pytest.mark.sandbox


def test_init_from_a_running_server_drafts_what_it_runs_and_pins_it(up, site_root, target, tmp_path) -> None:
    checkout = tmp_path / "checkout"
    scanned = scan(up.host.ipv4)
    with pytest.raises(RelaunchError, match="nothing was written or pinned"):
        init_from_host("adopted", scanned, "SHA256:somethingelse", target.key_path, root=checkout)
    assert not checkout.exists() and load_hosts("adopted") == {}

    started = time.monotonic()
    made = init_from_host("adopted", scanned, scanned.fingerprint, target.key_path, root=checkout)
    seconds = time.monotonic() - started

    inv = load_site("adopted", checkout)  # the scaffold is valid as made, production.address the server read
    assert str(inv.production.address) == up.host.ipv4
    record = load_hosts("adopted")[made.record.name]
    assert record.host_key == scanned.public_line and record.adopted

    doc = yaml.safe_load(made.inventory_draft.read_text())
    runbook = made.runbook_draft.read_text()
    assert "```sh {step=drift-packages}" in runbook
    for package in ("nginx", "mariadb-server", "docker.io"):
        assert package in runbook, package
    blog = next(a for a in doc["apps"] if a.get("name") == "blog" and a.get("kind") == "compose")
    assert set(blog["compose"]["images"]) == {"web", "db"}
    assert any("PASSWORD" in k for k in blog["secret_env"]), blog  # named, its value left on the host
    assert all(v.startswith("file:../secrets/adopted/") for v in blog["secret_env"].values())
    assert {d["database"] for d in doc["databases"]} >= {"stats", "blog"}
    assert {a["domain"] for a in doc["apps"] if a.get("kind", "").startswith("TODO")} >= {"example.test"}

    drafts = made.inventory_draft.read_text() + runbook
    for secret in sorted((site_root / "secrets" / "example").rglob("*")):
        if secret.is_file() and secret.stat().st_size and secret.suffix not in (".pub", ".crt", ".pem"):
            value = secret.read_text(errors="replace").strip()
            assert value not in drafts, f"the value of {secret.name} is in a draft"
    print(f"fab init --from: {made.findings} finding(s) in {seconds:.1f} s")
