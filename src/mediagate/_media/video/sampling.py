"""The uniform frame-sampling rule every video backend shares (pure, no I/O).

::

    n = total
    if num_frames > 0: n = min(n, num_frames)
    if fps > 0:        n = min(n, floor(duration * fps))
    n = max(n, 1)
    indices = range(total) if n == total else linspace(0, total - 1, n) cast to int
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._errors import OptionError
from ..base import Checker, opt_float

__all__ = [
    "build_metadata",
    "cap_num_frames",
    "check_num_frames",
    "finite_number",
    "sample_count",
    "sample_frame_indices",
    "short_tail_tolerated",
]


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
) -> dict[str, Any]:
    """The metadata dict every backend returns next to its frames."""
    return {
        "total_num_frames": int(total_num_frames),
        "fps": float(fps),
        "duration": float(duration),
        "video_backend": video_backend,
        "frames_indices": [int(i) for i in frames_indices],
        "do_sample_frames": bool(do_sample_frames),
    }
