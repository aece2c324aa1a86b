"""Hostile video and audio built in code, and the loads a spawned child runs on them.

The builders write the bytes with ``struct`` (so headers can lie) and are shared with
``test_av_bombs``. Each ``run_*`` function is called by ``security.childproc.run_limited``
in a child process: it feeds its bombs to the public API, checks that every one is
refused with the expected ``TooLargeError`` limit within its time bound (raising
``AssertionError`` otherwise), decodes a good file afterwards, and finally re-raises
the last bomb's error so the parent sees its class and limit.
"""

from __future__ import annotations

import base64
import functools
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import simplejpeg

from mediagate import AudioMediaIO, ImageMediaIO, MediaError, MediaPolicy, VideoMediaIO

MiB = 1 << 20

#: The decoded-output budget the bomb policies allow.
BOMB_DECODED_BYTES = 64 * MiB


def animated_gif(width: int, height: int, frames: int, *, delay: int = 1) -> bytes:
    """A GIF whose ``frames`` frames are one pixel each on a ``width`` x ``height`` canvas.

    Every frame costs 24 bytes, whatever the canvas: a decoder that composes full
    canvases does ``width * height`` work per frame.
    """
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # 2-entry global palette
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for index in range(frames):
        out += b"\x21\xf9\x04" + struct.pack("<BHB", 0x04, delay, 0) + b"\x00"
        out += b"\x2c" + struct.pack("<HHHHB", index % width, 0, 1, 1, 0)
        out += b"\x02\x02\x44\x01\x00"  # LZW: clear, pixel 0, end
    out += b"\x3b"
    return bytes(out)


def wav(
    rate: int,
    frames: int,
    *,
    tag: int = 1,
    channels: int = 1,
    bits: int = 16,
    declared: int | None = None,
) -> bytes:
    """A WAV of ``frames`` silent frames whose header says ``rate``, format ``tag`` and
    ``declared`` data bytes (default: the real count)."""
    block = channels * bits // 8
    data = bytes(frames * block)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def lying_jpeg(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header (SOF) claims ``width`` x ``height``."""
    real: bytes = simplejpeg.encode_jpeg(np.full((16, 16, 3), 99, np.uint8), quality=80)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = real.find(marker)
        if at >= 0:
            # SOF: marker, length (2), precision (1), height (2), width (2)
            return real[: at + 5] + struct.pack(">HH", height, width) + real[at + 9 :]
    raise AssertionError("no SOF marker in the JPEG")


def _expect(name: str, call: Callable[[], Any], limit: str, seconds: float) -> MediaError | None:
    """Run one bomb; ``None`` when it succeeded within ``seconds`` (``limit`` is then
    ``"decode_timeout"``, the only limit a clean result may replace)."""
    start = time.monotonic()
    try:
        call()
    except MediaError as exc:
        took = time.monotonic() - start
        if getattr(exc, "limit", None) != limit or took > seconds:
            raise AssertionError(
                f"{name}: {type(exc).__name__}(limit={getattr(exc, 'limit', None)}) "
                f"after {took:.2f} s, wanted limit={limit} within {seconds} s"
            ) from exc
        return exc
    took = time.monotonic() - start
    if limit != "decode_timeout" or took > seconds:
        raise AssertionError(f"{name}: returned after {took:.2f} s, wanted limit={limit}")
    return None


def _finish(errors: list[MediaError | None], good: Callable[[], Any]) -> None:
    good()
    refused = [error for error in errors if error is not None]
    if refused:
        raise refused[-1]


def _good_video() -> None:
    frames, _ = VideoMediaIO(ImageMediaIO(), 2).load_bytes(animated_gif(32, 32, 4))
    assert frames.shape == (2, 32, 32, 3)


def _good_audio() -> None:
    audio, rate = AudioMediaIO(sample_rate=16000).load_bytes(wav(8000, 800))
    assert rate == 16000 and len(audio) == 1600


def run_video_canvas_bombs(jpeg_sequence: str) -> None:
    """Huge canvases times frames (pyav, opencv, video/jpeg): each refused from the
    declared size, before the frames array exists."""
    policy = MediaPolicy(max_decoded_bytes=BOMB_DECODED_BYTES)
    canvas = animated_gif(8000, 8000, 32)
    errors = [
        _expect(
            f"gif canvas ({backend})",
            functools.partial(
                VideoMediaIO(ImageMediaIO(), 32, video_backend=backend, policy=policy).load_bytes,
                canvas,
            ),
            "max_decoded_bytes",
            1.0,
        )
        for backend in ("pyav", "opencv")
    ]
    errors.append(
        _expect(
            "video/jpeg sequence",
            lambda: VideoMediaIO(ImageMediaIO(), 32, policy=policy).load_base64(
                "video/jpeg", jpeg_sequence
            ),
            "max_decoded_bytes",
            1.0,
        )
    )
    _finish(errors, _good_video)


def run_video_frame_flood(timeout: float) -> None:
    """400 one-pixel frames on a 4000x4000 canvas, 2 frames asked for: each backend
    ends within ``timeout`` + 1 s, at its deadline or with the frames."""
    policy = MediaPolicy(max_decoded_bytes=2 * BOMB_DECODED_BYTES, decode_timeout=timeout)
    flood = animated_gif(4000, 4000, 400)
    errors = [
        _expect(
            f"gif frame flood ({backend})",
            functools.partial(
                VideoMediaIO(ImageMediaIO(), 2, video_backend=backend, policy=policy).load_bytes,
                flood,
            ),
            "decode_timeout",
            timeout + 1.0,
        )
        for backend in ("pyav", "opencv")
    ]
    _finish(errors, _good_video)


def run_audio_output_bombs(unframed: bytes) -> None:
    """Tiny audio asked for at 384 kHz: refused by the output budget, from the header
    (1 Hz WAV, a WAV with an impossible data size) or as the buffer grows (``unframed``:
    audio whose container states no length)."""
    policy = MediaPolicy(max_decoded_bytes=BOMB_DECODED_BYTES)
    inputs = {
        "1 Hz WAV": wav(1, 600),
        "1 Hz WAV, lying data size": wav(1, 600, declared=0xFFFFFFFF),
        "60 s at 1 kHz": wav(1000, 60_000),
        "no declared length": unframed,
    }
    errors = [
        _expect(
            name,
            functools.partial(AudioMediaIO(sample_rate=384_000, policy=policy).load_bytes, data),
            "max_decoded_bytes",
            1.0,
        )
        for name, data in inputs.items()
    ]
    _finish(errors, _good_audio)


def jpeg_sequence(width: int, height: int, frames: int) -> str:
    """A ``video/jpeg`` payload: ``frames`` copies of a JPEG claiming ``width`` x ``height``."""
    part = base64.b64encode(lying_jpeg(width, height)).decode("ascii")
    return ",".join([part] * frames)
