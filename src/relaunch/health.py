"""Health checks: the inventory's HTTP checks, sent to one address with each app's Host header.

A check passes when the status is the expected one and the body holds the expected
text; apps' health endpoints read their database, so a pass also says the data is there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from relaunch.inventory.model import App, HealthCheck, Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    app: str
    host: str
    path: str
    ok: bool
    status: int | None
    detail: str  # why it failed, or the start of the body when it passed
    seconds: float

    def describe(self) -> str:
        return f"{self.app}: GET http://{self.host}{self.path} -> {self.status or '-'}: {self.detail}"


@dataclass(frozen=True)
class HealthReport:
    address: str
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


def check_one(address: str, app: App, check: HealthCheck, port: int = 80) -> CheckResult:
    """Send one check to ``address`` (an IP) with the app's Host header; never raise."""
    host = check.host or app.domain
    url = f"http://{address}:{port}{check.path}" if port != 80 else f"http://{address}{check.path}"
    started = time.monotonic()
    try:
        resp = requests.get(url, headers={"Host": host}, timeout=check.timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return CheckResult(app.name, host, check.path, False, None, f"no answer ({type(exc).__name__})",
                           time.monotonic() - started)
    seconds = time.monotonic() - started
    body = resp.text
    if resp.status_code != check.status:
        return CheckResult(app.name, host, check.path, False, resp.status_code,
                           f"expected status {check.status}", seconds)
    if check.contains is not None and check.contains not in body:
        return CheckResult(app.name, host, check.path, False, resp.status_code,
                           f"body lacks {check.contains!r}", seconds)
    return CheckResult(app.name, host, check.path, True, resp.status_code, body[:120].strip(), seconds)


def check_site(inv: Inventory, address: str, port: int = 80) -> HealthReport:
    """Run every health check of every app against ``address``."""
    results = [check_one(address, app, check, port) for app in inv.apps for check in app.health]
    for r in results:
        log.debug("health %s", r.describe())
    return HealthReport(address, results)


def wait_healthy(
    inv: Inventory,
    address: str,
    timeout: float = 120,
    port: int = 80,
    on_attempt: Callable[[HealthReport], None] | None = None,
) -> HealthReport:
    """Repeat ``check_site`` until all pass or ``timeout`` runs out; return the last report."""
    deadline = time.monotonic() + timeout
    delay = 0.5
    while True:
        report = check_site(inv, address, port)
        if on_attempt:
            on_attempt(report)
        if report.ok or time.monotonic() + delay > deadline:
            return report
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
