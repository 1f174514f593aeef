"""The DigitalOcean HTTP API of the sandbox cloud, served on loopback.

``start_server(state_dir, backend, token)`` runs it in-process (tests, ``service``);
``python -m relaunch.sandbox api`` runs it in the foreground. Every ``/v2`` answer has
DigitalOcean's paths, status codes, JSON shapes, pagination and rate-limit headers; the
admin endpoints under ``/_sandbox`` set faults for tests. The token and the
Authorization header are never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from relaunch.sandbox import catalogue
from relaunch.sandbox.backend import Backend
from relaunch.sandbox.dns import DnsServer
from relaunch.sandbox.droplets import Droplets
from relaunch.sandbox.faults import Faults, FaultSpecError
from relaunch.sandbox.model import ApiError, Workers, new_owner, not_found, public, retire_owner, unprocessable
from relaunch.sandbox.paging import PagingError, links, parse_page
from relaunch.sandbox.ratelimit import HOURLY_LIMIT, MINUTE_LIMIT, RateLimiter, Verdict
from relaunch.sandbox.resources import Domains, Keys, ReservedIPs, Tags, account
from relaunch.sandbox.store import Store

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "sandbox"
TOKEN_ENV = "RELAUNCH_SANDBOX_TOKEN"
MAX_BODY = 1024 * 1024
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?$")


@dataclass
class Request:
    """One API request as the handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    base_url: str
    """Absolute URL of ``/v2`` as the client reached it (no trailing slash)."""

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Sandbox:
    """The simulated cloud: state, workers and the /v2 routes (no HTTP here)."""

    def __init__(self, state_dir: Path, backend: Backend, *, per_hour: int = HOURLY_LIMIT,
                 per_minute: int = MINUTE_LIMIT) -> None:
        self.store = Store(state_dir)
        self.backend = backend
        self.faults = Faults()
        self.limiter = RateLimiter(per_hour, per_minute)
        self.workers = Workers()
        self.owner = new_owner()
        self.droplets = Droplets(self.store, backend, self.faults, self.workers, self.owner)
        self.keys = Keys(self.store)
        self.domains = Domains(self.store)
        self.tags = Tags(self.store)
        self.reserved_ips = ReservedIPs(self.store, self.workers, self.owner, self._droplet_or_none)
        self.routes = self._routes()

    def resume(self) -> None:
        """Take over the unfinished work of simulators that are gone."""
        self.droplets.resume()
        self.reserved_ips.resume()

    def close(self, wait: float) -> None:
        """Stop owning work; wait up to ``wait`` seconds for running workers."""
        if not self.workers.join(wait):
            log.warning("sandbox workers still running after %.0f s; a later start will take them over", wait)
        retire_owner(self.owner)

    def _droplet_or_none(self, droplet_id: int) -> dict[str, Any] | None:
        doc = self.store.get("droplet", droplet_id)
        return public(doc) if doc else None

    # ----- routing -----

    def dispatch(self, req: Request) -> Response:
        """Serve one authenticated, rate-limited /v2 request. Raise ApiError for error answers."""
        path = req.path.rstrip("/") or "/"
        for method, pattern, handler in self.routes:
            if method != req.method:
                continue
            match = pattern.fullmatch(path)
            if match:
                return handler(req, *match.groups())
        raise not_found()

    def _routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Response]]]:
        seg = r"([^/]+)"
        table: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", "/v2/account", lambda r: Response(200, {"account": account()})),
            ("GET", "/v2/regions", lambda r: self._page(r, "regions", [catalogue.region(s) for s in catalogue.REGIONS])),
            ("GET", "/v2/sizes", lambda r: self._page(r, "sizes", [catalogue.size(s) for s in catalogue.SIZES])),
            # ssh keys
            ("GET", "/v2/account/keys", lambda r: self._page(r, "ssh_keys", self.keys.list())),
            ("POST", "/v2/account/keys", lambda r: Response(201, {"ssh_key": self.keys.create(r.body)})),
            ("GET", f"/v2/account/keys/{seg}", lambda r, k: Response(200, {"ssh_key": self.keys.get(k)})),
            ("PUT", f"/v2/account/keys/{seg}", lambda r, k: Response(200, {"ssh_key": self.keys.update(k, r.body)})),
            ("DELETE", f"/v2/account/keys/{seg}", lambda r, k: self._no_content(self.keys.delete, k)),
            # droplets
            ("GET", "/v2/droplets", self._list_droplets),
            ("POST", "/v2/droplets", self._create_droplets),
            ("DELETE", "/v2/droplets", self._delete_by_tag),
            ("GET", f"/v2/droplets/{seg}", lambda r, d: Response(200, {"droplet": self.droplets.get(d)})),
            ("DELETE", f"/v2/droplets/{seg}", lambda r, d: self._no_content(self.droplets.delete, d)),
            ("GET", f"/v2/droplets/{seg}/actions", self._droplet_actions),
            ("POST", f"/v2/droplets/{seg}/actions",
             lambda r, d: Response(201, {"action": self.droplets.post_action(d, r.body)})),
            ("GET", f"/v2/droplets/{seg}/actions/{seg}", self._droplet_action),
            ("GET", f"/v2/droplets/{seg}/snapshots",
             lambda r, d: self._page(r, "snapshots", self.droplets.droplet_snapshots(d))),
            # actions
            ("GET", "/v2/actions", lambda r: self._page(r, "actions", self._actions())),
            ("GET", f"/v2/actions/{seg}", lambda r, a: Response(200, {"action": self._action(a)})),
            # snapshots
            ("GET", "/v2/snapshots",
             lambda r: self._page(r, "snapshots", self.droplets.snapshots(r.arg("resource_type")))),
            ("GET", f"/v2/snapshots/{seg}", lambda r, s: Response(200, {"snapshot": self.droplets.snapshot(s)})),
            ("DELETE", f"/v2/snapshots/{seg}", lambda r, s: self._no_content(self.droplets.delete_snapshot, s)),
            # images (the base image and the snapshots)
            ("GET", "/v2/images",
             lambda r: self._page(r, "images", self.droplets.images(r.arg("type"), r.arg("private"), r.arg("tag_name")))),
            ("GET", f"/v2/images/{seg}", lambda r, i: Response(200, {"image": self.droplets.image(i)})),
            ("DELETE", f"/v2/images/{seg}", lambda r, i: self._no_content(self.droplets.delete_image, i)),
            # domains
            ("GET", "/v2/domains", lambda r: self._page(r, "domains", self.domains.list())),
            ("POST", "/v2/domains", lambda r: Response(201, {"domain": self.domains.create(r.body)})),
            ("GET", f"/v2/domains/{seg}", lambda r, d: Response(200, {"domain": self.domains.get(d)})),
            ("DELETE", f"/v2/domains/{seg}", lambda r, d: self._no_content(self.domains.delete, d)),
            ("GET", f"/v2/domains/{seg}/records",
             lambda r, d: self._page(r, "domain_records", self.domains.records(d, r.arg("type"), r.arg("name")))),
            ("POST", f"/v2/domains/{seg}/records",
             lambda r, d: Response(201, {"domain_record": self.domains.create_record(d, r.body)})),
            ("GET", f"/v2/domains/{seg}/records/{seg}",
             lambda r, d, i: Response(200, {"domain_record": self.domains.record(d, i)})),
            ("PUT", f"/v2/domains/{seg}/records/{seg}",
             lambda r, d, i: Response(200, {"domain_record": self.domains.update_record(d, i, r.body)})),
            ("PATCH", f"/v2/domains/{seg}/records/{seg}",
             lambda r, d, i: Response(200, {"domain_record": self.domains.update_record(d, i, r.body)})),
            ("DELETE", f"/v2/domains/{seg}/records/{seg}",
             lambda r, d, i: self._no_content(self.domains.delete_record, d, i)),
            # tags
            ("GET", "/v2/tags", lambda r: self._page(r, "tags", self.tags.list(r.base_url))),
            ("POST", "/v2/tags", lambda r: Response(201, {"tag": self.tags.create(r.body, r.base_url)})),
            ("GET", f"/v2/tags/{seg}", lambda r, t: Response(200, {"tag": self.tags.get(t, r.base_url)})),
            ("DELETE", f"/v2/tags/{seg}", lambda r, t: self._no_content(self.tags.delete, t)),
            ("POST", f"/v2/tags/{seg}/resources", lambda r, t: self._no_content(self.tags.tag, t, r.body, True)),
            ("DELETE", f"/v2/tags/{seg}/resources", lambda r, t: self._no_content(self.tags.tag, t, r.body, False)),
        ]
        # Reserved IPs, and the same under their old name that python-digitalocean uses.
        for prefix, key, rtype in (("reserved_ips", "reserved_ip", "reserved_ip"),
                                   ("floating_ips", "floating_ip", "floating_ip")):
            table += self._ip_routes(prefix, key, rtype, seg)
        return [(m, re.compile(p), h) for m, p, h in table]

    def _ip_routes(self, prefix: str, key: str, rtype: str, seg: str) -> list[tuple[str, str, Callable[..., Response]]]:
        ips = self.reserved_ips

        def create(r: Request) -> Response:
            ip, action = ips.create(r.body, rtype)
            out_links: dict[str, Any] = {}
            if action is not None:
                did = ip["droplet"]["id"]
                out_links = {
                    "droplets": [{"id": did, "rel": "droplet", "href": f"{r.base_url}/droplets/{did}"}],
                    "actions": [{"id": action["id"], "rel": "assign_ip", "href": f"{r.base_url}/actions/{action['id']}"}],
                }
            return Response(202, {key: ip, "links": out_links})

        return [
            ("GET", f"/v2/{prefix}", lambda r: self._page(r, f"{key}s", ips.list())),
            ("POST", f"/v2/{prefix}", create),
            ("GET", f"/v2/{prefix}/{seg}", lambda r, ip: Response(200, {key: ips.get(ip)})),
            ("DELETE", f"/v2/{prefix}/{seg}", lambda r, ip: self._no_content(ips.delete, ip)),
            ("GET", f"/v2/{prefix}/{seg}/actions", lambda r, ip: self._page(r, "actions", ips.actions(ip, rtype))),
            ("POST", f"/v2/{prefix}/{seg}/actions",
             lambda r, ip: Response(201, {"action": ips.post_action(ip, r.body, rtype)})),
            ("GET", f"/v2/{prefix}/{seg}/actions/{seg}",
             lambda r, ip, a: Response(200, {"action": ips.action(ip, a)})),
        ]

    # ----- handlers needing more than one line -----

    def _list_droplets(self, req: Request) -> Response:
        return self._page(req, "droplets", self.droplets.list(req.arg("tag_name"), req.arg("name")))

    def _create_droplets(self, req: Request) -> Response:
        pairs = self.droplets.create(req.body)
        action_links = [
            {"id": a["id"], "rel": "create", "href": f"{req.base_url}/actions/{a['id']}"} for _, a in pairs
        ]
        if isinstance(req.body, dict) and req.body.get("names") is not None:
            return Response(202, {"droplets": [d for d, _ in pairs], "links": {"actions": action_links}})
        return Response(202, {"droplet": pairs[0][0], "links": {"actions": action_links}})

    def _delete_by_tag(self, req: Request) -> Response:
        tag = req.arg("tag_name")
        if not tag:
            raise unprocessable("tag_name is required to delete Droplets by tag")
        self.droplets.delete_by_tag(tag)
        return Response(204)

    def _actions(self, droplet_id: int | None = None) -> list[dict[str, Any]]:
        actions = reversed(self.store.list("action"))  # newest first, as DigitalOcean lists them
        return [
            public(a) for a in actions
            if droplet_id is None or (a["resource_type"] == "droplet" and a["resource_id"] == droplet_id)
        ]

    def _action(self, action_id: str) -> dict[str, Any]:
        action = self.store.get("action", int(action_id)) if action_id.isdigit() else None
        if action is None:
            raise not_found()
        return public(action)

    def _droplet_actions(self, req: Request, droplet_id: str) -> Response:
        did = self.droplets.get(droplet_id)["id"]
        return self._page(req, "actions", self._actions(did))

    def _droplet_action(self, req: Request, droplet_id: str, action_id: str) -> Response:
        did = self.droplets.get(droplet_id)["id"]
        action = self._action(action_id)
        if action["resource_type"] != "droplet" or action["resource_id"] != did:
            raise not_found()
        return Response(200, {"action": action})

    @staticmethod
    def _no_content(fn: Callable[..., Any], *args: Any) -> Response:
        fn(*args)
        return Response(204)

    @staticmethod
    def _page(req: Request, key: str, items: list[dict[str, Any]]) -> Response:
        try:
            page = parse_page(req.query)
        except PagingError as exc:
            raise unprocessable(str(exc)) from None
        path = req.path.rstrip("/")
        base = req.base_url + path[len("/v2"):]
        return Response(200, {
            key: page.slice(items),
            "links": links(base, req.query, page, len(items)),
            "meta": {"total": len(items)},
        })


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox
    token: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "relaunch-sandbox"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes the request line to stderr; requests are logged in _serve.
        pass

    def _serve(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        status = 500
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ApiError(413, "request_entity_too_large", "The request body is too large.")
            raw = self.rfile.read(length) if length else b""
            if path.startswith("/_sandbox/"):
                response = self._admin(path, raw)
            elif path == "/v2" or path.startswith("/v2/"):
                response = self._api(path, parse_qs(split.query, keep_blank_values=True), raw)
            else:
                response = Response(404, _error(not_found()))
        except ApiError as exc:
            response = Response(exc.status, _error(exc))
        except Exception:
            log.exception("%s %s failed", self.command, path)
            response = Response(500, {"id": "server_error", "message": "Unexpected server-side error"})
        status = response.status
        log.debug("%s %s -> %s", self.command, path, status)
        self._send(response)

    def _api(self, path: str, query: dict[str, list[str]], raw: bytes) -> Response:
        sandbox = self.server.sandbox
        if not self._authorized():
            return self._with_limits(Response(401, {"id": "unauthorized", "message": "Unable to authenticate you."}),
                                     sandbox.limiter.peek())
        fault = sandbox.faults.take_response(self.command, path)
        if fault is not None:
            verdict = sandbox.limiter.peek()
            if fault.status == 429:
                resp = Response(429, {"id": "too_many_requests", "message": "API Rate limit exceeded."},
                                {"retry-after": str(fault.retry_after)})
                return self._with_limits(resp, Verdict(False, verdict.limit, 0, verdict.reset, fault.retry_after))
            return self._with_limits(Response(500, {"id": "server_error", "message": "Unexpected server-side error"}),
                                     verdict)
        verdict = sandbox.limiter.hit()
        if not verdict.allowed:
            resp = Response(429, {"id": "too_many_requests", "message": "API Rate limit exceeded."},
                            {"retry-after": str(verdict.retry_after)})
            return self._with_limits(resp, verdict)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return self._with_limits(Response(400, {"id": "bad_request", "message": "The request body is not valid JSON."}),
                                     verdict)
        req = Request(self.command, path, query, body, self._base_url())
        try:
            response = sandbox.dispatch(req)
        except ApiError as exc:
            response = Response(exc.status, _error(exc))
        return self._with_limits(response, verdict)

    def _admin(self, path: str, raw: bytes) -> Response:
        faults = self.server.sandbox.faults
        if path.rstrip("/") == "/_sandbox/health" and self.command == "GET":
            return Response(200, {"status": "ok"})
        if not self._authorized():
            return Response(401, {"id": "unauthorized", "message": "Unable to authenticate you."})
        if path.rstrip("/") != "/_sandbox/faults":
            raise not_found()
        if self.command == "GET":
            return Response(200, faults.describe())
        if self.command == "DELETE":
            faults.clear()
            return Response(204)
        if self.command == "POST":
            try:
                faults.add(json.loads(raw or b"null"))
            except ValueError as exc:  # includes FaultSpecError and bad JSON
                field_name = exc.field if isinstance(exc, FaultSpecError) else "body"
                raise unprocessable(f"{field_name}: {exc}") from None
            return Response(201, faults.describe())
        raise not_found()

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.server.token.encode())

    def _base_url(self) -> str:
        host = self.headers.get("Host") or ""
        if not _HOST.match(host):
            host = f"127.0.0.1:{self.server.server_address[1]}"
        return f"http://{host}/v2"

    @staticmethod
    def _with_limits(response: Response, verdict: Verdict) -> Response:
        response.headers.update({
            "ratelimit-limit": str(verdict.limit),
            "ratelimit-remaining": str(verdict.remaining),
            "ratelimit-reset": str(verdict.reset),
        })
        return response

    def _send(self, response: Response) -> None:
        payload = b"" if response.body is None or response.status == 204 else json.dumps(response.body).encode()
        self.send_response(response.status)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


