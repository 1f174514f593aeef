"""The benchmark's pure parts: medians, ratios, the table, the closing line, the result file and the plot.

Nothing here touches a host; every function takes numbers and returns numbers or text
(tested in tests/unit/test_bench_report.py).
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relaunch.pipeline import PHASES, UNTIMED

#: The three variants the data path is timed in, in the order they alternate within a round.
VARIANTS = ("by_hand", "floor", "relaunch")
#: The series drawn on the plot: name -> (label, colour).
SERIES = {
    "by_hand": ("by hand (dump, scp, restore; rsync)", "#d62728"),
    "floor": ("floor (all streamed in parallel, unverified)", "#7f7f7f"),
    "relaunch": ("relaunch data + restore", "#1f77b4"),
    "relaunch_verified": ("relaunch data + restore + verify", "#2ca02c"),
}


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    got = [float(v) for v in values if v is not None]
    return statistics.median(got) if got else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; None when either is missing or ``b`` is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def summarize(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Given one size's rounds, return medians and ratios.

    Each round is ``{"by_hand": s, "floor": s, "relaunch": {"data": s, "restore": s, "verify": s},
    "relaunch_peak_mb": mb}`` (a variant that failed in a round is absent from it). The
    relaunch time compared with the baselines is data + restore; ``relaunch_verified``
    adds verify. Ratios are of medians, and also the median of the per-round ratios (each
    round's variants ran back to back on the same hosts, so a round's ratio sees one load).
    """
    def rl(r: Mapping[str, Any], verified: bool = False) -> float | None:
        p = r.get("relaunch")
        if not p or p.get("data") is None or p.get("restore") is None:
            return None
        return p["data"] + p["restore"] + (p.get("verify") or 0.0 if verified else 0.0)

    out: dict[str, Any] = {
        "n_rounds": len(rounds),
        "by_hand_s": median(r.get("by_hand") for r in rounds),
        "floor_s": median(r.get("floor") for r in rounds),
        "relaunch_s": median(rl(r) for r in rounds),
        "relaunch_verified_s": median(rl(r, True) for r in rounds),
        "data_s": median((r.get("relaunch") or {}).get("data") for r in rounds),
        "restore_s": median((r.get("relaunch") or {}).get("restore") for r in rounds),
        "verify_s": median((r.get("relaunch") or {}).get("verify") for r in rounds),
        "peak_mb": max((r["relaunch_peak_mb"] for r in rounds if r.get("relaunch_peak_mb") is not None), default=None),
    }
    out["relaunch_by_hand"] = ratio(out["relaunch_s"], out["by_hand_s"])
    out["relaunch_floor"] = ratio(out["relaunch_s"], out["floor_s"])
    out["verified_by_hand"] = ratio(out["relaunch_verified_s"], out["by_hand_s"])
    out["per_round_by_hand"] = median(ratio(rl(r), r.get("by_hand")) for r in rounds)
    out["per_round_floor"] = median(ratio(rl(r), r.get("floor")) for r in rounds)
    return out


