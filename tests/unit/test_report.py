"""relaunch.pipeline.report: a run's record -> Markdown (+ Mermaid gantt) and JSON in the site's state."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from relaunch.pipeline import report
from relaunch.pipeline.report import list_reports, load_history, render_markdown, write_report

SITE = "example"

FULL = {
    "kind": "drill", "id": "20261127T140102Z", "site": SITE, "status": "failed",
    "started_at": "2026-11-27T14:01:02Z", "finished_at": "2026-11-27T14:13:40Z",
    "rto_seconds": 758.4, "rpo_seconds": 612, "rpo_basis": "backup 20261127T135050Z, its age",
    "objectives": {"rto_minutes": 30, "rpo_minutes": 5, "rto_met": True, "rpo_met": False},
    "phases": [
        {"name": "preflight", "seconds": 2.1, "status": "passed", "started_at": "2026-11-27T14:01:02Z", "detail": ""},
        {"name": "provision", "seconds": 0, "status": "skipped", "started_at": "2026-11-27T14:01:04Z",
         "detail": "already done"},
        {"name": "boot", "seconds": 41.7, "status": "passed", "started_at": "2026-11-27T14:01:04.500Z"},
        {"name": "data", "seconds": 180.2, "status": "passed", "started_at": "2026-11-27T14:01:46Z"},
        {"name": "verify", "seconds": 12.3, "status": "failed", "started_at": "2026-11-27T14:04:46Z",
         "detail": "1 database differs"},
    ],
    "databases": [
        {"name": "app", "engine": "postgresql", "tables": 12, "rows": 2000000, "fingerprint_match": False,
         "canary": True, "mismatches": ["pgbench_accounts: rows 2000000 != 1999999"]},
        {"name": "stats", "engine": "sqlite", "tables": 3, "rows": 41, "fingerprint_match": True, "canary": None,
         "mismatches": []},
    ],
    "files": [{"path": "/srv/app/uploads", "files": 1203, "bytes": 209715200, "match": True,
               "method": "sample of 100"}],
    "health_checks": [{"name": "site", "address": "https://example.test/", "passed": True, "detail": "200 in 0.1 s"}],
    "switched": [{"name": "www", "type": "A", "before": "10.0.0.2", "after": ["10.0.0.3"]}],
    "old_host": {"name": "example-prod", "id": 101, "address": "10.0.0.2"},
    "new_host": {"name": "example-drill-1", "id": 202, "address": "10.0.0.3"},
    "backup_id": "20261127T135050Z", "scratch_destroyed": False,
    "error": "verify: 1 database did not match its manifest",
    "next_steps": ["Compare pgbench_accounts in backup 20261127T135050Z with production"],
}


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAUNCH_STATE_DIR", str(tmp_path / "state"))


def _tables(md: str) -> list[list[list[str]]]:
    """Each table of ``md`` as rendered by a CommonMark parser with tables: rows of cell texts."""
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    tables, rows, row, in_cell = [], None, None, False
    for t in tokens:
        if t.type == "table_open":
            rows = []
        elif t.type == "table_close":
            tables.append(rows)
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close":
            rows.append(row)
        elif t.type in ("th_open", "td_open"):
            in_cell = True
        elif t.type in ("th_close", "td_close"):
            in_cell = False
        elif t.type == "inline" and in_cell:
            row.append(t.content)
    return tables


def _gantt_lines(md: str) -> list[str]:
    match = re.search(r"^```mermaid\n(.*?)\n```$", md, re.S | re.M)
    assert match, "no mermaid block"
    return match.group(1).split("\n")


# Keywords the Mermaid gantt lexer matches before a task's text (mermaid 11 gantt.jison).
_GANTT_KEYWORDS = ("gantt", "dateformat", "inclusiveenddates", "topaxis", "axisformat", "tickinterval", "includes",
                   "excludes", "todaymarker", "weekday", "weekend", "title", "accdescription", "acctitle", "accdescr",
                   "section", "click", "href", "call", "displaymode")


def _parse_gantt(lines: list[str]) -> list[dict]:
    """Check ``lines`` against the Mermaid gantt grammar this report uses; return its tasks."""
    assert lines[0] == "gantt"
    header = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines[1:] if not re.match(r"\s+\d", line)}
    assert header["dateFormat"] == "x"  # milliseconds; see the module docstring for why not X
    assert header["axisFormat"] == "%M:%S"
    assert header["todayMarker"] == "off"
    assert not re.search(r"[#;\n]", header["title"])
    tasks, ids = [], set()
    for line in lines[1:]:
        if not re.match(r"\s+\d", line):
            continue
        m = re.fullmatch(r"    (?P<text>[^#:\n;%]+):(?P<data>[^#\n;%]+)", line)
        assert m, f"not a task line: {line!r}"
        text = m["text"].strip()
        assert not text.lower().startswith(_GANTT_KEYWORDS) and not re.match(r"\d{4}-\d\d-\d\d", text)
        parts = [p.strip() for p in m["data"].split(",")]
        tags = [p for p in parts if p in ("active", "done", "crit", "milestone")]
        assert parts[: len(tags)] == tags, "tags come first"
        tid, start, end = parts[len(tags):]
        assert re.fullmatch(r"p\d+", tid) and tid not in ids
        ids.add(tid)
        assert re.fullmatch(r"\d+", start) and re.fullmatch(r"\d+", end), "whole milliseconds"
        assert int(end) >= int(start)
        tasks.append({"text": text, "tags": tags, "start": int(start), "end": int(end)})
    return tasks


def test_render_markdown_of_an_empty_record() -> None:
    for record in ({}, {"phases": None, "databases": None, "objectives": None, "error": None, "next_steps": None}):
        md = render_markdown(record)
        assert md.startswith("# Run of ?: unknown\n")
        assert "No phase ran." in md and "```mermaid" not in md
        assert "**RTO** unknown" in md and "**RPO** unknown" in md
        assert "## What to do next" in md


def test_render_markdown_with_every_key_null_or_odd() -> None:
    record = {k: None for k in FULL}
    record["phases"] = [{"name": None, "seconds": "n/a", "status": None}, "not a dict", {}]
    record["databases"] = [{"name": "x", "rows": "many", "mismatches": "one"}]
    record["objectives"] = {"rto_minutes": None, "rto_met": None}
    md = render_markdown(record)
    assert "| 1 | - | - | - | - | - | - |" in md
    assert "| x | - | - | many | - | not planted | one |" in md
    _parse_gantt(_gantt_lines(md))


def test_render_markdown_of_a_failed_preflight() -> None:
    md = render_markdown({"kind": "rebuild", "site": SITE, "status": "failed", "id": "20261127T140102Z",
                          "started_at": "2026-11-27T14:01:02Z",
                          "phases": [{"name": "preflight", "seconds": 0.4, "status": "failed"}],
                          "error": "the API token was refused (401)", "next_steps": ["Check DIGITALOCEAN_ACCESS_TOKEN"]})
    assert md.startswith("# Rebuild of example: FAILED\n")
    assert "## What went wrong (in preflight)\n\n```text\nthe API token was refused (401)\n```" in md
    assert _parse_gantt(_gantt_lines(md)) == [{"text": "1 preflight (failed)", "tags": ["crit"], "start": 0, "end": 400}]
    assert "- Check DIGITALOCEAN\\_ACCESS\\_TOKEN" in md


def test_render_markdown_of_a_full_record() -> None:
    md = render_markdown(FULL)
    assert md.startswith("# Drill of example: FAILED\n")
    assert ("**RTO** 12 min 38 s (objective 30 min: met). **RPO** 10 min 12 s (objective 5 min: **MISSED**): "
            "backup 20261127T135050Z, its age.") in md
    for heading in ("## What went wrong (in verify)", "## Phases", "## Databases", "## Files", "## Health checks",
                    "## Records switched", "## Hosts", "## What to do next"):
        assert heading in md
    phases, databases, files, checks, switched, hosts = _tables(md)
    assert phases[0] == ["#", "phase", "status", "took", "share", "started", "detail"]
    assert phases[4] == ["4", "data", "passed", "3 min 00 s", "24 %", "2026-11-27T14:01:46Z", "-"]
    assert phases[5][2] == "FAILED"
    assert databases[1] == ["app", "postgresql", "12", "2,000,000", "**MISMATCH**", "found",
                            "pgbench\\_accounts: rows 2000000 != 1999999"]
    assert databases[2][4:7] == ["match", "not planted", "-"]
    assert files[1] == ["/srv/app/uploads", "1,203", "200.0 MB", "match", "sample of 100"]
    assert checks[1] == ["site", "https://example.test/", "passed", "200 in 0.1 s"]
    assert switched[1] == ["www", "A", "10.0.0.2", "10.0.0.3"]
    assert hosts[1:] == [["old host", "example-prod", "101", "10.0.0.2"], ["new host", "example-drill-1", "202", "10.0.0.3"]]
    assert "**The scratch Droplet was NOT destroyed**" in md
    assert "Trend" not in md  # no history given


def test_render_markdown_gantt_places_each_phase_at_its_start() -> None:
    tasks = _parse_gantt(_gantt_lines(render_markdown(FULL)))
    assert tasks == [
        {"text": "1 preflight (passed)", "tags": ["done"], "start": 0, "end": 2100},
        {"text": "2 provision (skipped)", "tags": ["milestone"], "start": 2000, "end": 2000},
        {"text": "3 boot (passed)", "tags": ["done"], "start": 2500, "end": 44200},
        {"text": "4 data (passed)", "tags": ["done"], "start": 44000, "end": 224200},
        {"text": "5 verify (failed)", "tags": ["crit"], "start": 224000, "end": 236300},
    ]


def test_render_markdown_gantt_without_times_lays_phases_end_to_end() -> None:
    record = {"phases": [{"name": "a", "seconds": 1.25, "status": "passed"}, {"name": "b", "seconds": 2, "status": "passed"}]}
    tasks = _parse_gantt(_gantt_lines(render_markdown(record)))
    assert [(t["start"], t["end"]) for t in tasks] == [(0, 1250), (1250, 3250)]


def test_render_markdown_gantt_survives_hostile_names() -> None:
    names = ["title x", "click p1 call alert()", "section: a", "a%%b", "2026-01-01", "gantt", "x;y#z",
             "%%{init}%%", "accTitle: t", "```", "a\nb"]
    record = {"kind": "drill;#", "site": "s%%:#;\nx",
              "phases": [{"name": n, "seconds": 1, "status": "we;ird#"} for n in names]}
    lines = _gantt_lines(render_markdown(record))
    tasks = _parse_gantt(lines)
    assert len(tasks) == len(names)
    assert all("%" not in line for line in lines if not line.startswith("    axisFormat "))


def test_render_markdown_escapes_pipes_newlines_and_markup_in_tables() -> None:
    hostile = "a|b\nc\r\nd <img src=x> [link](http://x) `code` *em* \\| \x1b[31m"
    record = {
        "kind": "rebuild", "site": "s|ite", "status": "passed",
        "phases": [{"name": hostile, "seconds": 1, "status": "passed", "detail": hostile}],
        "databases": [{"name": hostile, "engine": "sqlite", "mismatches": [hostile]}],
        "files": [{"path": hostile, "method": hostile}],
        "health_checks": [{"name": hostile, "address": hostile, "passed": False, "detail": hostile}],
        "switched": [{"name": hostile, "type": "A", "before": [hostile], "after": hostile}],
        "old_host": {"name": hostile, "id": 1, "address": hostile},
        "next_steps": [hostile], "rpo_basis": hostile,
    }
    md = render_markdown(record)
    tables = _tables(md)
    assert len(tables) == 6
    for table in tables:
        assert len({len(row) for row in table}) == 1, "a cell leaked into another"
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    inline = [c for t in tokens if t.type == "inline" for c in t.children or []]
    assert {c.content for c in inline if c.type == "html_inline"} <= {"<br>"}
    assert not [c for c in inline if c.type in ("link_open", "code_inline", "em_open", "image")]
    assert "\x1b" not in md
    assert "a\\|b<br>c<br>d &lt;img" not in md  # escaped with a backslash, not with entities
    assert "a\\|b<br>c<br>d \\<img src=x\\> \\[link\\](http://x) \\`code\\` \\*em\\* \\\\\\|" in md
    assert md.startswith("# Rebuild of s\\|ite: passed\n")


def test_render_markdown_error_fence_outlasts_backticks() -> None:
    md = render_markdown({"error": "boom ```\n````` x\n# not a heading"})
    assert "``````text\nboom ```\n````` x\n# not a heading\n``````" in md
    headings = [t for t in MarkdownIt("commonmark").parse(md) if t.type == "heading_open"]
    assert len(headings) == 4  # title, what went wrong, phases, what to do next


def test_render_markdown_trend_oldest_first_with_this_run_last() -> None:
    history = [
        {"kind": "drill", "id": "20261120T140000Z", "status": "passed", "rto_seconds": 700, "rpo_seconds": 300,
         "finished_at": "2026-11-20T14:12:00Z"},
        {"kind": "drill", "id": "20261113T140000Z", "status": "passed", "rto_seconds": 800, "rpo_seconds": None,
         "finished_at": "2026-11-13T14:12:00Z"},
        FULL,  # the run itself is never its own history
    ]
    md = render_markdown(FULL, history)
    assert "## Trend of the last 3 runs" in md
    trend = _tables(md)[-1]
    assert [row[0] for row in trend[1:]] == ["20261113T140000Z", "20261120T140000Z", "20261127T140102Z (this run)"]
    assert trend[1][3:] == ["13 min 20 s", "█" * 20, "-"]
    assert trend[2][5] == "5 min 00 s"


def test_write_report_writes_private_files_named_by_kind_and_id() -> None:
    md_path, json_path = write_report(SITE, FULL)
    assert md_path.name == "drill-20261127T140102Z.md" and json_path.name == "drill-20261127T140102Z.json"
    assert md_path.parent == report.reports_dir(SITE)
    for path in (md_path, json_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(md_path.parent.stat().st_mode) == 0o700
    assert json.loads(json_path.read_text()) == {**FULL, "format": 1}
    assert md_path.read_text() == render_markdown(FULL)
    assert [p.name for p in md_path.parent.iterdir() if p.name.startswith(".")] == []


def test_write_report_makes_its_directory_private_whatever_the_umask() -> None:
    old = os.umask(0o000)
    try:
        md_path, _ = write_report(SITE, {"kind": "rebuild", "id": "1"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(md_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(md_path.stat().st_mode) == 0o600


def test_write_report_never_leaves_the_reports_directory() -> None:
    md_path, json_path = write_report(SITE, {"kind": "../../x", "id": "../../../etc/passwd"})
    assert md_path.parent == json_path.parent == report.reports_dir(SITE)
    assert md_path.name == "x-etc_passwd.md"


def test_write_report_gives_a_record_without_id_one() -> None:
    _, json_path = write_report(SITE, {"kind": "rebuild"})
    record = json.loads(json_path.read_text())
    assert re.fullmatch(r"\d{8}T\d{6}Z", record["id"])
    assert json_path.name == f"rebuild-{record['id']}.json"


def test_write_report_of_a_drill_shows_the_trend_of_earlier_drills() -> None:
    write_report(SITE, {**FULL, "id": "20261120T140000Z", "finished_at": "2026-11-20T14:12:00Z", "status": "passed"})
    write_report(SITE, {"kind": "rebuild", "id": "20261121T140000Z", "finished_at": "2026-11-21T14:12:00Z"})
    md_path, _ = write_report(SITE, FULL)
    md = md_path.read_text()
    assert "## Trend of the last 2 runs" in md
    assert "20261121T140000Z" not in md  # a rebuild is not part of the drills' trend


def test_list_reports_newest_first() -> None:
    for run_id, finished in (("b", "2026-11-20T14:00:00Z"), ("c", "2026-11-27T09:00:00+00:00"),
                             ("a", "2026-11-27T10:00:00+01:00")):
        write_report(SITE, {"kind": "drill", "id": run_id, "status": "passed", "finished_at": finished,
                            "rto_seconds": 60, "rpo_seconds": None})
    (report.reports_dir(SITE) / "drill-broken.json").write_text("{not json")
    (report.reports_dir(SITE) / "drill-list.json").write_text("[]")
    found = list_reports(SITE)
    assert [r["id"] for r in found] == ["c", "a", "b"]  # 10:00+01:00 is 09:00 UTC; ties by id, newest first
    first = found[0]
    assert first == {"kind": "drill", "id": "c", "status": "passed", "rto_seconds": 60, "rpo_seconds": None,
                     "finished_at": "2026-11-27T09:00:00+00:00",
                     "path_md": str(report.reports_dir(SITE) / "drill-c.md"),
                     "path_json": str(report.reports_dir(SITE) / "drill-c.json")}
    json.dumps(found)  # ready for --json


def test_list_reports_falls_back_to_start_time_then_id() -> None:
    write_report(SITE, {"kind": "rebuild", "id": "20261101T000000Z"})  # failed early: no times at all
    write_report(SITE, {"kind": "rebuild", "id": "x", "started_at": "2026-11-02T00:00:00Z"})
    write_report(SITE, {"kind": "rebuild", "id": "y", "finished_at": "2026-10-01T00:00:00Z"})
    assert [r["id"] for r in list_reports(SITE)] == ["x", "20261101T000000Z", "y"]


def test_list_reports_of_a_site_without_reports() -> None:
    assert list_reports("nothing-here") == []
    assert load_history("nothing-here", "drill") == []


def test_load_history_keeps_the_kind_newest_first_up_to_the_limit() -> None:
    for day in range(1, 6):
        write_report(SITE, {"kind": "drill", "id": f"d{day}", "finished_at": f"2026-11-0{day}T00:00:00Z"})
    write_report(SITE, {"kind": "rebuild", "id": "r", "finished_at": "2026-11-09T00:00:00Z"})
    assert [r["id"] for r in load_history(SITE, "drill", limit=3)] == ["d5", "d4", "d3"]
    assert all(r["format"] == 1 for r in load_history(SITE, "drill"))
    assert [r["id"] for r in load_history(SITE, "rebuild")] == ["r"]


def test_render_markdown_names_the_image_a_run_started_from_and_a_golden_snapshot_it_made() -> None:
    made = {**FULL, "status": "passed", "error": None,
            "phases": [{"name": "bootstrap", "seconds": 300, "status": "passed"},
                       {"name": "golden", "seconds": 100, "status": "passed"},
                       {"name": "restore", "seconds": 100, "status": "passed"}], "rto_seconds": 400,
            "image": {"golden": None, "reason": "not used: this drill makes a new golden snapshot (--golden)"},
            "golden_made": {"id": 77, "name": "relaunch-golden-example-abc", "snapshot_seconds": 40.2,
                            "held": ["docker", "base-packages"], "deleted": [76]}}
    md = render_markdown(made)
    assert "## Image" in md
    assert "Started from: the base image (not used: this drill makes a new golden snapshot (--golden))." in md
    assert ("Golden snapshot made: relaunch-golden-example-abc (77); the snapshot took 40.2 s (not in the RTO); "
            "it holds docker, base-packages; deleted the older 76.") in md
    phases = _tables(md)[0]
    assert phases[2][1:5] == ["golden", "passed", "1 min 40 s", "not in RTO"]
    assert phases[3][4] == "25 %"

    used = {**FULL, "image": {"golden": {"id": 77, "name": "relaunch-golden-example-abc",
                                         "created_at": "2026-11-27T14:00:00Z", "held_indices": [0, 1]},
                              "reason": "golden snapshot ... matches",
                              "check": {"held": ["docker", "base-packages"], "held_changed": [], "passed": True}},
            "golden_made": None}
    md = render_markdown(used)
    assert ("Started from: golden snapshot relaunch-golden-example-abc (77, made 2026-11-27T14:00:00Z); "
            "its 2 held steps reported no change.") in md
    assert "Golden snapshot made" not in md
    bad = {**used, "image": {**used["image"], "check": {"held": ["docker"], "held_changed": ["docker"],
                                                         "passed": False, "problem": "docker changed the host"}}}
    assert "**the image is not what its tags say**: docker changed the host" in render_markdown(bad)
    assert "## Image" not in render_markdown(FULL)  # a record from before golden images
