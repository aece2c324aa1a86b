"""SECURITY.md B1-B3 for video and audio: small files whose decoded output is huge or
whose decode is long, hostile options, and whatever the libraries raise on hostile
bytes. Each case is a typed ``MediaError`` before the allocation or within the
deadline, with a clean message; the bombs are measured in a child process."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from builders import encode_clip, pyav_audio_bytes, soundfile_bytes, tone
from media.video.video_builders import read_numbers
from mediagate import (
    AudioMediaIO,
    DecodeError,
    ImageMediaIO,
    MediaError,
    MediaPolicy,
    OptionError,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._media import _helpers, budget
from mediagate._media.audio import decode as audio_decode
from mediagate._media.audio import resample as audio_resample
from mediagate._media.audio.decode import decode_audio
from mediagate._media.audio.limits import AudioLimits, MonoBuffer
from mediagate._media.video import container as video_container
from mediagate._media.video import jpeg_sequence as jpeg_module
from mediagate._media.video import opencv as opencv_module
from mediagate._media.video import pyav as pyav_module
from mediagate._media.video.container import av_errors
from mediagate._media.video.jpeg_sequence import load_jpeg_sequence
from mediagate._media.video.opencv import OpenCVVideoLoader
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.sampling import sample_count
from security import av_bombs
from security.av_bombs import BOMB_DECODED_BYTES, MiB, animated_gif, jpeg_sequence, wav
from security.childproc import Outcome, run_limited
from security.conftest import _ADDRESS_IN_TEXT, assert_clean_error

# These tests patch decoder internals, which only this process sees.
pytestmark = pytest.mark.usefixtures("in_process_decoding")

SMALL = MediaPolicy(max_decoded_bytes=BOMB_DECODED_BYTES)
#: Address space a bomb's child may add: room for the budget, far below the bombs.
CHILD_ADDRESS_SPACE = 2048 * MiB


def refused(error: type[MediaError], call: Callable[[], Any], *secrets: str | bytes) -> Any:
    """``call`` raises ``error`` with a clean message; the error is returned."""
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error
    assert_clean_error(info.value, *secrets)
    return info.value


def over_budget(call: Callable[[], Any], *secrets: str | bytes) -> TooLargeError:
    err: TooLargeError = refused(TooLargeError, call, *secrets)
    assert err.limit == "max_decoded_bytes" and err.http_status == 413
    return err


def timed_out(call: Callable[[], Any]) -> TooLargeError:
    err: TooLargeError = refused(TooLargeError, call)
    assert err.limit == "decode_timeout"
    return err


def contained(outcome: Outcome, limit: str, *, rss: int, seconds: float) -> None:
    assert not outcome.died and not outcome.timed_out, outcome
    assert outcome.media_error and outcome.error == "TooLargeError", outcome
    assert outcome.limit == limit, outcome
    assert outcome.peak_rss_growth < rss, outcome
    assert outcome.wall_seconds < seconds and outcome.cpu_seconds < 2 * seconds, outcome
    assert not _ADDRESS_IN_TEXT.search(outcome.message), outcome.message


@pytest.fixture(scope="module")
def good_clip() -> bytes:
    clip: bytes = encode_clip(frames=30, gop=10)
    return clip


def still_decodes(good_clip: bytes, backend: str = "pyav") -> None:
    frames, meta = VideoMediaIO(ImageMediaIO(), 4, video_backend=backend).load_bytes(good_clip)
    assert read_numbers(frames) == meta["frames_indices"]


def _past_deadline() -> None:
    raise budget.DecodeLimits.starting_now("media", 1, 1.0).overran()


@contextlib.contextmanager
def deadline_passed(monkeypatch: pytest.MonkeyPatch, module: Any) -> Iterator[None]:
    """Inside the block, ``module.check_deadline`` reports a passed deadline."""
    with monkeypatch.context() as patch:
        patch.setattr(module, "check_deadline", _past_deadline)
        yield


# -- B2 decoded output: measured in a child ---------------------------------------------


def test_canvas_bombs_are_refused_from_declared_sizes_in_bounded_memory() -> None:
    outcome = run_limited(
        "security.av_bombs:run_video_canvas_bombs",
        jpeg_sequence(4000, 4000, 32),
        address_space=CHILD_ADDRESS_SPACE,
        timeout=60,
    )
    contained(outcome, "max_decoded_bytes", rss=10 * BOMB_DECODED_BYTES, seconds=3.0)


def test_tiny_audio_at_384_khz_is_refused_by_the_output_budget_in_bounded_memory() -> None:
    unframed = pyav_audio_bytes(tone(60, 8000, 1), 8000, "adts", "aac")
    assert len(unframed) < 400_000
    outcome = run_limited(
        "security.av_bombs:run_audio_output_bombs",
        unframed,
        address_space=CHILD_ADDRESS_SPACE,
        timeout=60,
    )
    contained(outcome, "max_decoded_bytes", rss=10 * BOMB_DECODED_BYTES, seconds=4.0)


# -- B3 decode work: measured in a child ------------------------------------------------


def test_a_frame_flood_ends_at_the_decode_deadline_in_bounded_memory() -> None:
    timeout = 1.0
    outcome = run_limited(
        "security.av_bombs:run_video_frame_flood",
        timeout,
        address_space=CHILD_ADDRESS_SPACE,
        timeout=60,
    )
    # Each of the two backends ends within timeout + 1 s (checked in the child).
    contained(outcome, "decode_timeout", rss=20 * BOMB_DECODED_BYTES, seconds=2 * timeout + 3)


# -- B2 decoded output: where each check sits -------------------------------------------


def test_a_gif_canvas_is_refused_before_any_frame_is_decoded(
    monkeypatch: pytest.MonkeyPatch, good_clip: bytes
) -> None:
    bomb = animated_gif(8000, 8000, 32)
    assert len(bomb) < 1024

    def never(*args: Any) -> None:
        raise AssertionError("frames were decoded")

    monkeypatch.setattr(pyav_module, "_decode_targets", never)
    monkeypatch.setattr(opencv_module, "_fill", never)
    err = over_budget(lambda: PyAVVideoLoader().load_bytes(bomb, 32, policy=SMALL))
    assert err.value == 32 * 8000 * 8000 * 3 and err.maximum == BOMB_DECODED_BYTES
    over_budget(lambda: OpenCVVideoLoader().load_bytes(bomb, 32, policy=SMALL))
    # A loader used on its own falls back to the policy's default video budget (1 GiB).
    over_budget(lambda: PyAVVideoLoader().load_bytes(bomb, 32, policy=MediaPolicy()))
    monkeypatch.undo()
    still_decodes(good_clip)


def test_the_first_decoded_frame_is_budgeted_before_the_frames_array() -> None:
    frames = pyav_module._Frames(32, SMALL)
    frame = av.VideoFrame(2000, 2000, "rgb24")
    over_budget(lambda: frames.store(frame, 0, av.video.reformatter.VideoReformatter(), 1))
    assert frames._out is None and not any(frames.filled)


def test_a_request_budget_lower_than_the_policy_applies(good_clip: bytes) -> None:
    limits = budget.DecodeLimits.starting_now("video", 1000, 30.0)
    with budget.decoding(limits):
        err = over_budget(lambda: PyAVVideoLoader().load_bytes(good_clip, 4))
    assert err.maximum == 1000
    still_decodes(good_clip)


class _CountingImages:
    """An image decoder that counts the frames it is asked to decode."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = ImageMediaIO()

    def load_base64(self, media_type: str, data: str) -> Any:
        self.calls += 1
        return self.real.load_base64(media_type, data)


