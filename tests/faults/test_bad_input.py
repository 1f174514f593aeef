"""Fault 11: bad inventories given to `fab rebuild` and `fab drill` stop before anything is created.

A valid inventory (the example's, without TLS and the store's key, its secret files made
here) is spoiled one defect at a time. Each must stop both commands with a message that
names the file (and the line and key, where there is one), before the cloud is asked
anything (a cloud stub fails the test on any call: no Droplet can be made) and before a
journal, lock or report exists. No sandbox is needed: nothing may get that far.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaunch.drill import DrillOptions, drill
from relaunch.errors import RelaunchError
from relaunch.rebuild import RebuildOptions, Where, rebuild

ROOT = Path(__file__).resolve().parents[2]
SITE = "bad"
FILE = re.compile(rf"{SITE}\.yml")
FILE_LINE = re.compile(rf"{SITE}\.yml:\d+")


class CloudReached(AssertionError):
    pass


class NoCloud:
    """A cloud that must never be asked: every attribute is a failure (a Droplet would have been next)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self.calls.append(name)
        raise CloudReached(f"the cloud was asked for {name!r}")


def base() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "inventory" / "example.yml").read_text())
    data["site"] = SITE
    data["production"]["droplet_name"] = f"{SITE}-prod"
    data["provider"]["tags"] = [f"relaunch-{SITE}"]
    data["proxy"].pop("tls")
    for app in data["apps"]:
        for check in app["health"]:
            check.pop("scheme", None)
    off = data["backups"]["offsite"]
    off.pop("ssh_key"), off.pop("known_hosts")
    text = yaml.safe_dump(data, sort_keys=False)
    return yaml.safe_load(text.replace("secrets/example/", f"secrets/{SITE}/"))


def write_secrets(root: Path) -> None:
    secrets = root / "secrets" / SITE
    secrets.mkdir(parents=True, exist_ok=True)
    os.chmod(root / "secrets", 0o700)
    os.chmod(secrets, 0o700)
    for name in ("blog-db-password", "stats-db-password", "restic-password"):
        path = secrets / name
        if not path.exists():
            path.write_text(f"a-valid-{name}\n")
        path.chmod(0o600)


def _set(data: dict, path: tuple, value: Any) -> dict:
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _secret(root: Path, name: str, mode: int = 0o600, link: bool = False) -> str:
    path = root / "secrets" / SITE / name
    if link:
        target = root / "secrets" / SITE / "blog-db-password"
        path.symlink_to(target)
    else:
        path.write_text("whatever\n")
        path.chmod(mode)
    return f"file:../secrets/{SITE}/{name}"


# name -> (spoil the inventory data (root given) or return raw text, what the message must hold)
Defect = Callable[[dict, Path], "dict | str"]
DEFECTS: dict[str, tuple[Defect, list[str]]] = {
    "unknown top-level key": (lambda d, r: {**d, "colour": "blue"}, ["colour"]),
    "unknown nested key": (lambda d, r: _set(d, ("apps", 0, "helth"), []), ["helth"]),
    "a required section missing": (lambda d, r: {k: v for k, v in d.items() if k != "dns"}, ["dns"]),
    "a port of the wrong type": (lambda d, r: _set(d, ("apps", 1, "port"), "eighty"), ["port"]),
    "a port out of range": (lambda d, r: _set(d, ("apps", 1, "port"), 70000), ["port"]),
    "a password written inline": (lambda d, r: _set(d, ("databases", 1, "password"), "hunter2"), ["password"]),
    "a secret file that is missing": (lambda d, r: _set(d, ("databases", 1, "password"),
                                                        f"file:../secrets/{SITE}/nope"), ["nope"]),
    "a secret file others may read": (lambda d, r: _set(d, ("databases", 1, "password"),
                                                        _secret(r, "open", 0o644)), ["open"]),
    "a secret file that is a symlink": (lambda d, r: _set(d, ("databases", 1, "password"),
                                                          _secret(r, "link", link=True)), ["link", "symlink"]),
    "a secret from an unset variable": (lambda d, r: _set(d, ("databases", 1, "password"),
                                                          "env:RELAUNCH_TEST_NO_SUCH_VARIABLE"),
                                        ["RELAUNCH_TEST_NO_SUCH_VARIABLE"]),
    "a control character in a value": (lambda d, r: {**d, "description": "bell \x07 here"}, ["description"]),
    "a PostgreSQL name PostgreSQL would cut": (lambda d, r: _set(d, ("databases", 0, "database"), "b" * 64),
                                               ["database", "63"]),
    "an env value Compose would expand": (lambda d, r: _set(d, ("apps", 0, "env"), {"X": "${HOME}"}), ["env"]),
    "a sqlite database with a user": (lambda d, r: _set(d, ("databases", 2, "user"), "u"), ["user"]),
    "a database in an app that is not compose": (lambda d, r: _set(d, ("databases", 0, "runs"),
                                                                   {"app": "stats", "service": "db"}), ["stats"]),
    "a relative file tree": (lambda d, r: _set(d, ("apps", 0, "files"), ["srv/blog"]), ["files"]),
    "a YAML syntax error": (lambda d, r: yaml.safe_dump(d, sort_keys=False) + "apps: [unclosed\n", []),
    "another site's name inside": (lambda d, r: {**d, "site": "other"}, ["site"]),
}


