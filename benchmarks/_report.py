"""What a run writes: the markdown table, the README's condensed table and the chart.

Everything here reads results and their verdicts (``_judging``); nothing times anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Result
from _judging import (
    BARE,
    FASTER,
    PERCENTILE,
    RATIO,
    Verdict,
    judge,
    median_ratio,
    percentile,
    sides,
    times_faster,
)
from bench_audio import LIMITS as AUDIO_LIMITS
from bench_images import LIMITS

__all__ = [
    "README",
    "README_END",
    "README_START",
    "draw_chart",
    "markdown_table",
    "readme_table",
    "row_note",
    "update_readme",
    "write_markdown",
]

README = Path(__file__).resolve().parent.parent / "README.md"
README_START = "<!-- benchmark table: written by benchmarks/run.py -->"
README_END = "<!-- end of benchmark table -->"


def _ms(seconds: float) -> str:
    """A duration in milliseconds, to three significant figures or so."""
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _mib(value: int | None) -> str:
    """A byte count in whole MiB, or ``-`` when there is none."""
    return "-" if value is None else f"{value / 2**20:.0f}"


def _cell(text: str) -> str:
    """``text`` made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _speedup_bound(result: Result) -> float | None:
    """The reference/mediagate ratio a speed-up target asks for, if it is one."""
    target = result.target.split(";")[0].strip()
    reference, ours, _, _ = sides(result)
    if match := BARE.match(target):
        return float(match.group(2))
    match = RATIO.match(target)
    if match and (match.group(1), match.group(2)) == (reference, ours):
        return float(match.group(4))
    return None


def row_note(result: Result, verdict: Verdict) -> str:
    """The note column of a row: the result's note, what could not be judged, and for a
    missed target what limits it (including a miss the raw decoder could not avoid).

    Args:
        result: The row's result.
        verdict: ``judge(result)``.

    Returns:
        The parts joined by ``"; "`` (empty when there is nothing to say).
    """
    parts = [result.note] if result.note else []
    if verdict.detail:
        parts.append(verdict.detail)
    if verdict.met is False:
        reference, _, floor, _ = sides(result)
        bound = _speedup_bound(result)
        cap = median_ratio(result, reference, floor) if reference and floor else None
        if bound is not None and cap is not None and cap < bound:
            parts.append(
                f"in this run the reference took only {cap:.2f}x the raw decoder's own time, "
                f"so even the bare decode, with no fetch and no checks, would not reach "
                f"{bound:g}x"
            )
        limit = AUDIO_LIMITS.get((result.group, result.workload)) or LIMITS.get(result.workload)
        if limit:
            parts.append(f"what limits it: {limit}")
    return "; ".join(parts)


def markdown_table(results: Sequence[Result]) -> str:
    """The results as one markdown table (medians, ratios, peak memory, targets)."""
    header = (
        "| group | workload | reference | mediagate | raw floor | ref / mediagate "
        "| mediagate / floor | peak MiB (ref / mg) | target | met | note |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|\n"
    )
    rows = []
    for result in results:
        reference, ours, floor, others = sides(result)
        verdict = judge(result)
        speed = median_ratio(result, reference, ours) if reference and ours else None
        over_floor = median_ratio(result, ours, floor) if ours and floor else None
        note = row_note(result, verdict)
        if reference and reference != "reference":
            note = f"reference: {reference}" + (f"; {note}" if note else "")
        if floor and floor != "floor":
            note = f"floor: {floor}" + (f"; {note}" if note else "")
        if others:
            also = ", ".join(f"{n} {_ms(result.median(n))}" for n in others)
            note = f"also: {also}" + (f"; {note}" if note else "")
        met = {True: "yes", False: "**no**", None: "n/a"}[verdict.met]
        peaks = result.peak_bytes
        peak = (
            f"{_mib(peaks.get(reference or ''))} / {_mib(peaks.get(ours or ''))}" if peaks else "-"
        )
        cells = [
            result.group,
            result.workload,
            _ms(result.median(reference)) if reference else "-",
            _ms(result.median(ours)) if ours else "-",
            _ms(result.median(floor)) if floor else "-",
            f"{speed:.2f}x" if speed else "-",
            f"{over_floor:.2f}x" if over_floor else "-",
            peak,
            result.target or "-",
            met,
            note,
        ]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return header + "\n".join(rows) + "\n"


def _headline(result: Result) -> str:
    """The number a row's (first) target is about, as the README shows it."""
    reference, ours, _, _ = sides(result)
    target = result.target.split(";")[0].strip()
    if match := RATIO.match(target):
        top, bottom = match.group(1), match.group(2)
        value = median_ratio(result, top, bottom)
        if value is None:
            return "-"
        return f"{value:.2f}x" if top == reference else f"{value:.2f}x of {bottom}"
    if BARE.match(target) and reference and ours:
        value = median_ratio(result, reference, ours)
        return "-" if value is None else f"{value:.2f}x"
    if match := FASTER.match(target):
        value = times_faster(result, match.group(1))
        return "-" if value is None else f"{match.group(1)} {value:.1f}x faster"
    if match := PERCENTILE.match(target):
        value = percentile(result, int(match.group(1)))
        return "-" if value is None else f"p{match.group(1)} {value * 1e3:.2f} ms"
    return "-"


