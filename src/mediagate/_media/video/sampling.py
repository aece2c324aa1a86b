"""The uniform frame-sampling rules every video backend shares (pure, no I/O).

How many frames (both rules)::

    n = total
    if num_frames > 0: n = min(n, num_frames)
    if fps > 0:        n = min(n, floor(duration * fps))
    n = max(n, 1)

Which frames, when ``n < total``:

* ``index``: ``linspace(0, total - 1, n)`` cast to int (``sample_frame_indices``).
* ``time`` (the default loaders' rule, ``sample_frame_times``): the frame on screen at
  each of ``n`` evenly spaced instants from the first frame's timestamp to the last
  one's (the last frame whose timestamp is at or before the instant). When the frames
  are evenly spaced in time (``regular_timestamps``: a constant frame rate, up to
  timestamp rounding) the instants fall exactly on the ``index`` rule's positions, so
  the index rule's frames are returned as they are. On a variable frame rate the frames
  follow the clock instead of the frame count, and a frame on screen at several
  instants is returned once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._errors import OptionError
from ..base import Checker, opt_float

__all__ = [
    "VLLM_METADATA_KEYS",
    "build_metadata",
    "cap_num_frames",
    "check_num_frames",
    "finite_number",
    "regular_timestamps",
    "sample_count",
    "sample_frame_indices",
    "sample_frame_times",
    "short_tail_tolerated",
]

#: The metadata keys vLLM's own video loaders return; ``transformers.VideoMetadata``
#: takes all of them but ``do_sample_frames`` as fields. The builtin loaders return
#: more (``timestamps``, the frame sizes, the orientation): code that builds a
#: ``VideoMetadata`` from the dict keeps only these.
VLLM_METADATA_KEYS = (
    "total_num_frames",
    "fps",
    "duration",
    "video_backend",
    "frames_indices",
    "do_sample_frames",
)

# Timestamps within this share of a frame period of an even spacing count as regular
# (besides one unit of the time base: timestamps rounded to a coarse time base).
_REGULAR_SHARE = 0.02


def finite_number(
    minimum: float = 0.0, *, allow_none: bool = False, exclusive_minimum: bool = False
) -> Checker:
    """A checker for a finite number ``>= minimum`` (``> minimum`` if exclusive) that
    also refuses integers past float range, never raising anything but ``OptionError``."""
    check_float = opt_float(minimum, allow_none=allow_none, exclusive_minimum=exclusive_minimum)

    def check(modality: str, key: str, value: Any) -> Any:
        try:
            return check_float(modality, key, value)
        except OptionError:
            raise
        except (OverflowError, ValueError, TypeError) as exc:
            raise OptionError(
                f"{modality} option {key!r} must be a finite number", option=key
            ) from exc

    return check


def check_num_frames(num_frames: Any) -> int:
    """``num_frames`` checked: ``-1`` (all frames, up to the cap) or a positive integer.

    Raises:
        OptionError: not an integer, ``0``, or below ``-1``.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise OptionError("video option 'num_frames' must be an integer", option="num_frames")
    value = int(num_frames)
    if value == 0 or value < -1:
        raise OptionError(
            "video option 'num_frames' must be -1 (all, up to the cap) or a positive integer",
            option="num_frames",
        )
    return value


def cap_num_frames(num_frames: Any, max_frames: int) -> int:
    """``num_frames`` as loaders see it: checked, ``-1`` replaced by ``max_frames``, capped.

    Raises:
        OptionError: as ``check_num_frames``.
    """
    value = check_num_frames(num_frames)
    return max_frames if value == -1 else min(value, max_frames)


def sample_count(
    total: int, *, num_frames: int = -1, fps: float | None = None, duration: float = 0.0
) -> int:
    """How many frames uniform sampling returns from a stream of ``total`` frames.

    Args:
        total: frames in the stream (at least 1).
        num_frames: the most frames wanted; ``-1`` (or any value below 1) means no cap.
        fps: frames per second of video wanted; ``None`` or below 0 means no cap.
        duration: the stream's duration in seconds, used with ``fps``.

    Raises:
        ValueError: ``total`` is below 1.
    """
    if total < 1:
        raise ValueError("a video stream needs at least one frame to sample")
    n = total
    if num_frames > 0:
        n = min(n, num_frames)
    if fps is not None and fps > 0 and math.isfinite(duration) and duration >= 0:
        wanted = duration * fps  # infinite when fps is huge: no cap then
        if wanted < n:
            n = math.floor(wanted)
    return max(n, 1)


