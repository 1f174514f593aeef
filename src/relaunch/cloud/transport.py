"""HTTP to the DigitalOcean API: timeout, retries, error translation, token hygiene.

Why python-digitalocean's own transport is not used as is (version 1.17, read
from its baseapi.py):

* `BaseAPI.__perform_request` sends GET/PUT/DELETE through a per-object
  `requests.Session` but POST and PATCH through the module-level
  `requests.post`/`requests.patch`, so an adapter mounted on the session would
  not see creates; it has no retry at all and no timeout unless
  $PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC is set.
* It logs every request's parameters at DEBUG on the `digitalocean` logger,
  which would include a Droplet's user_data (cloud-init carrying host keys).
* `get_data` raises `NotFoundError()` with no message, `DataReadError` with
  only the message (the status is lost), and an `IndexError` when an error
  body lacks either "id" or "message".
* Its objects read $DIGITALOCEAN_END_POINT in their constructor but apply
  constructor keyword arguments afterwards, so `end_point=` per object works
  for the objects we create; objects the library creates internally
  (`get_object` helpers, `_perform_action(return_dict=False)`,
  `take_snapshot(power_off=True)`, public keys in `ssh_keys`) read only the
  environment and would talk to the public API with the library's transport.

So the library keeps doing what it is good at (request bodies and response
objects) and its one public seam, `get_data`, is routed here: the adapter
creates library objects through `Transport.make`, which returns an instance of
a subclass whose `get_data` is `Transport.get_data`. The adapter never calls
the library paths listed above, and never mutates the process environment
(two `Cloud`s with different endpoints can coexist). Library objects are given
an empty token: only the transport holds it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable, TypeVar
from urllib.parse import urljoin, urlsplit

import digitalocean
import requests
from digitalocean.baseapi import BaseAPI

from relaunch import __version__
from relaunch.errors import RelaunchError

from .config import validate_endpoint
from .retry import IDEMPOTENT_METHODS, RETRYABLE_STATUSES, RetryPolicy, retry_delay

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
_MAX_PAGES = 500
_T = TypeVar("_T", bound=BaseAPI)


class CloudError(RelaunchError):
    """An API call failed. `status` is the HTTP status (None: no response).

    `ambiguous` is True when the request may have taken effect although it
    failed (a 5xx or a lost connection after a POST was sent).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        api_id: str | None = None,
        api_message: str | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.api_id = api_id
        self.api_message = api_message
        self.ambiguous = ambiguous

    def in_context(self, what: str) -> "CloudError":
        """Return the same error with `what` (the operation) in front of its message."""
        new = type(self)(
            f"{what}: {self}",
            status=self.status,
            api_id=self.api_id,
            api_message=self.api_message,
            ambiguous=self.ambiguous,
        )
        return new


class CloudNotFound(CloudError):
    """The API answered 404."""


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly did not reach the server (safe to repeat any method)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        # requests wraps urllib3's MaxRetryError(reason=NewConnectionError) for
        # "connection refused"/DNS failures: nothing was sent.
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")
    return False