def readme_table(results: Sequence[Result], meta: dict[str, str]) -> str:
    """The judged rows, condensed for the project README, with a line on the run."""
    lines = [
        f"Written by `make bench` from its latest full run ({meta['date']}, {meta['machine']}"
        + (f"; re-run: {meta['re-run']}" if meta.get("re-run") else "")
        + "); "
        "*ratio* is reference time / mediagate time unless it names what it is over. The "
        "reference is the media layer of vLLM for images, OpenCV grab/retrieve for video and "
        "`librosa.load` for audio; audio rows without one compare with the fastest raw decoder.",
        "",
        "| group | workload | reference | mediagate | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for result in results:
        verdict = judge(result)
        if verdict.met is None:
            continue
        reference, ours, _, _ = sides(result)
        cells = [
            result.group,
            result.workload,
            _ms(result.median(reference)) if reference else "-",
            _ms(result.median(ours)) if ours else "-",
            _headline(result),
            result.target,
            "yes" if verdict.met else "**no**",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(path: Path, table: str) -> bool:
    """Replace the text between the README's benchmark markers with ``table``."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    head = text[: start + len(README_START)]
    path.write_text(head + "\n" + table + text[end:], encoding="utf-8")
    return True


def write_markdown(
    results: Sequence[Result], path: Path, meta: dict[str, str], chart: Path | None
) -> None:
    """Write ``RESULTS.md``: the run's ``meta``, how to read it, the table and the chart.

    Args:
        results: The rows, in order.
        path: The file to write.
        meta: The run's facts (mode, reference, versions, machine, date, ...).
        chart: The chart to link below the table, or None when none was drawn.
    """
    met = [judge(r).met for r in results]
    lines = [
        "# mediagate benchmarks",
        "",
        "Generated by `make bench` (`.venv/bin/python benchmarks/run.py`); see "
        "`benchmarks/README.md` for what each workload means.",
        "",
        *(f"- **{key}**: {value}" for key, value in meta.items()),
        f"- **targets met**: {met.count(True)} of {sum(m is not None for m in met)} judged",
        "",
        "Times are medians of alternating runs (reference, mediagate, floor, reference, ...) "
        "after one warm-up, each side in its own persistent process. *ref / mediagate* above 1 "
        "means mediagate is faster; *mediagate / floor* is mediagate's time over the raw "
        "decoder decoding the same bytes already in memory (no fetch), so 1.00x is the limit. "
        "Peak memory is the growth of each worker's resident set during a run (median).",
        "",
        markdown_table(results),
    ]
    if chart is not None:
        lines += [f"![results]({chart.name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


@dataclass(frozen=True)
class _Panel:
    """One bar panel of the chart: where it starts, its title and its log axis."""

    x0: int
    title: str
    low: float
    high: float
    marks: tuple[float, ...]
    width: int = 300

    def x(self, value: float) -> int:
        """Where ``value`` falls on this panel's log axis (clamped to its range)."""
        value = min(max(value, self.low), self.high)
        return int(
            self.x0 + math.log(value / self.low) / math.log(self.high / self.low) * self.width
        )


def draw_chart(results: Sequence[Result], path: Path) -> bool:
    """Two bar panels (speed-up over the reference; time over the floor) drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    rows: list[tuple[str, float | None, float | None, bool | None]] = []
    for result in results:
        reference, ours, floor, _ = sides(result)
        speed = median_ratio(result, reference, ours) if reference and ours else None
        over = median_ratio(result, ours, floor) if ours and floor else None
        if speed is None and over is None:
            continue
        rows.append((f"{result.group}: {result.workload}", speed, over, judge(result).met))
    if not rows:
        return False
    try:
        font: Any = ImageFont.load_default(size=13)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    label_w, row_h, top = 520, 24, 56
    panels = (
        _Panel(
            label_w,
            "reference / mediagate (log scale; right: mediagate faster)",
            0.25,
            16.0,
            (1.0, 2.0),
        ),
        _Panel(label_w + 360, "mediagate / raw decoder floor (log scale)", 0.25, 4.0, (1.0, 1.3)),
    )
    width, height = panels[-1].x0 + panels[-1].width + 60, top + row_h * len(rows) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (10, 8),
        "mediagate benchmarks (green: target met, red: missed, grey: no target)",
        fill="black",
        font=font,
    )
    for panel in panels:
        draw.text((panel.x0, 30), panel.title, fill="black", font=font)
        for mark in panel.marks:
            x = panel.x(mark)
            draw.line([(x, top - 6), (x, height - 24)], fill=(150, 150, 150), width=1)
            draw.text((x - 8, height - 20), f"{mark:g}x", fill=(90, 90, 90), font=font)
    for index, (label, speed, over, met) in enumerate(rows):
        y = top + index * row_h
        draw.text((10, y + 4), label[:78], fill="black", font=font)
        colour = {True: (46, 139, 87), False: (200, 60, 50), None: (130, 130, 130)}[met]
        for panel, value in zip(panels, (speed, over), strict=True):
            if value is None:
                continue
            # Bars grow from the 1x line: to the right, the first side of the ratio is larger.
            left, right = sorted((panel.x(1.0), panel.x(value)))
            draw.rectangle([(left, y + 4), (max(left + 1, right), y + row_h - 6)], fill=colour)
            draw.text((right + 4, y + 4), f"{value:.2f}x", fill="black", font=font)
    image.save(path)
    return True
