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

from mediagate import AudioMediaIO, DecodeError, MediaPolicy, OptionError, TooLargeError
from mediagate._media.audio import decode as decode_module
from mediagate._media.audio.resample import StreamResampler


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
    np.testing.assert_array_equal(resampled, expected)


@pytest.mark.parametrize("name", ["flac", "m4a-aac"])
def test_long_audio_resampled_while_decoding_is_the_same_on_any_core_count(
    kit: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Fifteen seconds: the stream is fed on a helper thread while decoding goes on, or
    # inline where there is one core. Both give one-pass resampling, sample for sample.
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
        assert len(used) >= 2  # fed as the decoder goes, not only once at the end
        assert any(t.startswith("test-helper") for t in used) == helpers
        return audio

    expected = soxr.resample(native, rate, 16000, quality="HQ")
    for helpers in (True, False):
        np.testing.assert_array_equal(resample(helpers), expected)


def test_concurrent_resampling_requests_give_what_each_gives_alone(kit: SimpleNamespace) -> None:
    # Requests share the helper threads; each keeps its own stream and output, and
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
    "rate,target",
    [(44100, 16000), (48000, 16000), (22050, 16000), (16000, 44100), (96000, 8000), (44100, 16001)],
)
@pytest.mark.parametrize("steps", [1, 7, 40, 333])
def test_resampling_while_decoding_equals_one_pass_however_progress_comes(
    rate: int, target: int, steps: int
) -> None:
    # The decoder reports progress at its own block boundaries and the helper takes up
    # whatever has piled up: the output must not depend on either.
    signal = np.random.default_rng(7).uniform(-0.5, 0.5, rate * 20).astype(np.float32)
    expected = soxr.resample(signal, rate, target, quality="HQ")
    cuts = np.random.default_rng(steps).integers(0, len(signal), steps - 1)
    for pool in (ThreadPoolExecutor(1), None):
        with StreamResampler(rate, target, pool) as resampler:
            for finished in sorted(cuts):
                resampler.feed(signal, int(finished))
            np.testing.assert_array_equal(resampler.finish(signal), expected)
        if pool is not None:
            pool.shutdown()


def test_a_busy_helper_pool_does_not_hold_up_the_caller() -> None:
    # Every helper is busy with other work: the caller resamples what its queued run
    # would have done, and does not wait for the pool.
    signal = np.random.default_rng(3).uniform(-0.5, 0.5, 44100 * 5).astype(np.float32)
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(release.wait, 5)
        with StreamResampler(44100, 16000, pool) as resampler:
            resampler.feed(signal, len(signal) // 2)
            resampled = resampler.finish(signal)
        assert not busy.done()
        release.set()
    np.testing.assert_array_equal(resampled, soxr.resample(signal, 44100, 16000, quality="HQ"))


def test_a_chunk_failing_on_the_helper_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    real_chunk = soxr.ResampleStream.resample_chunk

    def fails_on_helpers(self: Any, block: Any, last: bool = False) -> Any:
        if threading.current_thread().name.startswith("test-helper"):
            raise RuntimeError("soxr failed")
        return real_chunk(self, block, last)

    monkeypatch.setattr(soxr.ResampleStream, "resample_chunk", fails_on_helpers)
    signal = np.zeros(44100 * 20, dtype=np.float32)
    with ThreadPoolExecutor(1, thread_name_prefix="test-helper") as pool:
        with StreamResampler(44100, 16000, pool) as resampler:
            resampler.feed(signal, len(signal) // 2)
            pool.submit(lambda: None).result()  # the helper took the chunk and failed
            resampler.feed(signal, len(signal))
            with pytest.raises(RuntimeError, match="soxr failed"):
                resampler.finish(signal)


def test_a_failed_decode_stops_the_helper_feeding(monkeypatch: pytest.MonkeyPatch) -> None:
    # Leaving the context after a failure tells a running helper to stop after the
    # chunk in hand, and waits for it: nothing runs on for a request that failed.
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real_chunk = soxr.ResampleStream.resample_chunk

    def slow_chunk(self: Any, block: Any, last: bool = False) -> Any:
        calls.append(len(block))
        started.set()
        release.wait(5)
        return real_chunk(self, block, last)

    monkeypatch.setattr(soxr.ResampleStream, "resample_chunk", slow_chunk)
    signal = np.zeros(44100 * 4, dtype=np.float32)
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(DecodeError):
            with StreamResampler(44100, 16000, pool) as resampler:
                resampler.feed(signal, 44100)
                assert started.wait(5)
                resampler.feed(signal, 44100 * 3)  # piles up behind the chunk in hand
                threading.Timer(0.05, release.set).start()
                raise DecodeError("the decoder failed")
        assert calls == [44100]  # the piled-up samples were never resampled
        assert pool.submit(lambda: "idle").result(timeout=5) == "idle"


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
