"""The live view of a run: pipeline events in, a table of steps on a terminal, plain lines elsewhere.

Usage, in the task layer::

    with RunView(console, steps=PHASES, title=f"rebuild of {site}") as view:
        record = rebuild(inv, progress=view)      # a RunView is a pipeline Progress sink

On a terminal the view is a rich ``Live`` table: each step with its state (pending, running,
done, skipped, failed), its time (elapsed while it runs), its last message, and under a step
that moves data one line per transfer (``Event.what``) with a bar, bytes done of total and the
rate over the last seconds. ``info`` events are also printed above the table, so they stay in
the scroll-back. When the output is not a terminal (CI, a pipe, tests) it prints one plain line
per event, no ANSI, no redraws; ``bytes`` events there are thinned to one line per transfer
every ``bytes_every`` seconds (its first and its last always print), else a large copy would
write thousands of lines into a CI log.

Everything shown from an event is data, never markup: it goes into ``rich.text.Text`` (no
markup, no emoji codes, no highlighting) after :func:`_clean` replaced control characters
(an ESC in a remote error message would otherwise reach the terminal) and newlines.

Events may come from several threads (transfers run in parallel): one lock guards the state,
the rendering and the printing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from relaunch.pipeline.events import Event
from relaunch.pipeline.report import human_duration, human_size

#: The states of a step, in the order a step goes through them ("stopped": running when the
#: view closed on an exception, e.g. Ctrl-C).
STATES = ("pending", "running", "done", "skipped", "failed", "stopped")

_STYLE = {"pending": "dim", "running": "yellow", "done": "green", "skipped": "cyan", "failed": "bold red",
          "stopped": "red"}
_RATE_WINDOW = 5.0  # seconds of samples the rate is measured over


@dataclass
class _Transfer:
    what: str
    done: int = 0
    total: int | None = None
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    last_printed: float | None = None  # when a plain line last showed it, and what it said
    printed_done: int | None = None

    def add(self, now: float, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= _RATE_WINDOW:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Bytes per second over the last few seconds; None until there are two samples apart in time."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def describe(self) -> str:
        text = human_size(self.done) + (f" / {human_size(self.total)}" if self.total is not None else "")
        if self.total:
            text += f" ({100 * self.done / self.total:.0f} %)"
        rate = self.rate()
        if rate is not None:
            text += f", {human_size(rate)}/s"
        return text


@dataclass
class _Step:
    name: str
    state: str = "pending"
    started: float | None = None
    seconds: float | None = None
    message: str = ""
    transfers: dict[str, _Transfer] = field(default_factory=dict)


class RunView:
    """Show a run's :class:`~relaunch.pipeline.events.Event` stream on ``console``; a context manager.

    ``steps``: the plan's step names, shown as pending from the start (a step that only appears
    in an event is added at the end). ``plain``: force plain lines (True) or the live table
    (False); by default the live table when the console is a terminal (not a dumb one).
    ``clock``: monotonic seconds (tests pass a fake one). Call the view with an event (it is a
    ``Progress``), or use :meth:`handle`. Exceptions in the ``with`` block pass through; steps
    still running are shown as stopped.
    """

    def __init__(self, console: Console | None = None, steps: Iterable[str] = (), *, title: str = "",
                 plain: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 bytes_every: float = 5.0, refresh_per_second: float = 4) -> None:
        self.console = console or Console()
        self.title = _clean(title)
        self.plain = (not self.console.is_terminal or self.console.is_dumb_terminal) if plain is None else plain
        self._clock = clock
        self._bytes_every = bytes_every
        self._refresh = refresh_per_second
        self._lock = threading.RLock()
        self._steps: dict[str, _Step] = {name: _Step(name) for name in steps}
        self._origin: float | None = None
        self._live: Live | None = None

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> RunView:
        with self._lock:
            self._origin = self._clock()
            if self.plain:
                if self.title:
                    self._print(self.title)
                return self
            live = self._live = Live(console=self.console, get_renderable=self.__rich__,
                                     refresh_per_second=self._refresh, transient=False)
        # Live is started, refreshed and stopped outside our lock: its refresh thread holds its
        # own lock while it renders (and __rich__ takes ours), so holding ours while waiting for
        # its would be the opposite order, a deadlock.
        live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            if exc_type is not None:
                for step in self._steps.values():
                    if step.state == "running":
                        step.state = "stopped"
                        step.seconds = _since(step.started, self._clock())
                        if self.plain:
                            self._print(f"{_clean(step.name)}: stopped ({_clean(exc_type.__name__)})")
            live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- events -------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        self.handle(event)

    def handle(self, event: Event) -> None:
        """Take one event: update the step's state, and print what the mode prints for it."""
        with self._lock:
            now = self._clock()
            if self._origin is None:
                self._origin = now
            name = event.step or "run"
            step = self._steps.get(name)
            if step is None:
                step = self._steps[name] = _Step(name)
            line = self._apply(step, event, now)
            if line is None:
                return
            if self.plain:
                self._print(line)  # under the lock: lines from several threads never interleave
                return
            live = self._live
            text = self._plain_text(line)
        if live is None:
            return
        if event.kind == "info":
            live.console.print(text, highlight=False, soft_wrap=True)  # above the table, kept in scroll-back
        elif event.kind != "bytes":
            live.refresh()  # a state changed: show it now; transfers move with the periodic refresh

    def _apply(self, step: _Step, event: Event, now: float) -> str | None:
        """Update ``step`` with ``event``; return the plain line for it (None: nothing to print)."""
        message = _clean(event.message)
        name = _clean(step.name)
        if event.kind == "start":
            step.state, step.started, step.seconds, step.message = "running", now, None, message
            return f"{name}: started" + (f": {message}" if message else "")
        if event.kind == "done":
            step.state = "done"
            step.seconds = event.seconds if event.seconds is not None else _since(step.started, now)
            moved = ", ".join(f"{t.what} {human_size(t.done)}" for t in step.transfers.values())
            step.message = message or (f"moved {moved}" if moved else step.message)
            took = f" in {human_duration(step.seconds)}" if step.seconds is not None else ""
            return f"{name}: done{took}" + (f": {message}" if message else "")
        if event.kind == "skip":
            step.state, step.message = "skipped", message or "already done"
            return f"{name}: skipped ({step.message})"
        if event.kind == "fail":
            step.state = "failed"
            step.seconds = event.seconds if event.seconds is not None else _since(step.started, now)
            step.message = message
            took = f" after {human_duration(step.seconds)}" if step.seconds is not None else ""
            return f"{name}: FAILED{took}" + (f": {message}" if message else "")
        if event.kind == "info":
            step.message = message
            return f"{name}: {message}"
        if event.kind == "bytes":
            what = _clean(event.what) or "data"
            transfer = step.transfers.get(what)
            if transfer is None:
                transfer = step.transfers[what] = _Transfer(what)
            first = transfer.last_printed is None
            transfer.add(now, int(event.done or 0), event.total)
            end = transfer.finished and transfer.done != transfer.printed_done
            if not (first or end or now - transfer.last_printed >= self._bytes_every):
                return None
            transfer.last_printed, transfer.printed_done = now, transfer.done
            return f"{name}: {what}: {transfer.describe()}"
        return f"{name}: {_clean(str(event.kind))}" + (f": {message}" if message else "")

    # -- output -------------------------------------------------------------------------------

    def _plain_text(self, line: str) -> Text:
        origin = self._origin if self._origin is not None else self._clock()
        elapsed = int(max(self._clock() - origin, 0))
        return Text(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {line}")

    def _print(self, line: str) -> None:
        # soft_wrap: one event, one line, whatever the console's width
        self.console.print(self._plain_text(line), highlight=False, soft_wrap=True)

    def __rich__(self) -> RenderableType:
        """The table of steps as it is now (what the live view draws; print it to get a snapshot)."""
        with self._lock:
            now = self._clock()
            table = Table.grid(padding=(0, 2))
            for _ in range(4):
                table.add_column()
            for step in self._steps.values():
                style = _STYLE.get(step.state, "")
                state: RenderableType = (Spinner("dots", text=Text("running", style=style), style=style)
                                         if step.state == "running" else Text(step.state, style=style))
                seconds = _since(step.started, now) if step.state == "running" else step.seconds
                took = Text(human_duration(seconds) if seconds is not None else "", style="dim")
                detail = Text(step.message, style="red" if step.state == "failed" else "")
                table.add_row(state, Text(_clean(step.name), style="bold" if step.state == "running" else ""),
                              took, detail)
                if step.state == "running":  # once the step ends, its message sums the transfers up
                    for t in step.transfers.values():
                        moving = Table.grid(padding=(0, 1))
                        moving.add_row(ProgressBar(total=t.total, completed=t.done, width=20, pulse=t.total is None),
                                       Text(t.describe()))
                        table.add_row(Text(""), Text(f"  {t.what}", style="dim"), Text(""), moving)
            if not self.title:
                return table
            return Group(Text(self.title, style="bold"), table)


def _since(started: float | None, now: float) -> float | None:
    return now - started if started is not None else None


def _clean(value: object) -> str:
    """Return ``value`` as one line of plain text: line breaks as `` / ``, other control or
    invisible characters as ``\\xNN`` / ``\\uNNNN`` (shown, never sent to the terminal)."""
    text = "" if value is None else str(value)
    lines = [part for part in text.replace("\r\n", "\n").split("\n") if part.strip()]
    return " / ".join("".join(_visible(c) for c in line) for line in lines).strip()


def _visible(c: str) -> str:
    if c.isprintable():
        return c
    if c.isspace():  # tab, no-break space, the Unicode line separators
        return " "
    return f"\\x{ord(c):02x}" if ord(c) <= 0xFF else f"\\u{ord(c):04x}"
