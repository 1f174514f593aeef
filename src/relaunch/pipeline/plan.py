"""A run as data: named steps in order, each an idempotent action; executing them against a journal.

A :class:`Step` has a name from :data:`relaunch.pipeline.PHASES`, one line saying what it
will do (for ``--dry-run`` and progress), and ``run(ctx)``, which returns what it produced
(ids, addresses, choices: journaled, never secrets). :func:`execute` runs the steps in
order, skipping those the journal says are done (resume), timing each, and emitting
progress events. A failure (or Ctrl-C/SIGTERM) marks the step failed in the journal and
re-raises: the run is paused and ``--resume`` starts again at that step.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relaunch.pipeline import PHASES
from relaunch.pipeline.events import Event

if TYPE_CHECKING:
    from relaunch.pipeline.context import RunContext


@dataclass(frozen=True)
class Step:
    name: str
    describe: str
    run: Callable[[RunContext], dict[str, Any] | None]

    def __post_init__(self) -> None:
        if self.name not in PHASES:
            raise ValueError(f"step {self.name!r} is not a phase ({', '.join(PHASES)})")


@dataclass
class Plan:
    """The steps of one run and the facts a person checks before it starts (printed by --dry-run)."""

    kind: str
    site: str
    steps: list[Step]
    facts: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{i}. {s.name}: {s.describe}" for i, s in enumerate(self.steps, 1)]


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so every clean-up runs as it does for Ctrl-C."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Interrupted` in the main thread (clean-ups run, the journal says so)."""
    def handler(signum: int, frame: object) -> None:
        raise Interrupted("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(plan: Plan, ctx: RunContext) -> None:
    """Run every step of ``plan`` not yet done in ``ctx.journal``; raise at the first failure.

    The journal is saved after each step; a failed or interrupted step is recorded as
    failed with its (masked) reason before the exception goes on.
    """
    journal = ctx.journal
    for step in plan.steps:
        if journal.done(step.name):
            ctx.progress(Event("skip", step.name, "done in an earlier attempt"))
            continue
        ctx.progress(Event("start", step.name, step.describe))
        journal.step_started(step.name)
        started = time.monotonic()
        try:
            outputs = step.run(ctx) or {}
        except BaseException as exc:
            seconds = time.monotonic() - started
            reason = "interrupted (SIGTERM)" if isinstance(exc, Interrupted) else \
                "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else ctx.mask(str(exc)) or type(exc).__name__
            journal.step_failed(step.name, seconds, reason)
            ctx.progress(Event("fail", step.name, reason, seconds=seconds))
            raise
        seconds = time.monotonic() - started
        journal.step_done(step.name, seconds, outputs)
        ctx.progress(Event("done", step.name, seconds=seconds))
