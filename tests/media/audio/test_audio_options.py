"""AudioMediaIO options, resampling, the duration cap, base64 and files, encode_base64."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from mediagate import DecodeError, MediaPolicy, OptionError, TooLargeError
from mediagate._media.audio import AudioMediaIO
from mediagate._media.audio import decode as decode_module
from mediagate._media.audio.resample import SegmentResampler


@pytest.fixture
def wav_2s(kit: SimpleNamespace) -> bytes:
    """Two seconds of a stereo tone at 44.1 kHz, PCM_16."""
    return kit.soundfile_bytes(kit.tone(2.0, 44100), 44100, "WAV", "PCM_16")


@pytest.mark.parametrize("name", ["wav-pcm16", "mp3", "ogg-opus", "m4a-aac"])
def test_sample_rate_resamples_and_keeps_pitch(kit: SimpleNamespace, name: str) -> None:
    build, rate, _ = kit.FORMATS[name]
    data = build(kit.tone(0.5, rate, channels=1), rate)
    audio, sr = AudioMediaIO(sample_rate=16000).load_bytes(data)

    assert sr == 16000 and isinstance(sr, int)
    assert audio.dtype == np.float32
    assert abs(len(audio) / 16000 - 0.5) < 0.06
    assert kit.dominant_hz(audio, sr) == pytest.approx(kit.LEFT_HZ, abs=5)


def test_resampling_is_soxr_hq_on_the_mono_mix(wav_2s: bytes) -> None:
    native, rate = AudioMediaIO().load_bytes(wav_2s)
    resampled, _ = AudioMediaIO(sample_rate=16000).load_bytes(wav_2s)
    expected = soxr.resample(native, rate, 16000, quality="HQ")
    assert resampled.shape == expected.shape
    np.testing.assert_allclose(resampled, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["flac", "m4a-aac"])
def test_long_audio_resampled_while_decoding_is_the_same_on_any_core_count(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Fifteen seconds: segments are resampled on a helper thread while decoding goes
    # on, or inline where there is one core. The cut points depend on the rates only,
    # so both give the same samples, equal to one-pass resampling up to float32 rounding.
    build, rate, _ = kit.FORMATS[name]
    data = build(kit.tone(15.0, rate), rate)
    native, rate = AudioMediaIO().load_bytes(data)
    real_chunk = soxr.ResampleStream.resample_chunk

    def resample(helpers: bool) -> npt.NDArray[np.float32]:
        used: list[str] = []

        def resample_chunk(self: Any, block: Any, last: bool = False) -> Any:
            used.append(threading.current_thread().name)
            return real_chunk(self, block, last)

        with ThreadPoolExecutor(1, thread_name_prefix="test-helper") as pool:
            monkeypatch.setattr(decode_module, "helper_pool", lambda: pool if helpers else None)
            monkeypatch.setattr(soxr.ResampleStream, "resample_chunk", resample_chunk)
            audio, sr = AudioMediaIO(sample_rate=16000).load_bytes(data)
            monkeypatch.undo()
        assert sr == 16000
        assert len(used) >= 3  # segment by segment
        assert any(t.startswith("test-helper") for t in used) == helpers
        return audio

    results = {helpers: resample(helpers) for helpers in (True, False)}
    np.testing.assert_array_equal(results[True], results[False])
    expected = soxr.resample(native, rate, 16000, quality="HQ")
    assert results[True].shape == expected.shape
    np.testing.assert_allclose(results[True], expected, rtol=0, atol=1e-6)


def test_concurrent_resampling_requests_give_what_each_gives_alone(kit: SimpleNamespace) -> None:
    # Requests share the helper threads; each keeps its own segments and output, and
    # thread timing changes no sample.
    build, rate, _ = kit.FORMATS["flac"]
    clips = [build(kit.tone(12.0, rate, amplitude=0.1 * (k + 1)), rate) for k in range(3)]
    io_ = AudioMediaIO(sample_rate=16000)
    alone = [io_.load_bytes(clip)[0] for clip in clips]
    with ThreadPoolExecutor(6) as requests:
        together = list(requests.map(lambda k: io_.load_bytes(clips[k % 3])[0], range(12)))
    for k, audio in enumerate(together):
        np.testing.assert_array_equal(audio, alone[k % 3])


@pytest.mark.parametrize(
    "rate,target,seconds",
    [
        (44100, 16000, 20),
        (48000, 16000, 20),
        (22050, 16000, 20),
        (16000, 44100, 20),
        (96000, 8000, 20),
        (44100, 16001, 20),  # samples line up once a second: one stream
    ],
)
@pytest.mark.parametrize("steps", [1, 7, 40])
def test_segmented_resampling_matches_one_pass_at_any_rate_pair(
    rate: int, target: int, seconds: int, steps: int
) -> None:
    # Segments are cut where input and output samples line up; their streams must
    # join with no gap, no repeat and no jump, however the decoder reports progress.
    signal = np.random.default_rng(7).uniform(-0.5, 0.5, rate * seconds).astype(np.float32)
    outputs = []
    for pool in (ThreadPoolExecutor(1), None):
        with SegmentResampler(rate, target, pool) as resampler:
            for k in range(1, steps):
                resampler.feed(signal, len(signal) * k // steps)
            outputs.append(resampler.finish(signal))
        if pool is not None:
            pool.shutdown()
    np.testing.assert_array_equal(outputs[0], outputs[1])
    expected = soxr.resample(signal, rate, target, quality="HQ")
    assert outputs[0].shape == expected.shape
    np.testing.assert_allclose(outputs[0], expected, rtol=0, atol=1e-5)


def test_a_segment_failing_on_a_helper_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from mediagate._media.audio import resample as resample_module

    real = resample_module._resample

    def fails_on_helpers(block: Any, rate: int, target: int) -> Any:
        if threading.current_thread().name.startswith("test-helper"):
            raise RuntimeError("soxr failed")
        return real(block, rate, target)

    monkeypatch.setattr(resample_module, "_resample", fails_on_helpers)
    signal = np.zeros(44100 * 20, dtype=np.float32)
    with ThreadPoolExecutor(1, thread_name_prefix="test-helper") as pool:
        with SegmentResampler(44100, 16000, pool) as resampler:
            resampler.feed(signal, len(signal))
            pool.submit(lambda: None).result()  # the helper took a segment and failed
            with pytest.raises(RuntimeError, match="soxr failed"):
                resampler.finish(signal)


def test_requesting_the_native_rate_changes_nothing(wav_2s: bytes) -> None:
    native, _ = AudioMediaIO().load_bytes(wav_2s)
    same, sr = AudioMediaIO(sample_rate=44100).load_bytes(wav_2s)
    assert sr == 44100
    np.testing.assert_array_equal(same, native)


@pytest.mark.parametrize(
    "options,key",
    [
        ({"sample_rat": 16000}, "sample_rat"),
        ({"sample_rate": "16000"}, "sample_rate"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 10_000_000}, "sample_rate"),
        ({"max_seconds": -1}, "max_seconds"),
        ({"max_seconds": float("inf")}, "max_seconds"),
        ({"max_seconds": "5"}, "max_seconds"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as info:
        AudioMediaIO(**options)  # type: ignore[arg-type]
    assert info.value.option == key
    assert isinstance(info.value, ValueError)


def test_merged_request_options_are_checked_too() -> None:
    merged = AudioMediaIO.merge_kwargs({"sample_rate": 16000}, {"max_seconds": 3})
    io = AudioMediaIO(**merged)
    assert (io.sample_rate, io.max_seconds) == (16000, 3)


def test_duration_over_the_policy_cap_is_refused(wav_2s: bytes) -> None:
    with pytest.raises(TooLargeError) as info:
        AudioMediaIO(policy=MediaPolicy(max_audio_seconds=1.5)).load_bytes(wav_2s)
    assert info.value.limit == "max_audio_seconds"
    assert info.value.maximum == 1.5
    assert "max_audio_seconds" in str(info.value)


def test_max_seconds_lowers_the_cap(wav_2s: bytes) -> None:
    with pytest.raises(TooLargeError):
        AudioMediaIO(max_seconds=1.0).load_bytes(wav_2s)


def test_max_seconds_cannot_raise_the_cap(wav_2s: bytes) -> None:
    io = AudioMediaIO(max_seconds=3600, policy=MediaPolicy(max_audio_seconds=1.5))
    assert io.max_seconds == 1.5
    with pytest.raises(TooLargeError):
        io.load_bytes(wav_2s)


def test_payload_over_max_bytes_is_refused_before_decoding(wav_2s: bytes) -> None:
    with pytest.raises(TooLargeError) as info:
        AudioMediaIO(policy=MediaPolicy(max_bytes=1000)).load_bytes(wav_2s)
    assert info.value.limit == "max_bytes"


def test_load_base64_and_load_file(wav_2s: bytes, tmp_path: Path) -> None:
    io = AudioMediaIO()
    expected, _ = io.load_bytes(wav_2s)
    from_b64, sr = io.load_base64("audio/wav", base64.b64encode(wav_2s).decode())
    path = tmp_path / "a.wav"
    path.write_bytes(wav_2s)
    from_file, _ = io.load_file(path)
    assert sr == 44100
    np.testing.assert_array_equal(from_b64, expected)
    np.testing.assert_array_equal(from_file, expected)


def test_invalid_base64_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        AudioMediaIO().load_base64("audio/wav", "UklGR!!!not base64")


def test_encode_base64_wav_round_trips_exactly(kit: SimpleNamespace) -> None:
    io = AudioMediaIO()
    mono = kit.tone(0.3, 16000, channels=1)[:, 0]
    audio, sr = io.load_base64("audio/wav", io.encode_base64((mono, 16000)))
    assert sr == 16000
    np.testing.assert_array_equal(audio, mono)


@pytest.mark.parametrize("audio_format", ["FLAC", "OGG", "MP3"])
def test_encode_base64_other_formats_round_trip(kit: SimpleNamespace, audio_format: str) -> None:
    io = AudioMediaIO()
    stereo = kit.tone(0.5, 44100)
    encoded = io.encode_base64((stereo, 44100), audio_format=audio_format)
    audio, sr = io.load_base64("audio/x", encoded)
    assert sr == 44100
    assert abs(len(audio) / sr - 0.5) < 0.06
    ratio = kit.band_energy(audio, sr, kit.LEFT_HZ) / kit.band_energy(audio, sr, kit.RIGHT_HZ)
    assert 0.5 < ratio < 2


def test_encode_base64_refuses_unknown_formats_and_bad_input() -> None:
    io = AudioMediaIO()
    with pytest.raises(OptionError) as info:
        io.encode_base64((np.zeros(10, np.float32), 16000), audio_format="AAC")
    assert info.value.option == "audio_format"
    with pytest.raises(ValueError):
        io.encode_base64((np.zeros((2, 2, 2), np.float32), 16000))
    with pytest.raises(ValueError):
        io.encode_base64((np.zeros(10, np.float32), 0))
