"""retention: exactly which backups a policy keeps and removes, on synthetic timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaunch.backup.retention import Policy, plan

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # a Thursday, ISO week 2026-W48 (Mon 23 Nov)


def t(day: int, hour: int, month: int = 11, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_plan_keeps_recent_then_daily_then_weekly_and_removes_exactly_the_rest() -> None:
    times = {
        "A": t(26, 11),  # recent
        "B": t(25, 13),  # recent (24 h back is 25 Nov 12:00), and the newest of 25 Nov
        "C": t(25, 9),   # 25 Nov, but B is that day's newest
        "D": t(24, 22),  # newest of 24 Nov: a daily (today, 25, 24 are the 3 days)
        "E": t(24, 10),
        "F": t(23, 20),  # 23 Nov is the 4th day back; its week (W48) has A as newest
        "G": t(22, 18),  # Sunday: the newest of W47, a weekly
        "H": t(21, 18),
        "I": t(15, 18),  # W46: outside 2 weeks
        "J": t(1, 0, month=12),  # from the future (clock skew): kept
    }
    result = plan(times, Policy(keep_within_hours=24, daily=3, weekly=2), NOW)
    assert result.keep == {"A", "B", "D", "G", "J"}
    assert result.remove == {"C", "E", "F", "H", "I"}
    assert "daily 2026-11-24" in result.reasons["D"]
    assert "weekly 2026-W47" in result.reasons["G"]


def test_plan_boundary_of_keep_within_is_inclusive() -> None:
    times = {"edge": NOW - timedelta(hours=24), "older": NOW - timedelta(hours=24, seconds=1), "new": NOW}
    result = plan(times, Policy(keep_within_hours=24, daily=0, weekly=0), NOW)
    assert result.keep == {"edge", "new"}
    assert result.remove == {"older"}


def test_plan_always_keeps_the_newest_even_when_everything_is_old() -> None:
    times = {"old1": t(1, 0, month=1), "old2": t(2, 0, month=1)}
    result = plan(times, Policy(keep_within_hours=1, daily=1, weekly=1), NOW)
    assert result.keep == {"old2"}
    assert result.remove == {"old1"}
    assert result.reasons["old2"] == ("newest",)


def test_plan_weeks_across_a_year_boundary_are_iso_weeks() -> None:
    now = datetime(2027, 1, 6, 12, tzinfo=UTC)  # Wednesday of 2027-W01 (Mon 4 Jan 2027)
    times = {
        "w01": datetime(2027, 1, 4, 1, tzinfo=UTC),
        "w53-new": datetime(2027, 1, 3, 23, tzinfo=UTC),  # Sunday: 2026-W53
        "w53-old": datetime(2026, 12, 28, 1, tzinfo=UTC),  # Monday of 2026-W53
        "w52": datetime(2026, 12, 27, 1, tzinfo=UTC),
    }
    result = plan(times, Policy(keep_within_hours=1, daily=0, weekly=2), now)
    assert result.keep == {"w01", "w53-new"}
    assert result.remove == {"w53-old", "w52"}


def test_plan_ties_are_broken_by_key_whatever_the_order() -> None:
    same = t(20, 5)
    a = plan([("x", same), ("y", same)], Policy(1, 0, 1), NOW)
    b = plan([("y", same), ("x", same)], Policy(1, 0, 1), NOW)
    assert a.keep == b.keep == {"y"}


def test_plan_of_nothing_is_empty() -> None:
    result = plan({}, Policy(), NOW)
    assert result.keep == frozenset() and result.remove == frozenset()


def test_plan_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        plan({"a": datetime(2026, 1, 1)}, Policy(), NOW)


def test_policy_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        Policy(keep_within_hours=-1)


every_15_minutes = st.integers(min_value=0, max_value=60 * 24 * 90 // 15)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.sets(every_15_minutes, max_size=80),
    hours=st.integers(0, 48), daily=st.integers(0, 20), weekly=st.integers(0, 10),
)
def test_plan_properties(offsets: set[int], hours: int, daily: int, weekly: int) -> None:
    times = {f"b{o}": NOW - timedelta(minutes=15 * o) for o in offsets}
    result = plan(times, Policy(hours, daily, weekly), NOW)
    assert result.keep | result.remove == set(times)
    assert not result.keep & result.remove
    for key, when in times.items():
        if when >= NOW - timedelta(hours=hours):
            assert key in result.keep
    if times:
        assert max(times, key=times.get) in result.keep
    # outside the recent window, at most one backup per day is kept for the daily rule...
    old_kept = [times[k] for k in result.keep if times[k] < NOW - timedelta(hours=hours)]
    by_day: dict = {}
    for when in old_kept:
        by_day.setdefault(when.date(), []).append(when)
    for day, kept in by_day.items():
        assert len(kept) == 1  # one per day (daily and weekly both pick a day's newest)
        assert kept[0] == max(w for w in times.values() if w.date() == day)
    # ...and nothing older than both the daily and the weekly windows survives but the newest
    limit = min(NOW - timedelta(days=daily), NOW - timedelta(weeks=weekly + 1), NOW - timedelta(hours=hours))
    newest = max(times.values()) if times else None
    assert all(w >= limit or w == newest for w in old_kept)
    # the same input in another order gives the same answer
    assert plan(dict(reversed(list(times.items()))), Policy(hours, daily, weekly), NOW) == result
