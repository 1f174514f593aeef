"""relaunch.ui.progress.RunView: pipeline events -> plain lines off a terminal, a live table on one."""

from __future__ import annotations

import re
import threading
import time
from io import StringIO

import pytest
from rich.console import Console

from relaunch.pipeline.events import Event
from relaunch.ui.progress import RunView

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=False, width=60), out


def _terminal_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, force_terminal=True, width=120, color_system="truecolor"), out


def _snapshot(view: RunView) -> str:
    snap = Console(file=StringIO(), force_terminal=False, width=120)
    snap.print(view)
    return snap.file.getvalue()


def test_runview_prints_one_plain_line_per_event_off_a_terminal() -> None:
    console, out = _plain_console()
    clock = Clock()
    with RunView(console, steps=["preflight", "provision", "data"], title="rebuild of example", clock=clock) as view:
        assert view.plain
        view(Event("start", "preflight"))
        clock.now += 2.5
        view(Event("info", "preflight", "old host answers"))
        view(Event("done", "preflight", seconds=2.5))
        view(Event("skip", "provision"))
        view(Event("start", "data"))
        clock.now += 70
        view(Event("fail", "data", "copy broke off: connection reset by peer, reconnect and run again"))
    assert out.getvalue().splitlines() == [
        "[00:00] rebuild of example",
        "[00:00] preflight: started",
        "[00:02] preflight: old host answers",
        "[00:02] preflight: done in 2.5 s",
        "[00:02] provision: skipped (already done)",
        "[00:02] data: started",
        # one line however narrow the console (width 60): never wrapped
        "[01:12] data: FAILED after 1 min 10 s: copy broke off: connection reset by peer, reconnect and run again",
    ]
    assert "\x1b" not in out.getvalue()


def test_runview_plain_bytes_lines_are_thinned_per_transfer() -> None:
    console, out = _plain_console()
    clock = Clock()
    with RunView(console, clock=clock, bytes_every=5) as view:
        for i in range(11):  # 10 s of a 1 MiB/s copy, an event every second
            view(Event("bytes", "data", done=i * 1024 * 1024, total=10 * 1024 * 1024, what="postgres app"))
            view(Event("bytes", "data", done=i * 2048, total=None, what="/srv/files"))
            clock.now += 1
        view(Event("bytes", "data", done=10 * 1024 * 1024, total=10 * 1024 * 1024, what="postgres app"))  # again
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "postgres app" in line] == [
        "[00:00] data: postgres app: 0 B / 10.0 MB (0 %)",
        "[00:05] data: postgres app: 5.0 MB / 10.0 MB (50 %), 1.0 MB/s",
        "[00:10] data: postgres app: 10.0 MB / 10.0 MB (100 %), 1.0 MB/s",
    ]
    assert [line for line in lines if "/srv/files" in line] == [
        "[00:00] data: /srv/files: 0 B",
        "[00:05] data: /srv/files: 10.0 KB, 2.0 KB/s",
        "[00:10] data: /srv/files: 20.0 KB, 2.0 KB/s",
    ]


def test_runview_every_bytes_event_with_no_thinning() -> None:
    console, out = _plain_console()
    with RunView(console, clock=Clock(), bytes_every=0) as view:
        for i in range(4):
            view(Event("bytes", "data", done=i, total=10, what="x"))
    assert len(out.getvalue().splitlines()) == 4


@pytest.mark.parametrize("make_console", [_plain_console, _terminal_console])
def test_runview_shows_data_as_text_never_markup(make_console) -> None:
    console, out = make_console()
    hostile = "[bold red]boom[/] :smile: \x1b[2J\x1b]0;title\x07 line1\nline2"
    with pytest.raises(KeyboardInterrupt), RunView(console, steps=["a"], title="[blink]t[/]\x1b[5m",
                                                   clock=Clock()) as view:
        view(Event("start", "a[/]", hostile))
        view(Event("info", "a[/]", hostile))
        view(Event("fail", "a[/]", hostile, seconds=1))
        view(Event("bytes", "\x1bb", done=1, total=2, what=hostile))
        view(Event("start", "\x1bc", hostile))
        raise KeyboardInterrupt  # "stopped" names the running step
    text = ANSI.sub("", out.getvalue())  # the view's own styling
    assert "\x1b" not in text and "\x07" not in text  # the data's escapes are shown, not sent
    assert "[bold red]boom[/] :smile: \\x1b[2J\\x1b]0;title\\x07 line1 / line2" in text
    assert "😄" not in text
    assert "[blink]t[/]" in text
    assert "a[/]" in text and "\\x1bb" in text and "\\x1bc" in text


