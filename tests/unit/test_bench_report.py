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


def test_overhead_leaves_out_the_cloud_making_the_droplet() -> None:
    # provision waits for the cloud to make the Droplet (a copy of the snapshot's disk, the machine's start):
    # that is the Droplet's boot, not relaunch's work
    phases = {"preflight": 1.0, "provision": 8.5, "boot": 6.0, "bootstrap": 9.0, "data": 18.0, "verify": 7.0}
    assert report.overhead(phases, cloud=8.0) == 1.0 + 0.5 + 9.0 + 7.0
    out = child_output(60.0, 9.0)
    out["record"]["phases"][1]["cloud_seconds"] = 1.25
    got = report.e2e_entry("rebuild", "off", out)
    assert got["provision_cloud_s"] == 1.25
    assert got["overhead_s"] == 1.0 + 1.5 + 9.0 + 4.0 + 2.0 - 1.25
    assert report.e2e_entry("rebuild", "off", child_output(60.0, 9.0))["provision_cloud_s"] == 0.0


def test_overhead_never_counts_the_golden_phase() -> None:
    # making the golden snapshot is not part of the recovery: not in the RTO, not overhead either
    phases = {"preflight": 1.0, "boot": 3.0, "bootstrap": 50.0, "golden": 200.0, "data": 5.0, "restore": 4.0}
    assert report.overhead(phases) == 55.0
    assert report.overhead(phases, ("boot", "data", "bootstrap")) == 5.0


def child_output(rto: float, bootstrap: float, *, snapshot: dict | None = None, golden_phase: float | None = None,
                 made: dict | None = None, check: dict | None = None) -> dict:
    phases = [{"name": "preflight", "seconds": 1.0}, {"name": "provision", "seconds": 1.5},
              {"name": "boot", "seconds": 4.0}, {"name": "bootstrap", "seconds": bootstrap},
              *([{"name": "golden", "seconds": golden_phase}] if golden_phase is not None else []),
              {"name": "data", "seconds": 6.0}, {"name": "restore", "seconds": 4.0}, {"name": "switch", "seconds": 2.0}]
    return {"status": "passed", "error": None, "peak_mb": 75.04,
            "record": {"rto_seconds": rto, "phases": phases, "golden_made": made,
                       "image": {"golden": snapshot, "reason": "not used (--no-golden)" if snapshot is None else "matches",
                                 "check": check}}}


SNAP = {"id": 7, "name": "relaunch-golden-example-abc", "created_at": "2026-11-27T22:10:00Z", "held_indices": [0, 1]}
MADE = {"id": 7, "name": "relaunch-golden-example-abc", "seconds": 180.0, "snapshot_seconds": 40.5,
        "held": ["base-packages", "docker"], "rebootstrapped": ["apt-lists"], "recipe": "f" * 64, "deleted": []}


def e2e() -> dict:
    return {
        "drill": report.e2e_entry("drill", "off", child_output(80.0, 50.0)),
        "drill_golden_make": report.e2e_entry("drill", "make", child_output(81.0, 51.0, golden_phase=180.0, made=MADE)),
        "drill_golden": report.e2e_entry("drill", "use", child_output(40.0, 10.0, snapshot=SNAP, check={
            "held": ["base-packages", "docker"], "held_changed": [], "passed": True, "snapshot": 7})),
        "rebuild": report.e2e_entry("rebuild", "off", child_output(138.0, 106.0)),
        "rebuild_golden": report.e2e_entry("rebuild", "use", child_output(60.0, 28.0, snapshot=SNAP, check={
            "held": ["base-packages", "docker"], "held_changed": [], "passed": True})),
    }


