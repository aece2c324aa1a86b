"""Media built in code for the demo, the test suite and the benchmarks.

Images (a gradient whose pixels show orientation errors, encoded in any Pillow format),
audio (a stereo tone, written by libsndfile or FFmpeg), ``data:`` URLs, and short video
clips whose frame ``i`` carries its number: eight 8x16 blocks across the top, black for
0 and white for 1, on a grey background. Lossy codecs move block averages by a few
levels, never across the middle, so the number survives any of them.

Nothing in ``import mediagate`` imports this module; PyAV and libsndfile are imported
only by the builders that use them.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "CLIP_HEIGHT",
    "CLIP_WIDTH",
    "LEFT_HZ",
    "RIGHT_HZ",
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

#: (left, right) tone frequencies in Hz; far apart, so a wrong channel mix shows.
LEFT_HZ, RIGHT_HZ = 440.0, 1000.0

#: The default size of an :func:`encode_clip` frame.
CLIP_WIDTH, CLIP_HEIGHT = 64, 48


# -- images ------------------------------------------------------------------------------


def gradient(width: int, height: int) -> npt.NDArray[np.uint8]:
    """An RGB image whose pixels differ from their mirror images, so orientation errors show."""
    y, x = np.mgrid[0:height, 0:width]
    pixels: npt.NDArray[np.uint8] = np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * 7 + y * 3) % 256],
        axis=-1,
    ).astype(np.uint8)
    return pixels


def image_bytes(image: Image.Image | npt.NDArray[Any], fmt: str, **params: Any) -> bytes:
    """``image`` (a Pillow image or an array Pillow reads) saved in ``fmt`` with ``params``."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, **params: Any) -> bytes:
    """A :func:`gradient` JPEG at quality 95 (``params`` go to Pillow)."""
    return image_bytes(gradient(width, height), "JPEG", quality=95, **params)


def png_bytes(image: Image.Image | None = None) -> bytes:
    """``image`` as PNG; by default a 40x30 :func:`gradient`."""
    return image_bytes(image if image is not None else gradient(40, 30), "PNG")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    """A base64 ``data:`` URL holding ``data``."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


# -- audio -------------------------------------------------------------------------------


def tone(
    seconds: float, rate: int, channels: int = 2, amplitude: float = 0.3
) -> npt.NDArray[np.float32]:
    """``(frames, channels)`` float32: a 440 Hz sine left, 1000 Hz right, more alternate."""
    t = np.arange(round(seconds * rate)) / rate
    freqs = [LEFT_HZ if c % 2 == 0 else RIGHT_HZ for c in range(channels)]
    audio: npt.NDArray[np.float32] = np.stack(
        [amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1
    ).astype(np.float32)
    return audio


def soundfile_bytes(
    audio: npt.NDArray[Any], rate: int, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    """Encode with libsndfile, in blocks (some of its encoders fail on one big write)."""
    import soundfile

    buffer = io.BytesIO()
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with soundfile.SoundFile(buffer, "w", rate, channels, format=fmt, subtype=subtype) as snd:
        for start in range(0, len(audio), 8192):
            snd.write(audio[start : start + 8192])
    return buffer.getvalue()


def pyav_audio_bytes(
    audio: npt.NDArray[Any],
    rate: int,
    container: str,
    codec: str,
    *,
    video_codec: str | None = None,
) -> bytes:
    """Encode ``(frames, channels)`` audio with FFmpeg; ``video_codec`` adds a video track."""
    import av

    channels = audio.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        video = None
        if video_codec is not None:
            video = out.add_stream(video_codec, rate=10)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        planar = np.ascontiguousarray(audio.T)
        step = 1024
        for start in range(0, len(audio), step):
            # PyAV converts to the encoder's own sample format.
            block = np.ascontiguousarray(planar[:, start : start + step])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if video is not None:
            seconds = len(audio) / rate
            for index in range(max(1, int(seconds * 10))):
                image = np.full((32, 32, 3), (index * 20) % 256, dtype=np.uint8)
                vframe = av.VideoFrame.from_ndarray(image, format="rgb24")
                vframe.pts = index
                for packet in video.encode(vframe):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
    return buffer.getvalue()


# -- video -------------------------------------------------------------------------------


def paint(number: int, width: int = CLIP_WIDTH, height: int = CLIP_HEIGHT) -> npt.NDArray[np.uint8]:
    """An RGB frame showing ``number`` (0..255) as eight black/white blocks."""
    image = np.full((height, width, 3), 128, np.uint8)
    for bit in range(8):
        image[0:16, bit * 8 : (bit + 1) * 8] = 255 if (number >> bit) & 1 else 0
    return image


def encode_clip(
    codec: str = "libx264",
    container: str = "mp4",
    frames: int = 60,
    *,
    rate: int = 30,
    gop: int | None = None,
    width: int = CLIP_WIDTH,
    height: int = CLIP_HEIGHT,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    pts: Sequence[int] | None = None,
    faststart: bool = False,
) -> bytes:
    """Encode ``frames`` painted frames; ``pts`` (in 1/1000 s) makes a variable rate.

    ``faststart`` puts an mp4's index before its data (FFmpeg needs a real file for it).
    """
    import av

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
                frame = av.VideoFrame.from_ndarray(paint(i % 256, width, height), format="rgb24")
                if pts is not None:
                    frame.pts = pts[i]
                    frame.time_base = Fraction(1, 1000)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        data: bytes = target.read_bytes() if faststart else target.getvalue()
        return data