def _error_details(resp: requests.Response) -> tuple[str | None, str | None]:
    """Return (id, message) from an error body, tolerating any shape (DO sends {"id","message"})."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip().replace("\n", " ")
        return None, (text[:200] or None)
    if isinstance(body, dict):
        api_id = body.get("id")
        message = body.get("message")
        return (str(api_id) if api_id is not None else None, str(message) if message is not None else None)
    return None, str(body)[:200]


class Transport:
    """One authenticated connection to one API endpoint.

    Given an endpoint (validated), a token and a timeout, `request` sends one
    API call with the retry policy and returns its decoded JSON (True for 204);
    it raises CloudError (CloudNotFound for 404) with the method, path, status
    and the API's message. The token never appears in logs, messages or repr.
    """

    def __init__(
        self,
        *,
        token: str,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if not token:
            raise RelaunchError("DigitalOcean API token is empty")
        if not timeout or timeout <= 0:
            raise RelaunchError(f"request timeout must be a positive number of seconds, not {timeout!r}")
        self.endpoint = validate_endpoint(endpoint)
        self.timeout = float(timeout)
        self.policy = policy or RetryPolicy()
        self._token = token
        self._session = session or requests.Session()
        self._origin = urlsplit(self.endpoint)[:2]
        self._routed: dict[type, type] = {}

    def __repr__(self) -> str:
        return f"Transport(endpoint={self.endpoint!r}, timeout={self.timeout})"

    def close(self) -> None:
        self._session.close()

    # --- library objects -------------------------------------------------

    def make(self, cls: type[_T], *, retry_unsafe: bool = False, **kwargs: Any) -> _T:
        """Return a python-digitalocean object of `cls` whose API calls go through this transport.

        `retry_unsafe=True` allows this object's POSTs to be retried after a
        5xx or a lost connection; pass it only for requests whose repetition
        is harmless (see the callers).
        """
        routed = self._routed.get(cls)
        if routed is None:
            routed = type(f"Routed{cls.__name__}", (cls, _Routed), {})
            self._routed[cls] = routed
        obj = routed(token="", end_point=self.endpoint, **kwargs)
        obj._relaunch_transport = self
        obj._relaunch_retry_unsafe = retry_unsafe
        return obj

    # --- requests --------------------------------------------------------

    def _url(self, path: str) -> str:
        if "://" in path:
            # Pagination links are absolute; refuse to send the token elsewhere.
            if urlsplit(path)[:2] != self._origin:
                raise CloudError(f"refusing to follow a link to another host: {self._scrub(path)}")
            return path
        # The library writes some paths with a trailing slash ("droplets/");
        # the API's documented paths (and the sandbox's routes) have none.
        path, sep, query = path.partition("?")
        return urljoin(self.endpoint, path.strip("/")) + sep + query

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def get_data(self, path: str, method: str = "GET", params: dict | None = None, *, retry_unsafe: bool = False) -> Any:
        """Like BaseAPI.get_data: one call, plus every further page of a GET list."""
        params = dict(params or {})
        if method == "GET":
            params.setdefault("per_page", 200)
        data = self.request(method, path, params, retry_unsafe=retry_unsafe)
        if method != "GET" or "page" in params or not isinstance(data, dict):
            return data
        pages = 0
        next_url = ((data.get("links") or {}).get("pages") or {}).get("next")
        while next_url:
            pages += 1
            if pages > _MAX_PAGES:
                raise CloudError(f"GET {path}: more than {_MAX_PAGES} pages; giving up")
            page = self.request("GET", next_url, None)
            if not isinstance(page, dict):
                break
            for key, value in page.items():
                if isinstance(value, list) and isinstance(data.get(key), list):
                    data[key] = data[key] + value
                elif key not in ("links", "meta"):
                    data[key] = value
            next_url = ((page.get("links") or {}).get("pages") or {}).get("next")
        data.pop("links", None)
        return data

    def request(self, method: str, path: str, params: dict | None = None, *, retry_unsafe: bool = False) -> Any:
        """Send one API call; return its JSON body (True for 204, {} for an empty 2xx).

        Retried, within `self.policy`: 429 always (the API rejected the call
        before doing anything); 5xx and connection errors when `method` is
        idempotent or `retry_unsafe`; connection failures that certainly
        happened before anything was sent, for any method.
        """
        method = method.upper()
        url = self._url(path)
        shown = urlsplit(url).path
        idempotent = method in IDEMPOTENT_METHODS or retry_unsafe
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "User-Agent": f"relaunch/{__version__} python-digitalocean/{digitalocean.__version__}",
        }
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self.timeout, "allow_redirects": False}
        if method == "GET":
            kwargs["params"] = params or None
        elif params:
            kwargs["data"] = json.dumps(params)
        policy = self.policy
        started = policy.monotonic()
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            try:
                resp = self._session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                never_sent = _never_sent(exc)
                reason = f"{type(exc).__name__}: {self._scrub(str(exc))}"
                log.debug("%s %s -> %s", method, shown, type(exc).__name__)
                error = CloudError(
                    f"{method} {shown}: no answer from the API ({reason})",
                    ambiguous=not (never_sent or method in IDEMPOTENT_METHODS),
                )
                if not (idempotent or never_sent):
                    raise error from None
                delay = retry_delay(attempt, None, {}, policy)
                self._wait_or_raise(error, attempt, delay, started, method, shown, reason)
                continue
            status = resp.status_code
            log.debug("%s %s -> %s (%.3f s)", method, shown, status, time.monotonic() - t0)
            if status in RETRYABLE_STATUSES and (status == 429 or idempotent):
                error = self._error(resp, method, shown, ambiguous=False)
                delay = retry_delay(attempt, status, resp.headers, policy)
                if delay > policy.max_server_wait:
                    raise CloudError(
                        f"{error} (the API asks to wait {delay:.0f} s, longer than relaunch waits)",
                        status=status, api_id=error.api_id, api_message=error.api_message,
                    ) from None
                self._wait_or_raise(error, attempt, delay, started, method, shown, f"HTTP {status}")
                continue
            break
        if status == 204:
            return True
        if 200 <= status < 300:
            if not resp.content:
                return {}
            try:
                return resp.json()
            except ValueError:
                raise CloudError(
                    f"{method} {shown}: HTTP {status} with a body that is not JSON", status=status
                ) from None
        raise self._error(resp, method, shown, ambiguous=status >= 500 and method not in IDEMPOTENT_METHODS)

    def _wait_or_raise(
        self, error: CloudError, attempt: int, delay: float, started: float, method: str, shown: str, reason: str
    ) -> None:
        policy = self.policy
        if attempt >= policy.max_attempts:
            raise error.in_context(f"gave up after {attempt} attempts") from None
        if policy.monotonic() - started + delay > policy.max_total:
            raise error.in_context(f"gave up after {attempt} attempts ({policy.max_total:.0f} s budget)") from None
        log.info("%s %s: %s; retrying in %.1f s (attempt %d of %d)",
                 method, shown, reason, delay, attempt + 1, policy.max_attempts)
        policy.sleep(delay)

    def _error(self, resp: requests.Response, method: str, shown: str, *, ambiguous: bool) -> CloudError:
        status = resp.status_code
        api_id, api_message = _error_details(resp)
        api_id = self._scrub(api_id) if api_id else None
        api_message = self._scrub(api_message) if api_message else None
        detail = ": ".join(x for x in (api_id, api_message) if x) or (resp.reason or "no message")
        hint = ""
        if status == 401:
            hint = " (the API token was refused: check it is valid and not expired)"
        elif status == 403:
            hint = " (the API token lacks a needed scope, e.g. it is read-only)"
        elif 300 <= status < 400:
            hint = " (unexpected redirect: check the endpoint URL)"
        cls = CloudNotFound if status == 404 else CloudError
        return cls(
            f"{method} {shown}: HTTP {status} {detail}{hint}",
            status=status, api_id=api_id, api_message=api_message, ambiguous=ambiguous,
        )


class _Routed(BaseAPI):
    """Mixin placed after a library class: its `get_data` goes through a Transport."""

    _relaunch_transport: Transport
    _relaunch_retry_unsafe: bool = False

    def get_data(self, url, type="GET", params=None):  # noqa: A002 - the library's signature
        return self._relaunch_transport.get_data(url, type, params, retry_unsafe=self._relaunch_retry_unsafe)


def translate(exc: BaseException, what: str, scrub: Callable[[str], str] = lambda s: s) -> RelaunchError:
    """Return a RelaunchError saying `what` failed because of `exc`.

    Covers our own CloudError (context added), python-digitalocean's
    exceptions (its message when it has one), requests' exceptions, and the
    KeyError/IndexError/TypeError the library raises on bodies of an
    unexpected shape.
    """
    from digitalocean import baseapi as lib

    if isinstance(exc, CloudError):
        return exc.in_context(what)
    if isinstance(exc, lib.NotFoundError):
        return CloudNotFound(f"{what}: not found (HTTP 404)", status=404)
    if isinstance(exc, lib.TokenError):
        return CloudError(f"{what}: no API token was given to the library")
    if isinstance(exc, lib.JSONReadError):
        return CloudError(f"{what}: the API answered with something that is not JSON ({scrub(str(exc))})")
    if isinstance(exc, lib.DataReadError):
        return CloudError(f"{what}: the API refused: {scrub(str(exc))}")
    if isinstance(exc, lib.EndPointError):
        return CloudError(f"{what}: invalid API endpoint ({scrub(str(exc))})")
    if isinstance(exc, lib.Error):
        return CloudError(f"{what}: {type(exc).__name__}: {scrub(str(exc))}")
    if isinstance(exc, requests.RequestException):
        return CloudError(f"{what}: no answer from the API ({type(exc).__name__}: {scrub(str(exc))})")
    if isinstance(exc, (KeyError, IndexError, TypeError, ValueError)):
        return CloudError(
            f"{what}: the API answered in an unexpected shape ({type(exc).__name__}: {scrub(str(exc))})"
        )
    return RelaunchError(f"{what}: {type(exc).__name__}: {scrub(str(exc))}")
