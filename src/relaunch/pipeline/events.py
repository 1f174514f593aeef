"""Progress of a run, as data: the library emits events, only the task layer shows them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["start", "done", "skip", "fail", "info", "bytes"]


@dataclass(frozen=True)
class Event:
    """One thing that happened in a run.

    ``start``/``done``/``skip``/``fail``: a step began, finished (``seconds``), was already done
    (resume), or failed (``message`` says why). ``info``: a line of progress inside a step.
    ``bytes``: data moving in a step: ``done`` bytes so far of ``total`` (None when unknown),
    ``what`` names the transfer (a database or a tree).
    """

    kind: EventKind
    step: str
    message: str = ""
    seconds: float | None = None
    done: int | None = None
    total: int | None = None
    what: str = ""


Progress = Callable[[Event], None]


def quiet(event: Event) -> None:
    """A progress sink that ignores everything."""
