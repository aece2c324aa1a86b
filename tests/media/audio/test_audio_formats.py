"""Every accepted container and codec decodes to mono float32 at its native rate."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from mediagate import AudioMediaIO, MediaPolicy


def test_stereo_decodes_to_mono_at_native_rate(kit: SimpleNamespace, format_name: str) -> None:
    build, rate, _ = kit.FORMATS[format_name]
    audio, sr = AudioMediaIO().load_bytes(build(kit.tone(0.5, rate), rate))

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert sr == rate and isinstance(sr, int)
    assert abs(len(audio) / sr - 0.5) < 0.06  # codec priming and padding only
    # Both channels reach the mono mix in comparable measure.
    ratio = kit.band_energy(audio, sr, kit.LEFT_HZ) / kit.band_energy(audio, sr, kit.RIGHT_HZ)
    assert 0.25 < ratio < 4
    assert np.abs(audio).max() < 0.5  # averaged, not summed


def test_lossless_formats_give_the_channel_average(
    kit: SimpleNamespace, lossless_name: str
) -> None:
    build, rate, _ = kit.FORMATS[lossless_name]
    source = kit.tone(0.25, rate)
    audio, _ = AudioMediaIO().load_bytes(build(source, rate))

    expected = source.mean(axis=1)
    assert audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=2e-4)


@pytest.mark.parametrize("name", ["wav-pcm16", "flac", "mp3", "ogg-opus", "m4a-aac"])
def test_mono_sources_stay_one_tone(kit: SimpleNamespace, name: str) -> None:
    build, rate, _ = kit.FORMATS[name]
    audio, sr = AudioMediaIO().load_bytes(build(kit.tone(0.5, rate, channels=1), rate))

    assert audio.ndim == 1
    assert kit.dominant_hz(audio, sr) == pytest.approx(kit.LEFT_HZ, abs=5)


def test_many_channels_are_averaged(kit: SimpleNamespace) -> None:
    source = kit.tone(0.1, 22050, channels=6)
    audio, _ = AudioMediaIO().load_bytes(kit.soundfile_bytes(source, 22050, "WAV", "FLOAT"))
    np.testing.assert_allclose(audio, source.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "PCM_32", "ULAW"])
def test_integer_pcm_is_scaled_to_unit_range(kit: SimpleNamespace, subtype: str) -> None:
    source = kit.tone(0.1, 8000, channels=1)
    audio, _ = AudioMediaIO().load_bytes(kit.soundfile_bytes(source, 8000, "WAV", subtype))
    np.testing.assert_allclose(audio, source[:, 0], atol=0.02)


@pytest.mark.parametrize(
    "fmt,subtype",
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("AIFF", "PCM_S8"),
        ("FLAC", "PCM_16"),
        ("FLAC", "PCM_24"),
    ],
)
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_integer_pcm_gives_exactly_libsndfiles_float_samples(
    kit: SimpleNamespace, fmt: str, subtype: str, channels: int
) -> None:
    # Integer PCM is read as integers: the mix must still equal, bit for bit, the
    # average of the float samples libsndfile itself converts to.
    data = kit.soundfile_bytes(kit.tone(0.2, 22050, channels=channels), 22050, fmt, subtype)
    floats, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    expected = floats[:, 0].copy()
    for c in range(1, channels):
        expected += floats[:, c]
    expected *= np.float32(1 / channels)

    audio, _ = AudioMediaIO().load_bytes(data)
    np.testing.assert_array_equal(audio, expected)


@pytest.mark.parametrize("container,codec", [("wav", "pcm_s16le"), ("wav", "pcm_u8")])
def test_integer_pcm_through_ffmpeg_is_scaled_too(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, container: str, codec: str
) -> None:
    from mediagate._media.audio import decode

    def refuse(*args: object) -> None:
        raise RuntimeError("libsndfile unavailable")

    monkeypatch.setattr(decode, "_decode_soundfile", refuse)
    source = kit.tone(0.1, 8000)
    audio, sr = AudioMediaIO().load_bytes(kit.pyav_audio_bytes(source, 8000, container, codec))
    assert sr == 8000
    np.testing.assert_allclose(audio, source.mean(axis=1), atol=0.02)


def test_audio_at_the_cap_decodes(kit: SimpleNamespace) -> None:
    build, rate, _ = kit.FORMATS["wav-pcm16"]
    data = build(kit.tone(1.0, rate), rate)
    audio, _ = AudioMediaIO(policy=MediaPolicy(max_audio_seconds=1.0)).load_bytes(data)
    assert len(audio) == rate
