"""Asking the production host about its backups: run one now, the last runs, the list, verification.

Everything here runs the installed runner (``/usr/local/lib/relaunch/backup.py``) or reads
the status file it writes, over a pinned SSH connection, and returns data; the task
layer prints it. Every remote command has a bounded time. Every failure says what failed,
where, and the command to run next (``fab backup --install --site NAME`` on a host where
the backup was never installed, say).
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

from relaunch.backup.install import CONFIG_PATH, RUNNER_PATH, SERVICE, STATUS_FILE, TIMER, UNIT_DIR
from relaunch.errors import RelaunchError
from relaunch.inventory.model import Inventory
from relaunch.remote import QUICK_TIMEOUT, execute

log = logging.getLogger(__name__)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass(frozen=True)
class Run:
    """One run of the runner, as its status file records it.

    ``state``: ``running`` (it has not recorded its end: it runs now, or it was killed and
    the next run has not yet said so), ``finished``, or ``killed``.
    """

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
    state: str = "finished"
    local: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    pid: int | None = None
    alerted: bool = False  # the runner posted this failed run to the site's webhook itself

    @property
    def key(self) -> tuple[datetime, int | None, str]:
        """What tells this run's record apart from every other (start times are to the second only)."""
        return self.started_at, self.pid, self.state

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        return cls(
            id=d.get("id"), started_at=_time(d["started_at"]), finished_at=_time(d.get("finished_at")),  # type: ignore[arg-type]
            ok=bool(d.get("ok")), local_ok=bool(d.get("local_ok")), step=d.get("step"), error=d.get("error"),
            size=d.get("size"), seconds=d.get("seconds"), offsite=d.get("offsite"), state=d.get("state") or "finished",
            local=d.get("local"), warnings=tuple(d.get("warnings") or ()), pid=d.get("pid"),
            alerted=(d.get("alert") or {}).get("sent") is True,
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
    service_active: bool = False

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
    def last(self) -> Run | None:
        """The last run that ended (one ``running`` while the service is not counts: it was killed)."""
        for run in reversed(self.runs):
            if run.state != "running" or not self.service_active:
                return run
        return None

    @property
    def last_failed(self) -> bool:
        last = self.last
        return last is not None and not last.ok

    @property
    def healthy(self) -> bool:
        """False when the last run failed or the newest good backup is older than the RPO objective."""
        return not self.stale and not self.last_failed


def _runner(*args: str) -> str:
    return shlex.join(["python3", RUNNER_PATH, "--config", CONFIG_PATH, *args])


def _next(site: str) -> str:
    return f"`fab backup --status --site {site}` shows the runs and the warnings"


def missing_parts(conn: Connection) -> list[str]:
    """What of the installed backup is not on the host (the runner, its config, the unit files); [] if all is there."""
    paths = [RUNNER_PATH, CONFIG_PATH, f"{UNIT_DIR}/{SERVICE}", f"{UNIT_DIR}/{TIMER}"]
    script = "for f in " + " ".join(shlex.quote(p) for p in paths) + '; do [ -e "$f" ] || echo "$f"; done'
    return execute(conn, script, timeout=QUICK_TIMEOUT, what="looking for the installed backup").stdout.split()


def require_installed(conn: Connection, site: str) -> None:
    """Raise RelaunchError, with the command that installs it, if the backup is not installed on the host."""
    missing = missing_parts(conn)
    if missing:
        raise RelaunchError(
            f"backup is not installed on {conn.host}: run `fab backup --install --site {site}` "
            f"(missing: {', '.join(missing)})"
        )


def read_runs(conn: Connection) -> list[Run]:
    """The runs the host's status file records, oldest first (empty if it has none yet)."""
    run = execute(conn, f"cat {shlex.quote(STATUS_FILE)} 2>/dev/null || echo '{{\"runs\": []}}'", timeout=QUICK_TIMEOUT,
                  what=f"reading {STATUS_FILE}")
    try:
        return [Run.from_json(d) for d in json.loads(run.stdout).get("runs", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RelaunchError(f"{conn.host}: {STATUS_FILE} is not the runner's status ({exc}): look at it on the host; "
                            "the next run rewrites it") from None


def status(conn: Connection, inv: Inventory, now: datetime | None = None) -> Status:
    """The host's backup status against ``inv``'s RPO objective, with warnings for what is wrong.

    Raise RelaunchError (with the command to install it) if the backup is not installed there.
    """
    require_installed(conn, inv.site)
    runs = read_runs(conn)
    units = execute(conn, f"systemctl is-active {TIMER} {SERVICE}; systemctl show -P NextElapseUSecRealtime {TIMER}",
                    timeout=QUICK_TIMEOUT, what="asking systemd about the backup timer").stdout.split("\n")
    active = units[0].strip() == "active"
    service_active = units[1].strip() in ("active", "activating", "deactivating") if len(units) > 1 else False
    nxt = units[2].strip() if len(units) > 2 else ""
    st = Status(runs, inv.objectives.rpo_minutes, now or datetime.now(timezone.utc), active, nxt, service_active=service_active)
    if not active:
        st.warnings.append(f"{TIMER} is not active: no backups are scheduled (`fab backup --install --site {inv.site}`)")
    last = st.last
    if last is not None and not last.ok:
        if last.state == "running":
            st.warnings.append(f"the last run ({last.started_at:%Y-%m-%d %H:%M:%S} UTC) never recorded its end: it was "
                               f"killed (SIGKILL, out of memory, the host went down); `journalctl -u {SERVICE}` on "
                               f"{conn.host} says more; `fab backup --site {inv.site}` runs one now")
        else:
            st.warnings.append(f"the last run ({last.started_at:%Y-%m-%d %H:%M:%S} UTC) failed at step {last.step}: {last.error}")
    if last is not None:
        st.warnings += list(last.warnings)
        local = last.local or {}
        if local.get("not_offsite"):
            st.warnings.append(f"{len(local['not_offsite'])} backup(s) on the host are not off-host yet "
                               f"(free {_bytes(local.get('free_bytes'))}, floor {_bytes(local.get('floor_bytes'))}: "
                               "below it the oldest are removed even so)")
        if local.get("removed_below_floor"):
            st.warnings.append(f"backups removed because free space was below the floor of {_bytes(local.get('floor_bytes'))}: "
                               f"{', '.join(local['removed_below_floor'])}")
    if st.newest_good is None:
        st.warnings.append(f"there is no good backup on this host: `fab backup --site {inv.site}` makes one")
    elif st.stale:
        st.warnings.append(
            f"the newest good backup ({st.newest_good.id}) is {_minutes(st.age)} old, "  # type: ignore[arg-type]
            f"older than the RPO objective of {st.rpo_minutes} min"
        )
    return st


def _minutes(age: timedelta) -> str:
    return f"{age.total_seconds() / 60:.0f} min"


def _bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _what_next(step: str | None, site: str, host: str) -> str:
    """The command (or check) to run after a run failed at ``step``."""
    again = f"`fab backup --site {site}`"
    if not step:
        return f"read the journal below, fix the cause, then {again}"
    if step.startswith("offsite"):
        return (f"the backup is on {host} but not off-host: check the off-host store (`fab backup --list --site {site}` "
                f"shows what it holds); the next run uploads every backup that is missing, oldest first, or run {again}")
    if step == "stopped":
        return f"the run was stopped before its end (a stop, or the unit's timeout): {again} runs it again"
    if step == "internal":
        return "a fault of the runner itself (the journal below): report it with the journal"
    if step.startswith(("dump ", "fingerprint ")):
        return f"check that database on {host} (the message above), then {again}"
    if step.startswith("archive "):
        return f"check that app's files on {host} (the message above), then {again}"
    return f"fix the cause (the message above), then {again}"


def run_now(conn: Connection, site: str, timeout: float = 3600) -> Run:
    """Start the backup service and wait for it; return the run it made: one that began after this call.

    A run already going (the timer fired a moment before) began before the caller's last writes (a
    drill's canary, the rows a handover must carry): it is waited for, whatever its outcome, and a run
    of our own follows. Raise RelaunchError if the backup is not installed (naming the install
    command), or if the run failed: the failed step, its error, what to do next, and the journal's
    last lines.
    """
    require_installed(conn, site)
    _wait_for_a_running_backup(conn, timeout)
    before = {r.key for r in read_runs(conn) if r.state != "running"}
    since = execute(conn, "date +%s", timeout=QUICK_TIMEOUT, what="reading the host's clock").stdout.strip()
    started = time.monotonic()
    run = execute(conn, f"systemctl start {SERVICE}", timeout=timeout, what=f"the backup ({SERVICE})")
    # ours is the first run that began since and has ended: the timer may have started the next one
    # the moment ours ended (one run at a time), and that one may already be recorded as running.
    # Else (ours killed before it could record its end) the first that began since.
    new = [r for r in read_runs(conn) if r.key not in before]
    ours = next((r for r in new if r.state != "running"), new[0] if new else None)
    log.info("%s: backup service finished in %.1f s (exit %s)", conn.host, time.monotonic() - started, run.exited)
    if run.ok and ours is not None and ours.ok:
        return ours
    journal_text = execute(
        conn, f"journalctl -u {SERVICE} --since @{shlex.quote(since)} -o cat --no-pager | tail -n 30",
        timeout=QUICK_TIMEOUT, what="reading the backup's journal",
    ).stdout.strip()
    failed = ours
    if failed is None:
        said = (run.stderr or run.stdout).strip()[-500:]
        raise RelaunchError(
            f"{conn.host}: the backup service failed before the runner recorded a run (systemctl start {SERVICE}: "
            f"exit {run.exited}{': ' + said if said else ''}). Next: read `journalctl -u {SERVICE}` on {conn.host}, "
            f"fix the cause, or reinstall with `fab backup --install --site {site}`"
            + (f"\n{journal_text}" if journal_text else "")
        )
    what = f"failed at step {failed.step}: {failed.error}" if failed.step else f"failed (exit {run.exited})"
    raise RelaunchError(
        f"{conn.host}: the backup {what}\nNext: {_what_next(failed.step, site, conn.host)}; {_next(site)}"
        + (f"\n{journal_text}" if journal_text else "")
    )


def _wait_for_a_running_backup(conn: Connection, timeout: float) -> None:
    """If the backup service is running now, wait until it ends (``systemctl start`` joins the running job)."""
    state = execute(conn, f"systemctl is-active {SERVICE}", timeout=QUICK_TIMEOUT,
                    what="asking systemd whether a backup is running").stdout.strip()
    if state not in ("activating", "active", "deactivating"):
        return
    log.info("%s: a backup is running already (began before this call); waiting for it, then starting one",
             conn.host)
    execute(conn, f"systemctl start {SERVICE}", timeout=timeout, what=f"waiting for the running backup ({SERVICE})")


def journal(conn: Connection, lines: int = 50) -> str:
    """The last lines the backup service logged."""
    return execute(conn, f"journalctl -u {SERVICE} -o short-iso --no-pager -n {int(lines)}", timeout=QUICK_TIMEOUT,
                   what="reading the backup's journal").stdout


def list_backups(conn: Connection, site: str) -> dict[str, Any]:
    """{"local": [{id, started_at, finished_at, size, verified}], "offsite": [{snapshot, id, time}] | None, "offsite_error"}.

    Raise RelaunchError (with the next command) if the backup is not installed or the runner fails.
    """
    require_installed(conn, site)
    run = execute(conn, _runner("list"), timeout=600, what="listing backups")
    try:
        if run.ok:
            return json.loads(run.stdout)
    except ValueError:
        pass
    raise RelaunchError(f"{conn.host}: listing backups failed (exit {run.exited}): {run.stderr.strip()[-1500:]}\n"
                        f"Next: {_next(site)}; reinstall with `fab backup --install --site {site}` if the runner is broken")


def verify_backup(conn: Connection, site: str, backup_id: str | None = None, offsite: bool = True) -> dict[str, Any]:
    """Check backup ``backup_id`` (default: the newest) on the host against its manifest, and ``restic check``.

    Return {"id", "ok", "problems": [one line per bad artifact, by file name], "artifacts", "offsite"}.
    Raise RelaunchError (with the next command) if the backup is not installed or the runner fails.
    """
    require_installed(conn, site)
    args = ["verify", *([backup_id] if backup_id else []), *(["--offsite"] if offsite else [])]
    run = execute(conn, _runner(*args), timeout=3600, what="verifying a backup")
    try:
        return json.loads(run.stdout)
    except ValueError:
        raise RelaunchError(f"{conn.host}: verify failed (exit {run.exited}): {run.stderr.strip()[-1500:]}\n"
                            f"Next: {_next(site)}") from None
