"""The example site brought up from nothing on a sandbox "production" Droplet, as `fab sandbox-up --site example` does.

Its images come from the sandbox registry by digest; the Droplet is bootstrapped from the
runbooks with the rendered files; the three apps run on PostgreSQL (in Compose), MariaDB
(native) and SQLite, are seeded, keep writing, and answer their health checks through
nginx with each app's Host header.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import docker
import pytest

from relaunch import apps
from relaunch.health import check_site
from relaunch.inventory import load_site
from relaunch.inventory.secrets import resolve_all
from relaunch.provision import open_host
from relaunch.sandbox.images import build_example_images
from relaunch.sandbox.registry import Registry
from relaunch.sandbox.site import Target, bring_up

pytestmark = [pytest.mark.sandbox, pytest.mark.heavy]



@pytest.fixture
def conn(up, target: Target):
    c = open_host(up.host, target.key_path)
    yield c
    c.close()


def sh(conn, command: str) -> str:
    return conn.run(command, hide=True, in_stream=False, timeout=300).stdout.strip()


def test_images_are_pinned_by_digest_and_cached(sandbox_backend) -> None:
    client = docker.from_env()
    base = sandbox_backend._base()  # noqa: SLF001 - the session's base image tag
    registry = Registry(client, sandbox_backend.network, base)
    first = build_example_images(client, base, registry)
    assert set(first) == {"example/blog", "example/postgres"}
    for repo, ref in first.items():
        assert ref.startswith(f"relaunch-sandbox-registry:5000/{repo}@sha256:")
    assert build_example_images(client, base, registry) == first  # warm: same digests, nothing rebuilt


def test_site_comes_up_from_nothing_and_every_health_check_passes(up, site_root: Path) -> None:
    assert up.created
    assert up.seeded_mb > 0
    assert up.bootstrap.files_written and up.bootstrap.runbook.changed
    # again from here: every check on the Droplet's address, each with its app's Host header
    report = check_site(load_site("example", site_root), up.host.ipv4)
    assert report.ok, [r.describe() for r in report.results]
    assert {r.host for r in report.results} == {"example.test", "stats.example.test", "notes.example.test"}


def test_a_wrong_host_header_does_not_reach_an_app(up) -> None:
    import requests

    # nginx's default server closes the connection without an answer (444)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{up.host.ipv4}/health", headers={"Host": "nobody.example.test"}, timeout=5)


def test_https_serves_the_sites_certificate_by_sni_and_refuses_unknown_names(up, site_root: Path) -> None:
    import socket
    import ssl

    inv = load_site("example", site_root)
    assert inv.proxy.tls is not None and inv.proxy.tls.ca
    trusted = ssl.create_default_context(cafile=inv.proxy.tls.ca)

    def handshake(name: str, context: ssl.SSLContext) -> dict:
        with socket.create_connection((up.host.ipv4, 443), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(f"GET /health HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            return {"cert": tls.getpeercert(), "answer": answer.decode(errors="replace")}

    for app in inv.apps:  # every app over TLS, its own name as SNI, verified against the site's CA
        got = handshake(app.domain, trusted)
        assert ("DNS", app.domain) in got["cert"]["subjectAltName"]
        assert got["answer"].startswith("HTTP/1.1 200"), got["answer"][:200]
    # a name no app has: the handshake itself is refused (no certificate shown)
    loose = ssl.create_default_context()
    loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
        handshake("nobody.example.test", loose)
    # the certificate is not trusted without the site's CA (the system's do not know it)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("example.test", ssl.create_default_context())


def test_dns_zone_points_at_the_production_droplet(up, target: Target) -> None:
    records = {r.name: r.data for r in target.cloud.list_records("example.test", type="A")}
    assert records == {"@": up.host.ipv4, "stats": up.host.ipv4, "notes": up.host.ipv4}
    assert up.host.ipv6 and up.host.ipv6.startswith("fd")  # the sandbox network's own unique local /64
    assert {r.name: r.data for r in target.cloud.list_records("example.test", type="AAAA")} == {"@": up.host.ipv6}


def test_every_health_check_passes_over_ipv6_too(up, site_root: Path) -> None:
    report = check_site(load_site("example", site_root), f"[{up.host.ipv6}]")
    assert report.ok, [r.describe() for r in report.results]
    assert {r.scheme for r in report.results} == {"https", "http"}


def test_the_three_engines_hold_the_seeded_rows(up, conn) -> None:
    compose = sh(conn, "cat /etc/relaunch/compose-command")
    pg = f"{compose} -f /srv/blog/compose.yml exec -T db psql -U blog -d blog -tAc"
    posts = int(sh(conn, f"{pg} {shlex.quote('SELECT count(*) FROM posts')}"))
    uploads = int(sh(conn, f"{pg} {shlex.quote('SELECT count(*) FROM uploads')}"))
    views = int(sh(conn, "mariadb -N -B stats -e 'SELECT count(*) FROM page_views'"))
    notes = int(sh(conn, "sqlite3 /srv/notes/notes.db 'SELECT count(*) FROM notes'"))
    assert posts > 20 and uploads > 2 and views > 500 and notes > 50, (posts, uploads, views, notes)
    assert int(sh(conn, "find /srv/blog/uploads -type f | wc -l")) == uploads  # every upload row has its file
    assert sh(conn, "sqlite3 /srv/notes/notes.db 'PRAGMA integrity_check'") == "ok"
    assert sh(conn, "sqlite3 /srv/notes/notes.db 'PRAGMA journal_mode'") == "wal"


def test_apps_keep_writing(up, conn) -> None:
    def counts() -> tuple[int, int, int]:
        blog = json.loads(sh(conn, "curl -s 127.0.0.1:8081/health"))
        stats = json.loads(sh(conn, "curl -s 127.0.0.1:8082/health"))
        notes = json.loads(sh(conn, "curl -s 127.0.0.1:8083/health"))
        return blog["comments"], stats["views"], notes["notes"]

    before = counts()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = counts()
        if all(n > b for n, b in zip(now, before)):
            return
        time.sleep(0.5)
    raise AssertionError(f"rows did not grow in 30 s: {before} -> {now}")


def test_blog_health_needs_its_database(up, conn) -> None:
    compose = sh(conn, "cat /etc/relaunch/compose-command") + " -f /srv/blog/compose.yml"
    sh(conn, f"{compose} stop db")
    try:
        assert sh(conn, "curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:8081/health") == "503"
    finally:
        sh(conn, f"{compose} start db")


def test_stopping_the_writers_brings_the_databases_up_and_a_second_stop_changes_nothing(up, conn, site_root: Path) -> None:
    # what a final sync does on a host in any state: here the blog's database is down and its app up
    inv = load_site("example", site_root)
    compose = sh(conn, "cat /etc/relaunch/compose-command") + " -p blog -f /srv/blog/compose.yml --env-file /etc/relaunch/blog.env"
    running = "docker ps -q --filter label=com.docker.compose.project=blog --filter label=com.docker.compose.service={}"
    timer_was = sh(conn, f"systemctl is-active {apps.BACKUP_TIMER} || true") == "active"
    sh(conn, f"{compose} stop db")
    try:
        assert sh(conn, running.format("db")) == "" and sh(conn, running.format("web")) != ""
        stopped = apps.stop_writers(conn, inv, databases_up=True)
        assert stopped.compose == shlex.split(sh(conn, "cat /etc/relaunch/compose-command"))
        assert stopped.backup_timer is timer_was and stopped.services == {"blog": ["web"]}
        assert sh(conn, running.format("web")) == "" and sh(conn, running.format("db")) != ""
        assert sh(conn, "systemctl is-active stats.service notes.service || true").split() == ["inactive", "inactive"]
        assert sh(conn, "systemctl is-active mariadb") == "active"
        # nothing left to stop, every database up: the same state again, the timer reported as it now is (off)
        again = apps.stop_writers(conn, inv, databases_up=True)
        assert again.backup_timer is False and sh(conn, running.format("web")) == ""
        assert sh(conn, running.format("db")) != ""
    finally:
        apps.start_apps(conn, inv)
        if timer_was:
            apps.enable_backup_timer(conn, True)
    assert sh(conn, running.format("web")) != ""


def test_secrets_are_0600_on_the_host_and_nowhere_else(up, conn, site_root: Path) -> None:
    inv = load_site("example", site_root)
    values = [s.reveal() for s in resolve_all(inv).values()]
    assert values
    modes = sh(conn, "stat -c '%a %n' /etc/relaunch/*.env /etc/relaunch/secrets/*").split("\n")
    expected = {f"/etc/relaunch/{a}.env" for a in ("blog", "stats", "notes")} | {
        f"/etc/relaunch/secrets/{d}.password" for d in ("blog", "stats")
    } | {"/etc/relaunch/secrets/tls.key"}
    assert expected <= {line.split(" ", 1)[1] for line in modes}, modes
    assert all(line.startswith("600 ") for line in modes), modes
    readable = sh(conn, "find /etc /srv -xdev -type f -perm /044 -size -1M -print0 | xargs -0 cat 2>/dev/null; ps -eo args")
    for value in values:
        assert value not in readable
        for line in value.splitlines():  # a PEM key: no line of its body either
            assert line.startswith("-----") or line not in readable


def test_a_second_bring_up_changes_nothing(up, site_root: Path, target: Target) -> None:
    # last in this file: it runs the bootstrap again on the shared site
    again = bring_up("example", data_mb=up.seeded_mb, root=site_root, target=target)
    assert not again.created and again.host == up.host
    assert again.bootstrap.files_written == []
    assert again.bootstrap.runbook.changed == []
    assert again.seeded_mb == 0
    assert again.health.ok
