"""``fab drill --install-schedule weekly|daily|off``: a systemd user timer on the operator's machine that runs the drill.

Why a *user* timer on the operator's machine, not a system one and not on production: the
drill needs what only the operator has (the API token, relaunch's SSH key and pinned host
keys, the inventory's secrets), and none of it should need root; production is what the
drill rehearses losing.

What gets installed, in ``${XDG_CONFIG_HOME:-~/.config}/systemd/user/``:

- ``relaunch-drill-<site>.service`` (oneshot): in the checkout relaunch runs from, first
  ``fab backup --status`` (it alerts when the last backup run failed or the newest good one is
  older than the RPO; its own failure never stops the drill: ``ExecStartPre=-``), then
  ``fab drill --site <site>`` (which alerts when it fails or misses an objective). The secrets
  that the inventory names by ``env:`` come from an optional 0600 ``EnvironmentFile``,
  ``~/.config/relaunch/<site>.env`` (``KEY=value`` lines; a user unit does not see a login
  shell's environment). Long enough a timeout for a drill (6 h), low priority (``Nice=10``).
- ``relaunch-drill-<site>.timer``: ``OnCalendar=weekly`` or ``daily``, ``Persistent=true`` (a
  run missed while the machine was off happens at the next boot), ``RandomizedDelaySec=1h``.

Every word of a command line goes into the units quoted for systemd (``"..."``, ``%`` doubled,
``\\`` and ``"`` escaped); ``WorkingDirectory=`` takes its path as is (quotes would be part of it),
``%`` doubled; a path with a control character is refused. The units are checked with
``systemd-analyze --user verify`` before they are enabled, and the timer's next run is read
back from ``systemctl --user list-timers``. A user timer runs only while the user has a
systemd instance: with no login session that needs ``loginctl enable-linger USER`` (said,
not done: it is the operator's call).

The commands run through a :class:`Shell` — this machine by default; the tests drive the same
code over SSH inside a sandbox Droplet (systemd is not PID 1 where the tests run).
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from relaunch.errors import RelaunchError

log = logging.getLogger(__name__)

EVERY = ("weekly", "daily")
#: The directory user units go in, as the shell on the target sees it.
UNIT_DIR = '"${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"'
#: Seconds any one systemctl/systemd-analyze call may take.
TIMEOUT = 120


class Shell(Protocol):
    """Runs a bash command (with optional stdin) where the schedule goes; returns (exit status, stdout, stderr)."""

    def __call__(self, command: str, stdin: str | None = None) -> tuple[int, str, str]: ...


def local_shell(command: str, stdin: str | None = None) -> tuple[int, str, str]:
    """This machine's bash."""
    try:
        done = subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {TIMEOUT} s"
    return done.returncode, done.stdout, done.stderr


@dataclass(frozen=True)
class Schedule:
    """What to schedule: the drill of ``site`` ``every`` weekly|daily, run with ``fab`` from ``checkout``."""

    site: str
    every: str
    checkout: Path
    fab: Path

    @property
    def service(self) -> str:
        return f"relaunch-drill-{self.site}.service"

    @property
    def timer(self) -> str:
        return f"relaunch-drill-{self.site}.timer"


@dataclass
class Installed:
    units: dict[str, str]
    unit_dir: str
    next_run: str = ""
    linger: str = ""
    notes: list[str] = field(default_factory=list)


def default_schedule(site: str, every: str, checkout: Path | str | None = None) -> Schedule:
    """The schedule of ``site`` run by this Python's ``fab`` from this checkout (the directory holding tasks.py)."""
    if every not in EVERY:
        raise RelaunchError(f"--install-schedule {every!r}: one of {', '.join(EVERY)}, or off to remove it")
    root = Path(checkout) if checkout else Path(__file__).resolve().parents[2]
    fab = Path(sys.executable).with_name("fab")
    if not (root / "tasks.py").is_file():
        raise RelaunchError(f"{root} holds no tasks.py: install the schedule from a checkout of relaunch")
    return Schedule(site, every, root.resolve(), fab)


