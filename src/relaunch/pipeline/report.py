"""A run's report: what ``fab rebuild`` or ``fab drill`` did, measured, as Markdown and JSON.

Given the run's *record* (a plain dict, built by the pipeline), :func:`write_report` writes two
files in the site's state directory, ``<state>/sites/<site>/reports/<kind>-<id>.md`` and
``.json`` (mode 0600, directories 0700): the JSON is the record as is plus ``"format": 1``, for
tools and for the trend of later drills; the Markdown is for a person, during or after an outage.

The record is read leniently: any key may be missing or null (a run that failed at preflight has
almost nothing) and the report still renders, saying "-" where a value is unknown. The keys
this module reads are listed in :func:`render_markdown`.

Why the Markdown is built the way it is:

* Every value that comes from the record goes through :func:`_md` (or :func:`_gantt_text` inside
  the Mermaid block, or a fence longer than any backtick run for the error): a ``|`` or a newline
  in a database name or a health-check detail must not break a table, a ``<`` must not become
  HTML, a ``[`` must not become a link. The report adds nothing the record does not hold (no
  environment, no configuration), so it holds no secret unless the record does.
* The gantt chart uses ``dateFormat x`` (Unix milliseconds) with each phase placed at its offset
  from the start of the run, so 0 is the start and the axis reads as time since start
  (``axisFormat %M:%S``). Not ``dateFormat X`` (seconds): Mermaid 11 reads a bare number in
  the *start* column as milliseconds whatever the format (``new Date(Number(str))``) but the
  *end* column through the format, so with ``X`` a phase starting at 2 s starts at 2 ms; with
  ``x`` both columns agree, in Mermaid 11 as in the moment-based versions before it. Values are
  whole numbers (a strict parse of ``12.5`` fails). Mermaid formats the axis in the viewer's
  local time: minutes and seconds are right in every whole-hour time zone, which is why the
  axis shows no hours. Task names may not hold ``:``, ``#``, ``;`` or ``%`` (the gantt lexer's
  separators and comment markers) nor start with a gantt keyword (``title``, ``section``,
  ``click``...): :func:`_gantt_text` keeps a safe set of characters and every label starts with
  the phase's number.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relaunch.pipeline import UNTIMED
from relaunch.state import make_private_dirs, site_dir, write_atomic

log = logging.getLogger(__name__)

FORMAT = 1

_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------------
# writing and reading reports


def reports_dir(site: str) -> Path:
    """Return the directory of the site's reports (not created)."""
    return site_dir(site) / "reports"


def report_stem(record: dict) -> str:
    """Return the file stem of a record's report: ``<kind>-<id>``, reduced to safe file-name characters."""
    kind = _stem_part(record.get("kind")) or "run"
    run_id = _stem_part(record.get("id")) or _now_id()
    return f"{kind}-{run_id}"


def write_report(site: str, record: dict) -> tuple[Path, Path]:
    """Write the record's report as Markdown and JSON in the site's reports directory.

    Given a run's record, write ``<kind>-<id>.md`` and ``<kind>-<id>.json`` (each atomically,
    mode 0600; the directory is made 0700) and return their paths (markdown, json). A record
    without an id gets one from the current UTC time (``20261127T140102Z``), written into the
    JSON. A report of the same kind and id is replaced (a resumed run rewrites its report).
    For a drill the Markdown includes the trend of the site's earlier drills.
    """
    record = dict(record or {})
    if not _stem_part(record.get("id")):
        record["id"] = _now_id()
    record["format"] = FORMAT
    directory = reports_dir(site)
    make_private_dirs(directory)
    stem = report_stem(record)
    history: list[dict] = []
    if record.get("kind") == "drill":
        history = load_history(site, "drill")
    md_path = directory / f"{stem}.md"
    json_path = directory / f"{stem}.json"
    write_atomic(json_path, (json.dumps(record, indent=2, default=str) + "\n").encode(), 0o600)
    write_atomic(md_path, render_markdown(record, history).encode(), 0o600)
    log.info("report written: %s", md_path)
    return md_path, json_path