def test_a_jpeg_sequence_is_budgeted_from_the_first_header_before_decoding() -> None:
    images = _CountingImages()
    payload = jpeg_sequence(4000, 4000, 32)
    err = over_budget(
        lambda: load_jpeg_sequence(
            payload,
            image_io=images,
            num_frames=32,
            max_bytes=1 << 30,
            max_decoded_bytes=BOMB_DECODED_BYTES,
        ),
        payload[:40],
    )
    assert images.calls == 0 and err.value == 32 * 4000 * 4000 * 3
    # The same frames, few enough for the budget, decode to their real 16x16 pixels
    # only when the header tells the truth.
    honest = ",".join([base64.b64encode(av_bombs.lying_jpeg(16, 16)).decode()] * 3)
    frames, meta = load_jpeg_sequence(
        honest, image_io=images, num_frames=32, max_bytes=1 << 30, max_decoded_bytes=1 << 20
    )
    assert frames.shape == (3, 16, 16, 3) and meta["frames_indices"] == [0, 1, 2]


def test_a_jpeg_sequence_is_budgeted_again_from_the_first_decoded_frame() -> None:
    png = ImageMediaIO().encode_base64(
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)), image_format="PNG"
    )
    images = _CountingImages()
    over_budget(
        lambda: load_jpeg_sequence(
            ",".join([png] * 8),
            image_io=images,
            num_frames=8,
            max_bytes=1 << 30,
            max_decoded_bytes=64 * 64 * 3 * 7,
        )
    )
    assert images.calls == 1


