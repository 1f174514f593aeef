"""The cloud adapter against a scripted HTTP server on 127.0.0.1.

The real python-digitalocean, requests and urllib3 run; only the API is
scripted. Sleeps go to a fake clock, so retries cost no time. An autouse
guard refuses any socket connection that is not to loopback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import digitalocean
import pytest
from digitalocean.baseapi import BaseAPI

from relaunch.cloud import Cloud, CloudError, CloudNotFound, Droplet, RetryPolicy
from relaunch.cloud.transport import translate
from relaunch.errors import RelaunchError

TOKEN = "dop_v1_" + "ab12" * 16
EPOCH = 1_700_000_000.0


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any connection to a non-loopback address; point stray library objects at a dead port."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", "http://127.0.0.1:9/v2/")
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC", raising=False)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> raw
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    body: Any
    headers: dict


class FakeApi:
    """Routes (METHOD, path) to a list of Replies (consumed in order, the last repeats) or a function."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply] | Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()

    def on(self, method: str, path: str, *replies: Reply | Callable[[Seen], Reply]) -> None:
        self.routes[(method, path)] = replies[0] if callable(replies[0]) else list(replies)

    def calls(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    def reply(self, seen: Seen) -> Reply:
        with self.lock:
            self.seen.append(seen)
            route = self.routes.get((seen.method, seen.path))
            if route is None:
                return Reply(404, {"id": "not_found", "message": "The resource you were accessing could not be found."})
            if callable(route):
                return route(seen)
            return route.pop(0) if len(route) > 1 else route[0]


def _handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _serve(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            seen = Seen(self.command, parts.path, parse_qs(parts.query), body, dict(self.headers))
            r = api.reply(seen)
            if r.delay:
                time.sleep(r.delay)
            if isinstance(r.body, (dict, list)):
                data = json.dumps(r.body).encode()
            elif isinstance(r.body, str):
                data = r.body.encode()
            else:
                data = r.body or b""
            try:
                self.send_response(r.status)
                for k, v in r.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


@pytest.fixture
def api():
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.endpoint = f"http://127.0.0.1:{server.server_address[1]}/v2/"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def clock():
    return FakeClock()


def make_cloud(api, clock, *, attempts=4, timeout=2.0, **kw) -> Cloud:
    policy = RetryPolicy(max_attempts=attempts, base=1.0, cap=8.0, max_total=60.0, max_server_wait=30.0,
                         sleep=clock.sleep, monotonic=clock.monotonic, wall_clock=clock.wall, rng=lambda: 0.5)
    return Cloud(token=TOKEN, endpoint=api.endpoint, timeout=timeout, retry=policy, **kw)


@pytest.fixture
def cloud(api, clock):
    c = make_cloud(api, clock)
    yield c
    c.close()


def droplet_json(id=101, name="web-2", status="active", ip="10.9.8.7", tags=("relaunch",)):
    return {
        "id": id, "name": name, "status": status, "created_at": "2026-01-01T00:00:00Z",
        "region": {"slug": "fra1", "name": "Frankfurt 1"}, "tags": list(tags),
        "networks": {"v4": [{"ip_address": "10.0.0.5", "type": "private"}] +
                     ([{"ip_address": ip, "type": "public"}] if ip else []), "v6": []},
        "features": [],
    }


def action_json(id, status="completed", type="create", resource_id=101):
    return {"action": {"id": id, "status": status, "type": type, "resource_id": resource_id,
                       "resource_type": "droplet", "started_at": "2026-01-01T00:00:00Z",
                       "completed_at": None, "region_slug": "fra1"}}


# --- retries, timeouts, errors ------------------------------------------------------


def test_get_retries_429_honouring_retry_after(api, clock, cloud):
    api.on("GET", "/v2/droplets",
           Reply(429, {"id": "too_many_requests", "message": "API Rate limit exceeded."}, {"Retry-After": "7"}),
           Reply(200, {"droplets": [droplet_json()], "links": {}, "meta": {"total": 1}}))
    assert [d.id for d in cloud.list_droplets()] == [101]
    assert len(api.calls("GET", "/v2/droplets")) == 2
    assert clock.sleeps == [7.5]  # the server's 7 s plus jitter (rng fixed at 0.5)


def test_get_retries_429_until_ratelimit_reset_epoch(api, clock, cloud):
    api.on("GET", "/v2/droplets",
           Reply(429, {"id": "too_many_requests", "message": "slow down"},
                 {"RateLimit-Reset": str(int(EPOCH) + 12), "RateLimit-Remaining": "0"}),
           Reply(200, {"droplets": []}))
    assert cloud.list_droplets() == []
    assert clock.sleeps == [12.5]


def test_get_retries_5xx_with_exponential_backoff(api, clock, cloud):
    api.on("GET", "/v2/droplets/101", Reply(500, {"id": "server_error", "message": "boom"}),
           Reply(502, "<html>bad gateway</html>"), Reply(503, b""), Reply(200, {"droplet": droplet_json()}))
    assert cloud.get_droplet(101).ipv4 == "10.9.8.7"
    assert clock.sleeps == [0.75, 1.5, 3.0]


def test_get_gives_up_after_max_attempts_with_status_and_message(api, clock, cloud):
    api.on("GET", "/v2/droplets/101", Reply(503, {"id": "service_unavailable", "message": "try later"}))
    with pytest.raises(CloudError) as info:
        cloud.get_droplet(101)
    msg = str(info.value)
    assert info.value.status == 503
    assert "reading droplet 101" in msg and "HTTP 503" in msg and "try later" in msg and "4 attempts" in msg
    assert len(api.calls("GET", "/v2/droplets/101")) == 4 and len(clock.sleeps) == 3


def test_server_wait_beyond_limit_is_not_taken(api, clock, cloud):
    api.on("GET", "/v2/droplets", Reply(429, {"id": "too_many_requests", "message": "hourly limit"},
                                       {"Retry-After": "3600"}))
    with pytest.raises(CloudError, match="asks to wait 3600 s"):
        cloud.list_droplets()
    assert clock.sleeps == [] and len(api.seen) == 1


def test_total_budget_bounds_the_waits(api, clock):
    c = make_cloud(api, clock, attempts=50)
    api.on("GET", "/v2/droplets", Reply(429, {"id": "too_many_requests", "message": "x"}, {"Retry-After": "25"}))
    with pytest.raises(CloudError, match="60 s budget"):
        c.list_droplets()
    assert sum(clock.sleeps) <= 60


def test_post_action_not_retried_after_500_but_after_429(api, clock, cloud):
    api.on("POST", "/v2/droplets/101/actions", Reply(500, {"id": "server_error", "message": "oops"}))
    with pytest.raises(CloudError) as info:
        cloud.reboot(101)
    assert info.value.ambiguous and info.value.status == 500
    assert "reboot of droplet 101" in str(info.value)
    assert len(api.calls("POST", "/v2/droplets/101/actions")) == 1

    api.seen.clear()
    api.on("POST", "/v2/droplets/101/actions", Reply(429, {"id": "too_many_requests", "message": "x"},
                                                     {"Retry-After": "1"}),
           Reply(201, action_json(5, "in-progress", "reboot")))
    api.on("GET", "/v2/actions/5", Reply(200, action_json(5, "completed", "reboot")))
    cloud.reboot(101)
    assert len(api.calls("POST", "/v2/droplets/101/actions")) == 2


def test_power_off_post_is_retried_after_500_because_it_names_a_state(api, clock, cloud):
    api.on("POST", "/v2/droplets/101/actions", Reply(500, {"id": "server_error", "message": "oops"}),
           Reply(201, action_json(6, "in-progress", "power_off")))
    api.on("GET", "/v2/actions/6", Reply(200, action_json(6, "in-progress", "power_off")),
           Reply(200, action_json(6, "completed", "power_off")))
    cloud.power_off(101)
    assert [c.body for c in api.calls("POST", "/v2/droplets/101/actions")] == [{"type": "power_off"}] * 2


@pytest.mark.parametrize(
    ("reply", "expect"),
    [
        (Reply(422, {"message": "name is invalid"}), "HTTP 422 name is invalid"),  # the library IndexErrors here
        (Reply(422, {"id": "unprocessable_entity"}), "HTTP 422 unprocessable_entity"),
        (Reply(400, "<html>nginx</html>"), "HTTP 400 <html>nginx</html>"),
        (Reply(400, b""), "HTTP 400 Bad Request"),
        (Reply(401, {"id": "unauthorized", "message": "Unable to authenticate you"}), "token was refused"),
        (Reply(403, {"id": "forbidden", "message": "no"}), "scope"),
        (Reply(200, "not json"), "not JSON"),
        (Reply(200, {"unexpected": True}), "unexpected shape"),
    ],
)
def test_odd_bodies_become_clear_relaunch_errors(api, cloud, reply, expect):
    api.on("GET", "/v2/droplets/7", reply)
    with pytest.raises(RelaunchError) as info:
        cloud.get_droplet(7)
    assert "reading droplet 7" in str(info.value) and expect in str(info.value)


def test_404_is_cloud_not_found(api, cloud):
    with pytest.raises(CloudNotFound, match="HTTP 404 not_found"):
        cloud.get_droplet(999)


@pytest.mark.parametrize(
    ("reply", "lib_exc", "expect"),
    [
        (Reply(404, {"id": "not_found", "message": "x"}), digitalocean.NotFoundError, "not found (HTTP 404)"),
        (Reply(422, {"message": "only a message"}), IndexError, "unexpected shape"),
        (Reply(500, "<html>"), Exception, "not JSON"),  # JSONReadError
        (Reply(422, {"id": "unprocessable_entity", "message": "bad size"}), digitalocean.DataReadError, "bad size"),
    ],
)
def test_translate_covers_the_unrouted_librarys_own_exceptions(api, reply, lib_exc, expect):
    api.on("GET", "/v2/droplets/1", reply)
    plain = BaseAPI(token=TOKEN, end_point=api.endpoint)
    with pytest.raises(lib_exc) as info:
        plain.get_data("droplets/1")
    err = translate(info.value, "reading droplet 1")
    assert isinstance(err, RelaunchError) and expect in str(err) and str(err).startswith("reading droplet 1: ")


def test_connection_refused_get_is_retried_then_reported(clock):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    class Dead:
        endpoint = f"http://127.0.0.1:{port}/v2/"

    c = make_cloud(Dead, clock, attempts=3)
    with pytest.raises(CloudError, match="no answer from the API") as info:
        c.list_droplets()
    assert info.value.status is None and len(clock.sleeps) == 2
    # A POST that certainly never left is retried too, and not ambiguous.
    with pytest.raises(CloudError) as info:
        c.reboot(1)
    assert not info.value.ambiguous and len(clock.sleeps) == 4


def test_read_timeout_retries_get_but_not_a_create_post(api, clock):
    c = make_cloud(api, clock, attempts=2, timeout=0.2)
    api.on("GET", "/v2/droplets", Reply(200, {"droplets": []}, delay=0.6), Reply(200, {"droplets": []}))
    assert c.list_droplets() == []
    assert len(api.calls("GET", "/v2/droplets")) == 2

    api.on("POST", "/v2/droplets/1/actions", Reply(201, action_json(1, type="snapshot"), delay=0.6))
    with pytest.raises(CloudError, match="ReadTimeout") as info:
        c.snapshot_droplet(1, "snap")
    assert info.value.ambiguous
    assert len(api.calls("POST", "/v2/droplets/1/actions")) == 1


def test_every_request_carries_token_timeout_and_goes_to_the_configured_endpoint(api, cloud):
    api.on("GET", "/v2/account/keys", Reply(200, {"ssh_keys": [], "meta": {"total": 0}}))
    cloud.check_account()
    seen = api.seen[-1]
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.query == {"per_page": ["1"], "page": ["1"]}
    assert os.environ["DIGITALOCEAN_END_POINT"] == "http://127.0.0.1:9/v2/"  # untouched
    assert cloud.timeout == 2.0


def test_check_account_reports_a_refused_token(api, cloud):
    api.on("GET", "/v2/account/keys", Reply(401, {"id": "unauthorized", "message": "Unable to authenticate you"}))
    with pytest.raises(CloudError, match=r"checking the DigitalOcean API token: .*HTTP 401"):
        cloud.check_account()


def test_pagination_follows_next_links_on_the_same_origin_only(api, cloud):
    nxt = api.endpoint + "droplets?page=2&per_page=1"
    api.on("GET", "/v2/droplets", lambda s: (
        Reply(200, {"droplets": [droplet_json(2, "b")], "links": {}}) if s.query.get("page") == ["2"] else
        Reply(200, {"droplets": [droplet_json(1, "a")], "links": {"pages": {"next": nxt}}, "meta": {"total": 2}})))
    assert [d.name for d in cloud.list_droplets()] == ["a", "b"]

    api.on("GET", "/v2/droplets", Reply(200, {"droplets": [], "links": {
        "pages": {"next": "http://10.1.2.3/v2/droplets?page=2"}}}))
    with pytest.raises(CloudError, match="another host"):
        cloud.list_droplets()


def test_token_and_user_data_never_logged_nor_in_errors(api, clock, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests", "digitalocean", "relaunch"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    secret_user_data = "#cloud-config\nssh_keys:\n  ed25519_private: PRIVATE-HOST-KEY-XYZ\n"
    c = make_cloud(api, clock, attempts=2)
    # A server that echoes the Authorization header back in its error message.
    api.on("GET", "/v2/account/keys", lambda s: Reply(401, {"id": "unauthorized",
                                                              "message": "bad " + s.headers["Authorization"]}))
    api.on("POST", "/v2/droplets", Reply(500, {"id": "x", "message": "boom"}))
    api.on("GET", "/v2/droplets", Reply(200, {"droplets": []}))
    errors = []
    for call in (c.check_account,
                 lambda: c.create_droplet(name="n", region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
                                          user_data=secret_user_data, tags=["t"], ssh_timeout=None)):
        with pytest.raises(RelaunchError) as info:
            call()
        errors.append(info.value)
    assert len(api.calls("POST", "/v2/droplets")) == 2  # retried once after finding nothing
    text = caplog.text + "".join(f"{e!s}{e!r}" for e in errors) + repr(c) + str(vars(c))
    assert "127.0.0.1" in caplog.text and "POST /v2/droplets" in caplog.text  # debug logging was on
    assert TOKEN not in text and TOKEN[8:] not in text and "***" in str(errors[0])
    assert "PRIVATE-HOST-KEY" not in caplog.text


# --- operations -------------------------------------------------------------------


def _script_create(api, *, create_replies=None):
    api.on("GET", "/v2/droplets", Reply(200, {"droplets": []}))
    api.on("POST", "/v2/droplets", *(create_replies or [Reply(202, {
        "droplet": droplet_json(status="new", ip=None), "links": {"actions": [{"id": 77, "rel": "create"}]}})]))
    api.on("GET", "/v2/actions/77", Reply(200, action_json(77, "in-progress")), Reply(200, action_json(77)))
    api.on("GET", "/v2/droplets/101", Reply(200, {"droplet": droplet_json(status="new", ip=None)}),
           Reply(200, {"droplet": droplet_json()}))


def test_create_droplet_waits_for_action_and_ip_and_returns_dataclass(api, clock, cloud):
    _script_create(api)
    d = cloud.create_droplet(name="web-2", region="fra1", size="s-1vcpu-1gb", image="debian-12-x64",
                             ssh_keys=[12, "AA:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"],
                             user_data="#cloud-config\n", tags=["relaunch", "drill"], ipv6=True,
                             monitoring=True, ssh_timeout=None)
    assert d == Droplet(id=101, name="web-2", status="active", ipv4="10.9.8.7", region="fra1",
                        tags=("relaunch",), created_at="2026-01-01T00:00:00Z")
    body = api.calls("POST", "/v2/droplets")[0].body
    assert body["name"] == "web-2" and body["region"] == "fra1" and body["size"] == "s-1vcpu-1gb"
    assert body["image"] == "debian-12-x64" and body["tags"] == ["relaunch", "drill"]
    assert body["ssh_keys"] == [12, "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99"]
    assert body["user_data"] == "#cloud-config\n" and body["ipv6"] is True and body["monitoring"] is True
    assert api.calls("GET", "/v2/droplets")[0].query["tag_name"] == ["relaunch"]
    assert len(api.calls("GET", "/v2/actions/77")) == 2


def test_create_droplet_says_when_the_request_was_accepted_before_it_waits(api, cloud):
    # the caller times the cloud's part (making the Droplet) from here: it is the Droplet's boot, not relaunch's work
    _script_create(api)
    seen = []
    cloud.create_droplet(name="web-2", region="fra1", size="s", image="debian-12-x64", ssh_timeout=None,
                         requested=lambda droplet_id: seen.append((droplet_id, len(api.calls("GET", "/v2/actions/77")))))
    assert seen == [(101, 0)]


def test_create_droplet_from_snapshot_id_sends_an_integer_image(api, cloud):
    _script_create(api)
    cloud.create_droplet(name="web-2", region="fra1", size="s", image="12345", ssh_timeout=None)
    assert api.calls("POST", "/v2/droplets")[0].body["image"] == 12345


def test_create_droplet_refuses_public_keys_in_ssh_keys(cloud):
    with pytest.raises(RelaunchError, match="ids or MD5 fingerprints"):
        cloud.create_droplet(name="x", region="fra1", size="s", image="d", ssh_keys=["ssh-ed25519 AAAA"],
                             ssh_timeout=None)


def test_create_droplet_after_500_adopts_the_droplet_that_was_created(api, clock, cloud):
    _script_create(api, create_replies=[Reply(500, {"id": "server_error", "message": "oops"})])
    old = droplet_json(id=50, name="web-2")  # existed before: never adopted
    api.on("GET", "/v2/droplets", Reply(200, {"droplets": [old]}),
           Reply(200, {"droplets": [old, droplet_json(status="new", ip=None)]}))
    api.on("GET", "/v2/droplets/101/actions", Reply(200, {"actions": [action_json(77)["action"]]}))
    d = cloud.create_droplet(name="web-2", region="fra1", size="s", image="debian-12-x64", tags=["relaunch"],
                             ssh_timeout=None)
    assert d.id == 101
    assert len(api.calls("POST", "/v2/droplets")) == 1


def test_create_droplet_errored_action_raises_with_ids(api, cloud):
    _script_create(api)
    api.on("GET", "/v2/actions/77", Reply(200, action_json(77, "errored")))
    with pytest.raises(RelaunchError, match=r"creating droplet 'web-2' \(id 101\).*action 77.*errored"):
        cloud.create_droplet(name="web-2", region="fra1", size="s", image="d", ssh_timeout=None)


def test_wait_for_action_is_bounded(api, clock, cloud):
    api.on("GET", "/v2/actions/9", Reply(200, action_json(9, "in-progress")))
    with pytest.raises(RelaunchError, match="still in progress after 30 s"):
        cloud.wait_for_action(9, what="thing", timeout=30)
    assert sum(clock.sleeps) <= 30 and clock.sleeps[:3] == [1.0, 1.5, 2.25] and max(clock.sleeps) <= 10.0


def test_ensure_ssh_key_finds_by_fingerprint_or_creates(api, cloud):
    from relaunch.cloud import ssh_key_fingerprint

    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxR0Dc4Ga0zqjHQOHd+JQmPz5k3pyMhbMmg0/jdFfUe me@x"
    fp = ssh_key_fingerprint(pub)
    api.on("GET", "/v2/account/keys", Reply(200, {"ssh_keys": [{"id": 3, "fingerprint": fp, "name": "k"}]}))
    assert cloud.ensure_ssh_key(pub, "relaunch").id == 3
    assert not api.calls("POST", "/v2/account/keys")

    api.on("GET", "/v2/account/keys", Reply(200, {"ssh_keys": []}))
    api.on("POST", "/v2/account/keys", Reply(201, {"ssh_key": {"id": 4, "fingerprint": fp, "name": "relaunch",
                                                              "public_key": pub}}))
    key = cloud.ensure_ssh_key(pub, "relaunch")
    assert (key.id, key.fingerprint) == (4, fp)
    assert api.calls("POST", "/v2/account/keys")[0].body == {"name": "relaunch", "public_key": pub}


def test_snapshot_droplet_waits_and_returns_the_snapshot(api, cloud):
    api.on("POST", "/v2/droplets/101/actions", Reply(201, action_json(8, "in-progress", "snapshot")))
    api.on("GET", "/v2/actions/8", Reply(200, action_json(8, "completed", "snapshot")))
    api.on("GET", "/v2/droplets/101/snapshots", Reply(200, {"snapshots": [
        {"id": 500, "name": "other"}, {"id": 501, "name": "pre-upgrade", "created_at": "t", "size_gigabytes": 2.4}]}))
    snap = cloud.snapshot_droplet(101, "pre-upgrade")
    assert (snap.id, snap.name, snap.resource_id) == (501, "pre-upgrade", "101")
    assert api.calls("POST", "/v2/droplets/101/actions")[0].body == {"type": "snapshot", "name": "pre-upgrade"}


def test_list_and_delete_snapshots(api, cloud):
    api.on("GET", "/v2/snapshots", Reply(200, {"snapshots": [{"id": "600", "name": "s", "resource_id": "101"}]}))
    assert [(s.id, s.resource_id) for s in cloud.list_snapshots()] == [(600, "101")]
    assert api.calls("GET", "/v2/snapshots")[0].query["resource_type"] == ["droplet"]
    api.on("DELETE", "/v2/snapshots/600", Reply(204))
    assert cloud.delete_snapshot(600) is True
    assert cloud.delete_snapshot(601) is False


def test_destroy_droplet_and_by_tag(api, cloud):
    api.on("DELETE", "/v2/droplets/1", Reply(204))
    api.on("DELETE", "/v2/droplets/2", Reply(404, {"id": "not_found", "message": "gone"}))
    api.on("GET", "/v2/droplets", Reply(200, {"droplets": [droplet_json(1), droplet_json(2)]}))
    assert cloud.destroy_droplets_by_tag("drill") == [1]
    assert api.calls("GET", "/v2/droplets")[0].query["tag_name"] == ["drill"]
    with pytest.raises(RelaunchError, match="empty tag"):
        cloud.destroy_droplets_by_tag("")


def test_dns_records_list_create_update_delete(api, cloud):
    recs = [{"id": 1, "type": "A", "name": "@", "data": "1.2.3.4", "ttl": 300},
            {"id": 2, "type": "A", "name": "www", "data": "1.2.3.4", "ttl": 300},
            {"id": 3, "type": "TXT", "name": "@", "data": "v=spf1", "ttl": 3600}]
    api.on("GET", "/v2/domains/example.com/records", Reply(200, {"domain_records": recs}))
    assert [r.id for r in cloud.list_records("example.com", type="A")] == [1, 2]
    assert [r.id for r in cloud.list_records("example.com", type="A", name="www")] == [2]

    api.on("POST", "/v2/domains/example.com/records", Reply(201, {"domain_record": {
        "id": 9, "type": "A", "name": "new", "data": "5.6.7.8", "ttl": 60}}))
    rec = cloud.create_record("example.com", type="A", name="new", data="5.6.7.8", ttl=60)
    assert rec.id == 9
    assert api.calls("POST", "/v2/domains/example.com/records")[0].body == {
        "type": "A", "name": "new", "data": "5.6.7.8", "ttl": 60}

    api.on("PATCH", "/v2/domains/example.com/records/2", Reply(200, {"domain_record": {
        "id": 2, "type": "A", "name": "www", "data": "5.6.7.8", "ttl": 60}}))
    assert cloud.update_record("example.com", 2, data="5.6.7.8", ttl=60).data == "5.6.7.8"
    assert api.calls("PATCH", "/v2/domains/example.com/records/2")[0].body == {"data": "5.6.7.8", "ttl": 60}

    api.on("DELETE", "/v2/domains/example.com/records/2", Reply(204))
    assert cloud.delete_record("example.com", 2) is True
    assert cloud.delete_record("example.com", 3) is False


def test_reserved_ips_create_assign_unassign_list(api, cloud):
    rip = {"ip": "45.55.96.47", "region": {"slug": "fra1"}, "droplet": None, "locked": False}
    api.on("POST", "/v2/reserved_ips", Reply(202, {"reserved_ip": rip, "links": {"actions": []}}))
    api.on("GET", "/v2/reserved_ips/45.55.96.47", Reply(200, {"reserved_ip": rip}),
           Reply(200, {"reserved_ip": dict(rip, droplet=droplet_json())}), Reply(200, {"reserved_ip": rip}))
    api.on("POST", "/v2/reserved_ips/45.55.96.47/actions",
           lambda s: Reply(201, {"action": dict(action_json(20 if s.body["type"] == "assign" else 21,
                                                            "in-progress", s.body["type"])["action"])}))
    api.on("GET", "/v2/actions/20", Reply(200, action_json(20, type="assign")))
    api.on("GET", "/v2/actions/21", Reply(200, action_json(21, type="unassign")))
    api.on("GET", "/v2/reserved_ips", Reply(200, {"reserved_ips": [rip]}))

    assert cloud.create_reserved_ip(region="fra1").ip == "45.55.96.47"
    assert api.calls("POST", "/v2/reserved_ips")[0].body == {"region": "fra1"}
    assert cloud.assign_reserved_ip("45.55.96.47", 101).droplet_id == 101
    assert cloud.unassign_reserved_ip("45.55.96.47").droplet_id is None
    bodies = [c.body for c in api.calls("POST", "/v2/reserved_ips/45.55.96.47/actions")]
    assert bodies == [{"type": "assign", "droplet_id": 101}, {"type": "unassign"}]
    assert [r.region for r in cloud.list_reserved_ips()] == ["fra1"]
    with pytest.raises(RelaunchError, match="exactly one"):
        cloud.create_reserved_ip(region="fra1", droplet_id=1)


def test_reserved_ip_create_waits_for_linked_assign_action(api, cloud):
    rip = {"ip": "45.55.96.48", "region": {"slug": "fra1"}, "droplet": droplet_json()}
    api.on("POST", "/v2/reserved_ips", Reply(202, {"reserved_ip": rip, "links": {"actions": [{"id": 30}]}}))
    api.on("GET", "/v2/actions/30", Reply(200, action_json(30, "errored", "assign_ip")))
    with pytest.raises(RelaunchError, match="reserving an IP for droplet 101 .*errored"):
        cloud.create_reserved_ip(droplet_id=101)


def test_from_env_reads_token_file_and_endpoint(api, tmp_path, monkeypatch):
    p = tmp_path / "tok"
    p.write_text(TOKEN)
    p.chmod(0o600)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", api.endpoint)
    api.on("GET", "/v2/account/keys", Reply(200, {"ssh_keys": []}))
    with Cloud.from_env(token_file=p, timeout=3) as c:
        c.check_account()
    assert api.seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_create_droplet_then_waits_for_an_ssh_banner(api, clock, cloud):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def run():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1\r\n")
            conn.recv(10)

    threading.Thread(target=run, daemon=True).start()
    _script_create(api)
    api.on("GET", "/v2/droplets/101", Reply(200, {"droplet": droplet_json(ip="127.0.0.1")}))
    try:
        d = cloud.create_droplet(name="web-2", region="fra1", size="s", image="d", ssh_port=port, ssh_timeout=20)
    finally:
        srv.close()
    assert d.ipv4 == "127.0.0.1"


def test_create_droplet_gives_up_when_no_attempt_created_anything(api, clock):
    c = make_cloud(api, clock, attempts=3)
    _script_create(api, create_replies=[Reply(503, {"id": "service_unavailable", "message": "down"})])
    with pytest.raises(CloudError, match="gave up after 3 attempts, none of which created it.*HTTP 503"):
        c.create_droplet(name="web-2", region="fra1", size="s", image="d", tags=["relaunch"], ssh_timeout=None)
    assert len(api.calls("POST", "/v2/droplets")) == 3
    assert len(api.calls("GET", "/v2/droplets")) == 4  # the "before" listing + one check per failure
