"""scripts/setup.sh decides which Debian packages to install by what each really provides.

The decision runs alone with `--print-missing` (it prints, one per line, what it would
install and changes nothing), under a PATH holding only fakes, so these tests install nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"


def _fake(bin_dir: Path, name: str, status: int = 0) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\necho \"$0 $*\" >> \"{bin_dir}/calls.log\"\nexit {status}\n")
    path.chmod(0o755)


def _missing(bin_dir: Path) -> list[str]:
    """Run the decision with PATH = bin_dir only; return the packages it names."""
    # The script's own plumbing (cd "$(dirname "$0")/..") needs dirname.
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    # apt-get is there to catch a script that would install despite --print-missing.
    _fake(bin_dir, "apt-get")
    done = subprocess.run(
        ["/bin/bash", str(SETUP), "--print-missing"],
        env={"PATH": str(bin_dir), "HOME": str(bin_dir)},
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    calls = bin_dir / "calls.log"
    assert "apt-get" not in (calls.read_text() if calls.exists() else "")
    return done.stdout.split()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    _fake(directory, "debootstrap")
    _fake(directory, "python3")  # `python3 -c 'import venv, ensurepip'` succeeds
    _fake(directory, "docker-compose")  # the test suite's readers of rendered files
    _fake(directory, "my_print_defaults")
    _fake(directory, "restic")  # fab backup --prune runs it here
    return directory


def test_print_missing_docker_client_without_daemon_installs_docker_io(bin_dir: Path) -> None:
    _fake(bin_dir, "docker", status=1)  # a client alone: `docker info` cannot reach a daemon
    assert _missing(bin_dir) == ["docker.io"]


def test_print_missing_daemon_and_client_present_installs_nothing(bin_dir: Path) -> None:
    _fake(bin_dir, "docker")
    _fake(bin_dir, "dockerd")
    assert _missing(bin_dir) == []


def test_print_missing_no_docker_at_all_installs_docker_io(bin_dir: Path) -> None:
    assert _missing(bin_dir) == ["docker.io"]


def test_print_missing_daemon_without_client_installs_docker_io(bin_dir: Path) -> None:
    _fake(bin_dir, "dockerd")
    assert _missing(bin_dir) == ["docker.io"]


def test_print_missing_names_debootstrap_and_venv_when_absent(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "docker")
    _fake(bin_dir, "dockerd")
    _fake(bin_dir, "python3", status=1)  # no ensurepip: Debian's python3-venv is missing
    _fake(bin_dir, "docker-compose")
    _fake(bin_dir, "my_print_defaults")
    _fake(bin_dir, "restic")
    assert _missing(bin_dir) == ["debootstrap", "python3-venv"]


def test_print_missing_names_the_test_readers_when_absent(bin_dir: Path) -> None:
    _fake(bin_dir, "docker")
    _fake(bin_dir, "dockerd")
    (bin_dir / "docker-compose").unlink()
    (bin_dir / "my_print_defaults").unlink()
    assert _missing(bin_dir) == ["docker-compose", "mariadb-client-core"]


def test_print_missing_names_restic_for_the_operators_prune_when_absent(bin_dir: Path) -> None:
    _fake(bin_dir, "docker")
    _fake(bin_dir, "dockerd")
    (bin_dir / "restic").unlink()
    assert _missing(bin_dir) == ["restic"]
