from __future__ import annotations

import pytest

from relaunch.sandbox.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_hit_counts_down_remaining() -> None:
    limiter = RateLimiter(5000, 250, clock=Clock())
    first, second = limiter.hit(), limiter.hit()
    assert (first.allowed, first.limit, first.remaining) == (True, 5000, 4999)
    assert second.remaining == 4998 and second.reset == 1_000_000 + 3600


def test_minute_limit_refuses_then_recovers() -> None:
    clock = Clock()
    limiter = RateLimiter(100, 2, clock=clock)
    limiter.hit()
    clock.now += 10
    limiter.hit()
    refused = limiter.hit()
    assert not refused.allowed and refused.retry_after == 50
    clock.now += 50
    assert limiter.hit().allowed


def test_hour_limit_refuses_until_the_oldest_expires() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 100, clock=clock)
    limiter.hit()
    clock.now += 120
    limiter.hit()
    clock.now += 120
    refused = limiter.hit()
    assert not refused.allowed and refused.remaining == 0 and refused.retry_after == 3600 - 240
    clock.now += 3600 - 240
    assert limiter.hit().allowed


def test_refused_requests_are_not_counted() -> None:
    limiter = RateLimiter(100, 1, clock=Clock())
    limiter.hit()
    for _ in range(5):
        limiter.hit()
    assert limiter.peek().remaining == 99


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