def _read_records(site: str) -> list[tuple[dict, Path]]:
    directory = reports_dir(site)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob("*.json"):
        if path.name.startswith("."):
            continue  # a temporary file of write_atomic
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("report %s unreadable, left out: %s", path, exc)
            continue
        if not isinstance(record, dict):
            log.warning("report %s holds no record, left out", path)
            continue
        found.append((record, path))
    found.sort(key=lambda rp: _order_key(rp[0], rp[1]), reverse=True)
    return found


def list_reports(site: str) -> list[dict]:
    """Return the site's reports, newest first (by ``finished_at``, else ``started_at``, else file time).

    Each is a dict ready for JSON: ``kind``, ``id``, ``status``, ``rto_seconds``, ``rpo_seconds``,
    ``finished_at``, ``path_md`` (a string; None when the Markdown is missing) and ``path_json``.
    An unreadable JSON file is logged and left out. No reports directory: an empty list.
    """
    out = []
    for record, path in _read_records(site):
        md = path.with_suffix(".md")
        out.append({
            "kind": record.get("kind"),
            "id": record.get("id"),
            "status": record.get("status"),
            "rto_seconds": record.get("rto_seconds"),
            "rpo_seconds": record.get("rpo_seconds"),
            "finished_at": record.get("finished_at"),
            "path_md": str(md) if md.exists() else None,
            "path_json": str(path),
        })
    return out


def load_history(site: str, kind: str, limit: int = 10) -> list[dict]:
    """Return up to ``limit`` records of ``kind`` already written for the site, newest first."""
    return [r for r, _ in _read_records(site) if r.get("kind") == kind][: max(limit, 0)]


# ---------------------------------------------------------------------------------------------
# rendering


def render_markdown(record: dict, history: Sequence[dict] = ()) -> str:
    """Return the Markdown report of a run's record (and the trend of ``history``, when given).

    Reads, each optional: kind, id, site, status, started_at, finished_at, rto_seconds,
    rpo_seconds, rpo_basis, objectives {rto_minutes, rpo_minutes, rto_met, rpo_met}, error,
    phases [{name, seconds, status, started_at, detail, cloud_seconds}], databases [{name, engine, tables, rows,
    fingerprint_match, canary, mismatches}], files [{path, files, bytes, match, method}],
    health_checks [{name, address, passed, detail}], switched [{name, type, before, after}],
    old_host / new_host {name, id, address}, backup_id, scratch_destroyed, next_steps [text],
    image {golden {id, name, created_at}, reason, check {held, held_changed, passed, problem}},
    golden_made {id, name, snapshot_seconds, held [text], deleted [id]}.
    ``history`` is earlier records of the same kind (any order; the record itself is left out).
    """
    r = record if isinstance(record, dict) else {}
    kind = _text(r.get("kind")) or "run"
    site = _text(r.get("site")) or "?"
    status = _text(r.get("status")) or "unknown"
    out: list[str] = []
    out.append(f"# {_md(kind.capitalize())} of {_md(site)}: {_md(status.upper() if status == 'failed' else status)}")
    out.append("")
    out.append(_md(_run_line(r)))
    out.append("")
    out.append(_summary(r))
    out.append("")
    drift = r.get("drift") if isinstance(r.get("drift"), dict) else None
    if drift and (drift.get("drifted") or drift.get("error")):
        # a drill that passes while production has state nothing describes says so up front
        out += [f"**Drift**: {_md(_text(drift.get('summary') or 'the check could not run: ' + _text(drift.get('error'))))}"
                " (see Drift below).", ""]

    phases = _dicts(r.get("phases"))
    error = _text(r.get("error"))
    if error:
        failed = next((p for p in phases if p.get("status") == "failed"), None)
        where = f" (in {_md(_text(failed.get('name')) or '?')})" if failed else ""
        out += [f"## What went wrong{where}", "", _fence(error), ""]

    out += ["## Phases", ""]
    if phases:
        out += _phases_table(phases, _num(r.get("rto_seconds")))
        out += ["", *_gantt(r, phases)]
    else:
        out.append("No phase ran.")
    out.append("")

    databases = _dicts(r.get("databases"))
    if databases:
        out += ["## Databases", ""]
        rows = []
        for d in databases:
            mismatches = [_text(m) for m in _list(d.get("mismatches"))]
            shown = "; ".join(mismatches[:5]) + (f"; ... and {len(mismatches) - 5} more" if len(mismatches) > 5 else "")
            rows.append([d.get("name"), d.get("engine"), _count(d.get("tables")), _count(d.get("rows")),
                         _verdict(d.get("fingerprint_match"), "match", "MISMATCH"),
                         _verdict(d.get("canary"), "found", "MISSING", none="not planted"), shown or "-"])
        out += _table(["database", "engine", "tables", "rows", "fingerprint", "canary", "mismatches"], rows)
        out.append("")

    files = _dicts(r.get("files"))
    if files:
        out += ["## Files", ""]
        rows = [[f.get("path"), _count(f.get("files")), _size(f.get("bytes")),
                 _verdict(f.get("match"), "match", "MISMATCH"), f.get("method")] for f in files]
        out += _table(["path", "files", "size", "content", "checked by"], rows)
        out.append("")

    checks = _dicts(r.get("health_checks"))
    if checks:
        out += ["## Health checks", ""]
        rows = [[c.get("name"), c.get("address"), _verdict(c.get("passed"), "passed", "FAILED"), c.get("detail")]
                for c in checks]
        out += _table(["check", "address", "result", "detail"], rows)
        out.append("")

    if drift:
        out += _drift(drift)

    switched = _dicts(r.get("switched"))
    if switched:
        out += ["## Records switched", ""]
        rows = [[s.get("name"), s.get("type"), _joined(s.get("before")), _joined(s.get("after"))] for s in switched]
        out += _table(["record", "type", "before", "after"], rows)
        out.append("")

    out += _hosts(r)
    out += _image(r)

    steps = [_text(s) for s in _list(r.get("next_steps")) if _text(s)]
    out += ["## What to do next", ""]
    out += [f"- {_md(s)}" for s in steps] if steps else ["Nothing: no step left for a person."]
    out.append("")

    earlier = [h for h in _dicts(list(history or ())) if h.get("id") != r.get("id")]
    if earlier:
        out += _trend(r, earlier)

    return "\n".join(out).rstrip("\n") + "\n"


