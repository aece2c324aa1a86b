"""Run every benchmark, side by side with the reference implementation, in one command.

    .venv/bin/python benchmarks/run.py            # full run (what `make bench` does)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run: fewer items, 3 runs

The reference is vLLM's media layer (``vllm.multimodal.utils.MediaConnector``), installed
on first use into ``benchmarks/.ref-venv`` (see ``ensure_reference_venv``). Image
workloads run here; video, audio, cache and concurrency come from the ``bench_*.py``
modules' ``run(quick)``. A module that is missing or fails is recorded as "not run" and
the rest go on. Results go to ``benchmarks/RESULTS.md`` and ``benchmarks/results.png``.

Targets are written ``"<side>/<side> >= Nx"`` or ``"<side>/<side> <= Nx"`` (ratios of
medians), several joined by ``"; "``; a target is met when every part holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(BENCH), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _common import Result  # noqa: E402
from bench_audio import LIMITS as AUDIO_LIMITS  # noqa: E402
from bench_images import LIMITS, run_images  # noqa: E402

__all__ = ["ReferenceBuildError", "ensure_reference_venv", "judge", "main"]

# -- the reference environment ---------------------------------------------------------

REF_VENV = BENCH / ".ref-venv"
REF_PYTHON = REF_VENV / "bin" / "python"
REF_STAMP = REF_VENV / ".stamp"
REF_LOG = BENCH / ".work" / "ref-venv-build.log"
#: The environment variable other bench modules read to find the reference interpreter.
REF_PYTHON_ENV = "MEDIAGATE_BENCH_REF_PYTHON"
#: Every result of the last run, so the table and chart can be redrawn without timing.
LAST_RUN = BENCH / ".work" / "last-run.json"


def _last_run(out: Path) -> Path:
    """Where a run writing to ``out`` keeps its raw timings (others never touch ours)."""
    return LAST_RUN if out.resolve() == BENCH else out / LAST_RUN.name


README = BENCH.parent / "README.md"
README_START = "<!-- benchmark table: written by benchmarks/run.py -->"
README_END = "<!-- end of benchmark table -->"
VLLM_PIN = "vllm==0.33.0"
#: The CPU build that installs from the local wheel; any other torch is gigabytes.
TORCH_PIN = "torch==2.13.0"
#: What ``from vllm.multimodal.utils import MediaConnector`` imports, found by trying the
#: import in a bare environment; each is installed with the version range vLLM declares.
MEDIA_IMPORT_PACKAGES = (
    "aiohttp",
    "cachetools",
    "cbor2",
    "numpy",
    "openai",
    "oss-harmony",
    "pillow",
    "psutil",
    "pybase64",
    "pydantic",
    "pyzmq",
    "regex",
    "requests",
    "transformers",
)
#: The reference's audio path resamples with librosa (bench_audio compares against it).
EXTRA_PACKAGES = ("librosa",)
REF_IMPORT_CHECK = "from vllm.multimodal.utils import MediaConnector; import librosa"


class ReferenceBuildError(RuntimeError):
    """The reference environment could not be built; the message says which step failed."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _stamp_spec() -> dict[str, Any]:
    return {
        "vllm": VLLM_PIN,
        "torch": TORCH_PIN,
        "packages": list(MEDIA_IMPORT_PACKAGES),
        "extra": list(EXTRA_PACKAGES),
        "python": platform.python_version(),
    }


def _pip(args: Sequence[str], log: Any) -> None:
    command = [str(REF_PYTHON), "-m", "pip", "--disable-pip-version-check", *args]
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise ReferenceBuildError(
            f"`pip {' '.join(args)}` failed (exit {done.returncode}); see {REF_LOG}"
        )


