"""The drill's systemd user timer: the units as written, quoting, and the install sequence (on a recording shell)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaunch.errors import RelaunchError
from relaunch.schedule import Schedule, default_schedule, install, render_units, systemd_quote


def test_render_units_runs_the_status_check_then_the_drill_from_the_checkout() -> None:
    s = Schedule("example", "weekly", Path("/home/op/relaunch 2"), Path("/home/op/relaunch 2/.venv/bin/fab"))
    units = render_units(s)
    service, timer = units["relaunch-drill-example.service"], units["relaunch-drill-example.timer"]
    assert "WorkingDirectory=/home/op/relaunch 2\n" in service  # a path setting: quotes would be part of the path
    assert 'ExecStartPre=-"/home/op/relaunch 2/.venv/bin/fab" "backup" "--status" "--site" "example"' in service
    assert 'ExecStart="/home/op/relaunch 2/.venv/bin/fab" "drill" "--site" "example"' in service
    assert "EnvironmentFile=-%h/.config/relaunch/example.env" in service and "Type=oneshot" in service
    assert "OnCalendar=weekly" in timer and "Persistent=true" in timer and "Unit=relaunch-drill-example.service" in timer


def test_systemd_quote_neutralises_specifiers_quotes_and_refuses_control_characters() -> None:
    assert systemd_quote('/a/b%h "c"\\') == '"/a/b%%h \\"c\\"\\\\"'
    with pytest.raises(RelaunchError, match="control character"):
        systemd_quote("/a\nb")


def test_default_schedule_refuses_other_periods() -> None:
    with pytest.raises(RelaunchError, match="weekly, daily"):
        default_schedule("example", "hourly")
    assert default_schedule("example", "daily").fab.name == "fab"


def test_install_verifies_before_enabling_and_stops_at_a_refused_unit() -> None:
    calls: list[str] = []

    def shell(command: str, stdin: str | None = None):
        calls.append(command)
        if command.startswith("d="):
            return 0, "/root/.config/systemd/user\n", ""
        if command.startswith("systemd-analyze"):
            return 1, "", "relaunch-drill-example.service: Command /x/fab is not executable"
        return 0, "", ""

    s = Schedule("example", "daily", Path("/x"), Path("/x/fab"))
    with pytest.raises(RelaunchError, match="not executable"):
        install(s, shell)
    assert not any("enable" in c for c in calls), "enabled a unit systemd refused"
