import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from relaunch.health import check_site, wait_healthy
from relaunch.inventory.model import Inventory

INV = {
    "site": "t",
    "provider": {"kind": "sandbox", "region": "fra1", "size": "s-1vcpu-1gb"},
    "production": {"droplet_name": "t-prod"},
    "apps": [
        {"name": "blog", "kind": "systemd", "domain": "blog.t.test", "port": 8081,
         "systemd": {"unit_template": "x.j2"}, "health": [{"path": "/health", "contains": '"posts":'}]},
        {"name": "notes", "kind": "systemd", "domain": "notes.t.test", "port": 8082,
         "systemd": {"unit_template": "y.j2"}, "health": [{"path": "/health", "status": 200}]},
    ],
    "dns": {"zone": "t.test", "records": [{"name": "@"}]},
}


class Handler(BaseHTTPRequestHandler):
    answers: dict = {}

    def do_GET(self):  # noqa: N802
        status, body = self.answers.get(self.headers["Host"], (404, b"no such host"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_check_site_sends_each_apps_host_header(server) -> None:
    Handler.answers = {"blog.t.test": (200, b'{"posts": 3}'), "notes.t.test": (200, b"{}")}
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", http_port=server.server_address[1])
    assert report.ok, [r.describe() for r in report.results]


def test_check_site_names_the_failed_check(server) -> None:
    Handler.answers = {"blog.t.test": (200, b'{"other": 1}'), "notes.t.test": (503, b"down")}
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", http_port=server.server_address[1])
    assert not report.ok
    details = {r.app: r.detail for r in report.failures()}
    assert details == {"blog": "body lacks '\"posts\":'", "notes": "expected status 200"}


def test_check_site_reports_no_answer_without_raising() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", http_port=port)
    assert [r.status for r in report.results] == [None, None]
    assert all("no answer" in r.detail for r in report.results)


def test_wait_healthy_returns_the_last_failing_report_when_time_runs_out(server) -> None:
    Handler.answers = {}
    report = wait_healthy(Inventory.model_validate(INV), "127.0.0.1", timeout=0.1, http_port=server.server_address[1])
    assert not report.ok


# --- https: SNI and certificate verification against a real TLS server on loopback -----------

HTTPS_INV = {
    **INV,
    "apps": [{**a, "health": [{**a["health"][0], "scheme": "https"}]} for a in INV["apps"]],
    "proxy": {"tls": {"certificate": "/unused/cert.pem", "key": "file:/unused/key"}},
}


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on loopback that answers by Host, records each handshake's SNI and refuses unknown ones."""
    import ssl

    from relaunch.inventory.tls import make_sandbox_certificate

    made = make_sandbox_certificate("t", ["blog.t.test", "notes.t.test"])
    (tmp_path / "cert.pem").write_text(made.certificate)
    (tmp_path / "key.pem").write_text(made.key)
    (tmp_path / "ca.pem").write_text(made.ca)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen: list[str | None] = []

    def sni(sock, name, _ctx):
        seen.append(name)
        return None if name in ("blog.t.test", "notes.t.test") else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    ctx.sni_callback = sni
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, tmp_path / "ca.pem", seen
    srv.shutdown()
    srv.server_close()


def https_inventory(ca, **check) -> Inventory:
    data = {**HTTPS_INV, "proxy": {"tls": {**HTTPS_INV["proxy"]["tls"], "ca": str(ca)}}}
    data["apps"] = [{**a, "health": [{**a["health"][0], **check}]} for a in data["apps"]]
    return Inventory.model_validate(data)


def test_https_check_sends_the_host_as_sni_and_verifies_against_the_ca(tls_server) -> None:
    srv, ca, seen = tls_server
    Handler.answers = {"blog.t.test": (200, b'{"posts": 3}'), "notes.t.test": (200, b"{}")}
    report = check_site(https_inventory(ca), "127.0.0.1", https_port=srv.server_address[1])
    assert report.ok, [r.describe() for r in report.results]
    assert sorted(seen) == ["blog.t.test", "notes.t.test"]
    assert report.results[0].describe().startswith("blog: GET https://blog.t.test/health at 127.0.0.1 -> 200")


def test_https_check_fails_on_a_certificate_from_another_ca(tls_server, tmp_path) -> None:
    from relaunch.inventory.tls import make_sandbox_certificate

    srv, _, _ = tls_server
    other = tmp_path / "other-ca.pem"
    other.write_text(make_sandbox_certificate("t", ["blog.t.test"]).ca)
    Handler.answers = {"blog.t.test": (200, b'{"posts": 3}'), "notes.t.test": (200, b"{}")}
    report = check_site(https_inventory(other), "127.0.0.1", https_port=srv.server_address[1])
    assert not report.ok and all(r.status is None for r in report.results)
    assert "TLS failed for blog.t.test: " in report.results[0].detail
    assert "certificate verify failed" in report.results[0].detail


def test_https_check_fails_for_a_name_the_server_refuses(tls_server) -> None:
    srv, ca, seen = tls_server
    Handler.answers = {"www.t.test": (200, b'{"posts": 3}')}
    report = check_site(https_inventory(ca, host="www.t.test"), "127.0.0.1", https_port=srv.server_address[1])
    assert not report.ok and "www.t.test" in seen
    assert all(r.detail.startswith("TLS failed for www.t.test") for r in report.results)