def _error(exc: ApiError) -> dict[str, str]:
    return {"id": exc.error_id, "message": exc.message}


@dataclass
class ServerHandle:
    """A running simulator. ``url`` ends in ``/v2/`` (what DIGITALOCEAN_END_POINT wants)."""

    url: str
    port: int
    sandbox: Sandbox
    _server: _Server
    _thread: Thread
    _dns: DnsServer | None = None
    _closed: bool = False

    @property
    def dns_port(self) -> int | None:
        """The port of the zones' authoritative DNS server on 127.0.0.1 (UDP and TCP), or None if off."""
        return self._dns.port if self._dns else None

    @property
    def faults(self) -> Faults:
        return self.sandbox.faults

    def close(self, wait: float = 300.0) -> None:
        """Stop serving, then wait up to ``wait`` seconds for running actions to finish (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        if self._dns:
            self._dns.close()
        self.sandbox.close(wait)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(
    state_dir: Path,
    backend: Backend,
    token: str = DEFAULT_TOKEN,
    port: int = 0,
    *,
    per_hour: int = HOURLY_LIMIT,
    per_minute: int = MINUTE_LIMIT,
    dns_port: int | None = 0,
) -> ServerHandle:
    """Serve the sandbox API for the cloud kept in ``state_dir`` on 127.0.0.1:``port``.

    ``port=0`` picks a free port. The backend must be prepared already. Unfinished work
    of earlier simulators on the same state is taken over before serving. Return once the
    socket is listening; the server runs in a background thread until ``close()``.
    The zones are also served by an authoritative DNS server on 127.0.0.1:``dns_port``
    (UDP and TCP; 0 picks a free port, ``handle.dns_port`` tells which; None: no DNS).
    """
    if not token:
        raise ValueError("the sandbox API needs a non-empty token")
    sandbox = Sandbox(Path(state_dir), backend, per_hour=per_hour, per_minute=per_minute)
    server = _Server(("127.0.0.1", port), _Handler)
    server.sandbox = sandbox
    server.token = token
    real_port = server.server_address[1]
    try:
        dns = DnsServer(sandbox.store, "127.0.0.1", dns_port).start() if dns_port is not None else None
    except OSError:
        server.server_close()
        raise
    sandbox.resume()
    thread = Thread(target=server.serve_forever, name=f"sandbox-api-{real_port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{real_port}/v2/"
    log.info("sandbox API listening on %s (state in %s)", url, state_dir)
    return ServerHandle(url=url, port=real_port, sandbox=sandbox, _server=server, _thread=thread, _dns=dns)
