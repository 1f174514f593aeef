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
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", port=server.server_address[1])
    assert report.ok, [r.describe() for r in report.results]


def test_check_site_names_the_failed_check(server) -> None:
    Handler.answers = {"blog.t.test": (200, b'{"other": 1}'), "notes.t.test": (503, b"down")}
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", port=server.server_address[1])
    assert not report.ok
    details = {r.app: r.detail for r in report.failures()}
    assert details == {"blog": "body lacks '\"posts\":'", "notes": "expected status 200"}


def test_check_site_reports_no_answer_without_raising() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = check_site(Inventory.model_validate(INV), "127.0.0.1", port=port)
    assert [r.status for r in report.results] == [None, None]
    assert all("no answer" in r.detail for r in report.results)


def test_wait_healthy_returns_the_last_failing_report_when_time_runs_out(server) -> None:
    Handler.answers = {}
    report = wait_healthy(Inventory.model_validate(INV), "127.0.0.1", timeout=0.1, port=server.server_address[1])
    assert not report.ok