def systemd_quote(value: str) -> str:
    """``value`` as one word of a systemd command line or setting (double-quoted, specifiers and escapes neutralised)."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise RelaunchError(f"{value!r}: a path with a control character cannot go into a systemd unit")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def systemd_path(value: str) -> str:
    """An absolute path for a path setting (WorkingDirectory=): taken as is, not unquoted, so only specifiers escaped."""
    if re.search(r"[\x00-\x1f\x7f]", value) or not value.startswith("/"):
        raise RelaunchError(f"{value!r}: a systemd path setting takes an absolute path without control characters")
    return value.replace("%", "%%")


def _exec(schedule: Schedule, *args: str) -> str:
    return " ".join([systemd_quote(str(schedule.fab)), *(systemd_quote(a) for a in args)])


def render_units(schedule: Schedule) -> dict[str, str]:
    """The two unit files (name -> text)."""
    s = schedule
    service = f"""[Unit]
Description=relaunch: drill of site {s.site} (the rebuild rehearsed in a scratch Droplet)

[Service]
Type=oneshot
WorkingDirectory={systemd_path(str(s.checkout))}
EnvironmentFile=-%h/.config/relaunch/{s.site}.env
# the backup status alerts on a failed or too old backup; its own failure never stops the drill
ExecStartPre=-{_exec(s, "backup", "--status", "--site", s.site)}
ExecStart={_exec(s, "drill", "--site", s.site)}
TimeoutStartSec=6h
Nice=10
"""
    timer = f"""[Unit]
Description=relaunch: {s.every} drill of site {s.site}

[Timer]
OnCalendar={s.every}
RandomizedDelaySec=1h
Persistent=true
Unit={s.service}

[Install]
WantedBy=timers.target
"""
    return {s.service: service, s.timer: timer}


def _must(shell: Shell, command: str, what: str, stdin: str | None = None) -> str:
    code, out, err = shell(command, stdin)
    if code != 0:
        raise RelaunchError(f"{what} failed (exit {code}): {(err or out).strip()[-1200:]}")
    return out


def install(schedule: Schedule, shell: Shell = local_shell) -> Installed:
    """Write the units, verify them, enable and start the timer; return what was installed and when it runs next.

    Idempotent (the units are rewritten, the timer re-enabled). Raise RelaunchError, naming the
    command, when systemd refuses the units or no user instance of systemd answers.
    """
    units = render_units(schedule)
    unit_dir = _must(shell, f"d={UNIT_DIR}; mkdir -p \"$d\" && cd \"$d\" && pwd", "making the user unit directory").strip()
    for name, text in units.items():
        _must(shell, f"umask 022; cat > {shlex.quote(unit_dir + '/' + name)}", f"writing {name}", stdin=text)
    paths = " ".join(shlex.quote(f"{unit_dir}/{n}") for n in units)
    _must(shell, f"systemd-analyze --user verify {paths}", "systemd-analyze --user verify")
    _must(shell, "systemctl --user daemon-reload", "systemctl --user daemon-reload (is there a user instance of systemd?)")
    _must(shell, f"systemctl --user enable --now {shlex.quote(schedule.timer)}", f"enabling {schedule.timer}")
    done = Installed(units, unit_dir)
    _code, out, _err = shell(f"systemctl --user show -P NextElapseUSecRealtime {shlex.quote(schedule.timer)}")
    done.next_run = out.strip()
    _code, out, _err = shell('loginctl show-user "$(id -un)" -P Linger 2>/dev/null')
    done.linger = out.strip()
    if done.linger != "yes":
        done.notes.append("without a login session a user timer does not run: `loginctl enable-linger $(id -un)` "
                          "keeps your systemd instance up")
    done.notes.append(f"secrets the inventory takes from env: go in ~/.config/relaunch/{schedule.site}.env "
                      "(KEY=value, chmod 600)")
    log.info("installed %s (%s) in %s; next run %s", schedule.timer, schedule.every, unit_dir, done.next_run or "?")
    return done


def remove(site: str, shell: Shell = local_shell) -> list[str]:
    """Stop, disable and delete the site's drill timer and service; return the files removed."""
    timer, service = f"relaunch-drill-{site}.timer", f"relaunch-drill-{site}.service"
    shell(f"systemctl --user disable --now {shlex.quote(timer)}")
    out = _must(shell, f"d={UNIT_DIR}; for f in {timer} {service}; do [ -e \"$d/$f\" ] && rm -f \"$d/$f\" && "
                       "echo \"$d/$f\"; done; true", "removing the units")
    shell("systemctl --user daemon-reload")
    return out.split()
