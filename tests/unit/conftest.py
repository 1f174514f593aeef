"""Unit tests: each test has a state directory of its own.

Unit tests write journals, host records and reports for the site "example" (a paused rebuild's
journal, say); in the session's shared state directory they would leak into the sandbox tests
that run after them (a rebuild refused as "paused" in a full run).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "relaunch-state"))
