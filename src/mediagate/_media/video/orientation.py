"""How a stored video frame is turned to be shown: the display matrix and the rotate tag.

A container may say that its frames are to be shown turned: an MP4 or MOV track's
display matrix (``tkhd``), a Matroska track's projection, or an H.264/HEVC display
orientation message; FFmpeg hands each of them to the decoded frame as
``DISPLAYMATRIX`` side data. Older files and muxers carry a ``rotate`` tag instead (the
degrees to turn the picture clockwise). Players apply either; so do the loaders here,
so the frames a model sees are the frames a viewer sees.

The matrix maps a stored pixel ``(x, y)`` (``y`` pointing down) to the displayed
``(a*x + c*y, b*x + d*y)`` (FFmpeg's int32[9] layout: ``a, b, _, c, d, _, ...``). The
eight matrices made of quarter turns and a mirror are applied exactly, as a quarter
turn clockwise followed by an optional horizontal flip. A matrix that turns by any
other angle is not applied: the frames come out as stored and ``rotation`` reads 0.
The display matrix wins over the ``rotate`` tag when a stream has both.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "IDENTITY",
    "FrameGeometry",
    "Orientation",
    "frame_orientation",
    "matrix_orientation",
    "tag_orientation",
]


@dataclass(frozen=True)
class Orientation:
    """Turn ``rotation`` degrees clockwise (0, 90, 180 or 270), then mirror left to right
    when ``mirrored``."""

    rotation: int = 0
    mirrored: bool = False

    @property
    def identity(self) -> bool:
        """Whether frames are shown as stored."""
        return self.rotation == 0 and not self.mirrored

    @property
    def swaps_axes(self) -> bool:
        """Whether the shown frame's width is the stored frame's height."""
        return self.rotation in (90, 270)

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of a stored ``width`` x ``height`` frame once shown."""
        return (height, width) if self.swaps_axes else (width, height)

    def stored_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the stored frame that is shown ``width`` x ``height``."""
        return (height, width) if self.swaps_axes else (width, height)

    def apply(self, frame: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``frame`` (``[H, W, C]`` as stored) as shown: a view, no copy."""
        if self.rotation:
            # np.rot90 turns counter-clockwise for positive k.
            frame = np.rot90(frame, k=-(self.rotation // 90), axes=(0, 1))
        if self.mirrored:
            frame = frame[:, ::-1]
        return frame


#: Frames shown as stored.
IDENTITY = Orientation()


@dataclass(frozen=True)
class FrameGeometry:
    """The size frames were decoded at, how they were turned to be shown and, when a
    frame-size hint resized them (``frame_size``), the size they were resized to."""

    coded_width: int
    coded_height: int
    orientation: Orientation = IDENTITY
    #: ``(width, height)`` of the frames returned, when a hint resized them.
    output_size: tuple[int, int] | None = None

    @classmethod
    def of(cls, frames: npt.NDArray[Any], orientation: Orientation) -> FrameGeometry:
        """The geometry of shown ``frames`` (``[N, H, W, 3]``) turned by ``orientation``."""
        width, height = orientation.stored_size(int(frames.shape[2]), int(frames.shape[1]))
        return cls(width, height, orientation)

    def metadata(self) -> dict[str, Any]:
        """``width`` and ``height`` of the frames returned (as shown), ``coded_width`` and
        ``coded_height`` as stored, ``rotation`` (degrees clockwise) and ``mirrored`` as
        applied; when a hint resized the frames, also ``original_width`` and
        ``original_height``, the size they are shown at before resizing."""
        width, height = self.orientation.shown_size(self.coded_width, self.coded_height)
        shown = {"width": width, "height": height}
        if self.output_size is not None:
            shown = {
                "width": self.output_size[0],
                "height": self.output_size[1],
                "original_width": width,
                "original_height": height,
            }
        return {
            **shown,
            "coded_width": self.coded_width,
            "coded_height": self.coded_height,
            "rotation": self.orientation.rotation,
            "mirrored": self.orientation.mirrored,
        }


# (sign of a, b, c, d) -> the orientation that matrix describes.
_BY_SIGNS: Mapping[tuple[int, int, int, int], Orientation] = {
    (1, 0, 0, 1): Orientation(0, False),
    (0, 1, -1, 0): Orientation(90, False),
    (-1, 0, 0, -1): Orientation(180, False),
    (0, -1, 1, 0): Orientation(270, False),
    (-1, 0, 0, 1): Orientation(0, True),
    (0, 1, 1, 0): Orientation(90, True),
    (1, 0, 0, -1): Orientation(180, True),
    (0, -1, -1, 0): Orientation(270, True),
}


def _sign(value: float, scale: float) -> int:
    """-1, 0 or 1: ``value`` against ``scale``, zero when it is a rounding residue."""
    if abs(value) <= scale * 1e-3:
        return 0
    return 1 if value > 0 else -1


def matrix_orientation(matrix: Sequence[int]) -> Orientation | None:
    """The orientation a 3x3 display matrix (FFmpeg's 9 int32, row major) describes;
    ``None`` for a turn that is not a multiple of 90 degrees or a degenerate matrix."""
    if len(matrix) != 9:
        return None
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if not math.isfinite(scale) or scale == 0:
        return None
    return _BY_SIGNS.get((_sign(a, scale), _sign(b, scale), _sign(c, scale), _sign(d, scale)))


def _display_matrix(frame: Any) -> Sequence[int] | None:
    """The frame's ``DISPLAYMATRIX`` side data as 9 integers, if it has one."""
    side_data = getattr(frame, "side_data", None)
    if side_data is None:
        return None
    try:
        for entry in side_data:
            if getattr(getattr(entry, "type", None), "name", None) == "DISPLAYMATRIX":
                raw = bytes(entry)
                if len(raw) == 36:
                    return struct.unpack("=9i", raw)
    except (TypeError, ValueError, KeyError, AttributeError, struct.error):
        return None
    return None


def tag_orientation(metadata: Mapping[str, str] | None) -> Orientation:
    """The orientation a stream's legacy ``rotate`` tag asks for (any case of the key);
    ``IDENTITY`` when there is none or it is not a multiple of 90 degrees."""
    if not metadata:
        return IDENTITY
    try:
        value = next((v for k, v in metadata.items() if str(k).lower() == "rotate"), None)
        degrees = float(str(value).strip()) if value is not None else 0.0
    except (TypeError, ValueError, AttributeError):
        return IDENTITY
    if not math.isfinite(degrees) or degrees % 90:
        return IDENTITY
    return Orientation(int(degrees) % 360, False)


def frame_orientation(frame: Any, fallback: Orientation = IDENTITY) -> Orientation:
    """How a decoded PyAV frame is to be shown: its display matrix when it has one (an
    angle that is not a quarter turn: as stored), else ``fallback`` (the stream's
    ``rotate`` tag)."""
    matrix = _display_matrix(frame)
    if matrix is None:
        return fallback
    return matrix_orientation(matrix) or IDENTITY