def test_one_hertz_audio_is_refused_before_a_resampler_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args: Any) -> None:
        raise AssertionError("a resampler was made")

    monkeypatch.setattr(audio_decode, "StreamResampler", never)
    io = AudioMediaIO(sample_rate=384_000, policy=SMALL)
    err = over_budget(lambda: io.load_bytes(wav(1, 600)))
    assert err.value == 600 * 384_000 * 4
    # Unguarded, the module applies the policy's budget itself.
    over_budget(lambda: decode_audio(wav(1, 600), AudioLimits(600.0, BOMB_DECODED_BYTES), 384_000))


def test_audio_without_a_declared_length_is_budgeted_as_the_buffer_grows() -> None:
    unframed = pyav_audio_bytes(tone(4, 8000, 1), 8000, "adts", "aac")
    limit = 4 * 8000 * 48 * 4 // 2  # half of what 4 s at 384 kHz takes
    policy = MediaPolicy(max_decoded_bytes=limit)
    over_budget(lambda: AudioMediaIO(sample_rate=384_000, policy=policy).load_bytes(unframed))
    audio, rate = AudioMediaIO(sample_rate=16_000, policy=policy).load_bytes(unframed)
    assert rate == 16_000 and abs(len(audio) - 64_000) < 4096


def test_the_mono_buffer_never_grows_past_its_ceiling_or_its_reserve() -> None:
    asked: list[int] = []

    def reserve(frames: int) -> None:
        asked.append(frames)
        if frames > 1000:
            raise budget.DecodeLimits.starting_now("audio", 4000, 1.0).over_output(
                frames * 4, "audio"
            )

    buffer = MonoBuffer(1 << 20, reserve=reserve, ceiling=1000)
    assert len(buffer._data) == 1000
    buffer.claim(600)
    buffer.commit(600)
    over_budget(lambda: buffer.claim(401))
    assert asked == [600, 1001] and len(buffer._data) == 1000


# -- B3 decode work: every loop looks at the deadline -----------------------------------


