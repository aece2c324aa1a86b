"""Audio built in code for the audio tests: tones written with soundfile and PyAV.

Tests reach the builders through the ``kit`` fixture; ``format_name`` and
``lossless_name`` parametrize a test over every accepted format (or the lossless ones).
"""

from __future__ import annotations

import io
import types
from collections.abc import Callable

import av
import numpy as np
import pytest
import soundfile as sf

Builder = Callable[..., bytes]

#: (left, right) tone frequencies in Hz; far apart, so a wrong channel mix shows.
LEFT_HZ, RIGHT_HZ = 440.0, 1000.0


def tone(seconds: float, rate: int, channels: int = 2, amplitude: float = 0.3) -> np.ndarray:
    """``(frames, channels)`` float32: a 440 Hz sine left, 1000 Hz right, more alternate."""
    t = np.arange(round(seconds * rate)) / rate
    freqs = [LEFT_HZ if c % 2 == 0 else RIGHT_HZ for c in range(channels)]
    return np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(
        np.float32
    )


def soundfile_bytes(
    audio: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    """Encode with libsndfile, in blocks (some of its encoders fail on one big write)."""
    buffer = io.BytesIO()
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with sf.SoundFile(buffer, "w", rate, channels, format=fmt, subtype=subtype) as snd:
        for start in range(0, len(audio), 8192):
            snd.write(audio[start : start + 8192])
    return buffer.getvalue()


def pyav_bytes(
    audio: np.ndarray,
    rate: int,
    container: str,
    codec: str,
    *,
    video_codec: str | None = None,
) -> bytes:
    """Encode with FFmpeg; with ``video_codec`` a small video track comes first."""
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


def dominant_hz(audio: np.ndarray, rate: float) -> float:
    """The frequency with the most energy."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def band_energy(audio: np.ndarray, rate: float, hz: float, width: float = 30.0) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    return float(spectrum[(freqs > hz - width) & (freqs < hz + width)].sum())


#: name -> (builder(audio, rate) -> bytes, rate to build at, lossless?)
FORMATS: dict[str, tuple[Callable[[np.ndarray, int], bytes], int, bool]] = {
    "wav-pcm16": (lambda a, r: soundfile_bytes(a, r, "WAV", "PCM_16"), 16000, True),
    "wav-float": (lambda a, r: soundfile_bytes(a, r, "WAV", "FLOAT"), 22050, True),
    "aiff": (lambda a, r: soundfile_bytes(a, r, "AIFF", "PCM_16"), 16000, True),
    "flac": (lambda a, r: soundfile_bytes(a, r, "FLAC", "PCM_24"), 44100, True),
    "mp3": (lambda a, r: soundfile_bytes(a, r, "MP3", "MPEG_LAYER_III"), 44100, False),
    "ogg-vorbis": (lambda a, r: soundfile_bytes(a, r, "OGG", "VORBIS"), 44100, False),
    "ogg-opus": (lambda a, r: pyav_bytes(a, r, "ogg", "libopus"), 48000, False),
    "aac-adts": (lambda a, r: pyav_bytes(a, r, "adts", "aac"), 44100, False),
    "m4a-aac": (lambda a, r: pyav_bytes(a, r, "ipod", "aac"), 44100, False),
    "webm-opus": (lambda a, r: pyav_bytes(a, r, "webm", "libopus"), 48000, False),
    "mkv-flac": (lambda a, r: pyav_bytes(a, r, "matroska", "flac"), 32000, True),
    "mp4-video-aac": (
        lambda a, r: pyav_bytes(a, r, "mp4", "aac", video_codec="mpeg4"),
        44100,
        False,
    ),
    "mkv-video-vorbis": (
        lambda a, r: pyav_bytes(a, r, "matroska", "vorbis", video_codec="mpeg4"),
        44100,
        False,
    ),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "format_name" in metafunc.fixturenames:
        metafunc.parametrize("format_name", sorted(FORMATS))
    if "lossless_name" in metafunc.fixturenames:
        metafunc.parametrize(
            "lossless_name", sorted(name for name, spec in FORMATS.items() if spec[2])
        )


@pytest.fixture(scope="session")
def kit() -> types.SimpleNamespace:
    """The builders and measures above, for test modules."""
    return types.SimpleNamespace(
        FORMATS=FORMATS,
        LEFT_HZ=LEFT_HZ,
        RIGHT_HZ=RIGHT_HZ,
        tone=tone,
        soundfile_bytes=soundfile_bytes,
        pyav_bytes=pyav_bytes,
        dominant_hz=dominant_hz,
        band_energy=band_energy,
    )
