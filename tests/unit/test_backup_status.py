"""backup status: what the runs of a host mean against the RPO objective."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from relaunch.backup.status import Run, Status

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def run(minutes_ago: float, ok: bool = True, step: str | None = None) -> Run:
    started = NOW - timedelta(minutes=minutes_ago)
    return Run.from_json({
        "id": started.strftime("%Y%m%dT%H%M%SZ"), "started_at": started.isoformat(),
        "finished_at": (started + timedelta(seconds=30)).isoformat(), "ok": ok, "local_ok": ok or step == "offsite backup",
        "step": step, "error": None if ok else "boom", "size": 10, "seconds": 30.0, "offsite": None,
    })


def test_status_healthy_when_the_newest_good_backup_is_within_the_rpo() -> None:
    st = Status([run(40), run(10)], rpo_minutes=15, now=NOW, timer_active=True)
    assert st.healthy and not st.stale and not st.last_failed
    assert st.newest_good.id == run(10).id
    assert st.age == timedelta(minutes=10) - timedelta(seconds=30)


def test_status_stale_when_the_newest_good_backup_is_older_than_the_rpo() -> None:
    st = Status([run(40)], rpo_minutes=15, now=NOW, timer_active=True)
    assert st.stale and not st.healthy


def test_status_last_run_failed_is_unhealthy_even_with_a_recent_good_one() -> None:
    st = Status([run(10), run(1, ok=False, step="dump blog")], rpo_minutes=15, now=NOW, timer_active=True)
    assert st.last_failed and not st.stale and not st.healthy


def test_status_a_run_whose_offsite_copy_failed_is_not_a_good_backup() -> None:
    st = Status([run(30), run(5, ok=False, step="offsite backup")], rpo_minutes=15, now=NOW, timer_active=True)
    assert st.newest_good.id == run(30).id and st.stale


def test_status_no_runs_at_all_is_stale() -> None:
    st = Status([], rpo_minutes=15, now=NOW, timer_active=False)
    assert st.stale and st.newest_good is None and st.age is None and not st.last_failed
