"""DigitalOcean's request rate limit: so many requests per hour and per minute, sliding."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

#: The documented limits (https://docs.digitalocean.com/reference/api/ "Rate Limit").
HOURLY_LIMIT = 5000
MINUTE_LIMIT = 250


@dataclass(frozen=True)
class Verdict:
    """The outcome of one request against the limit, and the values for the headers."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    """Unix time when the oldest counted request leaves the hourly window."""
    retry_after: int
    """Seconds to wait before retrying (0 when allowed)."""


class RateLimiter:
    """Count requests in a sliding hour and minute; refuse past either limit.

    Refused requests are not counted. Thread-safe. ``clock`` returns Unix time in seconds
    (injectable for tests).
    """

    def __init__(
        self,
        per_hour: int = HOURLY_LIMIT,
        per_minute: int = MINUTE_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_hour < 1 or per_minute < 1:
            raise ValueError("rate limits must be at least 1")
        self.per_hour = per_hour
        self.per_minute = per_minute
        self._clock = clock
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def hit(self) -> Verdict:
        """Count one request if the limits allow it; return the verdict."""
        with self._lock:
            now = self._clock()
            while self._hits and self._hits[0] <= now - 3600:
                self._hits.popleft()
            in_minute = self._recent(now - 60)
            retry_after = 0
            if len(self._hits) >= self.per_hour:
                retry_after = self._hits[0] + 3600 - now
            elif len(in_minute) >= self.per_minute:
                retry_after = in_minute[0] + 60 - now
            allowed = retry_after == 0
            if allowed:
                self._hits.append(now)
            oldest = self._hits[0] if self._hits else now
            return Verdict(
                allowed=allowed,
                limit=self.per_hour,
                remaining=max(0, self.per_hour - len(self._hits)),
                reset=math.ceil(oldest + 3600),
                retry_after=max(1, math.ceil(retry_after)) if not allowed else 0,
            )

    def peek(self) -> Verdict:
        """Return the current state without counting a request (for refused-anyway answers)."""
        with self._lock:
            now = self._clock()
            live = [t for t in self._hits if t > now - 3600]
            oldest = live[0] if live else now
            return Verdict(True, self.per_hour, max(0, self.per_hour - len(live)), math.ceil(oldest + 3600), 0)

    def _recent(self, since: float) -> list[float]:
        # The minute window is at most per_minute long; scan from the newest end.
        out: list[float] = []
        for t in reversed(self._hits):
            if t <= since:
                break
            out.append(t)
        out.reverse()
        return out