def _drift(drift: dict) -> list[str]:
    """The Drift section: what production has that the reference (this run's rebuilt host) does not."""
    out = ["## Drift", ""]
    if drift.get("error"):
        return out + [f"The check could not run: {_md(_text(drift.get('error')))}", ""]
    findings = _dicts(drift.get("findings"))
    if not findings:
        return out + ["None: production has nothing the inventory and runbooks do not describe.", ""]
    rows = [[f.get("kind"), f.get("subject"), f.get("change"), f.get("detail"), f.get("advice")] for f in findings]
    out += _table(["kind", "what", "change", "detail", "to describe it"], rows)
    return out + ["", f"Drafts of the additions: `fab drift --site {_md(_text(drift.get('site')))} --draft`.", ""]


def _run_line(r: dict) -> str:
    parts = []
    if r.get("id") is not None:
        parts.append(f"Run {_text(r.get('id'))}")
    if r.get("started_at") is not None:
        parts.append(f"started {_text(r.get('started_at'))}")
    if r.get("finished_at") is not None:
        parts.append(f"finished {_text(r.get('finished_at'))}")
    if r.get("backup_id") is not None:
        parts.append(f"backup {_text(r.get('backup_id'))}")
    return ", ".join(parts) + "." if parts else "No run details recorded."


def _summary(r: dict) -> str:
    objectives = r.get("objectives") if isinstance(r.get("objectives"), dict) else {}
    rto = _num(r.get("rto_seconds"))
    rpo = _num(r.get("rpo_seconds"))
    rto_part = f"**RTO** {human_duration(rto) if rto is not None else 'unknown'}"
    rto_part += _objective(objectives.get("rto_minutes"), objectives.get("rto_met"))
    rpo_part = f"**RPO** {human_duration(rpo) if rpo is not None else 'unknown'}"
    rpo_part += _objective(objectives.get("rpo_minutes"), objectives.get("rpo_met"))
    basis = _text(r.get("rpo_basis"))
    if basis:
        rpo_part += f": {_md(basis)}"
    return f"{rto_part}. {rpo_part}."


def _objective(minutes: Any, met: Any) -> str:
    m = _num(minutes)
    if m is None and met is None:
        return ""
    target = f"objective {_number(m)} min" if m is not None else "objective"
    verdict = {True: ": met", False: ": **MISSED**"}.get(met, "") if isinstance(met, bool) else ""
    return f" ({target}{verdict})"


