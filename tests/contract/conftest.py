"""Contract tests: a sandbox API on loopback, every answer checked against DigitalOcean's spec.

The spec (DigitalOcean's OpenAPI files at a pinned commit) is beside the clone in CI, not
in a user's clone. Without it, the tests that need it (those using ``do_spec``: marked
``spec``) skip, with one summary line saying why and how to get it; the others run and
leave answers unchecked. Where the spec is required (``relaunch.sandbox.spec.spec_required``:
CI, or ``RELAUNCH_REQUIRE_SPEC=1``) a missing spec fails every test here instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from relaunch.sandbox.api import ServerHandle, start_server
from relaunch.sandbox.model import ApiError
from relaunch.sandbox.spec import (REQUIRE_ENV, SpecNotFound, check_response, load_spec, shared_spec_dir, spec_dir,
                                   spec_required)

TOKEN = "contract-token"
#: Generous limits for the shared server; the rate-limit tests start their own.
ROOMY = {"per_hour": 1_000_000, "per_minute": 1_000_000}
#: The clone these tests belong to: the spec is looked for beside it.
CLONE = Path(__file__).resolve().parents[2]
MISSING_SPEC = "needs DigitalOcean's OpenAPI spec"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Derived from the fixtures, so the mark cannot drift from what really needs the spec.
    for item in items:
        if "do_spec" in getattr(item, "fixturenames", ()):
            item.add_marker("spec")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report = yield
    # pytest names each test as the place of a skip raised in a fixture: one line per test.
    # Placed here instead, the skips for a missing spec fold into one summary line.
    if report.skipped and isinstance(report.longrepr, tuple) and MISSING_SPEC in report.longrepr[2]:
        report.longrepr = (__file__, None, report.longrepr[2])
    return report


@pytest.fixture(scope="session")
def spec_if_found() -> Any | None:
    """DigitalOcean's OpenAPI spec, loaded once; None when it is absent and not required.

    Where it is required, a missing spec fails: a contract test that cannot see the
    contract must not pass by skipping.
    """
    try:
        directory = spec_dir(CLONE)
    except SpecNotFound as exc:
        if not spec_required(CLONE):
            return None
        problem = str(exc)
    else:
        return load_spec(directory)
    pytest.fail(f"DigitalOcean's OpenAPI spec is required here ({REQUIRE_ENV}=1, or {shared_spec_dir(CLONE)}"
                f" exists) and missing: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def do_spec(spec_if_found: Any | None) -> Any:
    """The spec, for the tests that need it; they skip (one summary line) without it."""
    if spec_if_found is None:
        pytest.skip(f"{MISSING_SPEC}: {_why_missing()}")
    return spec_if_found


def _why_missing() -> str:
    try:
        spec_dir(CLONE)
    except SpecNotFound as exc:
        return str(exc)
    return "it appeared after the session started"


class Client:
    """Calls the sandbox API and checks every answer against the spec (when there is one)."""

    def __init__(self, handle: ServerHandle, spec: Any | None, token: str = TOKEN) -> None:
        self.handle = handle
        self.url = handle.url
        self.spec = spec
        self.token = token
        self.session = requests.Session()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
             token: str | None = None, status: int | None = None, check: bool = True) -> requests.Response:
        """Send ``method`` to ``/v2/<path>``; check the answer's shape, and its status if given."""
        headers = {} if token == "" else {"Authorization": f"Bearer {token or self.token}"}
        url = path if path.startswith("http") else self.url + path
        resp = self.session.request(method, url, json=json, params=params, headers=headers, timeout=30)
        if check and self.spec is not None:
            check_response(method, resp.url, resp.status_code, resp.headers, resp.content, spec=self.spec)
        if status is not None:
            assert resp.status_code == status, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, status=kw.pop("status", 200), **kw).json()

    def admin(self, method: str, body: Any = None) -> requests.Response:
        base = self.url.removesuffix("/v2/")
        return self.session.request(method, f"{base}/_sandbox/faults", json=body,
                                    headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 180) -> Any:
        """Poll ``predicate`` until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def wait_action(self, action_id: int, timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            action = self.get(f"actions/{action_id}")["action"]
            return action if action["status"] != "in-progress" else None

        return self.wait(done, f"action {action_id}", timeout)

    def create_droplet(self, name: str, **extra: Any) -> tuple[dict[str, Any], int]:
        body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64", **extra}
        data = self.call("POST", "droplets", json=body, status=202).json()
        return data["droplet"], data["links"]["actions"][0]["id"]

    def active_droplet(self, name: str, **extra: Any) -> dict[str, Any]:
        droplet, action_id = self.create_droplet(name, **extra)
        assert self.wait_action(action_id)["status"] == "completed"
        return self.get(f"droplets/{droplet['id']}")["droplet"]


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory, sandbox_backend: Any) -> Iterator[ServerHandle]:
    handle = start_server(tmp_path_factory.mktemp("cloud"), sandbox_backend, TOKEN, **ROOMY)
    yield handle
    _teardown(handle)


def _teardown(handle: ServerHandle) -> None:
    """Delete every Droplet the server knows (no machine left behind), then stop it."""
    for doc in handle.sandbox.store.list("droplet"):
        try:
            handle.sandbox.droplets.delete(doc["id"])
        except ApiError:
            pass  # deleted meanwhile
    handle.close()


# The spec fixture comes first: a skip or a failure for the spec happens before any Docker work.
@pytest.fixture
def client(spec_if_found: Any | None, api_server: ServerHandle) -> Iterator[Client]:
    c = Client(api_server, spec_if_found)
    yield c
    c.admin("DELETE")


@pytest.fixture
def fresh_server(spec_if_found: Any | None, tmp_path: Path, sandbox_backend: Any) -> Iterator[Callable[..., Client]]:
    """Start extra servers (own state, own limits) for a test; all closed at its end."""
    handles: list[ServerHandle] = []

    def start(state: Path | None = None, **kw: Any) -> Client:
        handle = start_server(state or tmp_path / f"cloud{len(handles)}", sandbox_backend, TOKEN, **{**ROOMY, **kw})
        handles.append(handle)
        return Client(handle, spec_if_found)

    yield start
    for handle in handles:
        _teardown(handle)
