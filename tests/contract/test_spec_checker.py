"""The spec checker itself: it must reject wrong shapes, or every other contract test is void."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relaunch.sandbox import catalogue
from relaunch.sandbox.spec import ResponseMismatch, check_response

URL = "http://127.0.0.1:1/v2/actions/7"
HEADERS = {"Content-Type": "application/json", "ratelimit-limit": "5000", "ratelimit-remaining": "4999",
           "ratelimit-reset": "1700000000"}


def _action(**change: Any) -> bytes:
    action = {"id": 7, "status": "completed", "type": "create", "started_at": "2024-01-01T00:00:00Z",
              "completed_at": "2024-01-01T00:00:09Z", "resource_id": 3, "resource_type": "droplet",
              "region": catalogue.region("nyc3"), "region_slug": "nyc3"}
    action.update(change)
    return json.dumps({"action": action}).encode()


def test_check_response_accepts_a_valid_action(do_spec: Any) -> None:
    check_response("GET", URL, 200, HEADERS, _action(), spec=do_spec)


@pytest.mark.parametrize("change", [{"region": None}, {"status": "done"}, {"id": "seven"}, {"started_at": 5}])
def test_check_response_rejects_a_wrong_action(do_spec: Any, change: dict[str, Any]) -> None:
    with pytest.raises(ResponseMismatch):
        check_response("GET", URL, 200, HEADERS, _action(**change), spec=do_spec)


def test_check_response_rejects_an_error_without_message(do_spec: Any) -> None:
    with pytest.raises(ResponseMismatch):
        check_response("GET", URL, 404, HEADERS, b'{"id": "not_found"}', spec=do_spec)


def test_check_response_rejects_a_wrong_header_type(do_spec: Any) -> None:
    with pytest.raises(ResponseMismatch):
        check_response("GET", URL, 200, {**HEADERS, "ratelimit-remaining": "many"}, _action(), spec=do_spec)


def test_check_response_reads_droplet_status_off_as_a_string(do_spec: Any, client: Any) -> None:
    # PyYAML's YAML 1.1 rules read the enum value `off` as False; the loader must not.
    droplet = client.active_droplet("spec-off")
    body = json.dumps({"droplet": {**droplet, "status": "off"}}).encode()
    check_response("GET", f"http://127.0.0.1:1/v2/droplets/{droplet['id']}", 200, HEADERS, body, spec=do_spec)
    with pytest.raises(ResponseMismatch):
        bad = json.dumps({"droplet": {**droplet, "status": "sleeping"}}).encode()
        check_response("GET", f"http://127.0.0.1:1/v2/droplets/{droplet['id']}", 200, HEADERS, bad, spec=do_spec)
    client.call("DELETE", f"droplets/{droplet['id']}", status=204)