def _declared_requirements() -> dict[str, str]:
    """vLLM's own requirement strings, by canonical package name."""
    script = "import importlib.metadata as m, json; print(json.dumps(m.requires('vllm') or []))"
    out = subprocess.run(
        [str(REF_PYTHON), "-c", script], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ReferenceBuildError(f"reading vLLM's metadata failed: {out.stderr.strip()[-300:]}")
    declared: dict[str, str] = {}
    for requirement in json.loads(out.stdout):
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            declared[_canonical(match.group(1))] = requirement
    return declared


def ensure_reference_venv(log: Callable[[str], None] = print) -> Path:
    """Build ``benchmarks/.ref-venv`` once; later calls return at once (a stamp file).

    Steps: a venv; ``pip install torch==2.13.0`` (the local CPU build); ``pip install
    --no-deps vllm==0.33.0`` (its full dependency set is CUDA kernels and serving stacks
    that media loading never imports); then the packages the media import path needs,
    with vLLM's declared version ranges, under a constraint that keeps torch at 2.13.0;
    then the import itself is checked.

    Raises:
        ReferenceBuildError: a step failed; the message names it.
    """
    spec = json.dumps(_stamp_spec(), sort_keys=True)
    if REF_STAMP.exists() and REF_PYTHON.exists() and REF_STAMP.read_text() == spec:
        return REF_PYTHON
    log(f"building the reference environment in {REF_VENV} (log: {REF_LOG})")
    REF_LOG.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with REF_LOG.open("a", encoding="utf-8") as out:
        if not REF_PYTHON.exists():
            made = subprocess.run(
                [sys.executable, "-m", "venv", str(REF_VENV)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if made.returncode != 0:
                raise ReferenceBuildError(f"creating the venv failed; see {REF_LOG}")
        constraints = REF_VENV / "constraints.txt"
        constraints.write_text(TORCH_PIN + "\n")
        log(f"  pip install {TORCH_PIN}")
        _pip(["install", "-q", TORCH_PIN], out)
        log(f"  pip install --no-deps {VLLM_PIN}")
        _pip(["install", "-q", "--no-deps", VLLM_PIN], out)
        declared = _declared_requirements()
        wanted = [declared.get(_canonical(name), name) for name in MEDIA_IMPORT_PACKAGES]
        wanted += list(EXTRA_PACKAGES)
        log(f"  pip install -c constraints.txt {' '.join(repr(w) for w in wanted)}")
        _pip(["install", "-q", "-c", str(constraints), *wanted], out)
        check = subprocess.run(
            [str(REF_PYTHON), "-c", REF_IMPORT_CHECK], capture_output=True, text=True, check=False
        )
        out.write(check.stdout + check.stderr)
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["no output"])[-1]
            raise ReferenceBuildError(f"the reference import failed: {last}")
    REF_STAMP.write_text(spec)
    log(f"  reference environment ready in {time.perf_counter() - start:.0f} s")
    return REF_PYTHON


# -- judging results -------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
_RATIO = re.compile(r"^([\w .-]+?)\s*/\s*([\w .-]+?)\s*(>=|<=|>|<)\s*([\d.]+)\s*x$")
_BARE = re.compile(r"^(>=|<=|>|<)\s*([\d.]+)\s*x$")
_FASTER = re.compile(r"^([\w .-]+?)\s*(>=|>)\s*([\d.]+)\s*x faster$")
_PERCENTILE = re.compile(r"^p(\d+)\s*(>=|<=|>|<)\s*([\d.]+)\s*ms$")


@dataclass
class Verdict:
    """How a result fares against its target: ``met`` is None when it cannot be judged."""

    met: bool | None
    detail: str = ""


def _ratio(result: Result, top: str, bottom: str) -> float | None:
    if top not in result.times or bottom not in result.times:
        return None
    below = result.median(bottom)
    return result.median(top) / below if below > 0 else None


def _faster(result: Result, word: str) -> float | None:
    """How many times faster the one side named with ``word`` is than the other one."""
    fast = [side for side in result.times if word in side]
    slow = [side for side in result.times if word not in side]
    if len(fast) != 1 or len(slow) != 1:
        return None
    return _ratio(result, slow[0], fast[0])


def _percentile(result: Result, q: int) -> float | None:
    """The ``q``-th percentile (seconds) of the samples of a result's only side."""
    samples = sorted(next(iter(result.times.values()), []))
    if len(result.times) != 1 or not samples:
        return None
    return samples[min(len(samples) - 1, int(q / 100 * len(samples)))]


def _judge_part(result: Result, part: str) -> Verdict:
    """One target clause; the forms are listed in ``judge``."""
    if match := _RATIO.match(part):
        top, bottom, op, bound = match.groups()
        value = _ratio(result, top, bottom)
        if value is None:
            missing = [side for side in (top, bottom) if side not in result.times]
            return Verdict(None, f"no timed side named {' or '.join(map(repr, missing))}")
        return Verdict(_OPS[op](value, float(bound)))
    if match := _BARE.match(part):
        reference, ours, _, _ = _sides(result)
        value = _ratio(result, reference, ours) if reference and ours else None
        if value is None:
            return Verdict(None, "no reference side to compare with")
        return Verdict(_OPS[match.group(1)](value, float(match.group(2))))
    if match := _FASTER.match(part):
        word, op, bound = match.groups()
        value = _faster(result, word)
        if value is None:
            return Verdict(None, f"cannot tell which side {word!r} names")
        return Verdict(_OPS[op](value, float(bound)))
    if match := _PERCENTILE.match(part):
        q, op, bound = match.groups()
        value = _percentile(result, int(q))
        if value is None:
            return Verdict(None, "a percentile target needs exactly one timed side")
        return Verdict(_OPS[op](value * 1e3, float(bound)))
    if part.startswith("(") and part.endswith(")"):
        return Verdict(None)  # a context row, nothing to meet
    return Verdict(None, f"target not machine-readable: {part!r}")


def judge(result: Result) -> Verdict:
    """Check ``result.target``: clauses joined by ``"; "``, all of which must hold.

    Clauses: ``"a/b >= Nx"`` (a ratio of the medians of sides a and b; also ``<=``, ``>``,
    ``<``), ``">= Nx"`` (reference over mediagate), ``"<side> >= Nx faster"`` (the other
    side over that one), ``"p99 < N ms"`` (a percentile of the only side's samples), and
    ``"(...)"`` for rows that are context only.
    """
    explicit = getattr(result, "met", None)
    if isinstance(explicit, bool):
        return Verdict(explicit)
    parts = [p.strip() for p in result.target.split(";") if p.strip()]
    if not parts or not result.times:
        return Verdict(None)
    verdicts = [_judge_part(result, part) for part in parts]
    details = "; ".join(v.detail for v in verdicts if v.detail)
    if any(v.met is None for v in verdicts):
        return Verdict(None, details)
    return Verdict(all(v.met for v in verdicts), details)


def _sides(result: Result) -> tuple[str | None, str | None, str | None, list[str]]:
    """(reference, mediagate, floor, others): the sides of ``result`` by role.

    Floors are sides named ``floor`` or ``raw...`` (the one a target names, else the
    fastest). The reference is a side named ``reference`` or, beside ``mediagate``, the
    one other side a target sets over mediagate (``"opencv/mediagate >= 2x"`` or a bare
    ``">= 2x"``). Sides with no role are listed as others.
    """
    names = list(result.times)
    ours = "mediagate" if "mediagate" in names else None
    parts = [p.strip() for p in result.target.split(";")]
    raws = [n for n in names if n == "floor" or n.startswith("raw")]
    named = [n for n in raws if any(p.startswith(f"{ours}/{n}") for p in parts)]
    floor = named[0] if named else min(raws, key=result.median, default=None)
    rest = [n for n in names if n != ours and n not in raws]
    reference = "reference" if "reference" in rest else None
    if reference is None and ours is not None and len(rest) == 1:
        over_ours = any(p.startswith(f"{rest[0]}/{ours}") for p in parts)
        if over_ours or any(_BARE.match(p) for p in parts):
            reference = rest[0]
    others = [n for n in names if n not in (ours, floor, reference)]
    return reference, ours, floor, others


# -- other modules ---------------------------------------------------------------------

OTHER_MODULES = ("video", "audio", "cache", "concurrency", "isolation")
GROUPS = ("images", *OTHER_MODULES)


def run_module(group: str, quick: bool) -> list[Result]:
    """``bench_<group>.run(quick)`` in a child process, or one "not run" row saying why.

    A child keeps a crash in a module (a segfault in a native decoder, say) from taking
    the whole run down with it.
    """
    name = f"bench_{group}"
    if not (BENCH / f"{name}.py").exists():
        return [_not_run(group, f"benchmarks/{name}.py does not exist yet")]
    dump = BENCH / ".work" / f"{name}.json"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", group, str(dump)]
    done = subprocess.run([*command, *(["--quick"] if quick else [])], check=False)
    if done.returncode != 0 or not dump.exists():
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return [_not_run(group, f"benchmarks/{name}.py ended with {how}")]
    saved = json.loads(dump.read_text(encoding="utf-8"))
    return [Result(**r) for r in saved] or [_not_run(group, "run() returned no results")]


def _child(group: str, dump: Path, quick: bool) -> int:
    """Run one module in this process and write its results (or one "not run" row)."""
    name = f"bench_{group}"
    try:
        runner = getattr(importlib.import_module(name), "run", None)
        if runner is None:
            results = [_not_run(group, f"benchmarks/{name}.py has no run()")]
        else:
            results = [r for r in runner(quick=quick) if hasattr(r, "times")]
    except Exception as exc:
        traceback.print_exc()
        results = [_not_run(group, f"{type(exc).__name__}: {exc}")]
    rows = [{f.name: getattr(r, f.name) for f in dataclasses.fields(Result)} for r in results]
    dump.write_text(json.dumps(rows), encoding="utf-8")
    return 0


def _not_run(group: str, reason: str) -> Result:
    return Result(group=group, workload="(all)", times={}, note=f"not run: {reason}")


# -- writing ---------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _speedup_bound(result: Result) -> float | None:
    """The reference/mediagate ratio a speed-up target asks for, if it is one."""
    target = result.target.split(";")[0].strip()
    reference, ours, _, _ = _sides(result)
    if match := _BARE.match(target):
        return float(match.group(2))
    match = _RATIO.match(target)
    if match and (match.group(1), match.group(2)) == (reference, ours):
        return float(match.group(4))
    return None


def _note(result: Result, verdict: Verdict) -> str:
    parts = [result.note] if result.note else []
    if verdict.detail:
        parts.append(verdict.detail)
    if verdict.met is False:
        reference, _, floor, _ = _sides(result)
        bound = _speedup_bound(result)
        cap = _ratio(result, reference, floor) if reference and floor else None
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
        reference, ours, floor, others = _sides(result)
        verdict = judge(result)
        speed = _ratio(result, reference, ours) if reference and ours else None
        over_floor = _ratio(result, ours, floor) if ours and floor else None
        note = _note(result, verdict)
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
    reference, ours, _, _ = _sides(result)
    target = result.target.split(";")[0].strip()
    if match := _RATIO.match(target):
        top, bottom = match.group(1), match.group(2)
        value = _ratio(result, top, bottom)
        if value is None:
            return "-"
        return f"{value:.2f}x" if top == reference else f"{value:.2f}x of {bottom}"
    if _BARE.match(target) and reference and ours:
        value = _ratio(result, reference, ours)
        return "-" if value is None else f"{value:.2f}x"
    if match := _FASTER.match(target):
        value = _faster(result, match.group(1))
        return "-" if value is None else f"{match.group(1)} {value:.1f}x faster"
    if match := _PERCENTILE.match(target):
        value = _percentile(result, int(match.group(1)))
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
        reference, ours, _, _ = _sides(result)
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
        reference, ours, floor, _ = _sides(result)
        speed = _ratio(result, reference, ours) if reference and ours else None
        over = _ratio(result, ours, floor) if ours and floor else None
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


# -- main ------------------------------------------------------------------------------


def _load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mediagate benchmarks against the reference")
    parser.add_argument("--quick", action="store_true", help="fewer items and 3 runs")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip building and running the reference"
    )
    parser.add_argument("--runs", type=int, default=None, help="timed runs per side")
    parser.add_argument(
        "--only", nargs="+", choices=GROUPS, default=None, help="run only these groups"
    )
    parser.add_argument(
        "--images", nargs="+", default=None, help="run only these image workloads (by name)"
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH, help="folder for RESULTS.md and results.png"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help=f"rewrite the table and chart from the last run's {LAST_RUN.name} (no timing)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the re-run groups' rows in the last run (for a group a busy "
        "machine disturbed); the table says which groups were re-run and when",
    )
    parser.add_argument("--child", nargs=2, metavar=("GROUP", "DUMP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child[0], Path(args.child[1]), args.quick)
    if args.render_only:
        saved = json.loads(_last_run(args.out).read_text(encoding="utf-8"))
        return _write(args.out, [Result(**r) for r in saved["results"]], saved["meta"])
    groups = args.only or list(GROUPS)
    started, load_before = time.perf_counter(), _load_average()

    reference: Path | None = None
    reference_note = "not run (--no-reference)"
    if not args.no_reference:
        try:
            reference = ensure_reference_venv()
            reference_note = f"{VLLM_PIN} in benchmarks/.ref-venv ({TORCH_PIN} CPU)"
            os.environ[REF_PYTHON_ENV] = str(reference)
        except ReferenceBuildError as exc:
            reference_note = f"not run: {exc}"
            print(f"reference {reference_note}", file=sys.stderr)

    results: list[Result] = []
    versions: dict[str, str] = {}
    if "images" in groups:
        print("images")
        results += run_images(
            quick=args.quick,
            reference_python=reference,
            runs=args.runs,
            only=args.images,
            versions=versions,
        )
    for group in OTHER_MODULES:
        if group in groups:
            print(group)
            results += run_module(group, args.quick)

    meta = {
        "mode": ("quick" if args.quick else "full")
        + f", {args.runs or (3 if args.quick else 5)} timed runs per side",
        "reference": reference_note,
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "-",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load_before} before and {_load_average()} after",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration": f"{time.perf_counter() - started:.0f} s",
        "groups": ",".join(groups),
    }
    last_run = _last_run(args.out)
    if args.merge:
        results, meta = _merged(last_run, results, meta)
    last_run.parent.mkdir(parents=True, exist_ok=True)
    saved = {"meta": meta, "results": [dataclasses.asdict(r) for r in results]}
    last_run.write_text(json.dumps(saved, indent=1), encoding="utf-8")
    return _write(args.out, results, meta)


def _merged(
    last_run: Path, fresh: list[Result], meta: dict[str, str]
) -> tuple[list[Result], dict[str, str]]:
    """The last run's results with the rows of the groups just re-run replaced, and its
    meta with a line saying which groups were re-run, when and under what load."""
    saved = json.loads(last_run.read_text(encoding="utf-8"))
    rerun = {r.group for r in fresh}
    old_results = [Result(**r) for r in saved["results"]]
    first = next((k for k, r in enumerate(old_results) if r.group in rerun), len(old_results))
    kept = [r for r in old_results if r.group not in rerun]
    at = sum(1 for r in old_results[:first] if r.group not in rerun)
    old: dict[str, str] = saved["meta"]
    note = f"{meta['groups']} at {meta['date']} ({meta['machine'].split(', ', 2)[-1]})"
    merged = {**old, "re-run": "; ".join(filter(None, [old.get("re-run", ""), note]))}
    # The re-run rows take the place of the ones they replace.
    return kept[:at] + fresh + kept[at:], merged


def _write(out: Path, results: list[Result], meta: dict[str, str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    chart = out / "results.png"
    drawn = draw_chart(results, chart)
    write_markdown(results, out / "RESULTS.md", meta, chart if drawn else None)
    complete = (
        meta["mode"].startswith("full")
        and meta.get("groups") == ",".join(GROUPS)
        and not meta["reference"].startswith("not run")
    )
    if out.resolve() == BENCH and complete and update_readme(README, readme_table(results, meta)):
        print(f"updated the benchmark table in {README}")
    print(markdown_table(results))
    print(f"wrote {out / 'RESULTS.md'}" + (f" and {chart}" if drawn else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