def summarize_backups(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Given backup rounds ``{"scheduled": s, "plain": s, "runner_peak_mb": mb, "tree_peak_mb": mb}``: medians and ratio."""
    out = {
        "n_rounds": len(rounds),
        "scheduled_s": median(r.get("scheduled") for r in rounds),
        "plain_s": median(r.get("plain") for r in rounds),
        "runner_peak_mb": max((r["runner_peak_mb"] for r in rounds if r.get("runner_peak_mb") is not None), default=None),
        "tree_peak_mb": max((r["tree_peak_mb"] for r in rounds if r.get("tree_peak_mb") is not None), default=None),
    }
    out["scheduled_plain"] = ratio(out["scheduled_s"], out["plain_s"])
    return out


def backup_breakdown(wall_s: float, runner_s: float | None, manifest: Mapping[str, Any],
                     offsite: Mapping[str, Any] | None) -> dict[str, Any]:
    """Where one scheduled backup's time went, from its manifest and its status entry (all seconds).

    ``wall_s``: the benchmark's clock around ``systemctl start`` (with the status reads of
    ``relaunch.backup.status.run_now``); ``runner_s``: the runner's own (its status entry). Per
    database its dump's seconds (the runner's ``seconds`` include the fingerprint) and its
    ``fingerprint_seconds`` where the manifest has them (MariaDB's) and how long its writes
    were paused (``writes_paused_s``, MariaDB's paired fingerprint); per archive
    its seconds; the off-host uploads' seconds. The jobs run a few at once, so their sum is
    more than their span; ``rest_s`` is the runner's time outside the slowest job and the
    uploads (deploy images, the store's snapshot listings, retention, the status file).
    """
    dbs = {d.get("name"): {"seconds": d.get("seconds"), "fingerprint_s": d.get("fingerprint_seconds"),
                           "size_mb": None if d.get("size") is None else round(d["size"] / 2**20, 1),
                           **({"writes_paused_s": d["writes_paused_s"]} if "writes_paused_s" in d else {})}
           for d in manifest.get("databases") or []}
    archives = {a.get("app"): {"seconds": a.get("seconds"),
                               "size_mb": None if a.get("size") is None else round(a["size"] / 2**20, 1)}
                for a in manifest.get("archives") or []}
    jobs = [v["seconds"] for v in [*dbs.values(), *archives.values()] if v["seconds"] is not None]
    upload = sum(u.get("seconds") or 0.0 for u in (offsite or {}).get("uploaded") or [])
    slowest = max(jobs, default=0.0)
    span = None
    if manifest.get("started_at") and manifest.get("finished_at"):  # to the second only
        a, b = (datetime.fromisoformat(str(manifest[k]).replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
        span = (b - a).total_seconds()
    out: dict[str, Any] = {
        "wall_s": round(wall_s, 3), "runner_s": runner_s,
        "outside_runner_s": None if runner_s is None else round(wall_s - runner_s, 3),
        "databases": dbs, "archives": archives,
        "jobs_sum_s": round(sum(jobs), 3), "slowest_job_s": slowest, "manifest_span_s": span,
        "fingerprint_s": round(sum(v["fingerprint_s"] or 0.0 for v in dbs.values()), 3),
        "offsite_upload_s": round(upload, 3),
        "rest_s": None if runner_s is None else round(runner_s - slowest - upload, 3),
    }
    return out


def timeline(journal: str) -> list[tuple[float, str]]:
    """Given ``journalctl -o short-unix`` output, return (seconds since its first line, message) per line.

    Lines that do not start with a time (``-- No entries --``) are left out; the message is what
    follows the ``unit[pid]:`` prefix.
    """
    out: list[tuple[float, str]] = []
    first = None
    for line in journal.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            t = float(stamp)
        except ValueError:
            continue
        first = t if first is None else first
        _, _, message = rest.partition(": ")
        out.append((round(t - first, 3), message or rest))
    return out


def backup_line(b: Mapping[str, Any], plain_steps: Mapping[str, float] | None = None) -> str:
    """One printed line of :func:`backup_breakdown` (and the plain script's steps beside it)."""
    def db(name: str, v: Mapping[str, Any]) -> str:
        notes = ([f"fingerprint {_num(v['fingerprint_s'])}"] if v.get("fingerprint_s") is not None else []) + (
            [f"writes paused {_num(v['writes_paused_s'], 2)}"] if v.get("writes_paused_s") is not None else [])
        return f"{name} {_num(v.get('seconds'))}" + (f" ({', '.join(notes)})" if notes else "")

    dbs = ", ".join(db(n, v) for n, v in (b.get("databases") or {}).items())
    arch = ", ".join(f"{n} {_num(v.get('seconds'))}" for n, v in (b.get("archives") or {}).items())
    line = (f"scheduled backup {_num(b.get('wall_s'))} s (runner {_num(b.get('runner_s'))}, outside it "
            f"{_num(b.get('outside_runner_s'))}): dumps {dbs or '-'}; archives {arch or '-'}; slowest job "
            f"{_num(b.get('slowest_job_s'))}, upload {_num(b.get('offsite_upload_s'))}, rest {_num(b.get('rest_s'))}")
    if plain_steps:
        line += "; plain script: " + ", ".join(f"{k} {_num(v)}" for k, v in plain_steps.items())
    return line


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(sizes: Mapping[int, Mapping[str, Any]]) -> str:
    """A Markdown table of one run: a row per size (MB) with the medians (s), ratios and peak memory."""
    head = ("| size | by hand s | floor s | relaunch data+restore s (data / restore) | verify s | relaunch/by-hand "
            "| relaunch/floor | with verify/by-hand | relaunch peak MB | backup s | plain script s | backup/plain "
            "| runner peak MB | store adds MB |")
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for mb, s in sorted(sizes.items()):
        b = s.get("backups") or {}
        lines.append(
            f"| {mb} MB | {_num(s.get('by_hand_s'))} | {_num(s.get('floor_s'))} | {_num(s.get('relaunch_s'))} "
            f"({_num(s.get('data_s'))} / {_num(s.get('restore_s'))}) | {_num(s.get('verify_s'))} "
            f"| {_num(s.get('relaunch_by_hand'), 2)} | {_num(s.get('relaunch_floor'), 2)} "
            f"| {_num(s.get('verified_by_hand'), 2)} | {_num(s.get('peak_mb'), 0)} "
            f"| {_num(b.get('scheduled_s'))} | {_num(b.get('plain_s'))} | {_num(b.get('scheduled_plain'), 2)} "
            f"| {_num(b.get('runner_peak_mb'), 0)} | {_num(b.get('store_added_mb'), 1)} |")
    return "\n".join(lines)


def final_line(summary: Mapping[str, Any], overhead_s: float | None, rto_s: float | None) -> str:
    """The closing line for the default size: ``relaunch/by-hand=X.XX relaunch/floor=Y.YY overhead_s=Z peak_mb=W rto_s=R``."""
    def f(v: float | None, digits: int) -> str:
        return "nan" if v is None else f"{v:.{digits}f}"

    return (f"relaunch/by-hand={f(summary.get('relaunch_by_hand'), 2)} relaunch/floor={f(summary.get('relaunch_floor'), 2)} "
            f"overhead_s={f(overhead_s, 1)} peak_mb={f(summary.get('peak_mb'), 0)} rto_s={f(rto_s, 1)}")


def overhead(phases: Mapping[str, float], without: Sequence[str] = ("boot", "data"), cloud: float = 0.0) -> float | None:
    """A rebuild's own overhead: the sum of its phases except the Droplet's boot wait and the data phase.

    The Droplet's boot wait is the ``boot`` phase and ``cloud``, the seconds ``provision`` spent
    waiting for the cloud to make the Droplet (the phases' ``cloud_seconds``). Phases outside the
    RTO (``relaunch.pipeline.UNTIMED``: a drill's ``golden``, making the snapshot) are never
    overhead of the recovery either.
    """
    if not phases:
        return None
    return sum(v for k, v in phases.items() if k not in without and k not in UNTIMED and v is not None) - cloud


# --- end to end: fab drill and fab rebuild, with and without a golden image ------------------------------

#: The end-to-end runs at the default size, in the order they run: key -> (mode, golden option, label).
#: ``off`` starts from the base image whatever snapshots exist; ``make`` (``drill --golden``) bootstraps
#: from the base image and then makes the golden snapshot; ``use`` starts from that snapshot.
E2E_RUNS = {
    "drill": ("drill", "off", "fab drill (base image)"),
    "drill_golden_make": ("drill", "make", "fab drill --golden (base image; makes the snapshot)"),
    "drill_golden": ("drill", "use", "fab drill (golden snapshot)"),
    "rebuild": ("rebuild", "off", "fab rebuild (base image)"),
    "rebuild_golden": ("rebuild", "use", "fab rebuild (golden snapshot)"),
}


def e2e_entry(mode: str, golden: str, child: Mapping[str, Any]) -> dict[str, Any]:
    """Given what ``bench.child`` printed for one ``fab drill``/``fab rebuild``, return its end-to-end numbers.

    Phases by name (seconds), the RTO as the run's report counts it (without ``golden``), the
    overhead (:func:`overhead`, also without the bootstrap), the peak memory, which image the
    new host started from (the report's ``image``: a ``use`` run that found no snapshot started
    from the base image, and says so), the check of its held steps, and the golden snapshot a
    ``make`` run made (its ``golden`` phase and the snapshot's own seconds, neither in the RTO).
    """
    rec = child.get("record") or {}
    phases = {p["name"]: p["seconds"] for p in rec.get("phases", [])}
    cloud = sum(p.get("cloud_seconds") or 0.0 for p in rec.get("phases", []))
    image = rec.get("image") or {}
    snap = image.get("golden")
    check = image.get("check") or None
    made = rec.get("golden_made") or None
    return {
        "mode": mode, "golden": golden, "status": child.get("status"), "error": child.get("error"),
        "rto_s": rec.get("rto_seconds"), "phases": phases, "overhead_s": overhead(phases, cloud=cloud),
        "overhead_without_bootstrap_s": overhead(phases, ("boot", "data", "bootstrap"), cloud=cloud),
        "provision_cloud_s": cloud if phases else None,
        "peak_mb": None if child.get("peak_mb") is None else round(child["peak_mb"], 1),
        "golden_image": bool(snap),
        "started_from": (f"golden snapshot {snap.get('name')} ({snap.get('id')})" if snap else
                         f"base image ({image.get('reason') or 'no golden snapshot'})"),
        "golden_check": None if not check else {k: check.get(k) for k in ("held", "held_changed", "passed", "problem")
                                                if k in check},
        "golden_made": None if not made else {k: made.get(k) for k in ("id", "name", "seconds", "snapshot_seconds",
                                                                       "held", "rebootstrapped") if k in made},
    }


def e2e_failed(mode: str, golden: str, error: str, status: str = "error") -> dict[str, Any]:
    """The entry of an end-to-end run that failed (or was ``skipped``): no numbers, the reason."""
    return {"mode": mode, "golden": golden, "status": status, "error": error, "rto_s": None, "phases": {},
            "overhead_s": None, "overhead_without_bootstrap_s": None, "provision_cloud_s": None, "peak_mb": None, "golden_image": False,
            "started_from": None, "golden_check": None, "golden_made": None}


def _label(key: str, run: Mapping[str, Any]) -> str:
    return E2E_RUNS[key][2] if key in E2E_RUNS else f"fab {run.get('mode', key)}"


def e2e_table(e2e: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of the end-to-end runs side by side: a column per run, a row per phase (seconds), then
    the RTO, the overhead, the peak memory, the status and the image each started from."""
    keys = [k for k in E2E_RUNS if k in e2e] + [k for k in e2e if k not in E2E_RUNS]
    seen = {p for k in keys for p in (e2e[k].get("phases") or {})}
    phases = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))
    head = "| phase (s) | " + " | ".join(_label(k, e2e[k]) for k in keys) + " |"
    lines = [head, "|" + "|".join("---" for _ in range(len(keys) + 1)) + "|"]

    def row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(e2e[k]) for k in keys) + " |")

    for p in phases:
        row(f"{p} (not in the RTO)" if p in UNTIMED else p, lambda r, p=p: _num((r.get("phases") or {}).get(p)))
    if any(e2e[k].get("golden_made") for k in keys):
        row("of which the snapshot itself", lambda r: _num((r.get("golden_made") or {}).get("snapshot_seconds")))
    row("of provision: the cloud making the Droplet", lambda r: _num(r.get("provision_cloud_s")))
    row("**RTO**", lambda r: f"**{_num(r.get('rto_s'))}**")
    row("overhead (all but the Droplet's boot, data)", lambda r: _num(r.get("overhead_s")))
    row("overhead without the bootstrap", lambda r: _num(r.get("overhead_without_bootstrap_s")))
    row("peak MB", lambda r: _num(r.get("peak_mb"), 0))
    row("status", lambda r: str(r.get("status") or "-"))
    row("held steps checked", lambda r: "-" if not r.get("golden_check") else
        f"{len(r['golden_check'].get('held') or [])} held, changed: "
        f"{', '.join(r['golden_check'].get('held_changed') or []) or 'none'}")
    return "\n".join(lines)


def e2e_lines(e2e: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One printed line per end-to-end run: status, RTO, overhead, peak, where it started from, phases."""
    out = []
    for key in [k for k in E2E_RUNS if k in e2e] + [k for k in e2e if k not in E2E_RUNS]:
        r = e2e[key]
        line = (f"{_label(key, r)}: {r.get('status')}, RTO {_num(r.get('rto_s'))} s, overhead {_num(r.get('overhead_s'))} s "
                f"({_num(r.get('overhead_without_bootstrap_s'))} s without the bootstrap), peak {_num(r.get('peak_mb'), 0)} MB")
        if r.get("started_from"):
            line += f"; started from {r['started_from']}"
        made = r.get("golden_made")
        if made:
            line += (f"; made golden snapshot {made.get('name')} ({made.get('id')}) in {_num(made.get('seconds'))} s, "
                     f"the snapshot itself {_num(made.get('snapshot_seconds'))} s, not in the RTO")
        if r.get("error"):
            line += f"; error: {str(r['error'])[:300]}"
        out.append(line + f"; phases {dict(r.get('phases') or {})}")
    return out


def golden_line(e2e: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The comparison in one line: each command's RTO and bootstrap without and with the golden image, and what
    making the snapshot took (not in any RTO); None when no golden run has numbers."""
    parts = []
    for mode in ("rebuild", "drill"):
        plain, gold = e2e.get(mode) or {}, e2e.get(f"{mode}_golden") or {}
        if gold.get("status") not in (None, "passed") or plain.get("status") not in (None, "passed"):
            # a failed run's RTO is only the phases it got through: no comparison
            parts.append(f"fab {mode}: no comparison (base image {plain.get('status') or 'not run'}, golden snapshot "
                         f"{gold.get('status') or 'not run'}" + (f": {str(gold['error'])[:200]}" if gold.get("error") else "")
                         + ")")
            continue
        if gold.get("rto_s") is None:
            continue
        if not gold.get("golden_image"):
            parts.append(f"fab {mode}: the golden run started from the base image ({gold.get('started_from')})")
            continue
        ph, gph = plain.get("phases") or {}, gold.get("phases") or {}
        parts.append(f"fab {mode} RTO {_num(plain.get('rto_s'))} -> {_num(gold.get('rto_s'))} s "
                     f"(bootstrap {_num(ph.get('bootstrap'))} -> {_num(gph.get('bootstrap'))} s)")
    if not parts:
        return None
    made = (e2e.get("drill_golden_make") or {}).get("golden_made") or {}
    if made:
        parts.append(f"the snapshot made by fab drill --golden: golden phase {_num(made.get('seconds'))} s, "
                     f"of which the snapshot {_num(made.get('snapshot_seconds'))} s (not in any RTO)")
    return "golden image: " + "; ".join(parts)


def linearity(points: Sequence[tuple[float, float]]) -> dict[str, float] | None:
    """Least-squares line through (size, seconds): slope (s/MB), intercept (s) and r²; None with fewer than 2 sizes."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for _, y in pts)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in pts)
    return {"slope_s_per_mb": slope, "intercept_s": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def svg_plot(sizes: Mapping[int, Mapping[str, Any]], title: str = "time against data size") -> str:
    """An SVG line plot (no dependency) of each series' median seconds against the data size (MB)."""
    w, h, left, right, top, bottom = 760, 440, 70, 290, 40, 50
    xs = sorted(sizes)
    values = [sizes[x].get(f"{k}_s") for x in xs for k in SERIES]
    ymax = max([v for v in values if v is not None] or [1.0]) * 1.1
    xmax = max(xs or [1]) * 1.05
    pw, ph = w - left - right, h - top - bottom

    def px(x: float) -> float:
        return left + pw * x / xmax

    def py(y: float) -> float:
        return top + ph - ph * y / ymax

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{left}" y="22" font-size="14">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
             f'<text x="{left + pw / 2}" y="{h - 12}" text-anchor="middle">data size (MB)</text>',
             f'<text x="18" y="{top + ph / 2}" transform="rotate(-90 18 {top + ph / 2})" text-anchor="middle">'
             'median seconds</text>']
    for i in range(6):
        y = ymax * i / 5
        parts.append(f'<line x1="{left - 4}" y1="{py(y):.1f}" x2="{left + pw}" y2="{py(y):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{top + ph + 16}" text-anchor="middle">{x}</text>')
    for n, (key, (label, colour)) in enumerate(SERIES.items()):
        pts = [(px(x), py(sizes[x][f"{key}_s"])) for x in xs if sizes[x].get(f"{key}_s") is not None]
        if pts:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}"/>' for a, b in pts]
        ly = top + 10 + 20 * n
        parts.append(f'<line x1="{w - right + 15}" y1="{ly}" x2="{w - right + 35}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w - right + 40}" y="{ly + 4}" font-size="11">{_esc(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_results(directory: Path, stamp: str, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``<stamp>.json`` and ``<stamp>.svg`` (the plot of ``data["sizes"]``) in ``directory``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / f"{stamp}.json"
    js.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    svg = directory / f"{stamp}.svg"
    sizes = {int(k): v for k, v in (data.get("sizes") or {}).items()}
    svg.write_text(svg_plot(sizes, f"relaunch benchmark {stamp}: median time against data size"))
    return js, svg
