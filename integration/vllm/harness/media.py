"""Local stand-ins for the media vLLM's tests download, built in code.

vLLM's tests read their assets from its public bucket (``get_vllm_public_assets``: images
under ``vision_model_images/``, audio and video under ``multimodal_asset/``) and one video
from a Hugging Face dataset (``download_video_asset``). Each stand-in keeps what the tests
rely on: the container and codec, the mode of an image, the sample rate of a clip, an
audio track in the video the audio tests read; the content is small and deterministic.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf
from PIL import Image, ImageDraw

__all__ = ["BUCKET", "HF_VIDEOS", "build"]


def _gradient(width: int, height: int, seed: int) -> npt.NDArray[np.uint8]:
    """A smooth RGB picture (no black pixels) with a little texture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.RandomState(seed)
    r = 40 + 180 * x / max(width - 1, 1)
    g = 40 + 180 * y / max(height - 1, 1)
    b = 130 + 80 * np.sin((x + y) / 23.0)
    rgb = np.stack([r, g, b], axis=-1) + rng.uniform(-6, 6, size=(height, width, 3))
    return np.clip(rgb, 16, 239).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def boardwalk_jpeg() -> bytes:
    """An RGB JPEG (the landscape photograph)."""
    image = Image.fromarray(_gradient(320, 213, 1), "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 120, 280, 150), fill=(120, 90, 60))
    return _save(image, "JPEG", quality=90)


def grayscale_palette_png() -> bytes:
    """An 8-bit palette PNG whose palette is grey levels."""
    levels = _gradient(256, 128, 2).mean(axis=-1).astype(np.uint8)
    image = Image.fromarray(levels, "L").convert("P")
    image.putpalette([v for level in range(256) for v in (level, level, level)])
    return _save(image, "PNG")


def venn_png() -> bytes:
    """An RGB PNG of three overlapping discs on white (the diagram)."""
    image = Image.new("RGB", (256, 192), (255, 255, 255))
    layer = np.zeros((192, 256, 3), dtype=np.int32)
    for index, (cx, cy) in enumerate(((96, 80), (160, 80), (128, 128))):
        disc = Image.new("L", (256, 192), 0)
        ImageDraw.Draw(disc).ellipse((cx - 56, cy - 56, cx + 56, cy + 56), fill=255)
        layer[..., index] += np.asarray(disc) > 0
    pixels = np.where(layer > 0, 255 - 160 * (1 - layer), 255).clip(0, 255)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    return _save(image, "PNG")


def rgba_png() -> bytes:
    """An RGBA PNG whose alpha runs from transparent to opaque."""
    rgb = _gradient(200, 150, 3)
    alpha = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))
    alpha[60:90, :] = 255
    image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return _save(image, "PNG")


def stop_sign_jpeg() -> bytes:
    """An RGB JPEG (the street photograph the video tests turn into clips)."""
    image = Image.fromarray(_gradient(320, 240, 4), "RGB")
    ImageDraw.Draw(image).regular_polygon((160, 110, 60), 8, fill=(200, 30, 40))
    return _save(image, "JPEG", quality=95)


def _speech_like(seconds: float, rate: int, seed: int) -> npt.NDArray[np.float32]:
    """A mono clip of gliding tones under a syllable-like envelope."""
    t = np.arange(int(seconds * rate), dtype=np.float64) / rate
    rng = np.random.RandomState(seed)
    pitch = 160 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    noise = rng.normal(0, 0.02, size=t.shape)
    return (0.25 * voice * envelope + noise).astype(np.float32)


def vorbis_clip(seed: int) -> Callable[[], bytes]:
    """A 16 kHz mono Ogg Vorbis clip of about three seconds."""

    def make() -> bytes:
        out = io.BytesIO()
        sf.write(out, _speech_like(3.0, 16000, seed), 16000, format="OGG", subtype="VORBIS")
        return out.getvalue()

    return make


def _frames(count: int, width: int, height: int) -> list[npt.NDArray[np.uint8]]:
    base = _gradient(width, height, 5)
    return [np.roll(base, 3 * i, axis=1) for i in range(count)]


def _encode_video(
    fmt: str,
    codec: str,
    *,
    frames: int,
    fps: int,
    size: tuple[int, int],
    audio_rate: int | None = None,
) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        audio = None
        if audio_rate is not None:
            audio = container.add_stream("aac", rate=audio_rate)
            audio.layout = "mono"
        for picture in _frames(frames, *size):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if audio is not None and audio_rate is not None:
            samples = _speech_like(frames / fps, audio_rate, 6)
            block = 1024
            for start in range(0, len(samples) - block + 1, block):
                chunk = av.AudioFrame.from_ndarray(
                    samples[None, start : start + block], format="flt", layout="mono"
                )
                chunk.sample_rate = audio_rate
                chunk.pts = start
                container.mux(audio.encode(chunk))
            container.mux(audio.encode())
    return out.getvalue()


def traffic_mp4() -> bytes:
    """An H.264 MP4, 2 s at 30 fps."""
    return _encode_video("mp4", "h264", frames=60, fps=30, size=(160, 96))


def vtest_avi() -> bytes:
    """An MPEG-4 part 2 AVI (the codec of OpenCV's sample), 4 s at 10 fps."""
    return _encode_video("avi", "mpeg4", frames=40, fps=10, size=(160, 120))


def demo_mp4_with_audio() -> bytes:
    """An H.264 MP4 with an AAC mono track at 16 kHz, 3 s at 10 fps."""
    return _encode_video("mp4", "h264", frames=30, fps=10, size=(128, 96), audio_rate=16000)


#: Bucket keys (``<prefix>/<file>``) and what answers them.
BUCKET: Mapping[str, Callable[[], bytes]] = {
    "vision_model_images/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg": boardwalk_jpeg,
    "vision_model_images/Grayscale_8bits_palette_sample_image.png": grayscale_palette_png,
    "vision_model_images/1280px-Venn_diagram_rgb.svg.png": venn_png,
    "vision_model_images/RGBA_comp.png": rgba_png,
    "vision_model_images/stop_sign.jpg": stop_sign_jpeg,
    "multimodal_asset/mary_had_lamb.ogg": vorbis_clip(7),
    "multimodal_asset/winning_call.ogg": vorbis_clip(8),
    "multimodal_asset/slow_traffic_small.mp4": traffic_mp4,
    "multimodal_asset/vtest.avi": vtest_avi,
}

#: Files of the Hugging Face video dataset, placed in vLLM's asset cache beforehand.
HF_VIDEOS: Mapping[str, Callable[[], bytes]] = {
    "sample_demo_1.mp4": demo_mp4_with_audio,
}


def build(makers: Mapping[str, Callable[[], bytes]]) -> dict[str, bytes]:
    """Every stand-in of ``makers``, built."""
    return {name: make() for name, make in makers.items()}