def sample_frame_indices(
    total: int, *, num_frames: int = -1, fps: float | None = None, duration: float = 0.0
) -> list[int]:
    """The frame indices uniform sampling returns, ascending.

    Every frame when the count equals ``total``, else ``linspace(0, total - 1, n)`` cast
    to ``int``.

    Raises:
        ValueError: ``total`` is below 1.
    """
    n = sample_count(total, num_frames=num_frames, fps=fps, duration=duration)
    if n == total:
        return list(range(total))
    return [int(i) for i in np.linspace(0, total - 1, n).astype(np.int64)]


def regular_timestamps(pts: npt.NDArray[np.float64]) -> bool:
    """Whether ascending timestamps ``pts`` are evenly spaced: each within one time-base
    unit, or 2% of the mean step, of the straight line from the first to the last."""
    total = len(pts)
    if total < 3:
        return True
    first, last = float(pts[0]), float(pts[-1])
    step = (last - first) / (total - 1)
    if not step > 0:
        return False
    line = first + np.arange(total, dtype=np.float64) * step
    return float(np.max(np.abs(pts - line))) <= max(1.0, step * _REGULAR_SHARE)


def sample_frame_times(
    pts: Sequence[int],
    *,
    num_frames: int = -1,
    fps: float | None = None,
    duration: float = 0.0,
    regular: bool | None = None,
) -> list[int]:
    """The frames the ``time`` rule returns from a stream whose frame ``i`` has the
    presentation timestamp ``pts[i]`` (ascending, distinct), ascending and distinct.

    Args:
        pts: the frames' timestamps, in any one unit.
        num_frames, fps, duration: as ``sample_count`` (``duration``: the presented
            seconds, for ``fps``).
        regular: whether ``pts`` are evenly spaced, when the caller knows it already
            (else ``regular_timestamps`` decides).

    Raises:
        ValueError: ``pts`` is empty.
    """
    total = len(pts)
    n = sample_count(total, num_frames=num_frames, fps=fps, duration=duration)
    if n == total:
        return list(range(total))
    positions = np.linspace(0, total - 1, n)
    stamps = np.asarray(pts, dtype=np.float64)
    if regular is None:
        regular = regular_timestamps(stamps)
    if regular:
        return [int(i) for i in positions.astype(np.int64)]
    first, last = float(stamps[0]), float(stamps[-1])
    instants = first + positions * ((last - first) / (total - 1))
    # A hair of slack so an instant computed a rounding error short of a frame's own
    # timestamp still lands on that frame.
    slack = 1e-9 * max(1.0, last - first)
    picked = np.searchsorted(stamps, instants + slack, side="right") - 1
    return [int(i) for i in np.unique(np.clip(picked, 0, total - 1))]


def short_tail_tolerated(total: int, seen: int) -> bool:
    """Whether a stream that yielded ``seen`` of its ``total`` indexed frames is still
    usable: at least one frame, and at most ``max(2, total // 100)`` missing at the end
    (headers that over-count by a frame or two). The missing ones repeat the last frame.
    """
    return seen > 0 and total - seen <= max(2, total // 100)


def build_metadata(
    *,
    total_num_frames: int,
    fps: float,
    duration: float,
    video_backend: str,
    frames_indices: list[int],
    do_sample_frames: bool,
    timestamps: Sequence[float] | None = None,
    geometry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata dict every backend returns next to its frames: the
    ``VLLM_METADATA_KEYS``, then ``timestamps`` (seconds from the first frame to each
    returned frame) and the ``geometry`` keys (``FrameGeometry.metadata``) when given."""
    metadata: dict[str, Any] = {
        "total_num_frames": int(total_num_frames),
        "fps": float(fps),
        "duration": float(duration),
        "video_backend": video_backend,
        "frames_indices": [int(i) for i in frames_indices],
        "do_sample_frames": bool(do_sample_frames),
    }
    if timestamps is not None:
        metadata["timestamps"] = [float(t) for t in timestamps]
    if geometry is not None:
        metadata.update(geometry)
    return metadata