def test_e2e_entry_keeps_the_report_s_rto_and_says_where_the_host_started() -> None:
    runs = e2e()
    made = runs["drill_golden_make"]
    assert made["rto_s"] == 81.0  # the report's RTO: the golden phase is not in it
    assert made["phases"]["golden"] == 180.0 and made["golden_made"]["snapshot_seconds"] == 40.5
    assert made["overhead_s"] == 1.0 + 1.5 + 51.0 + 4.0 + 2.0  # neither boot, data nor golden
    assert "recipe" not in made["golden_made"]  # only what the benchmark reports
    assert not made["golden_image"] and made["started_from"].startswith("base image")
    gold = runs["rebuild_golden"]
    assert gold["golden_image"] and gold["started_from"] == "golden snapshot relaunch-golden-example-abc (7)"
    assert gold["golden_check"] == {"held": ["base-packages", "docker"], "held_changed": [], "passed": True}
    assert gold["peak_mb"] == 75.0 and gold["overhead_without_bootstrap_s"] == 1.0 + 1.5 + 4.0 + 2.0


def test_e2e_entry_of_a_use_run_that_found_no_snapshot_says_base_image() -> None:
    got = report.e2e_entry("rebuild", "use", child_output(138.0, 106.0))
    assert got["golden_image"] is False and got["started_from"] == "base image (not used (--no-golden))"


