"""Shared timing helpers: alternating runs, medians, peak memory, markdown rows."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Result", "alternate", "peak_memory", "ratio"]


@dataclass
class Result:
    """One comparison: a workload, the timed sides (seconds, all runs) and notes."""

    group: str
    workload: str
    times: dict[str, list[float]]
    peak_bytes: dict[str, int] = field(default_factory=dict)
    target: str = ""
    note: str = ""

    def median(self, side: str) -> float:
        return statistics.median(self.times[side])


def alternate(
    sides: Mapping[str, Callable[[], Any]], *, runs: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each side ``runs`` times, interleaving the sides run by run."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, fn in sides.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak Python-tracked allocation (bytes) while ``fn`` runs (numpy buffers included)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ratio(result: Result, slow: str, fast: str) -> float:
    """``median(slow) / median(fast)``: above 1 means ``fast`` is faster."""
    return result.median(slow) / result.median(fast)
