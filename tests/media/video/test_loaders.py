"""The builtin loaders return exactly the sampled frames, with honest metadata."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from builders import encode_clip
from media.video.video_builders import CLIP_NAMES, read_numbers
from mediagate import DecodeError, MediaPolicy
from mediagate._media import _helpers as helpers_module
from mediagate._media.video import loader as loader_module
from mediagate._media.video import pyav as pyav_module
from mediagate._media.video.opencv import OpenCVVideoLoader
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.sampling import sample_frame_indices

LOADERS = {"pyav": PyAVVideoLoader, "opencv": OpenCVVideoLoader}


@pytest.fixture(params=sorted(LOADERS))
def loader(request: pytest.FixtureRequest) -> Any:
    return LOADERS[request.param]()


@pytest.mark.parametrize("name", CLIP_NAMES)
@pytest.mark.parametrize("num_frames", [1, 7, 16, 60, -1])
def test_returns_exactly_the_sampled_frames(
    loader: Any, clip: Callable[[str], bytes], name: str, num_frames: int
) -> None:
    frames, meta = loader.load_bytes(clip(name), num_frames)
    expected = sample_frame_indices(60, num_frames=num_frames)
    assert meta["frames_indices"] == expected
    assert read_numbers(frames) == expected
    assert frames.dtype == np.uint8 and frames.shape == (len(expected), 48, 64, 3)


def test_metadata(loader: Any, clip: Callable[[str], bytes]) -> None:
    _, meta = loader.load_bytes(clip("h264-mp4"), 4)
    assert meta == {
        "total_num_frames": 60,
        "fps": 30.0,
        "duration": 2.0,
        "video_backend": loader.name,
        "frames_indices": [0, 19, 39, 59],
        "do_sample_frames": False,
        "timestamps": [0.0, 19 / 30, 39 / 30, 59 / 30],
        "width": 64,
        "height": 48,
        "coded_width": 64,
        "coded_height": 48,
        "rotation": 0,
        "mirrored": False,
    }
    _, everything = loader.load_bytes(clip("h264-mp4"), -1)
    assert everything["do_sample_frames"] is True
    assert everything["frames_indices"] == list(range(60))


def test_frame_count_from_a_container_that_does_not_declare_it(
    loader: Any, clip: Callable[[str], bytes]
) -> None:
    # Matroska and WebM carry no frame count: it comes from scanning packets.
    for name in ("h264-mkv", "vp9-webm"):
        _, meta = loader.load_bytes(clip(name), 3)
        assert meta["total_num_frames"] == 60


@pytest.mark.parametrize(("fps", "expected_count"), [(2.0, 4), (0.1, 1), (100.0, 60)])
def test_fps_caps_the_count(
    loader: Any, clip: Callable[[str], bytes], fps: float, expected_count: int
) -> None:
    frames, meta = loader.load_bytes(clip("h264-mp4"), -1, fps=fps)
    expected = sample_frame_indices(60, fps=fps, duration=2.0)
    assert len(expected) == expected_count
    assert meta["frames_indices"] == expected
    assert read_numbers(frames) == expected


def test_variable_frame_rate_frames_are_numbered_by_presentation(
    loader: Any, clip: Callable[[str], bytes]
) -> None:
    frames, meta = loader.load_bytes(clip("h264-vfr-mkv"), 9)
    assert read_numbers(frames) == meta["frames_indices"] == sample_frame_indices(60, num_frames=9)


def test_policy_caps_minus_one(loader: Any, clip: Callable[[str], bytes]) -> None:
    frames, meta = loader.load_bytes(clip("h264-mp4"), -1, policy=MediaPolicy(max_video_frames=5))
    assert meta["frames_indices"] == [0, 14, 29, 44, 59]
    assert read_numbers(frames) == [0, 14, 29, 44, 59]


@pytest.mark.parametrize(
    "payload", [b"", b"\x00" * 4096, b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 64]
)
def test_garbage_is_a_decode_error(loader: Any, payload: bytes) -> None:
    with pytest.raises(DecodeError):
        loader.load_bytes(payload, 4)


def test_still_image_container_without_video_is_refused(loader: Any) -> None:
    audio_only = _audio_only_mp4()
    with pytest.raises(DecodeError, match="no video stream"):
        loader.load_bytes(audio_only, 4)


def _audio_only_mp4() -> bytes:
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


# -- the PyAV walk ---------------------------------------------------------------------


@pytest.fixture
def decoded_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the frames the PyAV walk gets back from the decoder."""
    count = [0]
    real = pyav_module._decoded

    def counting(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for frame in real(*args, **kwargs):
            count[0] += 1
            yield frame

    monkeypatch.setattr(pyav_module, "_decoded", counting)
    return count


def test_sparse_samples_do_not_decode_the_whole_clip(decoded_counter: list[int]) -> None:
    data = encode_clip(frames=240, gop=12)
    frames, meta = PyAVVideoLoader().load_bytes(data, 4)
    assert read_numbers(frames) == meta["frames_indices"] == [0, 79, 159, 239]
    # Each target is reached from the keyframe before it: at most a GOP per target.
    assert decoded_counter[0] <= 4 * 13


def test_dense_samples_decode_forward_without_seeking_back(decoded_counter: list[int]) -> None:
    data = encode_clip(frames=60)  # one keyframe for the whole clip
    frames, meta = PyAVVideoLoader().load_bytes(data, 20)
    assert read_numbers(frames) == meta["frames_indices"]
    assert decoded_counter[0] <= 60


def test_counting_fallback_gives_the_same_frames(
    monkeypatch: pytest.MonkeyPatch, clip: Callable[[str], bytes]
) -> None:
    # Streams without usable timestamps are walked from the start, counting frames.
    real = loader_module.index_stream

    def inexact(*args: Any, **kwargs: Any) -> Any:
        index = real(*args, **kwargs)
        return type(index)(index.pts, index.keyframes, False, index.fps, index.time_base)

    monkeypatch.setattr(loader_module, "index_stream", inexact)
    frames, meta = PyAVVideoLoader().load_bytes(clip("h264-mp4"), 7)
    assert read_numbers(frames) == meta["frames_indices"] == sample_frame_indices(60, num_frames=7)


def test_peak_memory_stays_near_the_returned_frames() -> None:
    data = encode_clip(frames=300, gop=30, width=320, height=240)
    PyAVVideoLoader().load_bytes(data, 4)  # warm caches outside the measurement
    tracemalloc.start()
    try:
        frames, _ = PyAVVideoLoader().load_bytes(data, 4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full_decode = 300 * 320 * 240 * 3
    assert frames.nbytes == 4 * 320 * 240 * 3
    assert peak < len(data) + 3 * frames.nbytes + 1_000_000 < full_decode


def test_parallel_decoders_return_the_same_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    # Big enough frames and several GOPs: runs are spread over decoders in threads.
    monkeypatch.setattr(helpers_module, "cpu_count", lambda: 3)
    monkeypatch.setattr(pyav_module, "_PARALLEL_MIN_FRAMES", 1)
    monkeypatch.setattr(helpers_module, "_pool", None)  # a helper pool sized for 3 cores
    data = encode_clip(frames=240, gop=20, width=320, height=240)
    opened: list[int] = []
    real_open = pyav_module.open_video
    monkeypatch.setattr(
        pyav_module, "open_video", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    # Samples in several GOPs make several runs: two helper decoders besides the
    # caller's. Every frame is a single run, walked by the caller's decoder alone.
    for num_frames, helpers in ((5, 2), (16, 2), (60, 2), (-1, 0)):
        opened.clear()
        frames, meta = PyAVVideoLoader().load_bytes(data, num_frames)
        assert read_numbers(frames) == [i % 256 for i in meta["frames_indices"]]
        assert meta["frames_indices"] == sample_frame_indices(240, num_frames=num_frames)
        # A helper still queued when the caller has walked every run is not started.
        assert (1 if helpers else 0) <= len(opened) <= helpers


def test_a_failing_parallel_decoder_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers_module, "cpu_count", lambda: 2)
    monkeypatch.setattr(pyav_module, "_PARALLEL_MIN_FRAMES", 1)
    data = encode_clip(frames=120, gop=20, width=320, height=240)
    policy = MediaPolicy(max_pixels=320 * 240)
    real_store = pyav_module._Frames.store
    calls = [0]

    def store(self: Any, *args: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise DecodeError("boom")
        real_store(self, *args)

    monkeypatch.setattr(pyav_module._Frames, "store", store)
    with pytest.raises(DecodeError, match="boom"):
        PyAVVideoLoader().load_bytes(data, 8, policy=policy)


def test_parallel_decoding_threads_are_shared_by_concurrent_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helpers_module, "cpu_count", lambda: 3)
    monkeypatch.setattr(pyav_module, "_PARALLEL_MIN_FRAMES", 1)
    monkeypatch.setattr(helpers_module, "_pool", None)
    data = encode_clip(frames=120, gop=20, width=320, height=240)
    before = set(threading.enumerate())
    with ThreadPoolExecutor(6) as requests:
        results = list(requests.map(lambda _: PyAVVideoLoader().load_bytes(data, 6), range(6)))
    assert all(read_numbers(f) == [i % 256 for i in m["frames_indices"]] for f, m in results)
    started = [
        t for t in set(threading.enumerate()) - before if t.name.startswith("mediagate-helper")
    ]
    assert 1 <= len(started) <= 2  # one pool of cores - 1 for the process, not per request
