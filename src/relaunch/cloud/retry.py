"""When to retry a DigitalOcean API request, and how long to wait first.

Pure functions of a response's status and headers plus injected clocks, so the
policy is unit-tested without a network. python-digitalocean has no retry of
its own.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Methods whose repetition cannot create a second resource (RFC 9110 §9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry loop.

    `max_attempts` counts the first try. `max_total` (seconds) bounds the sum of
    the waits: a wait that would exceed what is left is not taken and the last
    error is raised instead. Backoff is exponential from `base` capped at `cap`,
    with "equal jitter" (half fixed, half random) so that many clients hitting
    the same rate limit spread out but never retry immediately.
    """

    max_attempts: int = 6
    base: float = 1.0
    cap: float = 30.0
    max_total: float = 120.0
    # A server-requested wait longer than this is not honoured: give up.
    max_server_wait: float = 90.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    monotonic: Callable[[], float] = field(default=time.monotonic, compare=False)
    wall_clock: Callable[[], float] = field(default=time.time, compare=False)
    rng: Callable[[], float] = field(default=random.random, compare=False)


def backoff_delay(attempt: int, policy: RetryPolicy) -> float:
    """Return the jittered exponential delay before retry number `attempt` (1-based)."""
    ceiling = min(policy.cap, policy.base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + policy.rng() * ceiling / 2


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # requests' CaseInsensitiveDict handles case itself; plain dicts in tests do not.
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def server_delay(status: int, headers: Mapping[str, str], now_epoch: float) -> float | None:
    """Return how long the server asks us to wait, in seconds, or None if it does not say.

    `Retry-After` (delta-seconds or an HTTP date) wins. DigitalOcean's own
    rate-limit header `RateLimit-Reset` (epoch seconds at which the window
    resets) is used on a 429, or when `RateLimit-Remaining` is 0. Values in
    the past give 0; unparseable values are ignored.
    """
    retry_after = _header(headers, "Retry-After")
    if retry_after is not None:
        value = retry_after.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - now_epoch)
    reset = _header(headers, "RateLimit-Reset")
    remaining = _header(headers, "RateLimit-Remaining")
    if reset is not None and (status == 429 or (remaining or "").strip() == "0"):
        try:
            return max(0.0, float(reset.strip()) - now_epoch)
        except ValueError:
            return None
    return None


def retry_delay(attempt: int, status: int | None, headers: Mapping[str, str], policy: RetryPolicy) -> float:
    """Return the wait before retry `attempt` after `status` (None: connection error).

    The server's request, when it gives one, is a floor: it is honoured and a
    little jitter added so that clients released at the same instant do not
    collide again.
    """
    jittered = backoff_delay(attempt, policy)
    if status is None:
        return jittered
    asked = server_delay(status, headers, policy.wall_clock())
    if asked is None:
        return jittered
    return asked + policy.rng() * min(1.0, policy.base)
