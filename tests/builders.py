"""Media and servers built in code for the tests (no downloads, no fixture files).

The loopback server is the package's own (``mediagate._loopback``), shared with the
benchmarks and the demo.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from mediagate._loopback import LoopbackServer, Route

__all__ = [
    "LoopbackServer",
    "Route",
    "data_url",
    "encode",
    "gradient",
    "jpeg_bytes",
    "png_bytes",
]


def gradient(width: int, height: int) -> np.ndarray:
    """An RGB image whose pixels differ enough that orientation errors show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * 7 + y * 3) % 256],
        axis=-1,
    ).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, **params: Any) -> bytes:
    return encode(Image.fromarray(gradient(width, height)), "JPEG", quality=95, **params)


def png_bytes(image: Image.Image | None = None) -> bytes:
    return encode(image if image is not None else Image.fromarray(gradient(40, 30)), "PNG")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
