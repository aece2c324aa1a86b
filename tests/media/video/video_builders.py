"""The video clips the decoding tests run over, and reading a frame's number back.

The clips are ``encode_clip``'s (``mediagate._build``): frame ``i`` carries ``i`` in
binary as eight black/white blocks across the top, which ``read_number`` reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: name -> encode_clip arguments; every clip has 60 frames at 30 fps unless said.
CLIP_SPECS: dict[str, dict[str, Any]] = {
    "h264-mp4": {"codec": "libx264", "container": "mp4", "gop": 10},
    "h264-mp4-one-gop": {"codec": "libx264", "container": "mp4"},
    "h264-mkv": {"codec": "libx264", "container": "matroska", "gop": 8},
    "vp9-webm": {"codec": "libvpx-vp9", "container": "webm", "gop": 10},
    "mpeg4-avi": {"codec": "mpeg4", "container": "avi", "gop": 12},
    "mpeg2-ts": {"codec": "mpeg2video", "container": "mpegts", "gop": 6},
    "h264-vfr-mkv": {
        "codec": "libx264",
        "container": "matroska",
        "gop": 7,
        "pts": [i * 33 + (i % 3) * 10 for i in range(60)],
    },
}

#: The clips every decoding test runs over.
CLIP_NAMES = ["h264-mp4", "h264-mp4-one-gop", "h264-mkv", "vp9-webm", "mpeg4-avi", "mpeg2-ts"]


def read_number(frame: npt.NDArray[np.uint8]) -> int:
    """The number ``paint`` drew into ``frame``."""
    return sum(
        1 << bit for bit in range(8) if frame[3:13, bit * 8 + 2 : (bit + 1) * 8 - 2].mean() > 128
    )


def read_numbers(frames: npt.NDArray[np.uint8]) -> list[int]:
    return [read_number(frame) for frame in frames]