def test_e2e_table_puts_the_runs_side_by_side_phase_by_phase() -> None:
    lines = report.e2e_table(e2e()).splitlines()
    assert lines[0] == ("| phase (s) | fab drill (base image) | fab drill --golden (base image; makes the snapshot) "
                        "| fab drill (golden snapshot) | fab rebuild (base image) | fab rebuild (golden snapshot) |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    # phases in the pipeline's order, the golden phase marked as outside the RTO, then the totals
    assert labels[:8] == ["preflight", "provision", "boot", "bootstrap", "golden (not in the RTO)", "data", "restore",
                          "switch"]
    assert labels[8:] == ["of which the snapshot itself", "of provision: the cloud making the Droplet", "**RTO**",
                          "overhead (all but the Droplet's boot, data)",
                          "overhead without the bootstrap", "peak MB", "status", "held steps checked"]
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert row["bootstrap"] == ["50.0", "51.0", "10.0", "106.0", "28.0"]
    assert row["golden (not in the RTO)"] == ["-", "180.0", "-", "-", "-"]
    assert row["of which the snapshot itself"] == ["-", "40.5", "-", "-", "-"]
    assert row["**RTO**"] == ["**80.0**", "**81.0**", "**40.0**", "**138.0**", "**60.0**"]
    assert row["held steps checked"][2] == "2 held, changed: none" and row["held steps checked"][0] == "-"


def test_e2e_table_and_lines_with_a_failed_and_a_skipped_run() -> None:
    runs = {"drill": report.e2e_entry("drill", "off", child_output(80.0, 50.0)),
            "drill_golden_make": report.e2e_failed("drill", "make", "boom: the scan found a secret"),
            "drill_golden": report.e2e_failed("drill", "use", "no golden snapshot", status="skipped")}
    lines = report.e2e_table(runs).splitlines()
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    assert row["status"] == ["passed", "error", "skipped"] and row["**RTO**"] == ["**80.0**", "**-**", "**-**"]
    printed = report.e2e_lines(runs)
    assert len(printed) == 3 and "error: boom" in printed[1] and printed[2].startswith("fab drill (golden snapshot): skipped")
    assert report.golden_line(runs) == ("golden image: fab drill: no comparison (base image passed, golden snapshot "
                                        "skipped: no golden snapshot)")
    assert report.golden_line({"drill": runs["drill"]}) is None


def test_e2e_lines_say_what_making_the_snapshot_took_apart_from_the_rto() -> None:
    printed = report.e2e_lines(e2e())
    assert [line.split(":")[0] for line in printed] == [label for _, _, label in report.E2E_RUNS.values()]
    assert ("made golden snapshot relaunch-golden-example-abc (7) in 180.0 s, the snapshot itself 40.5 s, "
            "not in the RTO") in printed[1]
    assert "started from golden snapshot relaunch-golden-example-abc (7)" in printed[4]


def test_golden_line_compares_rto_and_bootstrap_without_and_with() -> None:
    assert report.golden_line(e2e()) == (
        "golden image: fab rebuild RTO 138.0 -> 60.0 s (bootstrap 106.0 -> 28.0 s); fab drill RTO 80.0 -> 40.0 s "
        "(bootstrap 50.0 -> 10.0 s); the snapshot made by fab drill --golden: golden phase 180.0 s, of which the "
        "snapshot 40.5 s (not in any RTO)")
    runs = e2e()
    runs["rebuild_golden"] = report.e2e_entry("rebuild", "use", child_output(130.0, 100.0))
    assert "fab rebuild: the golden run started from the base image" in report.golden_line(runs)


def test_backup_breakdown_and_its_line() -> None:
    manifest = {"started_at": "2026-11-27T22:00:00Z", "finished_at": "2026-11-27T22:00:06Z",
                "databases": [{"name": "blog", "seconds": 2.5, "size": 35 * 2**20},
                              {"name": "shop", "seconds": 5.0, "fingerprint_seconds": 3.5, "writes_paused_s": 0.171,
                               "size": 10 * 2**20}],
                "archives": [{"app": "notes", "seconds": 1.0, "size": 2**20}]}
    b = report.backup_breakdown(9.0, 7.5, manifest, {"uploaded": [{"seconds": 1.5}]})
    assert b["outside_runner_s"] == 1.5 and b["jobs_sum_s"] == 8.5 and b["slowest_job_s"] == 5.0
    assert b["fingerprint_s"] == 3.5 and b["offsite_upload_s"] == 1.5 and b["rest_s"] == 1.0
    assert b["manifest_span_s"] == 6.0 and b["databases"]["blog"] == {"seconds": 2.5, "fingerprint_s": None, "size_mb": 35.0}
    line = report.backup_line(b, {"dumps": 2.4, "tar": 0.7, "restic": 1.4})
    assert b["databases"]["shop"]["writes_paused_s"] == 0.171
    assert line == ("scheduled backup 9.0 s (runner 7.5, outside it 1.5): dumps blog 2.5, shop 5.0 (fingerprint 3.5, "
                    "writes paused 0.17); "
                    "archives notes 1.0; slowest job 5.0, upload 1.5, rest 1.0; plain script: dumps 2.4, tar 0.7, restic 1.4")
    empty = report.backup_breakdown(4.0, None, {}, None)
    assert empty["rest_s"] is None and empty["outside_runner_s"] is None and empty["manifest_span_s"] is None


def test_timeline_of_a_journal_in_seconds_from_its_first_line() -> None:
    journal = ("1764280800.100000 example-prod systemd[1]: Starting relaunch-backup.service - relaunch backup...\n"
               "1764280800.600000 example-prod python3[812]: dump stats: mariadb -> stats.sql\n"
               "-- No entries --\n"
               "1764280803.850000 example-prod python3[812]: offsite: restic backup of 20261127T220000Z\n")
    assert report.timeline(journal) == [(0.0, "Starting relaunch-backup.service - relaunch backup..."),
                                        (0.5, "dump stats: mariadb -> stats.sql"),
                                        (3.75, "offsite: restic backup of 20261127T220000Z")]
    assert report.timeline("") == []


def test_golden_line_compares_no_rto_of_a_failed_run() -> None:
    # a failed run's RTO is only the phases it got through (a rebuild whose Droplet never answered SSH: 305 s)
    runs = e2e()
    runs["rebuild_golden"] = {**runs["rebuild_golden"], "status": "failed", "rto_s": 305.4,
                              "error": "172.27.0.19: SSH did not answer within 300 s"}
    line = report.golden_line(runs)
    assert "305.4" not in line and "138.0 ->" not in line
    assert ("fab rebuild: no comparison (base image passed, golden snapshot failed: 172.27.0.19: SSH did not answer "
            "within 300 s)") in line
    assert "fab drill RTO 80.0 -> 40.0 s" in line
