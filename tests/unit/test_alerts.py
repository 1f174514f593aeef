"""Alerts: the JSON a webhook on 127.0.0.1 receives, ntfy's shape, what alerts and what does not."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from relaunch import alerts
from relaunch.backup.status import Run, Status
from relaunch.inventory import load_site
from relaunch.inventory.errors import InventoryError
from relaunch.inventory.secrets import Secret, Secrets

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"


@pytest.fixture
def receiver():
    got: list[dict] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append({"path": self.path, "headers": dict(self.headers),
                        "json": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", got=got, status=status)
    server.shutdown()
    server.server_close()


def site(tmp_path: Path, alerts_cfg: dict | None):
    (tmp_path / "inventory").mkdir(exist_ok=True)
    data = yaml.safe_load(EXAMPLE.read_text())
    if alerts_cfg is not None:
        data["alerts"] = alerts_cfg
    (tmp_path / "inventory" / "example.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_site("example", tmp_path)


FAILED = {"site": "example", "id": "D1", "status": "failed", "error": "database notes: table notes: 2 rows, expected 3 (-1)",
          "missed": [], "phases": [{"name": "data", "status": "done"}, {"name": "verify", "status": "failed"}],
          "backup_id": "B", "rto_seconds": 90.0, "rpo_seconds": 10, "scratch_destroyed": True}


def test_a_failed_drill_posts_a_generic_json_body_naming_phase_and_error(tmp_path, receiver) -> None:
    inv = site(tmp_path, {"webhook": receiver.url + "/hook"})
    sent = alerts.after_drill(inv, Secrets(), FAILED, "/state/report.md")
    assert [s.ok for s in sent] == [True] and sent[0].status == 200
    assert sent[0].to == receiver.url  # scheme, host and port: never the path
    [post] = receiver.got
    assert post["path"] == "/hook" and post["headers"]["Content-Type"] == "application/json"
    body = post["json"]
    assert body["event"] == "drill_failed" and body["site"] == "example" and body["priority"] == 4
    assert body["title"] == "relaunch example: drill failed at verify"
    assert "table notes" in body["message"] and "/state/report.md" in body["message"]
    assert body["details"]["failed_phase"] == "verify" and body["tags"][:2] == ["warning", "relaunch"]


def test_with_a_topic_the_body_is_exactly_ntfys_json_publish_and_the_token_a_bearer(tmp_path, receiver,
                                                                                     monkeypatch) -> None:
    monkeypatch.setenv("T_NTFY", "tk_secret")
    inv = site(tmp_path, {"webhook": receiver.url, "topic": "relaunch-x7", "token": "env:T_NTFY"})
    record = {**FAILED, "error": "objective missed: RTO 2001 s > 30 min", "missed": ["RTO 2001 s > 30 min"],
              "phases": [{"name": "health", "status": "done"}]}
    sent = alerts.after_drill(inv, Secrets({"env:T_NTFY": Secret("tk_secret", "env:T_NTFY")}), record)
    assert sent[0].ok
    post = receiver.got[0]
    assert set(post["json"]) == {"topic", "title", "message", "priority", "tags"}
    assert post["json"]["topic"] == "relaunch-x7" and "objective_missed" in post["json"]["tags"]
    assert "RTO 2001 s > 30 min" in post["json"]["message"]
    assert post["headers"]["Authorization"] == "Bearer tk_secret"


def test_a_passing_drill_sends_nothing_and_no_webhook_means_no_alert(tmp_path, receiver) -> None:
    assert alerts.after_drill(site(tmp_path, {"webhook": receiver.url}), Secrets(), {**FAILED, "status": "passed"}) == []
    assert alerts.after_drill(site(tmp_path, None), Secrets(), FAILED) == []
    assert receiver.got == []


def test_a_webhook_that_fails_is_reported_not_raised_and_a_secret_url_never_shown(tmp_path, receiver,
                                                                                   monkeypatch) -> None:
    receiver.status["code"] = 500
    monkeypatch.setenv("T_HOOK", receiver.url + "/s3cr3t-path")
    inv = site(tmp_path, {"webhook_url": "env:T_HOOK"})
    [sent] = alerts.after_drill(inv, Secrets({"env:T_HOOK": Secret(receiver.url + "/s3cr3t-path", "env:T_HOOK")}), FAILED)
    assert not sent.ok and sent.status == 500 and "s3cr3t" not in sent.describe()
    assert sent.to == "alerts.webhook_url (env:T_HOOK)"
    # nobody listening: a connection error, still no exception
    dead = site(tmp_path, {"webhook": "http://127.0.0.1:9/x"})
    [sent] = alerts.after_drill(dead, Secrets(), FAILED)
    assert not sent.ok and "URLError" in sent.error


def test_backup_status_alerts_a_failed_run_and_a_backup_older_than_the_rpo(tmp_path, receiver) -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)

    def run(minutes_ago: int, ok: bool, **kw) -> Run:
        t = now - timedelta(minutes=minutes_ago)
        return Run.from_json({"started_at": t.isoformat(), "finished_at": t.isoformat(), "ok": ok, "id": f"B{minutes_ago}",
                              "state": "finished", **kw})

    st = Status([run(60, True), run(5, False, step="offsite", error="restic backup exited 1")], 20, now, True)
    inv = site(tmp_path, {"webhook": receiver.url})
    sent = alerts.after_backup_status(inv, st, Secrets())
    assert [s.event for s in sent] == ["backup_failed", "backup_stale"] and all(s.ok for s in sent)
    failed, stale = (p["json"] for p in receiver.got)
    assert "failed at step offsite: restic backup exited 1" in failed["message"] and failed["priority"] == 5
    assert "B60" in stale["message"] and "older than the RPO objective of 20 min" in stale["message"]
    healthy = Status([run(5, True)], 20, now, True)
    assert alerts.after_backup_status(inv, healthy, Secrets()) == []


@pytest.mark.parametrize("cfg, expected", [
    ({"webhook": "ftp://x.test/"}, "http:// or https://"),
    ({"webhook": "https://a.test", "webhook_url": "env:X"}, "not both"),
    ({"topic": "t"}, "is required"),
    ({"webhook": "https://a.test", "token": "inline-secret"}, "secret reference"),
])
def test_the_alerts_schema_refuses_what_cannot_work(tmp_path, cfg, expected) -> None:
    with pytest.raises(InventoryError, match=expected):
        site(tmp_path, cfg)
