"""Run every benchmark, side by side with the reference implementation, in one command.

    .venv/bin/python benchmarks/run.py            # full run (what `make bench` does)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run: fewer items, 3 runs

The reference is vLLM's media layer (``vllm.multimodal.utils.MediaConnector``), installed
on first use into ``benchmarks/.ref-venv`` (see ``_reference.ensure_reference_venv``).
Image workloads run here; whole requests, video, audio, cache, concurrency and isolation
come from the ``bench_*.py`` modules' ``run(quick)``. A module that is missing or fails
is recorded as "not run" and the rest go on. Results go to ``benchmarks/RESULTS.md`` and
``benchmarks/results.png`` (``_report``), each row judged against its target
(``_judging``).

This module is the command line and the orchestration: it runs the groups, each other
module in a child process, keeps the raw timings and merges re-runs into them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _path in (str(BENCH), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _common import Result  # noqa: E402
from _judging import judge  # noqa: E402
from _reference import (  # noqa: E402
    REF_PYTHON_ENV,
    TORCH_PIN,
    VLLM_PIN,
    ReferenceBuildError,
    ensure_reference_venv,
)
from _report import (  # noqa: E402
    README,
    README_END,
    README_START,
    draw_chart,
    markdown_table,
    readme_table,
    update_readme,
    write_markdown,
)
from _report import row_note as _note  # noqa: E402, F401
from bench_images import run_images  # noqa: E402

__all__ = [
    "README_END",
    "README_START",
    "ReferenceBuildError",
    "ensure_reference_venv",
    "judge",
    "main",
    "readme_table",
    "update_readme",
]

#: Every result of the last run, so the table and chart can be redrawn without timing.
LAST_RUN = BENCH / ".work" / "last-run.json"


def _last_run(out: Path) -> Path:
    """Where a run writing to ``out`` keeps its raw timings (others never touch ours)."""
    return LAST_RUN if out.resolve() == BENCH else out / LAST_RUN.name


# -- other modules ---------------------------------------------------------------------

OTHER_MODULES = (
    "requests",
    "proxy",
    "exif",
    "video",
    "frame_size",
    "ranges",
    "audio",
    "cache",
    "concurrency",
    "isolation",
)
GROUPS = ("images", *OTHER_MODULES)
#: Groups that run only when ``--only`` names them (each takes longer than the rest of
#: a full run together; see benchmarks/README.md).
OPT_IN_MODULES = ("batch",)


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
    """The one row a group that could not run leaves, saying why."""
    return Result(group=group, workload="(all)", times={}, note=f"not run: {reason}")


# -- main ------------------------------------------------------------------------------


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages, or ``unknown`` where there are none."""
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks the command line asks for and write their table and chart.

    Args:
        argv: The arguments (``sys.argv[1:]`` when None).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description="mediagate benchmarks against the reference")
    parser.add_argument("--quick", action="store_true", help="fewer items and 3 runs")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip building and running the reference"
    )
    parser.add_argument("--runs", type=int, default=None, help="timed runs per side")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=(*GROUPS, *OPT_IN_MODULES),
        default=None,
        help="run only these groups (batch runs only when named)",
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
    if (args.merge or args.render_only) and not _last_run(args.out).is_file():
        flag = "--merge" if args.merge else "--render-only"
        print(
            f"{flag} needs an earlier run's timings in {_last_run(args.out)}; run without it first",
            file=sys.stderr,
        )
        return 2
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
    for group in (*OTHER_MODULES, *OPT_IN_MODULES):
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
    """Write the chart and ``RESULTS.md`` under ``out`` (and the README table after a
    complete run into this folder), then print the table."""
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
