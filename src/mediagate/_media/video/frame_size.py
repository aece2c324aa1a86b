"""The frame size a video is decoded to: the ``max_frame_size`` and ``resize_to`` hints.

``VideoMediaIO`` takes at most one of them (both at once is an ``OptionError``):

* ``max_frame_size=[width, height]``: fit each frame within that box, aspect ratio kept.
* ``max_frame_size=N`` (an integer): a pixel budget, ``width * height <= N``, aspect
  ratio kept.
* ``resize_to=[width, height]``: exactly that size (the aspect ratio is the caller's;
  the frames may be enlarged).

``max_frame_size`` never enlarges: a frame already within the box or the budget comes
out at its own size. Both hints refer to the frame as shown, after the display matrix
or ``rotate`` tag turned it (``orientation``), so a portrait phone clip and a landscape
one fit the same box the way a viewer sees them.

Sizes are whole pixels, at least 1 on each side, and not rounded to even numbers (the
frames are RGB, with no chroma subsampling to align to):

* box: ``scale = min(box_w / w, box_h / h)``, each side ``round(side * scale)``, the
  rule of ``ImageMediaIO``'s ``max_image_size``; the result never exceeds the box.
* budget: ``scale = sqrt(N / (w * h))``, each side ``floor(side * scale)``, so the
  product stays within ``N``; a side that would be 0 is 1 and the other is then cut to
  ``N``.

The decoders scale while they convert to RGB (``pyav``: one swscale pass per frame with
``AREA`` interpolation; ``opencv``: ``cv2.resize`` with ``INTER_AREA`` right after each
frame is retrieved; ``video/jpeg``: a reduced JPEG DCT scale, then an exact resize), so
no full-size RGB frame is kept, and the frames array and the decoded-output budget are
both at the output size. ``max_pixels`` still applies to the frames as stored: a hint
shrinks what comes out, not what may be decoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..._errors import OptionError
from ..base import OptionSpec

__all__ = [
    "FRAME_SIZE_OPTIONS",
    "MAX_FRAME_PIXELS",
    "MAX_FRAME_SIDE",
    "FrameSize",
    "frame_size_from_options",
    "resize_frames",
    "resize_rgb",
]

#: The largest side either hint may name.
MAX_FRAME_SIDE = 16384
#: The largest pixel budget ``max_frame_size`` may give.
MAX_FRAME_PIXELS = MAX_FRAME_SIDE * MAX_FRAME_SIDE

_PAIR = "[width, height]"


def _whole(modality: str, key: str, value: Any, maximum: int, what: str) -> int:
    """``value`` as an integer in ``[1, maximum]``; whole floats (448.0) count.

    Raises:
        OptionError: a bool, a non-number, a fraction, NaN, infinity, or out of range.
    """
    number: Any = value
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
        shown = repr(value) if isinstance(value, (float, np.floating)) else type(value).__name__
        raise OptionError(f"{modality} option {key!r} must be {what} (got {shown})", option=key)
    checked = int(number)
    if not 1 <= checked <= maximum:
        raise OptionError(
            f"{modality} option {key!r} must be {what} in [1, {maximum}] (got {checked})",
            option=key,
        )
    return checked


def _pair(modality: str, key: str, value: Any) -> tuple[int, int]:
    """``[width, height]``, each a whole number in ``[1, MAX_FRAME_SIDE]``.

    Raises:
        OptionError: not a list or tuple of two such numbers.
    """
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise OptionError(
            f"{modality} option {key!r} must be {_PAIR}, two integers in [1, {MAX_FRAME_SIDE}]",
            option=key,
        )
    width, height = (_whole(modality, key, v, MAX_FRAME_SIDE, "an integer side") for v in value)
    return width, height


def _check_max_frame_size(modality: str, key: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return FrameSize(box=_pair(modality, key, value))
    if isinstance(value, (str, bytes, Mapping)):
        raise OptionError(
            f"{modality} option {key!r} must be {_PAIR} or a pixel budget (an integer), "
            f"not {type(value).__name__}",
            option=key,
        )
    return FrameSize(pixels=_whole(modality, key, value, MAX_FRAME_PIXELS, "a pixel budget"))


def _check_resize_to(modality: str, key: str, value: Any) -> Any:
    return None if value is None else FrameSize(exact=_pair(modality, key, value))


#: The two hints, as ``VideoMediaIO`` takes them (each checker returns a ``FrameSize``).
FRAME_SIZE_OPTIONS: Mapping[str, OptionSpec] = {
    "max_frame_size": OptionSpec(
        _check_max_frame_size,
        f"fit each frame within {_PAIR}, or within a pixel budget (an integer), aspect "
        "ratio kept, never enlarged; decoded at that size",
    ),
    "resize_to": OptionSpec(
        _check_resize_to, f"decode each frame to exactly {_PAIR} (not with max_frame_size)"
    ),
}


@dataclass(frozen=True)
class FrameSize:
    """One of the hints: ``box`` (fit within), ``pixels`` (a pixel budget) or ``exact``.

    Example::

        FrameSize(box=(448, 448)).output_size(3840, 2160)  # (448, 252)
        FrameSize(pixels=448 * 448).output_size(3840, 2160)  # (597, 336)
        FrameSize(exact=(224, 224)).output_size(3840, 2160)  # (224, 224)
    """

    box: tuple[int, int] | None = None
    pixels: int | None = None
    exact: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.box, self.pixels, self.exact)) != 1:
            raise ValueError("FrameSize takes exactly one of box, pixels and exact")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` a frame shown ``width`` x ``height`` is decoded to."""
        if self.exact is not None:
            return self.exact
        if self.box is not None:
            scale = min(self.box[0] / width, self.box[1] / height)
            if scale >= 1:
                return width, height
            return (
                min(self.box[0], max(1, round(width * scale))),
                min(self.box[1], max(1, round(height * scale))),
            )
        assert self.pixels is not None
        budget = self.pixels
        if width * height <= budget:
            return width, height
        scale = math.sqrt(budget / (width * height))
        out_w, out_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
        if out_w * out_h > budget:  # a side held at 1, or a rounding hair over
            if out_h <= out_w:
                out_w = max(1, min(width, budget // out_h))
            else:
                out_h = max(1, min(height, budget // out_w))
        return out_w, out_h

    def largest_output(self, width: int, height: int) -> tuple[int, int]:
        """The larger output (in pixels) of a frame stored ``width`` x ``height``, shown
        as stored or turned a quarter: what to budget before the turn is known."""
        upright = self.output_size(width, height)
        turned = self.output_size(height, width)
        return upright if upright[0] * upright[1] >= turned[0] * turned[1] else turned

    def describe(self) -> str:
        """The hint as the option that set it, for messages."""
        if self.box is not None:
            return f"max_frame_size=[{self.box[0]}, {self.box[1]}]"
        if self.pixels is not None:
            return f"max_frame_size={self.pixels}"
        assert self.exact is not None
        return f"resize_to=[{self.exact[0]}, {self.exact[1]}]"


def frame_size_from_options(
    max_frame_size: Any = None,
    resize_to: Any = None,
    *,
    modality: str = "video",
    max_pixels: int | None = None,
) -> FrameSize | None:
    """The hint the two options give, or ``None`` when neither is set.

    Args:
        max_frame_size: ``[width, height]``, an integer pixel budget, or ``None``.
        resize_to: ``[width, height]`` or ``None``.
        modality: named in messages.
        max_pixels: ``resize_to`` may not ask for frames of more pixels than this.

    Raises:
        OptionError: a value of the wrong type or range (a bool, a string, a fraction,
            NaN, zero, negative, a side over ``MAX_FRAME_SIDE``), both options set, or
            ``resize_to`` over ``max_pixels``.
    """
    fit = FRAME_SIZE_OPTIONS["max_frame_size"].check(modality, "max_frame_size", max_frame_size)
    exact = FRAME_SIZE_OPTIONS["resize_to"].check(modality, "resize_to", resize_to)
    if fit is not None and exact is not None:
        raise OptionError(
            f"{modality} options 'max_frame_size' and 'resize_to' cannot be used together",
            option="resize_to",
        )
    if exact is not None and exact.exact is not None and max_pixels is not None:
        width, height = exact.exact
        if width * height > max_pixels:
            raise OptionError(
                f"{modality} option 'resize_to' asks for {width}x{height} frames, more than "
                f"max_pixels={max_pixels}",
                option="resize_to",
            )
    hint: FrameSize | None = fit if fit is not None else exact
    return hint


def resize_rgb(frame: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """``frame`` (``[H, W, 3]`` uint8) resized to ``size`` (``(width, height)``): OpenCV's
    ``INTER_AREA`` when it is installed, else Pillow's bicubic filter."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    try:
        import cv2
    except ImportError:
        from PIL import Image

        resized = Image.fromarray(np.ascontiguousarray(frame)).resize(
            size, Image.Resampling.BICUBIC
        )
        return np.asarray(resized, dtype=np.uint8)
    return np.asarray(
        cv2.resize(np.ascontiguousarray(frame), size, interpolation=cv2.INTER_AREA),
        dtype=np.uint8,
    )


def resize_frames(frames: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """``[N, H, W, 3]`` frames resized to ``size`` (``(width, height)``) one at a time
    (the same array when they have that size already)."""
    if (int(frames.shape[2]), int(frames.shape[1])) == size:
        return frames
    resized = np.empty((len(frames), size[1], size[0], 3), np.uint8)
    for slot, frame in enumerate(frames):
        resized[slot] = resize_rgb(frame, size)
    return resized
