"""Authentication, rate limits, error shapes, trailing slashes and the fault knobs."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
import requests

# These tests are about the answers' shapes: without the spec they would check nothing of it.
pytestmark = pytest.mark.usefixtures("do_spec")


def test_missing_or_wrong_token_is_401(client: Any) -> None:
    for token in ("", "wrong"):
        resp = client.call("GET", "droplets", token=token, status=401)
        assert resp.json()["id"] == "unauthorized"
        assert "ratelimit-limit" in resp.headers


def test_every_answer_has_the_rate_limit_headers(client: Any) -> None:
    resp = client.call("GET", "account", status=200)
    assert resp.headers["ratelimit-limit"] == "1000000"
    assert int(resp.headers["ratelimit-remaining"]) < 1_000_000
    assert int(resp.headers["ratelimit-reset"]) >= int(time.time())


def test_trailing_slash_is_accepted(client: Any) -> None:
    assert client.get("droplets/")["meta"]["total"] >= 0
    assert client.get("account/keys/")["meta"]["total"] >= 0


def test_unknown_path_is_404_json(client: Any) -> None:
    resp = client.call("GET", "no-such-thing", check=False, status=404)
    assert resp.json() == {"id": "not_found", "message": "The resource you were accessing could not be found."}


def test_rate_limit_per_minute_answers_429_with_retry_after(fresh_server: Callable[..., Any]) -> None:
    c = fresh_server(per_hour=5000, per_minute=3)
    for _ in range(3):
        c.call("GET", "droplets", status=200)
    resp = c.call("GET", "droplets", status=429)
    assert resp.json()["id"] == "too_many_requests"
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert resp.headers["ratelimit-limit"] == "5000"


def test_rate_limit_defaults_are_the_documented_ones(fresh_server: Callable[..., Any]) -> None:
    c = fresh_server(per_hour=5000, per_minute=250)
    resp = c.call("GET", "account", status=200)
    assert resp.headers["ratelimit-limit"] == "5000"
    assert resp.headers["ratelimit-remaining"] == "4999"


def test_fault_429_for_matching_requests_only(client: Any) -> None:
    resp = client.admin("POST", {"status": 429, "count": 2, "method": "GET", "path_prefix": "/v2/droplets",
                                 "retry_after": 7})
    assert resp.status_code == 201
    client.get("account")  # does not match
    for _ in range(2):
        hit = client.call("GET", "droplets", status=429)
        assert hit.headers["retry-after"] == "7" and hit.headers["ratelimit-remaining"] == "0"
    client.get("droplets")


def test_fault_500_is_a_server_error(client: Any) -> None:
    client.admin("POST", {"status": 500})
    assert client.call("GET", "droplets", status=500).json()["id"] == "server_error"
    client.get("droplets")


def test_faults_can_be_cleared_and_listed(client: Any) -> None:
    client.admin("POST", {"status": 500, "count": 5})
    assert client.admin("GET").json()["responses"][0]["count"] == 5
    assert client.admin("DELETE").status_code == 204
    client.get("droplets")


def test_admin_endpoint_checks_token_and_input(client: Any) -> None:
    base = client.url.removesuffix("/v2/")
    assert requests.post(f"{base}/_sandbox/faults", json={"status": 500}, timeout=5).status_code == 401
    bad = client.admin("POST", {"status": 404})
    assert bad.status_code == 422 and "status" in bad.json()["message"]
    assert requests.get(f"{base}/_sandbox/health", timeout=5).json() == {"status": "ok"}


def test_fault_create_error_errors_the_create_action(client: Any) -> None:
    client.admin("POST", {"droplet_create": "create_error"})
    droplet, action_id = client.create_droplet("doomed")
    assert client.wait_action(action_id)["status"] == "errored"
    got = client.get(f"droplets/{droplet['id']}")["droplet"]
    assert got["status"] == "new" and got["networks"]["v4"] == []
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)


def test_fault_never_active_leaves_the_droplet_new(client: Any) -> None:
    client.admin("POST", {"droplet_create": "never_active"})
    droplet, action_id = client.create_droplet("stuck")
    other, other_action = client.create_droplet("unstuck")
    assert client.wait_action(other_action)["status"] == "completed"  # only the next create is stuck
    assert client.get(f"actions/{action_id}")["action"]["status"] == "in-progress"
    assert client.get(f"droplets/{droplet['id']}")["droplet"]["status"] == "new"
    for did in (droplet["id"], other["id"]):
        client.call("DELETE", f"droplets/{did}", status=204)
