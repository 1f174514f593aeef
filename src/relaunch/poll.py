"""Bounded polling: the one loop behind every "wait until ..." in relaunch.

Each waiter keeps its own reasons to stop early (a pinned host key that does not match,
a process that exited) inside the loop body; what they share is here: the first
attempt at once, then sleeps growing by ``factor`` up to ``cap``, never past the
deadline, and one last attempt at the deadline itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator


def attempts(
    timeout: float,
    *,
    first: float = 0.2,
    factor: float = 1.5,
    cap: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[int]:
    """Given a time budget in seconds, yield attempt numbers (1, 2, ...) until it is spent.

    Between attempts sleep ``first``, then ``factor`` times longer each time, at most
    ``cap``; a sleep is cut short at the deadline, and an attempt is always made there.
    The loop body ``break``s or ``return``s on success; when the iteration ends the time
    is up and the caller says so (raise, or return the last result).
    """
    deadline = clock() + timeout
    delay = first
    number = 1
    while True:
        yield number
        left = deadline - clock()
        if left <= 0:
            return
        sleep(min(delay, left))
        delay = min(delay * factor, cap)
        number += 1


__all__ = ["attempts"]
