"""The benchmark's pure parts (bench/report.py): medians, ratios, the table, the closing line, the plot."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ lives beside src/, not in the package

from bench import report  # noqa: E402


def rounds() -> list[dict]:
    return [
        {"by_hand": 10.0, "floor": 5.0, "relaunch": {"data": 3.0, "restore": 2.0, "verify": 1.0}, "relaunch_peak_mb": 80},
        {"by_hand": 12.0, "floor": 6.0, "relaunch": {"data": 4.0, "restore": 2.0, "verify": 1.5}, "relaunch_peak_mb": 95},
        {"by_hand": 30.0, "floor": 5.5, "relaunch": {"data": 3.5, "restore": 2.5, "verify": 1.0}, "relaunch_peak_mb": 90},
    ]


def test_median_ignores_missing_values() -> None:
    assert report.median([3, None, 1, 2]) == 2
    assert report.median([1, 2, 3, 4]) == 2.5
    assert report.median([None]) is None and report.median([]) is None


def test_ratio_is_none_without_a_positive_denominator() -> None:
    assert report.ratio(3, 4) == 0.75
    assert report.ratio(None, 4) is None and report.ratio(3, None) is None and report.ratio(3, 0) is None


def test_summarize_compares_data_plus_restore_and_adds_verify_on_its_own() -> None:
    s = report.summarize(rounds())
    assert s["n_rounds"] == 3  # not "rounds": the caller keeps its list of rounds under that key
    assert s["by_hand_s"] == 12.0 and s["floor_s"] == 5.5
    assert s["relaunch_s"] == 6.0  # data + restore: 5, 6, 6
    assert s["relaunch_verified_s"] == 7.0  # + verify: 6, 7.5, 7
    assert s["verify_s"] == 1.0 and s["peak_mb"] == 95
    assert s["relaunch_by_hand"] == pytest.approx(0.5)
    assert s["relaunch_floor"] == pytest.approx(6.0 / 5.5)
    assert s["verified_by_hand"] == pytest.approx(7.0 / 12.0)
    assert s["per_round_by_hand"] == pytest.approx(0.5)  # 0.5, 0.5, 0.2


def test_summarize_leaves_out_a_variant_that_failed_in_a_round() -> None:
    rs = rounds()
    del rs[0]["relaunch"]
    del rs[1]["floor"]
    s = report.summarize(rs)
    assert s["relaunch_s"] == 6.0 and s["floor_s"] == 5.25


def test_summarize_backups_ratio_and_peaks() -> None:
    b = report.summarize_backups([{"scheduled": 13, "plain": 10, "runner_peak_mb": 30, "tree_peak_mb": 90},
                                  {"scheduled": 11, "plain": 10, "runner_peak_mb": 35, "tree_peak_mb": 70}])
    assert b["scheduled_s"] == 12 and b["plain_s"] == 10 and b["scheduled_plain"] == pytest.approx(1.2)
    assert b["runner_peak_mb"] == 35 and b["tree_peak_mb"] == 90


def test_final_line_has_the_issue_s_shape() -> None:
    line = report.final_line(report.summarize(rounds()), overhead_s=12.34, rto_s=301.26)
    assert line == "relaunch/by-hand=0.50 relaunch/floor=1.09 overhead_s=12.3 peak_mb=95 rto_s=301.3"
    assert report.final_line({}, None, None) == "relaunch/by-hand=nan relaunch/floor=nan overhead_s=nan peak_mb=nan rto_s=nan"


def test_overhead_is_every_phase_but_boot_and_data() -> None:
    phases = {"preflight": 1.0, "provision": 2.0, "boot": 30.0, "bootstrap": 100.0, "data": 20.0, "restore": 5.0}
    assert report.overhead(phases) == 108.0
    assert report.overhead(phases, ("boot", "data", "bootstrap")) == 8.0
    assert report.overhead({}) is None


def test_linearity_of_a_straight_line_is_exact() -> None:
    lin = report.linearity([(100, 12.0), (500, 52.0), (2000, 202.0)])
    assert lin["slope_s_per_mb"] == pytest.approx(0.1) and lin["intercept_s"] == pytest.approx(2.0)
    assert lin["r2"] == pytest.approx(1.0)
    assert report.linearity([(100, 1.0)]) is None


def test_table_has_a_row_per_size_sorted() -> None:
    s = report.summarize(rounds())
    s["backups"] = {"scheduled_s": 12.0, "plain_s": 10.0, "scheduled_plain": 1.2, "runner_peak_mb": 30, "store_added_mb": 2.5}
    text = report.table({500: s, 100: s})
    lines = text.splitlines()
    assert len(lines) == 4 and lines[1].startswith("|---|")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2].startswith("| 100 MB | 12.0 | 5.5 | 6.0 (3.5 / 2.0) | 1.0 | 0.50 | 1.09 | 0.58 | 95 | 12.0 | 10.0 | 1.20 | 30 | 2.5 |")
    assert lines[3].startswith("| 500 MB")


def test_write_results_writes_json_and_a_well_formed_svg(tmp_path: Path) -> None:
    sizes = {"100": report.summarize(rounds()), "500": {**report.summarize(rounds()), "floor_s": None}}
    js, svg = report.write_results(tmp_path / "out", "2026-01-01T000000Z", {"sizes": sizes})
    assert json.loads(js.read_text())["sizes"]["100"]["by_hand_s"] == 12.0
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg")
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == len(report.SERIES)  # one line per series (floor has one point less, still drawn)
    assert "<" not in "".join(t.text or "" for t in root.iter() if t.tag.endswith("text") and "&" in (t.text or ""))
