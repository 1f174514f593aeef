"""Health checks: the inventory's HTTP(S) checks, sent to one address with each app's Host header.

A check passes when the status is the expected one and the body holds the expected
text; apps' health endpoints read their database, so a pass also says the data is there.
An ``https`` check connects to the address but speaks TLS as if to the app's host name:
that name is sent as SNI and the certificate must be valid for it (trusting
``proxy.tls.ca`` when given, else the system's CAs), exactly what a browser would
see once DNS points at the address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from relaunch.inventory.model import App, HealthCheck, Inventory
from relaunch.poll import attempts

log = logging.getLogger(__name__)

#: Bodies are read up to this many bytes (a health answer is small; a wrong vhost may not be).
_MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class CheckResult:
    app: str
    host: str
    path: str
    ok: bool
    status: int | None
    detail: str  # why it failed, or the start of the body when it passed
    seconds: float
    scheme: str = "http"
    address: str = ""  # where it was sent (an IPv6 address in brackets)

    def describe(self) -> str:
        at = f" at {self.address}" if self.address else ""
        return f"{self.app}: GET {self.scheme}://{self.host}{self.path}{at} -> {self.status or '-'}: {self.detail}"


@dataclass(frozen=True)
class HealthReport:
    address: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


def check_one(address: str, app: App, check: HealthCheck, port: int | None = None, ca: str | None = None) -> CheckResult:
    """Send one check to ``address`` (an IP) with the app's Host header (and SNI for https); never raise.

    ``port`` defaults to 80 or 443 by the check's scheme; ``ca`` is a PEM file of CAs to trust
    for https (default: the system's).
    """
    host = check.host or app.domain
    timeout = urllib3.Timeout(connect=check.timeout, read=check.timeout)
    pool: urllib3.HTTPConnectionPool
    if check.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address, port or 443, timeout=timeout, retries=False, maxsize=1,
            server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED", ca_certs=ca,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port or 80, timeout=timeout, retries=False, maxsize=1)
    started = time.monotonic()

    def result(ok: bool, status: int | None, detail: str) -> CheckResult:
        return CheckResult(app.name, host, check.path, ok, status, detail, time.monotonic() - started, check.scheme,
                           address)

    try:
        with pool:
            resp = pool.request("GET", check.path, headers={"Host": host}, redirect=False, preload_content=False)
            try:
                raw = resp.read(_MAX_BODY)
            finally:
                resp.release_conn()
    except SSLError as exc:
        return result(False, None, f"TLS failed for {host}: {_reason(exc)}")
    except (HTTPError, OSError) as exc:
        return result(False, None, f"no answer ({type(exc).__name__})")
    body = raw.decode("utf-8", "replace")
    if resp.status != check.status:
        return result(False, resp.status, f"expected status {check.status}")
    if check.contains is not None and check.contains not in body:
        return result(False, resp.status, f"body lacks {check.contains!r}")
    return result(True, resp.status, body[:120].strip())


def _reason(exc: BaseException) -> str:
    """The innermost message of a TLS failure (e.g. certificate verify failed: ...), on one line."""
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    return " ".join(str(exc).split())[:200]


def check_site(inv: Inventory, address: str | Sequence[str], http_port: int = 80, https_port: int = 443) -> HealthReport:
    """Run every health check of every app against ``address`` (or against each of several addresses)."""
    addresses = [address] if isinstance(address, str) else list(address)
    ca = inv.proxy.tls.ca if inv.proxy.tls else None
    results = [
        check_one(a, app, check, https_port if check.scheme == "https" else http_port, ca)
        for a in addresses
        for app in inv.apps
        for check in app.health
    ]
    for r in results:
        log.debug("health %s", r.describe())
    return HealthReport(", ".join(addresses), results)


def wait_healthy(
    inv: Inventory,
    address: str | Sequence[str],
    timeout: float = 120,
    http_port: int = 80,
    https_port: int = 443,
    on_attempt: Callable[[HealthReport], None] | None = None,
) -> HealthReport:
    """Repeat ``check_site`` until all pass or ``timeout`` runs out; return the last report."""
    report = HealthReport("", [])
    for _ in attempts(timeout, first=0.5, cap=5.0):
        report = check_site(inv, address, http_port, https_port)
        if on_attempt:
            on_attempt(report)
        if report.ok:
            break
    return report
