"""The benchmark's pure parts: medians, ratios, the table, the closing line, the result file and the plot.

Nothing here touches a host; every function takes numbers and returns numbers or text
(tested in tests/unit/test_bench_report.py).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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


def overhead(phases: Mapping[str, float], without: Sequence[str] = ("boot", "data")) -> float | None:
    """A rebuild's own overhead: the sum of its phases except the Droplet's boot wait and the data phase."""
    if not phases:
        return None
    return sum(v for k, v in phases.items() if k not in without and v is not None)


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
