"""relaunch.poll.attempts: at once, then growing sleeps, never past the deadline, one last try there."""

from __future__ import annotations

from relaunch.poll import attempts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_attempts_back_off_to_the_cap_and_end_with_one_at_the_deadline() -> None:
    clock = Clock()
    tries = [(n, clock.now) for n in attempts(10, first=1, factor=2, cap=4, sleep=clock.sleep, clock=clock)]
    assert clock.slept == [1, 2, 4, 3]  # the last sleep is cut to the deadline
    assert tries == [(1, 0), (2, 1), (3, 3), (4, 7), (5, 10)]


def test_attempts_stop_when_the_body_breaks() -> None:
    clock = Clock()
    for n in attempts(60, sleep=clock.sleep, clock=clock):
        if n == 3:
            break
    assert len(clock.slept) == 2


def test_attempts_with_no_time_try_once() -> None:
    clock = Clock()
    assert list(attempts(0, sleep=clock.sleep, clock=clock)) == [1] and clock.slept == []