def make_root(tmp: Path, defect: str | None) -> Path:
    root = tmp / (defect or "valid").replace(" ", "-").replace("'", "")
    (root / "inventory").mkdir(parents=True)
    write_secrets(root)
    data = base()
    spoiled: dict | str = data if defect is None else DEFECTS[defect][0](data, root)
    text = spoiled if isinstance(spoiled, str) else yaml.safe_dump(spoiled, sort_keys=False)
    (root / "inventory" / f"{SITE}.yml").write_text(text)
    return root


def nothing_left(state: Path) -> list[Path]:
    return [p for p in state.rglob("*") if p.is_file()]


def refusal(run: Callable[[], Any]) -> str:
    try:
        run()
    except CloudReached as exc:
        raise AssertionError(f"got as far as the cloud: {exc}") from None
    except RelaunchError as exc:
        return str(exc)
    raise AssertionError("accepted")


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(path))
    monkeypatch.delenv("RELAUNCH_TEST_NO_SUCH_VARIABLE", raising=False)
    return path


def test_the_valid_inventory_gets_as_far_as_the_cloud(tmp_path, state) -> None:
    """The control: without a defect both commands reach the cloud (so the stub would see a defect that slipped by)."""
    root = make_root(tmp_path, None)
    for run in (lambda: rebuild(SITE, RebuildOptions(), root=root, where=Where(NoCloud(), None, tmp_path / "key")),
                lambda: drill(SITE, DrillOptions(), root=root, where=Where(NoCloud(), None, tmp_path / "key"))):
        with pytest.raises(CloudReached):
            run()


def cli(command: str, root: Path, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RELAUNCH_STATE_DIR": str(state), "DIGITALOCEAN_ACCESS_TOKEN": "never-used"}
    return subprocess.run([str(Path(sys.executable).with_name("fab")), "--search-root", str(ROOT), command, "--site", SITE],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def check_refusal(defect: str, message: str) -> None:
    wanted = DEFECTS[defect][1]
    assert FILE.search(message), f"{defect}: the message does not name the file: {message}"
    assert all(w in message for w in wanted), f"{defect}: {wanted} not in: {message}"


@pytest.mark.fault(case=11, ci=True, expected="each bad inventory: rebuild and drill refused with file:line and key, "
                   "before any cloud call; no Droplet, no journal")
def test_bad_inventories_stop_rebuild_and_drill_before_anything_is_created(tmp_path, state, observed) -> None:
    for defect in DEFECTS:
        root = make_root(tmp_path, defect)
        for kind, run in (("rebuild", lambda: rebuild(SITE, RebuildOptions(), root=root,
                                                       where=Where(NoCloud(), None, tmp_path / "key"))),
                          ("drill", lambda: drill(SITE, DrillOptions(), root=root,
                                                   where=Where(NoCloud(), None, tmp_path / "key")))):
            message = refusal(run)
            check_refusal(defect, message)
            assert nothing_left(state) == [], f"{kind} with {defect} left {nothing_left(state)}"
    observed(f"{len(DEFECTS)} defects x rebuild and drill: all refused naming the file, no cloud call, no state written")
    # and through the commands a person types
    root = make_root(tmp_path / "cli", "a port out of range")
    for command in ("rebuild", "drill"):
        done = cli(command, root, state)
        assert done.returncode != 0, done.stdout
        assert FILE_LINE.search(done.stdout + done.stderr), done.stdout + done.stderr
        assert "port" in done.stdout + done.stderr
        assert nothing_left(state) == []
    observed("`fab rebuild` and `fab drill` exit non-zero with bad.yml:LINE: ... port")


@pytest.mark.fault(case=11, expected="every defect through `fab rebuild` and `fab drill`: non-zero exit, the file named, "
                   "nothing created")
def test_every_bad_inventory_through_the_commands(tmp_path, state, observed) -> None:
    for defect in DEFECTS:
        root = make_root(tmp_path, defect)
        for command in ("rebuild", "drill"):
            done = cli(command, root, state)
            out = done.stdout + done.stderr
            assert done.returncode != 0, f"{command} with {defect}: exit 0"
            assert "Traceback" not in out, f"{command} with {defect}: {out[-2000:]}"
            check_refusal(defect, out)
            assert nothing_left(state) == []
    observed(f"{len(DEFECTS)} defects x 2 commands refused, exit non-zero, no traceback, no state")
