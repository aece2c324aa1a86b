"""Audio formats and measures for the audio tests; the tones are ``mediagate._build``'s.

Tests reach the builders through the ``kit`` fixture; ``format_name`` and
``lossless_name`` parametrize a test over every accepted format (or the lossless ones).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
import pytest

from builders import LEFT_HZ, RIGHT_HZ, pyav_audio_bytes, soundfile_bytes, tone


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
    "ogg-opus": (lambda a, r: pyav_audio_bytes(a, r, "ogg", "libopus"), 48000, False),
    "aac-adts": (lambda a, r: pyav_audio_bytes(a, r, "adts", "aac"), 44100, False),
    "m4a-aac": (lambda a, r: pyav_audio_bytes(a, r, "ipod", "aac"), 44100, False),
    "webm-opus": (lambda a, r: pyav_audio_bytes(a, r, "webm", "libopus"), 48000, False),
    "mkv-flac": (lambda a, r: pyav_audio_bytes(a, r, "matroska", "flac"), 32000, True),
    "mp4-video-aac": (
        lambda a, r: pyav_audio_bytes(a, r, "mp4", "aac", video_codec="mpeg4"),
        44100,
        False,
    ),
    "mkv-video-vorbis": (
        lambda a, r: pyav_audio_bytes(a, r, "matroska", "vorbis", video_codec="mpeg4"),
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
        pyav_audio_bytes=pyav_audio_bytes,
        dominant_hz=dominant_hz,
        band_energy=band_energy,
    )
