"""Sandbox: `fab drill --install-schedule` inside a Droplet (systemd runs there, not where the tests run).

relaunch's own install code (:func:`relaunch.schedule.install`) runs over SSH as root's user
instance of systemd: the units are verified by systemd-analyze, the timer is listed with its
next run, a start of the service runs the status check and then the drill (a stand-in ``fab``
that records its arguments), and ``off`` removes it all. One small Droplet, no site.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest
import yaml

from relaunch.cloud import Cloud
from relaunch.inventory.model import Inventory
from relaunch.remote import HostKey
from relaunch.render import RenderContext
from relaunch.schedule import Schedule, install, remove
from tests.conftest import boot_rendered

pytestmark = pytest.mark.sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
CHECKOUT = "/opt/relaunch checkout"  # a space in it: the units must quote it
FAB = f"{CHECKOUT}/.venv/bin/fab"


def test_install_schedule_puts_a_verified_user_timer_that_runs_the_status_check_and_the_drill(
        cloud: Cloud, client_key: tuple[Path, str]) -> None:
    inv = Inventory.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    host_key = HostKey.generate()
    ctx = RenderContext(inventory=inv, sandbox=True, host_key=host_key, hostname="schedule-test")
    conn = boot_rendered(cloud, client_key, ctx, "schedule-test")
    try:

        def shell(command: str, stdin: str | None = None) -> tuple[int, str, str]:
            run = conn.run("export XDG_RUNTIME_DIR=/run/user/0; " + command, hide=True, warn=True, timeout=120,
                           in_stream=io.StringIO(stdin) if stdin is not None else False)
            return run.exited, run.stdout, run.stderr

        q = shlex.quote
        stub = '#!/bin/sh\necho "$*" >> /root/fab-calls\n'
        code, out, err = shell(f"mkdir -p {q(CHECKOUT + '/.venv/bin')} && touch {q(CHECKOUT + '/tasks.py')} && "
                               f"cat > {q(FAB)} && chmod 755 {q(FAB)} && "
                               # root's own systemd instance, as an operator's machine has one: pam_systemd (the
                               # minimal image lacks it) and linger, what install() advises for a machine left alone
                               "cloud-init status --wait >/dev/null; export DEBIAN_FRONTEND=noninteractive; "
                               "{ apt-get install -y -q libpam-systemd >/dev/null 2>&1 || "
                               "{ apt-get update -q >/dev/null && apt-get install -y -q libpam-systemd >/dev/null; }; } && "
                               "loginctl enable-linger root && for i in $(seq 100); do "
                               "[ -S /run/user/0/systemd/private ] && exit 0; sleep 0.2; done; exit 1", stub)
        assert code == 0, out + err + shell("systemctl status user@0.service; journalctl -b --no-pager | tail -30")[1]
        schedule = Schedule("example", "weekly", Path(CHECKOUT), Path(FAB))

        done = install(schedule, shell)
        assert done.unit_dir == "/root/.config/systemd/user"
        assert done.next_run, "the timer has no next run"
        assert done.linger == "yes"
        code, out, err = shell("systemctl --user list-timers --all --no-pager relaunch-drill-example.timer")
        assert code == 0 and "relaunch-drill-example.timer" in out and "relaunch-drill-example.service" in out, out + err
        assert shell("systemctl --user is-enabled relaunch-drill-example.timer")[1].strip() == "enabled"
        assert install(schedule, shell).next_run  # again: idempotent

        code, out, err = shell("systemctl --user start relaunch-drill-example.service")  # oneshot: returns when done
        assert code == 0, out + err
        assert shell("cat /root/fab-calls")[1].splitlines() == ["backup --status --site example", "drill --site example"]

        removed = remove("example", shell)
        assert sorted(Path(p).name for p in removed) == ["relaunch-drill-example.service", "relaunch-drill-example.timer"]
        assert "relaunch-drill-example" not in shell("systemctl --user list-timers --all --no-pager")[1]
    finally:
        conn.close()
