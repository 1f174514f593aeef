"""relaunch.apps on a production host set up by hand: each app's `control` says its unit or its Compose directory."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from relaunch import apps
from relaunch.inventory import InventoryError, load_text

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "inventory" / "example.yml").read_text()


def edited(*pairs: tuple[str, str]) -> str:
    text = EXAMPLE_TEXT
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


STATS_UNIT = ("      packages: [python3, python3-pymysql]\n",
              "      packages: [python3, python3-pymysql]\n    control: {unit: site-stats}\n")


class FakeHost:
    """Answers every command with ``ok``; the compose command file holds ``docker-compose``."""

    host = "192.0.2.10"

    def __init__(self) -> None:
        self.scripts: list[str] = []

    def run(self, command: str, **kw: object) -> SimpleNamespace:
        self.scripts.append(command)
        out = "docker-compose\n" if "compose-command" in command else ""
        return SimpleNamespace(ok=True, stdout=out, stderr="", exited=0)


def test_control_unit_defaults_to_the_app_name_and_takes_a_suffix() -> None:
    inv = load_text(edited(STATS_UNIT), "inventory/example.yml")
    stats, notes = inv.app("stats"), inv.app("notes")
    assert stats.control.unit == "site-stats.service"
    assert apps.unit_of(stats, hand_built=True) == "site-stats.service"
    assert apps.unit_of(stats) == "stats.service"  # a host relaunch built: its own layout
    assert apps.unit_of(notes, hand_built=True) == "notes.service"


@pytest.mark.parametrize("pairs, expected", [
    ([("    compose:\n      template", "    control: {unit: blog}\n    compose:\n      template")],
     "a Compose app is stopped and started by its compose_dir"),
    ([("      packages: [python3]\n", "      packages: [python3]\n    control: {compose_dir: /opt/notes}\n")],
     "a systemd app is stopped and started by its unit"),
    ([("    compose:\n      template", "    control: {compose_dir: /opt/blog}\n    compose:\n      template"),
      ("      volumes: [thumbs]\n", "")],  # its named volume is refused with compose_dir too (tests/unit/test_volumes.py)
     "database 'blog' runs in compose app 'blog', whose control.compose_dir is not relaunch's layout"),
    ([("      packages: [python3]\n", "      packages: [python3]\n    control: {unit: 'a b'}\n")],
     "a systemd unit name"),
])
def test_control_refuses_what_does_not_fit_the_app(pairs, expected) -> None:
    with pytest.raises(InventoryError, match=expected):
        load_text(edited(*pairs), "inventory/example.yml")


def test_stop_and_start_on_a_hand_built_host_use_the_control_settings() -> None:
    inv = load_text(edited(STATS_UNIT), "inventory/example.yml")
    blog = inv.app("blog")
    # a Compose app without databases may live in a directory of its own
    inv.apps[0] = blog.model_copy(update={"control": blog.control.model_copy(update={"compose_dir": "/opt/My Blog"}),
                                          "databases": []})
    inv.databases.pop(0)
    host = FakeHost()
    stopped = apps.stop_writers(host, inv, hand_built=True)
    assert stopped.units == ["site-stats.service", "notes.service"]
    script = host.scripts[-1]
    assert "systemctl stop --quiet site-stats.service" in script
    # asked to stop only when one of its writers runs (by the project's label); a host going out of service always
    assert ("if [ -d '/opt/My Blog' ] && any_running myblog db web; then "
            "( cd '/opt/My Blog' && docker-compose -p myblog stop db web ); fi") in script
    apps.stop_writers(host, inv, hand_built=True, disable=True)
    assert "if [ -d '/opt/My Blog' ]; then ( cd '/opt/My Blog' && docker-compose -p myblog stop db web ); fi" in host.scripts[-1]
    apps.start_apps(host, inv, hand_built=True)
    # enabled, then started once (restarted when it runs: it must read the restored data), never started twice
    assert "systemctl enable --quiet site-stats.service\nsystemctl restart site-stats.service" in host.scripts[-1]
    assert "--now" not in host.scripts[-1]
    assert "( cd '/opt/My Blog' && docker-compose -p myblog up -d )" in host.scripts[-1]
    # the same inventory on a host relaunch built: its own layout
    apps.stop_writers(host, inv)
    assert "systemctl stop --quiet stats.service" in host.scripts[-1]
    assert shlex.join(["docker-compose", "-p", "blog", "-f", "/srv/blog/compose.yml"]) in host.scripts[-1]


def test_compose_command_is_detected_on_a_host_without_relaunchs_record() -> None:
    host = FakeHost()
    apps.compose_command(host)
    assert "docker compose version" in host.scripts[-1] and "command -v docker-compose" in host.scripts[-1]


def _script(tmp_path: Path, docker: str, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` after the stop and start scripts' shell functions, with ``docker`` as the docker program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text("#!/bin/sh\n" + docker)
    (bin_dir / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", "set -e\n" + apps._SHELL_FUNCTIONS + body], env=env, capture_output=True,
                          text=True, timeout=30)


# the fake docker answers a container id for the blog project's db service only
ONLY_DB_RUNS = 'case "$*" in *project=blog*service=db*) echo 1f2e3d;; esac\n'


def test_the_scripts_ask_compose_only_for_what_is_not_so_already(tmp_path: Path) -> None:
    body = ('( set -e\n  if any_running blog web cron; then echo stop-writers; fi\n'
            '  all_running blog db || echo start-db\n  all_running blog db cache || echo start-db-and-cache ) '
            '& pids="$pids $!"\nwait_all $pids\necho done\n')
    out = _script(tmp_path, ONLY_DB_RUNS, body)
    assert out.returncode == 0 and out.stdout.split() == ["start-db-and-cache", "done"], out


def test_a_failing_docker_fails_the_script_and_is_never_taken_for_stopped(tmp_path: Path) -> None:
    body = ('( set -e\n  if any_running blog web; then echo stop-writers; fi\n  echo not-reached ) & pids="$pids $!"\n'
            'wait_all $pids\necho done\n')
    out = _script(tmp_path, "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n", body)
    assert out.returncode != 0 and "not-reached" not in out.stdout and "done" not in out.stdout, out
    assert "docker ps failed" in out.stderr
