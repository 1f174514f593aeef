"""The journal of a run: which steps finished and what they produced, so a run can resume.

One open journal per site and kind (``<site dir>/runs/<kind>.json``) while a run is
running or paused; when the run ends (passed, failed for good, aborted) it moves to
``runs/<kind>-<id>.json`` and a new run may start. The file is written atomically (0600)
after every step. It holds names, ids, addresses and timings, never a secret: every value
is masked against the site's secrets before it is written.

A per-site, per-kind lock (fcntl, released when the process dies) keeps two runs of one
kind from running at once; a paused journal refuses a new run until it is resumed or
aborted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relaunch.errors import RelaunchError
from relaunch.state import Locked, make_private_dirs, pid_lock, site_dir, write_json_atomic

FORMAT = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def runs_dir(site: str) -> Path:
    path = site_dir(site) / "runs"
    make_private_dirs(path)
    return path


class Journal:
    """An open run's journal (see the module docstring). ``state`` merges every finished step's outputs."""

    def __init__(self, path: Path | None, data: dict[str, Any], mask: Callable[[str], str] = lambda s: s) -> None:
        self.path = path
        self.data = data
        self._mask = mask

    # --- opening --------------------------------------------------------------------

    @classmethod
    def path_for(cls, site: str, kind: str) -> Path:
        return runs_dir(site) / f"{kind}.json"

    @classmethod
    def load(cls, site: str, kind: str) -> Journal | None:
        """The site's open journal of ``kind``, or None. Raise RelaunchError if it is unreadable."""
        path = cls.path_for(site, kind)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RelaunchError(f"{path}: unreadable {kind} journal ({exc}); move it aside to start over") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("steps"), dict):
            raise RelaunchError(f"{path}: not a relaunch {kind} journal (format {FORMAT}); move it aside to start over")
        return cls(path, data)

    @classmethod
    def new(cls, site: str, kind: str, options: dict[str, Any], run_id: str | None = None) -> Journal:
        """A journal for a new run (written to disk at the first finished step)."""
        data = {
            "format": FORMAT, "kind": kind, "site": site, "id": run_id or new_run_id(), "status": "running",
            "started_at": now_iso(), "finished_at": None, "options": options, "steps": {}, "state": {}, "attempts": 1,
        }
        return cls(cls.path_for(site, kind), data)

    @classmethod
    def ephemeral(cls, site: str, kind: str, options: dict[str, Any]) -> Journal:
        """A journal kept in memory only (a run that needs no resume, e.g. ``sandbox-up``, which is idempotent)."""
        journal = cls.new(site, kind, options)
        journal.path = None
        return journal

    def masking(self, mask: Callable[[str], str]) -> Journal:
        self._mask = mask
        return self

    # --- reading --------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def status(self) -> str:
        return self.data["status"]

    @property
    def state(self) -> dict[str, Any]:
        return self.data["state"]

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.data["steps"]

    def ordered_steps(self) -> list[tuple[str, dict[str, Any]]]:
        """The run's steps in the order they first started."""
        from relaunch.pipeline import PHASES

        rank = {name: i for i, name in enumerate(PHASES)}
        return sorted(self.steps.items(), key=lambda kv: (kv[1].get("order", 99), rank.get(kv[0], 99)))

    def done(self, step: str) -> bool:
        return self.steps.get(step, {}).get("status") == "done"

    # --- writing --------------------------------------------------------------------

    def record(self, **state: Any) -> None:
        """Remember facts as soon as they exist (a Droplet id before its boot finished), and save."""
        self.state.update(state)
        self.save()

    def step_started(self, step: str) -> None:
        # "order": when the step first started among the run's steps (the file's keys are sorted by name)
        entry = self.steps.setdefault(step, {"seconds": 0.0, "order": len(self.steps)})
        entry.update(status="running", started_at=entry.get("started_at") or now_iso(), error=None)
        self.save()

    def step_done(self, step: str, seconds: float, outputs: dict[str, Any]) -> None:
        entry = self.steps.setdefault(step, {"seconds": 0.0})
        entry.update(status="done", finished_at=now_iso(), error=None)
        entry["seconds"] = round(float(entry.get("seconds") or 0.0) + seconds, 3)
        self.state.update(outputs)
        self.save()

    def step_failed(self, step: str, seconds: float, error: str) -> None:
        entry = self.steps.setdefault(step, {"seconds": 0.0})
        entry.update(status="failed", finished_at=now_iso(), error=error)
        entry["seconds"] = round(float(entry.get("seconds") or 0.0) + seconds, 3)
        self.data["status"] = "paused"
        self.save()

    def save(self) -> None:
        self.data = mask_tree(self.data, self._mask)
        if self.path is not None:
            write_json_atomic(self.path, self.data)

    def close(self, status: str) -> Path:
        """End the run (passed, failed, aborted): move the journal aside; return where it went."""
        self.data["status"] = status
        self.data["finished_at"] = now_iso()
        self.save()
        final = self.path.with_name(f"{self.kind}-{self.id}.json")
        os.replace(self.path, final)
        self.path = final
        return final


def mask_tree(value: Any, mask: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with every string passed through ``mask``."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: mask_tree(v, mask) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_tree(v, mask) for v in value]
    return value


@contextlib.contextmanager
def run_lock(site: str, kind: str) -> Iterator[None]:
    """Hold the site's ``kind`` lock for a run (fcntl, released when the process dies); refuse if held.

    The lock file holds the holder's pid, so the refusal can name it.
    """
    try:
        with pid_lock(runs_dir(site) / f"{kind}.lock"):
            yield
    except Locked as exc:
        raise RelaunchError(
            f"another {kind} of site {site!r} is running (pid {exc.holder}); two at once would fight over the same "
            f"hosts and records. Wait for it, or stop it (kill {exc.holder}) and run `fab {kind} --resume --site {site}`"
        ) from None


def holder_pid(site: str, kind: str) -> int | None:
    """The pid holding the site's ``kind`` lock, or None when no run holds it."""
    path = runs_dir(site) / f"{kind}.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