def test_video_loops_check_the_deadline(good_clip: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    many = animated_gif(16, 16, 200)  # enough packets for the demuxer's check
    io = VideoMediaIO(ImageMediaIO(), 4)
    with deadline_passed(monkeypatch, video_container):
        timed_out(lambda: io.load_bytes(many))
    for module, backend in ((pyav_module, "pyav"), (opencv_module, "opencv")):
        with deadline_passed(monkeypatch, module):
            io = VideoMediaIO(ImageMediaIO(), 4, video_backend=backend)
            timed_out(functools.partial(io.load_bytes, good_clip))
    with deadline_passed(monkeypatch, jpeg_module):
        part = base64.b64encode(av_bombs.lying_jpeg(16, 16)).decode()
        timed_out(lambda: VideoMediaIO(ImageMediaIO(), 4).load_base64("video/jpeg", part))
    still_decodes(good_clip)


def test_the_counting_walk_checks_the_deadline(
    good_clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(*args: Any) -> None:
        raise pyav_module._Missed

    monkeypatch.setattr(pyav_module._Walker, "walk", lost)
    frames, meta = PyAVVideoLoader().load_bytes(good_clip, 4)
    assert read_numbers(frames) == meta["frames_indices"]
    with deadline_passed(monkeypatch, pyav_module):
        timed_out(lambda: PyAVVideoLoader().load_bytes(good_clip, 4))


def test_parallel_video_decoders_run_under_the_callers_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if _helpers.helper_pool() is None:
        pytest.skip("one core: no helper decoders")
    clip = encode_clip(frames=150, gop=10, width=320, height=240)
    seen: list[tuple[str, budget.DecodeLimits | None]] = []
    monkeypatch.setattr(pyav_module, "_workers", lambda *args: 2)
    walk = pyav_module._Walker.walk

    def unhurried(self: Any, run: list[int]) -> None:
        # The calling thread lets a helper take a run before it takes the next itself,
        # so the helper is seen however busy the machine is.
        if not threading.current_thread().name.startswith("mediagate-helper"):
            time.sleep(0.05)
        walk(self, run)

    monkeypatch.setattr(pyav_module._Walker, "walk", unhurried)
    monkeypatch.setattr(
        pyav_module,
        "check_deadline",
        lambda: seen.append((threading.current_thread().name, budget.current_limits())),
    )
    limits = budget.DecodeLimits.starting_now("video", 1 << 30, 30.0)
    with budget.decoding(limits):
        frames, meta = PyAVVideoLoader().load_bytes(clip, 12)
    assert read_numbers(frames) == [i % 256 for i in meta["frames_indices"]]
    helpers = {name for name, _ in seen if name.startswith("mediagate-helper")}
    assert helpers, "no helper decoded"
    assert all(current is limits for _, current in seen)


@pytest.mark.parametrize("codec", ["wav", "opus"])
def test_audio_decoders_check_the_deadline(codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (
        soundfile_bytes(tone(2, 16000), 16000, "WAV", "PCM_16")
        if codec == "wav"
        else pyav_audio_bytes(tone(2, 48000), 48000, "ogg", "libopus")
    )
    with deadline_passed(monkeypatch, audio_decode):
        timed_out(lambda: AudioMediaIO().load_bytes(data))
    audio, rate = AudioMediaIO().load_bytes(data)
    assert len(audio) > rate


def test_the_resampler_helper_runs_under_the_callers_deadline() -> None:
    pool = _helpers.helper_pool()
    if pool is None:
        pytest.skip("one core: the resampler runs inline")
    passed = budget.DecodeLimits("audio", 1 << 30, time.monotonic() - 1.0, 1.0)
    resampler = audio_resample.StreamResampler(16000, 8000, pool)
    native = np.zeros(32000, np.float32)
    with budget.decoding(passed):
        resampler.feed(native, len(native))
    helper = resampler._helper
    assert helper is not None
    concurrent.futures.wait([helper], timeout=10)
    # The helper saw the passed deadline even though this thread is outside it now.
    timed_out(lambda: resampler.finish(native))
    resampler.__exit__(None, None, None)


# -- hostile options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fps", [math.inf, -math.inf, math.nan, 10**400, -1.0, "30", [1], True], ids=repr
)
def test_bad_fps_is_an_option_error(fps: Any, good_clip: bytes) -> None:
    err = refused(OptionError, lambda: VideoMediaIO(ImageMediaIO(), 4, fps=fps))
    assert err.option == "fps"
    err = refused(OptionError, lambda: PyAVVideoLoader().load_bytes(good_clip, 4, fps=fps))
    assert err.option == "fps"


def test_a_huge_fps_means_no_cap(good_clip: bytes) -> None:
    assert sample_count(30, fps=1e308, duration=1.0) == 30
    assert sample_count(30, num_frames=4, fps=1e308, duration=1e10) == 4
    assert sample_count(30, fps=1.0, duration=math.nan) == 30
    frames, meta = VideoMediaIO(ImageMediaIO(), 4, fps=1e308).load_bytes(good_clip)
    assert len(frames) == 4 and read_numbers(frames) == meta["frames_indices"]


_JPEG_PART = base64.b64encode(av_bombs.lying_jpeg(16, 16)).decode()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("frames_indices", [10**400]),
        ("frames_indices", [2**53]),
        ("frames_indices", [math.nan]),
        ("frames_indices", [-1]),
        ("frames_indices", "0,1"),
        ("total_num_frames", 10**400),
        ("total_num_frames", 2**60),
        ("total_num_frames", math.nan),
        ("total_num_frames", math.inf),
        ("total_num_frames", -5),
        ("total_num_frames", "9"),
        ("duration", 10**400),
        ("duration", math.inf),
        ("duration", math.nan),
        ("duration", -1.0),
        ("duration", 0),
        ("duration", "1"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_bad_jpeg_sequence_metadata_is_an_option_error(key: str, value: Any) -> None:
    err = refused(OptionError, lambda: VideoMediaIO(ImageMediaIO(), 4, **{key: value}))
    assert err.option == key


def test_an_fps_too_low_for_a_finite_duration_is_an_option_error() -> None:
    io = VideoMediaIO(ImageMediaIO(), 4, fps=5e-324, frames_indices=[2**53 - 1])
    err = refused(OptionError, lambda: io.load_base64("video/jpeg", _JPEG_PART))
    assert err.option == "fps"
    frames, meta = VideoMediaIO(
        ImageMediaIO(), 4, fps=1e308, frames_indices=[2**53 - 1]
    ).load_base64("video/jpeg", _JPEG_PART)
    assert frames.shape == (1, 16, 16, 3) and math.isfinite(meta["duration"])


# -- B1 whatever the libraries raise ------------------------------------------------------

LIBRARY_FAILURES: list[BaseException] = [
    av.error.InvalidDataError(1094995529, "Invalid data found", "payload \x00\x01"),
    RuntimeError("at 0x7f00deadbeef"),
    ValueError("payload"),
    TypeError("payload"),
    OverflowError("payload"),
    IndexError("payload"),
    KeyError("payload"),
    AttributeError("payload"),
    AssertionError("payload"),
    NotImplementedError("payload"),
    ZeroDivisionError("payload"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "payload"),
]


@pytest.fixture(params=LIBRARY_FAILURES, ids=lambda e: type(e).__name__)
def failure(request: pytest.FixtureRequest) -> BaseException:
    exc: BaseException = request.param
    return exc


def _raising(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def test_av_errors_types_every_library_failure(failure: BaseException) -> None:
    def body() -> None:
        with av_errors("decoding"):
            raise failure

    err = refused(DecodeError, body, "payload", "deadbeef")
    assert err.__cause__ is failure


def test_av_errors_turns_memory_errors_into_too_large() -> None:
    def body() -> None:
        with av_errors("decoding"):
            raise MemoryError

    err = refused(TooLargeError, body)
    assert err.limit == "memory" and err.http_status == 413


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_the_video_loaders_type_library_failures_themselves(
    failure: BaseException, backend: str, good_clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "pyav":
        monkeypatch.setattr(pyav_module._Frames, "store", _raising(failure))
        loader: Any = PyAVVideoLoader()
    else:
        monkeypatch.setattr(opencv_module, "_to_rgb", _raising(failure))
        loader = OpenCVVideoLoader()
    err = refused(DecodeError, lambda: loader.load_bytes(good_clip, 4), "payload", "deadbeef")
    assert err.__cause__ is failure
    monkeypatch.undo()
    still_decodes(good_clip, backend)


@pytest.mark.parametrize("exc", [*LIBRARY_FAILURES, MemoryError()], ids=lambda e: type(e).__name__)
def test_the_audio_decoder_types_library_failures_itself(
    exc: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = wav(8000, 800)
    monkeypatch.setattr(MonoBuffer, "claim", _raising(exc))
    expected: type[MediaError] = TooLargeError if isinstance(exc, MemoryError) else DecodeError
    err = refused(expected, lambda: decode_audio(data, AudioLimits(600.0)), "payload", "deadbeef")
    assert err.__cause__ is exc
    if isinstance(exc, MemoryError):
        assert err.limit == "memory"
    monkeypatch.undo()
    audio, rate = decode_audio(data, AudioLimits(600.0))
    assert rate == 8000 and len(audio) == 800


@pytest.mark.parametrize("tag", [0x1234, 0x0011, 0x0002], ids=hex)
def test_a_wav_codec_nobody_may_decode_is_an_unsupported_media_error(tag: int) -> None:
    data = wav(8000, 100, tag=tag)
    for call in (
        lambda: AudioMediaIO().load_bytes(data),
        lambda: decode_audio(data, AudioLimits(600.0)),
    ):
        err = refused(DecodeError, call)
        assert err.http_status == 415


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    # Helper pools are shared and long-lived; a test must not leave more than them.
    assert threading.active_count() <= before + 8
