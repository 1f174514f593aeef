"""The fault suite: a rebuild, a drill and the backups on a bad day, in the real sandbox, faults injected.

Each case is a test marked ``@pytest.mark.fault(case=N, expected="...")``, N being the class
(the numbered list of faults the suite covers, see README "Faults"); a class may have several
cases. One case per class carries ``ci=True``: `.ci/run` runs only those, `bash scripts/faults.sh`
(``RELAUNCH_FAULTS=all``) runs them all. A test says what it saw with the ``observed`` fixture;
the run ends with a table (case, test, expected, observed, result) and ``N passed, N failed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ALL = os.environ.get("RELAUNCH_FAULTS") == "all"
_rows: list[dict] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ALL:
        return
    kept, dropped = [], []
    for item in items:
        mark = item.get_closest_marker("fault")
        (dropped if mark is not None and not mark.kwargs.get("ci") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def observed(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record what the case saw (one line, shown in the table's "observed" column)."""
    def say(text: str) -> None:
        request.node.user_properties.append(("observed", " ".join(text.split())))
    return say


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    mark = item.get_closest_marker("fault")
    if mark is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return report
    said = [v for k, v in item.user_properties if k == "observed"]
    if report.passed:
        seen = "; ".join(said) or "as expected"
    elif report.skipped:
        seen = f"skipped: {report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr}"
    else:
        crash = getattr(report.longrepr, "reprcrash", None)
        seen = (crash.message if crash is not None else str(report.longrepr)).strip().splitlines()[0][:200]
        seen = "; ".join([*said, seen])
    _rows.append({"case": mark.kwargs.get("case", 0), "test": item.name, "expected": mark.kwargs.get("expected", ""),
                  "observed": seen, "result": report.outcome if report.when == "call" else f"{report.outcome} in setup"})
    return report


def table() -> str:
    rows = sorted(_rows, key=lambda r: (r["case"], r["test"]))
    cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| case | test | expected | observed | result |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {cell(r['test'])} | {cell(r['expected'])} | {cell(r['observed'])} | {r['result']} |" for r in rows]
    passed = sum(r["result"] == "passed" for r in rows)
    failed = sum(r["result"].startswith("failed") for r in rows)
    return "\n".join(lines) + f"\n\n{passed} passed, {failed} failed\n"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _rows:
        return
    text = table()
    terminalreporter.section("faults")
    terminalreporter.write(text)
    if out := os.environ.get("RELAUNCH_FAULTS_TABLE"):
        Path(out).write_text(text)