def test_runview_live_table_on_a_terminal() -> None:
    console, out = _terminal_console()
    clock = Clock()
    with RunView(console, steps=["preflight", "provision", "data", "restore", "verify"], title="drill of example",
                 clock=clock) as view:
        assert not view.plain
        view(Event("start", "preflight"))
        view(Event("info", "preflight", "probing the backup store"))
        clock.now += 1.5
        view(Event("done", "preflight", seconds=1.5))
        view(Event("skip", "provision", "already done"))
        view(Event("start", "data"))
        view(Event("bytes", "data", done=0, total=100 * 1024 * 1024, what="postgres app"))
        clock.now += 2
        view(Event("bytes", "data", done=50 * 1024 * 1024, total=100 * 1024 * 1024, what="postgres app"))
        live = _snapshot(view)
        assert "postgres app" in live and "50.0 MB / 100.0 MB (50 %), 25.0 MB/s" in live
        assert re.search(r"running\s+data\s+2\.0 s", live)
        clock.now += 2
        view(Event("bytes", "data", done=100 * 1024 * 1024, total=100 * 1024 * 1024, what="postgres app"))
        view(Event("done", "data", seconds=4))
        view(Event("start", "restore"))
        view(Event("fail", "restore", "pg_restore: error", seconds=0.5))
    raw = out.getvalue()
    assert "\x1b[" in raw  # a terminal: styled, redrawn in place
    final = ANSI.sub("", raw).split("drill of example")[-1]  # the last drawing of the table
    rows = [re.sub(r"\s+", " ", line).strip() for line in final.splitlines() if line.strip()]
    assert rows == [
        "done preflight 1.5 s probing the backup store",
        "skipped provision already done",
        "done data 4.0 s moved postgres app 100.0 MB",
        "failed restore 0.5 s pg_restore: error",
        "pending verify",
    ]
    assert "probing the backup store" in ANSI.sub("", raw).split("drill of example")[1]  # info printed above too


def test_runview_marks_running_steps_stopped_on_an_exception() -> None:
    console, out = _plain_console()
    with pytest.raises(KeyboardInterrupt), RunView(console, steps=["data"], clock=Clock()) as view:
        view(Event("start", "data"))
        raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1] == "[00:00] data: stopped (KeyboardInterrupt)"

    console, out = _terminal_console()
    with pytest.raises(RuntimeError), RunView(console, steps=["data"], clock=Clock()) as view:
        view(Event("start", "data"))
        raise RuntimeError("boom")
    assert re.search(r"^stopped\s+data", ANSI.sub("", out.getvalue()).split("\r")[-1])  # the last drawing


def test_runview_takes_events_from_many_threads() -> None:
    # Transfers report from worker threads while rich's refresh thread redraws: the view must
    # never wait for rich's lock while holding its own (rich's thread takes them the other way).
    console, out = _terminal_console()
    view = RunView(console, steps=["data"], refresh_per_second=200)
    view.__enter__()
    view(Event("start", "data"))

    def copy(what: str) -> None:
        for i in range(300):
            view(Event("bytes", "data", done=i, total=299, what=what))
            if i % 3 == 0:
                view(Event("info", "data", f"{what} {i}"))
            if i % 50 == 0:
                view(Event("start", "data"))  # a state change: redrawn at once

    threads = [threading.Thread(target=copy, args=(f"t{n}",), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0))
    if any(t.is_alive() for t in threads):
        pytest.fail("the view deadlocked with rich's refresh thread")  # (no __exit__: it would hang too)
    view(Event("done", "data"))
    view.__exit__(None, None, None)
    assert "moved t0 299 B, t1 299 B, t2 299 B, t3 299 B" in ANSI.sub("", out.getvalue())


def test_runview_adds_steps_it_was_not_told_about_and_is_quiet_with_no_events() -> None:
    console, out = _plain_console()
    with RunView(console, clock=Clock()) as view:
        view(Event("info", "", "no step named"))
        view(Event("info", "extra", "hello"))
    assert out.getvalue().splitlines() == ["[00:00] run: no step named", "[00:00] extra: hello"]

    console, out = _plain_console()
    with RunView(console, steps=["a"], clock=Clock()):
        pass
    assert out.getvalue() == ""
