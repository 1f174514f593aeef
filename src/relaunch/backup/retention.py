"""Which backups to keep: a pure policy over timestamps (no I/O, no clock of its own).

The policy, applied to backup times ``t`` relative to a reference time ``now`` (UTC):

1. every backup with ``now - keep_within_hours <= t`` is kept (and any from the future:
   a clock that jumped back is no reason to delete data);
2. then, for each of the ``daily`` most recent UTC calendar days (today included), the
   newest backup of that day is kept;
3. then, for each of the ``weekly`` most recent ISO weeks (this week included), the newest
   backup of that week is kept;
4. the newest backup of all is always kept (a site whose backups stopped keeps its last one);
5. everything else is removed.

Days and weeks are calendar ones (not "the last N days that had a backup", restic's
meaning of ``--keep-daily``): a gap in backups does not stretch how far back they reach.
The same function decides for the host's directories and for the off-host snapshots, so
both places keep the same backups.

This module is copied next to the host's backup script (it is stdlib only, on purpose).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Policy:
    """How long to keep backups (the inventory's ``backups.retention``)."""

    keep_within_hours: int = 24
    daily: int = 14
    weekly: int = 8

    def __post_init__(self) -> None:
        if self.keep_within_hours < 0 or self.daily < 0 or self.weekly < 0:
            raise ValueError(f"retention counts must be 0 or more: {self}")


@dataclass(frozen=True)
class Plan:
    """What the policy decided: ``keep`` and ``remove`` (disjoint; together every key given), and why each is kept."""

    keep: frozenset
    remove: frozenset
    reasons: Mapping[Hashable, tuple[str, ...]]


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"backup time {t.isoformat()} has no time zone (give UTC times)")
    return t.astimezone(timezone.utc)


def _week_start(d: date) -> date:
    return d - timedelta(days=d.isoweekday() - 1)


def plan(times: Mapping[K, datetime] | Iterable[tuple[K, datetime]], policy: Policy, now: datetime) -> Plan:
    """Given backup key -> time (aware datetimes), return which keys to keep and which to remove at ``now``.

    Ties (two backups with the same time) are broken by key, the greater key winning, so the
    result does not depend on input order. Raise ValueError for a naive datetime.
    """
    items = list(times.items()) if isinstance(times, Mapping) else list(times)
    when = {key: _utc(t) for key, t in items}
    now = _utc(now)
    reasons: dict[Hashable, list[str]] = {}

    def keep(key: Hashable, why: str) -> None:
        reasons.setdefault(key, []).append(why)

    cutoff = now - timedelta(hours=policy.keep_within_hours)
    for key, t in when.items():
        if t >= cutoff:
            keep(key, "recent")
    ordered = sorted(when, key=lambda k: (when[k], k), reverse=True)  # newest first
    today = now.date()
    newest_per_day: dict[date, Hashable] = {}
    newest_per_week: dict[date, Hashable] = {}
    for key in ordered:
        newest_per_day.setdefault(when[key].date(), key)
        newest_per_week.setdefault(_week_start(when[key].date()), key)
    for day, key in newest_per_day.items():
        if 0 <= (today - day).days < policy.daily:
            keep(key, f"daily {day.isoformat()}")
    this_week = _week_start(today)
    for week, key in newest_per_week.items():
        if 0 <= (this_week - week).days // 7 < policy.weekly:
            iso = week.isocalendar()
            keep(key, f"weekly {iso[0]}-W{iso[1]:02d}")
    if ordered:
        keep(ordered[0], "newest")
    kept = frozenset(reasons)
    return Plan(
        keep=kept,
        remove=frozenset(when) - kept,
        reasons={k: tuple(v) for k, v in reasons.items()},
    )