def _phases_table(phases: list[dict], total: float | None) -> list[str]:
    if total is None:
        known = [s for s in (_num(p.get("seconds")) for p in phases) if s is not None]
        total = sum(known) if known else None
    rows = []
    for i, p in enumerate(phases, 1):
        seconds = _num(p.get("seconds"))
        share = f"{100 * seconds / total:.0f} %" if seconds is not None and total else "-"
        if p.get("name") in UNTIMED:
            share = "not in RTO"
        status = _text(p.get("status")) or "-"
        rows.append([str(i), p.get("name"), status.upper() if status == "failed" else status,
                     human_duration(seconds) if seconds is not None else "-", share, p.get("started_at"), p.get("detail")])
    return _table(["#", "phase", "status", "took", "share", "started", "detail"], rows)


#: Task-line tags of a Mermaid gantt chart, by phase status.
_GANTT_TAGS = {"passed": "done", "failed": "crit", "skipped": "milestone"}


def _gantt(r: dict, phases: list[dict]) -> list[str]:
    """The phases as a Mermaid gantt chart, milliseconds since the start of the run (see the module docstring)."""
    origin = _time(r.get("started_at"))
    if origin is None:
        origin = next((t for t in (_time(p.get("started_at")) for p in phases) if t is not None), None)
    lines = ["```mermaid", "gantt",
             f"    title {_gantt_text(_text(r.get('kind')) or 'run')} of {_gantt_text(_text(r.get('site')) or 'site')}, "
             "time since start (min:s)",
             "    dateFormat x", "    axisFormat %M:%S", "    todayMarker off", "    section phases"]
    cursor = 0.0
    for i, p in enumerate(phases, 1):
        started = _time(p.get("started_at"))
        start = (started - origin).total_seconds() if started is not None and origin is not None else cursor
        start = max(start, 0.0)
        seconds = _num(p.get("seconds"))
        seconds = max(seconds, 0.0) if seconds is not None else 0.0
        status = _text(p.get("status")) or "unknown"
        tag = _GANTT_TAGS.get(status)
        begin, end = round(start * 1000), round((start + seconds) * 1000)
        data = ", ".join(x for x in (tag, f"p{i}", str(begin), str(end)) if x)
        label = f"{i} {_gantt_text(_text(p.get('name')) or 'phase')} ({_gantt_text(status)})"
        lines.append(f"    {label} :{data}")
        cursor = max(cursor, start + seconds)
    lines.append("```")
    return lines


def _hosts(r: dict) -> list[str]:
    rows = []
    for label, key in (("old host", "old_host"), ("new host", "new_host")):
        h = r.get(key)
        if isinstance(h, dict) and any(h.get(k) is not None for k in ("name", "id", "address")):
            rows.append([label, h.get("name"), h.get("id"), _joined(h.get("address"))])
    lines: list[str] = []
    destroyed = r.get("scratch_destroyed")
    if not rows and destroyed is None:
        return lines
    lines += ["## Hosts", ""]
    if rows:
        lines += _table(["", "name", "Droplet id", "address"], rows)
        lines.append("")
    if r.get("kind") == "drill" or destroyed is not None:
        if destroyed is True:
            lines.append("The scratch Droplet was destroyed.")
        elif destroyed is False:
            lines.append("**The scratch Droplet was NOT destroyed**: it is still billed; destroy it by hand.")
        else:
            lines.append("Whether the scratch Droplet was destroyed is unknown: check the account.")
        lines.append("")
    return lines


