"""Asking the production host about its backups: run one now, the last runs, the list, verification.

Everything here runs the installed runner (``/usr/local/lib/relaunch/backup.py``) or reads
the status file it writes, over a pinned SSH connection, and returns data; the task
layer prints it.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from fabric import Connection

from relaunch.backup.install import CONFIG_PATH, RUNNER_PATH, SERVICE, STATUS_FILE, TIMER
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory

log = logging.getLogger(__name__)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass(frozen=True)
class Run:
    """One run of the runner, as its status file records it."""

    id: str | None
    started_at: datetime
    finished_at: datetime | None
    ok: bool
    local_ok: bool
    step: str | None
    error: str | None
    size: int | None
    seconds: float | None
    offsite: dict[str, Any] | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        return cls(
            id=d.get("id"), started_at=_time(d["started_at"]), finished_at=_time(d.get("finished_at")),  # type: ignore[arg-type]
            ok=bool(d.get("ok")), local_ok=bool(d.get("local_ok")), step=d.get("step"), error=d.get("error"),
            size=d.get("size"), seconds=d.get("seconds"), offsite=d.get("offsite"),
        )


@dataclass
class Status:
    """The backup state of a host: its runs (oldest first) and what they mean against the RPO."""

    runs: list[Run]
    rpo_minutes: int
    now: datetime
    timer_active: bool
    next_run: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def newest_good(self) -> Run | None:
        good = [r for r in self.runs if r.ok]
        return good[-1] if good else None

    @property
    def age(self) -> timedelta | None:
        good = self.newest_good
        return self.now - (good.finished_at or good.started_at) if good else None

    @property
    def stale(self) -> bool:
        age = self.age
        return age is None or age > timedelta(minutes=self.rpo_minutes)

    @property
    def last_failed(self) -> bool:
        return bool(self.runs) and not self.runs[-1].ok

    @property
    def healthy(self) -> bool:
        """False when the last run failed or the newest good backup is older than the RPO objective."""
        return not self.stale and not self.last_failed


def _runner(*args: str) -> str:
    return shlex.join(["python3", RUNNER_PATH, "--config", CONFIG_PATH, *args])


def read_runs(conn: Connection) -> list[Run]:
    """The runs the host's status file records, oldest first (empty if it has none yet)."""
    run = conn.run(f"cat {shlex.quote(STATUS_FILE)} 2>/dev/null || echo '{{\"runs\": []}}'", hide=True, in_stream=False)
    return [Run.from_json(d) for d in json.loads(run.stdout).get("runs", [])]


def status(conn: Connection, inv: Inventory, now: datetime | None = None) -> Status:
    """The host's backup status against ``inv``'s RPO objective, with warnings for what is wrong."""
    runs = read_runs(conn)
    active = conn.run(f"systemctl is-active {TIMER}", hide=True, warn=True, in_stream=False).stdout.strip() == "active"
    nxt = conn.run(f"systemctl show -P NextElapseUSecRealtime {TIMER}", hide=True, warn=True, in_stream=False).stdout.strip()
    st = Status(runs, inv.objectives.rpo_minutes, now or datetime.now(timezone.utc), active, nxt)
    if not active:
        st.warnings.append(f"{TIMER} is not active: no backups are scheduled (fab backup --install)")
    if st.last_failed:
        last = runs[-1]
        st.warnings.append(f"the last run ({last.started_at:%Y-%m-%d %H:%M:%S} UTC) failed at step {last.step}: {last.error}")
    if st.newest_good is None:
        st.warnings.append("there is no good backup on this host")
    elif st.stale:
        st.warnings.append(
            f"the newest good backup ({st.newest_good.id}) is {_minutes(st.age)} old, "  # type: ignore[arg-type]
            f"older than the RPO objective of {st.rpo_minutes} min"
        )
    return st


def _minutes(age: timedelta) -> str:
    return f"{age.total_seconds() / 60:.0f} min"


def run_now(conn: Connection, timeout: float = 3600) -> Run:
    """Start the backup service and wait for it; return the run it made (or joined, if one was running).

    Raise RelaunchError (with the failed step and the journal's last lines) if the run failed.
    """
    before = {r.started_at for r in read_runs(conn)}
    since = conn.run("date +%s", hide=True, in_stream=False).stdout.strip()
    started = time.monotonic()
    run = conn.run(f"systemctl start {SERVICE}", hide=True, warn=True, in_stream=False, timeout=timeout)
    runs = [r for r in read_runs(conn) if r.started_at not in before]
    log.info("%s: backup service finished in %.1f s (exit %s)", conn.host, time.monotonic() - started, run.exited)
    if not run.ok or not runs or not runs[-1].ok:
        journal = conn.run(
            f"journalctl -u {SERVICE} --since @{shlex.quote(since)} -o cat --no-pager | tail -n 30",
            hide=True, warn=True, in_stream=False,
        ).stdout
        failed = runs[-1] if runs else None
        what = f"failed at step {failed.step}: {failed.error}" if failed and failed.step else "failed"
        raise RelaunchError(f"{conn.host}: the backup {what}\n{journal.strip()}")
    return runs[-1]


def journal(conn: Connection, lines: int = 50) -> str:
    """The last lines the backup service logged."""
    return conn.run(f"journalctl -u {SERVICE} -o short-iso --no-pager -n {int(lines)}", hide=True, warn=True,
                    in_stream=False).stdout


def list_backups(conn: Connection) -> dict[str, Any]:
    """{"local": [{id, started_at, finished_at, size, verified}], "offsite": [{snapshot, id, time}] | None, "offsite_error"}."""
    run = conn.run(_runner("list"), hide=True, warn=True, in_stream=False, timeout=600)
    if not run.ok:
        raise RelaunchError(f"{conn.host}: listing backups failed: {run.stderr.strip()[-1500:]}")
    return json.loads(run.stdout)


def verify_backup(conn: Connection, backup_id: str | None = None, offsite: bool = True) -> dict[str, Any]:
    """Check backup ``backup_id`` (default: the newest) on the host against its manifest, and ``restic check``.

    Return {"id", "ok", "problems": [one line per bad artifact, by file name], "artifacts", "offsite"}.
    """
    args = ["verify", *([backup_id] if backup_id else []), *(["--offsite"] if offsite else [])]
    run = conn.run(_runner(*args), hide=True, warn=True, in_stream=False, timeout=3600)
    try:
        return json.loads(run.stdout)
    except ValueError:
        raise RelaunchError(f"{conn.host}: verify failed (exit {run.exited}): {run.stderr.strip()[-1500:]}") from None
