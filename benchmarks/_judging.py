"""Judging results against their targets, and telling a result's sides apart by role.

Targets are written ``"<side>/<side> >= Nx"`` or ``"<side>/<side> <= Nx"`` (ratios of
medians), several joined by ``"; "``; a target is met when every part holds. The clause
forms are listed in ``judge``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from _common import Result

__all__ = [
    "BARE",
    "FASTER",
    "PERCENTILE",
    "RATIO",
    "Verdict",
    "judge",
    "median_ratio",
    "percentile",
    "sides",
    "times_faster",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
#: ``"a/b >= Nx"``: groups are the two sides, the operator and the bound.
RATIO = re.compile(r"^([\w .-]+?)\s*/\s*([\w .-]+?)\s*(>=|<=|>|<)\s*([\d.]+)\s*x$")
#: ``">= Nx"`` (reference over mediagate): groups are the operator and the bound.
BARE = re.compile(r"^(>=|<=|>|<)\s*([\d.]+)\s*x$")
#: ``"<side> >= Nx faster"``: groups are the word naming the side, the operator and the bound.
FASTER = re.compile(r"^([\w .-]+?)\s*(>=|>)\s*([\d.]+)\s*x faster$")
#: ``"p99 < N ms"``: groups are the percentile, the operator and the bound in milliseconds.
PERCENTILE = re.compile(r"^p(\d+)\s*(>=|<=|>|<)\s*([\d.]+)\s*ms$")


@dataclass
class Verdict:
    """How a result fares against its target: ``met`` is None when it cannot be judged."""

    met: bool | None
    detail: str = ""


def median_ratio(result: Result, top: str, bottom: str) -> float | None:
    """The median of side ``top`` over that of ``bottom``; None if either is missing."""
    if top not in result.times or bottom not in result.times:
        return None
    below = result.median(bottom)
    return result.median(top) / below if below > 0 else None


def times_faster(result: Result, word: str) -> float | None:
    """How many times faster the one side named with ``word`` is than the other one."""
    fast = [side for side in result.times if word in side]
    slow = [side for side in result.times if word not in side]
    if len(fast) != 1 or len(slow) != 1:
        return None
    return median_ratio(result, slow[0], fast[0])


def percentile(result: Result, q: int) -> float | None:
    """The ``q``-th percentile (seconds) of the samples of a result's only side."""
    samples = sorted(next(iter(result.times.values()), []))
    if len(result.times) != 1 or not samples:
        return None
    return samples[min(len(samples) - 1, int(q / 100 * len(samples)))]


def _judge_part(result: Result, part: str) -> Verdict:
    """One target clause; the forms are listed in ``judge``."""
    if match := RATIO.match(part):
        top, bottom, op, bound = match.groups()
        value = median_ratio(result, top, bottom)
        if value is None:
            missing = [side for side in (top, bottom) if side not in result.times]
            return Verdict(None, f"no timed side named {' or '.join(map(repr, missing))}")
        return Verdict(_OPS[op](value, float(bound)))
    if match := BARE.match(part):
        reference, ours, _, _ = sides(result)
        value = median_ratio(result, reference, ours) if reference and ours else None
        if value is None:
            return Verdict(None, "no reference side to compare with")
        return Verdict(_OPS[match.group(1)](value, float(match.group(2))))
    if match := FASTER.match(part):
        word, op, bound = match.groups()
        value = times_faster(result, word)
        if value is None:
            return Verdict(None, f"cannot tell which side {word!r} names")
        return Verdict(_OPS[op](value, float(bound)))
    if match := PERCENTILE.match(part):
        q, op, bound = match.groups()
        value = percentile(result, int(q))
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
    ``"(...)"`` for rows that are context only. A boolean ``met`` attribute on the result
    overrides the target.

    Args:
        result: The result to judge.

    Returns:
        The verdict, with a detail for every clause that could not be judged.
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


def sides(result: Result) -> tuple[str | None, str | None, str | None, list[str]]:
    """(reference, mediagate, floor, others): the sides of ``result`` by role.

    Floors are sides named ``floor`` or ``raw...`` (the one a target names, else the
    fastest). The reference is a side named ``reference`` or, beside ``mediagate``, the
    one other side a target sets over mediagate (``"opencv/mediagate >= 2x"`` or a bare
    ``">= 2x"``). Sides with no role are listed as others.

    Args:
        result: The result whose sides to sort.

    Returns:
        The reference, mediagate and floor side names (None where there is none), and
        the remaining side names in their order.
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
        if over_ours or any(BARE.match(p) for p in parts):
            reference = rest[0]
    others = [n for n in names if n not in (ours, floor, reference)]
    return reference, ours, floor, others
