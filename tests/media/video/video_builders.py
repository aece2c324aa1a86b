"""Video clips built in code whose frame ``i`` can be read back as ``i``.

Each frame carries its number in binary: eight 8x16 blocks across the top, black for 0
and white for 1, on a grey background. Lossy codecs move block averages by a few
levels, never across the middle, so ``read_number`` survives any of them.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

WIDTH, HEIGHT = 64, 48

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


def paint(number: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    """An RGB frame showing ``number`` (0..255) as eight black/white blocks."""
    image = np.full((height, width, 3), 128, np.uint8)
    for bit in range(8):
        image[0:16, bit * 8 : (bit + 1) * 8] = 255 if (number >> bit) & 1 else 0
    return image


def read_number(frame: npt.NDArray[np.uint8]) -> int:
    """The number ``paint`` drew into ``frame``."""
    return sum(
        1 << bit for bit in range(8) if frame[3:13, bit * 8 + 2 : (bit + 1) * 8 - 2].mean() > 128
    )


def read_numbers(frames: npt.NDArray[np.uint8]) -> list[int]:
    return [read_number(frame) for frame in frames]


def encode_clip(
    codec: str = "libx264",
    container: str = "mp4",
    frames: int = 60,
    *,
    rate: int = 30,
    gop: int | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts: Sequence[int] | None = None,
    faststart: bool = False,
) -> bytes:
    """Encode ``frames`` painted frames; ``pts`` (in 1/1000 s) makes a variable rate.

    ``faststart`` puts an mp4's index before its data (FFmpeg needs a real file for it).
    """
    with tempfile.TemporaryDirectory() as folder:
        target: Any = Path(folder) / f"clip.{container}" if faststart else io.BytesIO()
        muxer_options = {"movflags": "faststart"} if faststart else {}
        with av.open(target, "w", format=container, container_options=muxer_options) as out:
            stream = out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            if gop is not None:
                stream.codec_context.gop_size = gop
            if options:
                stream.options = options
            if pts is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            for i in range(frames):
                image = paint(i % 256, width, height)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                if pts is not None:
                    frame.pts = pts[i]
                    frame.time_base = Fraction(1, 1000)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        return target.read_bytes() if faststart else target.getvalue()