def _image(r: dict) -> list[str]:
    """The Image section: the image the new host started from, and a golden snapshot this run made (relaunch.golden)."""
    image = r.get("image") if isinstance(r.get("image"), dict) else {}
    made = r.get("golden_made") if isinstance(r.get("golden_made"), dict) else {}
    if not image and not made:
        return []
    lines = ["## Image", ""]
    if image:
        golden = image.get("golden") if isinstance(image.get("golden"), dict) else None
        check = image.get("check") if isinstance(image.get("check"), dict) else {}
        reason = _text(image.get("reason"))
        if golden:
            line = (f"Started from: golden snapshot {_md(_text(golden.get('name')))} ({_md(_text(golden.get('id')))}, "
                    f"made {_md(_text(golden.get('created_at')) or '?')})")
            if check.get("problem"):
                line += f"; **the image is not what its tags say**: {_md(_text(check.get('problem')))}"
            elif check:
                line += f"; its {len(_list(check.get('held')))} held steps reported no change"
        else:
            line = "Started from: the base image" + (f" ({_md(reason)})" if reason else "")
        lines += [line + ".", ""]
    if made:
        seconds = _num(made.get("snapshot_seconds"))
        held = ", ".join(_text(h) for h in _list(made.get("held"))) or "no step"
        deleted = ", ".join(_text(d) for d in _list(made.get("deleted")))
        lines += [f"Golden snapshot made: {_md(_text(made.get('name')))} ({_md(_text(made.get('id')))}); the snapshot "
                  f"took {human_duration(seconds) if seconds is not None else '?'} (not in the RTO); "
                  f"it holds {_md(held)}" + (f"; deleted the older {_md(deleted)}" if deleted else "") + ".", ""]
    return lines


def _trend(r: dict, earlier: list[dict]) -> list[str]:
    runs = sorted(earlier, key=lambda h: _order_key(h, None))[-10:] + [r]
    rtos = [_num(h.get("rto_seconds")) for h in runs]
    longest = max((x for x in rtos if x is not None), default=0.0)
    rows = []
    for h, rto in zip(runs, rtos, strict=True):
        bar = "█" * max(1, round(20 * rto / longest)) if rto is not None and longest > 0 else ""
        rpo = _num(h.get("rpo_seconds"))
        name = _text(h.get("id")) or "?"
        rows.append([name + (" (this run)" if h is r else ""), h.get("finished_at"), h.get("status"),
                     human_duration(rto) if rto is not None else "-", bar, human_duration(rpo) if rpo is not None else "-"])
    lines = [f"## Trend of the last {len(runs)} runs", ""]
    lines += _table(["run", "finished", "status", "RTO", "", "RPO"], rows)
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------------
# escaping and formatting


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _md(value: Any) -> str:
    """Return ``value`` as Markdown text that stays one table cell and one line: every character
    that Markdown reads (``| \\ ` * _ [ ] < > # ~``) escaped, newlines as ``<br>``, other control
    characters dropped."""
    text = _CONTROL.sub("", _text(value))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _NEWLINES.sub("<br>", text.strip("\r\n"))


def _gantt_text(value: str) -> str:
    """Return text safe in a Mermaid gantt task name or title (see the module docstring)."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w .()/+=-]", " ", value)).strip() or "?"


def _fence(text: str) -> str:
    """Return ``text`` in a fenced code block whose fence is longer than any backtick run in it."""
    text = _CONTROL.sub("", _NEWLINES.sub("\n", text))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.strip(chr(10))}\n{fence}"


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    # the headers are this module's own words, not the record's
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [c if isinstance(c, _Raw) else (_md(c) if c is not None and _text(c) != "" else "-") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


class _Raw(str):
    """A table cell built here from escaped parts (not escaped again)."""


def _verdict(value: Any, yes: str, no: str, none: str = "-") -> str:
    if value is True:
        return yes
    if value is False:
        return _Raw(f"**{no}**")
    return none


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) else None


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def _count(value: Any) -> Any:
    n = _num(value)
    return f"{int(n):,}" if n is not None and n.is_integer() else value


def human_duration(seconds: float) -> str:
    """``0.4 s``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def human_size(n: float) -> str:
    """``512 B``, ``1.5 KB``, ``370.2 MB`` (powers of 1024)."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _size(value: Any) -> Any:
    n = _num(value)
    return human_size(n) if n is not None else value


def _joined(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or None
    return value


def _list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _dicts(value: Any) -> list[dict]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _time(value: Any) -> datetime | None:
    """Parse an ISO time (``Z`` or an offset; naive means UTC); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            t = datetime.strptime(value, "%Y%m%dT%H%M%SZ")
        except ValueError:
            return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _order_key(record: dict, path: Path | None) -> tuple[datetime, str]:
    t = _time(record.get("finished_at")) or _time(record.get("started_at")) or _time(record.get("id"))
    if t is None and path is not None:
        try:
            t = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            t = None
    return (t or _EPOCH, _text(record.get("id")))


def _stem_part(value: Any) -> str:
    return _SAFE_STEM.sub("_", _text(value)).strip("._")


def _now_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
