"""Media and servers built in code for the tests (no downloads, no fixture files).

Both are the package's own, shared with the benchmarks and the demo: the media builders
(``mediagate._build``) and the loopback HTTP server (``mediagate._loopback``).
"""

from __future__ import annotations

from mediagate._build import (
    LEFT_HZ,
    RIGHT_HZ,
    data_url,
    encode_clip,
    gradient,
    image_bytes,
    jpeg_bytes,
    paint,
    png_bytes,
    pyav_audio_bytes,
    soundfile_bytes,
    tone,
)
from mediagate._loopback import LoopbackServer, Route

__all__ = [
    "LEFT_HZ",
    "RIGHT_HZ",
    "LoopbackServer",
    "Route",
    "data_url",
    "encode_clip",
    "gradient",
    "image_bytes",
    "jpeg_bytes",
    "paint",
    "png_bytes",
    "pyav_audio_bytes",
    "soundfile_bytes",
    "tone",
]
