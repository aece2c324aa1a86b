"""VideoMediaIO: options, backends, third-party loaders, base64 and JPEG sequences."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from builders import encode_clip, paint
from media.video.video_builders import read_numbers
from mediagate import (
    VIDEO_LOADER_REGISTRY,
    DecodeError,
    ImageMediaIO,
    MediaPolicy,
    OptionError,
    OptionSpec,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._media.base import opt_int


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Callable[[type], str]:
    """Register a loader class under a fresh name for one test only."""

    def add(cls: type) -> str:
        name = f"test-{uuid.uuid4().hex[:8]}"
        monkeypatch.setitem(VIDEO_LOADER_REGISTRY._entries, name, cls)
        return name

    return add


class RecordingLoader:
    """A third-party loader without an options table: records what it was given."""

    calls: ClassVar[list[tuple[int, dict[str, Any]]]] = []
    frames = 3

    def load_bytes(
        self, data: bytes, num_frames: int = -1, **options: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        type(self).calls.append((num_frames, options))
        count = self.frames
        return np.stack([paint(i) for i in range(count)]), {"frames_indices": list(range(count))}


# -- construction and options ----------------------------------------------------------


def test_default_backend_is_pyav(image_io: ImageMediaIO, clip: Callable[[str], bytes]) -> None:
    io = VideoMediaIO(image_io, num_frames=4)
    frames, meta = io.load_bytes(clip("h264-mp4"))
    assert meta["video_backend"] == "pyav"
    assert read_numbers(frames) == [0, 19, 39, 59]


def test_backend_chosen_per_instance(image_io: ImageMediaIO, clip: Callable[[str], bytes]) -> None:
    frames, meta = VideoMediaIO(image_io, 4, video_backend="opencv").load_bytes(clip("h264-mp4"))
    assert meta["video_backend"] == "opencv"
    assert read_numbers(frames) == [0, 19, 39, 59]


def test_unknown_backend_lists_the_available_ones(image_io: ImageMediaIO) -> None:
    with pytest.raises(ValueError, match=r"available: .*opencv.*pyav") as info:
        VideoMediaIO(image_io, video_backend="nope")
    assert isinstance(info.value, OptionError) and info.value.option == "video_backend"


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": "8"}, "num_frames"),
        ({"num_frames": 2.5}, "num_frames"),
        ({"fps": "2"}, "fps"),
        ({"fps": -1.0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"bogus": 1}, "bogus"),
        ({"video_backend": 3}, "video_backend"),
        ({"frames_indices": [3, 1]}, "frames_indices"),
        ({"total_num_frames": 0}, "total_num_frames"),
        ({"duration": -2}, "duration"),
    ],
)
def test_bad_options_name_the_key(
    image_io: ImageMediaIO, kwargs: dict[str, Any], option: str
) -> None:
    with pytest.raises(OptionError) as info:
        VideoMediaIO(image_io, **kwargs)
    assert info.value.option == option
    assert option in str(info.value)


def test_third_party_loader_gets_capped_num_frames_and_its_options(
    image_io: ImageMediaIO, register: Callable[[type], str]
) -> None:
    name = register(RecordingLoader)
    RecordingLoader.calls.clear()
    policy = MediaPolicy(max_video_frames=10)
    VideoMediaIO(image_io, -1, video_backend=name, policy=policy, device="cuda").load_bytes(b"x")
    VideoMediaIO(image_io, 50, fps=2.0, video_backend=name, policy=policy).load_bytes(b"x")
    VideoMediaIO(image_io, 4, video_backend=name, policy=policy).load_bytes(b"x")
    assert RecordingLoader.calls == [(10, {"device": "cuda"}), (10, {"fps": 2.0}), (4, {})]


def test_classmethod_loaders_work(image_io: ImageMediaIO, register: Callable[[type], str]) -> None:
    class ClassLoader:
        @classmethod
        def load_bytes(
            cls, data: bytes, num_frames: int = -1, **options: Any
        ) -> tuple[np.ndarray, dict[str, Any]]:
            return np.stack([paint(7)] * num_frames), {"video_backend": "mine"}

    frames, meta = VideoMediaIO(image_io, 2, video_backend=register(ClassLoader)).load_bytes(b"x")
    assert read_numbers(frames) == [7, 7] and meta["video_backend"] == "mine"


def test_declared_options_are_checked(
    image_io: ImageMediaIO, register: Callable[[type], str]
) -> None:
    class Declared(RecordingLoader):
        options: ClassVar[dict[str, OptionSpec]] = {"gpu": OptionSpec(opt_int(0, 7), "device")}

    name = register(Declared)
    VideoMediaIO(image_io, video_backend=name, gpu=3)
    with pytest.raises(OptionError, match="gpu"):
        VideoMediaIO(image_io, video_backend=name, gpu=9)
    with pytest.raises(OptionError, match="cpu"):
        VideoMediaIO(image_io, video_backend=name, cpu=1)
    with pytest.raises(OptionError, match="fps"):
        VideoMediaIO(image_io, video_backend=name, fps=2.0)


def test_builtin_loader_options_are_checked(image_io: ImageMediaIO) -> None:
    with pytest.raises(OptionError, match="frame_recovery") as info:
        VideoMediaIO(image_io, video_backend="pyav", frame_recovery="yes")
    assert info.value.option == "frame_recovery"
    with pytest.raises(OptionError) as unknown:
        VideoMediaIO(image_io, video_backend="pyav", no_such_option=1)
    # The message names every option there is, wherever it is checked.
    for known in ("num_frames", "fps", "video_backend", "frames_indices", "max_duration"):
        assert known in str(unknown.value)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize(
    "options",
    [
        {"max_duration": 300, "frame_recovery": True},
        {"backend": "opencv", "num_ffmpeg_threads": 0, "seek_mode": "exact"},
        {"device": "cpu", "max_width": None, "max_height": None},
        {"hw_decoders": 0, "pool_size": None, "timeout_sec": 120.0},
    ],
)
def test_vllm_decoder_options_are_accepted_and_change_nothing(
    image_io: ImageMediaIO, clip: Callable[[str], bytes], backend: str, options: dict[str, Any]
) -> None:
    plain = VideoMediaIO(image_io, 5, video_backend=backend).load_bytes(clip("h264-mp4"))
    io = VideoMediaIO(image_io, 5, video_backend=backend, **options)
    frames, metadata = io.load_bytes(clip("h264-mp4"))
    assert np.array_equal(frames, plain[0]) and metadata == plain[1]
    assert io.decoder_options == options


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("backend", "vaapi"),
        ("device", "cuda"),
        ("seek_mode", "fast"),
        ("max_duration", -1),
        ("max_duration", float("nan")),
        ("num_ffmpeg_threads", 10**9),
        ("max_width", 0),
        ("frame_recovery", 1),
    ],
)
def test_vllm_decoder_options_are_validated(
    image_io: ImageMediaIO, key: str, value: object
) -> None:
    with pytest.raises(OptionError) as info:
        VideoMediaIO(image_io, video_backend="pyav", **{key: value})
    assert info.value.option == key


def test_video_results_carry_their_bytes(
    image_io: ImageMediaIO, clip: Callable[[str], bytes]
) -> None:
    data = clip("h264-mp4")
    result = VideoMediaIO(image_io, 3).load_bytes(data)
    assert result.original_bytes is data or result.original_bytes == data
    frames, metadata = result
    assert result[0] is frames and result[1] is metadata and frames.shape[0] == 3


def test_too_many_frames_from_a_loader_are_cut_to_the_cap(
    image_io: ImageMediaIO, register: Callable[[type], str]
) -> None:
    class Greedy(RecordingLoader):
        frames = 9

    io = VideoMediaIO(image_io, 4, video_backend=register(Greedy))
    frames, meta = io.load_bytes(b"x")
    assert frames.shape[0] == 4 and meta["frames_indices"] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "result",
    [
        None,
        (np.zeros((2, 4, 4, 3), np.uint8),),
        (np.zeros((2, 4, 4, 3), np.float32), {}),
        (np.zeros((2, 4, 4), np.uint8), {}),
        (np.zeros((0, 4, 4, 3), np.uint8), {}),
        ([np.zeros((4, 4, 3), np.uint8)], {}),
        (np.zeros((2, 4, 4, 3), np.uint8), "meta"),
    ],
)
def test_malformed_loader_results_are_decode_errors(
    image_io: ImageMediaIO, register: Callable[[type], str], result: Any
) -> None:
    class Broken:
        def load_bytes(self, data: bytes, num_frames: int = -1, **options: Any) -> Any:
            return result

    with pytest.raises(DecodeError, match="video backend"):
        VideoMediaIO(image_io, video_backend=register(Broken)).load_bytes(b"x")


def test_byte_budget_applies_to_load_bytes(image_io: ImageMediaIO) -> None:
    io = VideoMediaIO(image_io, policy=MediaPolicy(max_bytes=100))
    with pytest.raises(TooLargeError):
        io.load_bytes(b"\0" * 101)


# -- merge_kwargs ----------------------------------------------------------------------


def test_merge_kwargs_request_wins_and_inputs_untouched() -> None:
    defaults = {"num_frames": 16, "fps": 2.0, "video_backend": "pyav"}
    runtime = {"num_frames": 8, "fps": 1.0}
    merged = VideoMediaIO.merge_kwargs(defaults, runtime)
    assert merged == {"num_frames": 8, "fps": 1.0, "video_backend": "pyav"}
    assert defaults == {"num_frames": 16, "fps": 2.0, "video_backend": "pyav"}
    assert runtime == {"num_frames": 8, "fps": 1.0}


def test_merge_kwargs_one_of_fps_and_num_frames_drops_the_other() -> None:
    defaults = {"num_frames": 16, "fps": 2.0}
    assert VideoMediaIO.merge_kwargs(defaults, {"fps": 4.0}) == {"fps": 4.0}
    assert VideoMediaIO.merge_kwargs(defaults, {"num_frames": 4}) == {"num_frames": 4}
    assert VideoMediaIO.merge_kwargs(defaults, None) == defaults
    assert VideoMediaIO.merge_kwargs(None, {"fps": 1.0}) == {"fps": 1.0}


# -- base64, files ---------------------------------------------------------------------


def test_load_base64_container(image_io: ImageMediaIO, clip: Callable[[str], bytes]) -> None:
    payload = base64.b64encode(clip("vp9-webm")).decode()
    frames, meta = VideoMediaIO(image_io, 3).load_base64("video/webm", payload)
    assert read_numbers(frames) == meta["frames_indices"] == [0, 29, 59]


def test_load_base64_rejects_invalid_base64(image_io: ImageMediaIO) -> None:
    with pytest.raises(DecodeError):
        VideoMediaIO(image_io).load_base64("video/mp4", "not base64!!")


def test_load_file(image_io: ImageMediaIO, clip: Callable[[str], bytes], tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(clip("mpeg4-avi"))
    frames, _ = VideoMediaIO(image_io, 2).load_file(path)
    assert read_numbers(frames) == [0, 59]


# -- video/jpeg sequences and encode_base64 --------------------------------------------


def _sequence(count: int) -> str:
    io = VideoMediaIO(ImageMediaIO())
    return io.encode_base64(np.stack([paint(i) for i in range(count)]))


def test_encode_then_load_jpeg_sequence_round_trips(image_io: ImageMediaIO) -> None:
    frames, meta = VideoMediaIO(image_io, -1).load_base64("video/jpeg", _sequence(5))
    assert read_numbers(frames) == [0, 1, 2, 3, 4]
    assert frames.shape == (5, 48, 64, 3)
    assert meta == {
        "total_num_frames": 5,
        "fps": 1.0,
        "duration": 5.0,
        "video_backend": "jpeg_sequence",
        "frames_indices": [0, 1, 2, 3, 4],
        "do_sample_frames": False,
        "timestamps": [0.0, 1.0, 2.0, 3.0, 4.0],
        "width": 64,
        "height": 48,
    }


def test_jpeg_sequence_metadata_from_options(image_io: ImageMediaIO) -> None:
    io = VideoMediaIO(
        image_io, 3, fps=2.0, frames_indices=[0, 10, 20, 30], total_num_frames=40, duration=20.0
    )
    frames, meta = io.load_base64("video/jpeg", _sequence(4))
    assert read_numbers(frames) == [0, 1, 2]
    assert meta["frames_indices"] == [0, 10, 20]
    assert (meta["total_num_frames"], meta["fps"], meta["duration"]) == (40, 2.0, 20.0)


def test_jpeg_sequence_options_that_do_not_fit_are_refused(image_io: ImageMediaIO) -> None:
    with pytest.raises(OptionError, match="frames_indices"):
        VideoMediaIO(image_io, frames_indices=[0, 1]).load_base64("video/jpeg", _sequence(3))
    with pytest.raises(OptionError, match="total_num_frames"):
        VideoMediaIO(image_io, frames_indices=[0, 5], total_num_frames=3).load_base64(
            "video/jpeg", _sequence(2)
        )


def test_jpeg_only_options_are_refused_for_containers(
    image_io: ImageMediaIO, clip: Callable[[str], bytes]
) -> None:
    with pytest.raises(OptionError, match="duration"):
        VideoMediaIO(image_io, duration=3.0).load_bytes(clip("h264-mp4"))


@pytest.mark.usefixtures("in_process_decoding")
def test_jpeg_sequence_is_cut_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    image_io = ImageMediaIO()
    decoded: list[str] = []
    real = image_io.load_base64

    def spy(media_type: str, data: str) -> Any:
        decoded.append(media_type)
        return real(media_type, data)

    monkeypatch.setattr(image_io, "load_base64", spy)
    sequence = _sequence(3) + ",@@not-base64@@" * 50
    frames, _ = VideoMediaIO(image_io, 3).load_base64("video/jpeg", sequence)
    assert read_numbers(frames) == [0, 1, 2]
    assert decoded == ["image/jpeg"] * 3


def test_jpeg_sequence_num_frames_minus_one_means_the_cap(image_io: ImageMediaIO) -> None:
    io = VideoMediaIO(image_io, -1, policy=MediaPolicy(max_video_frames=4))
    frames, meta = io.load_base64("video/jpeg", _sequence(6))
    assert read_numbers(frames) == [0, 1, 2, 3] and meta["total_num_frames"] == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s + ",",  # an empty frame
        lambda s: s + ",!!!",  # invalid base64
        lambda s: s + "," + base64.b64encode(b"\xff\xd8\xff garbage").decode(),
        lambda s: "",
    ],
)
def test_bad_jpeg_sequences_are_decode_errors(
    image_io: ImageMediaIO, make: Callable[[str], str]
) -> None:
    with pytest.raises(DecodeError):
        VideoMediaIO(image_io, -1).load_base64("video/jpeg", make(_sequence(2)))


def test_jpeg_frames_of_different_sizes_are_refused(image_io: ImageMediaIO) -> None:
    io = VideoMediaIO(image_io, -1)
    other = io.encode_base64(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(DecodeError, match="unlike frame 0"):
        io.load_base64("video/jpeg", _sequence(2) + "," + other)


def test_encode_base64_other_formats_are_not_implemented(image_io: ImageMediaIO) -> None:
    with pytest.raises(NotImplementedError):
        VideoMediaIO(image_io).encode_base64(np.zeros((1, 8, 8, 3), np.uint8), video_format="PNG")


def test_encode_base64_joins_one_jpeg_per_frame(image_io: ImageMediaIO) -> None:
    text = VideoMediaIO(image_io).encode_base64(np.stack([paint(1), paint(2)]))
    parts = text.split(",")
    assert len(parts) == 2
    assert all(base64.b64decode(p).startswith(b"\xff\xd8\xff") for p in parts)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_a_stream_over_max_stream_packets_is_refused_before_any_frame_is_decoded(
    image_io: ImageMediaIO, clip: Callable[[str], bytes], backend: str
) -> None:
    data = clip("h264-mp4")  # 60 frames
    tight = MediaPolicy(max_stream_packets=59)
    with pytest.raises(TooLargeError) as info:
        VideoMediaIO(image_io, 4, video_backend=backend, policy=tight).load_bytes(data)
    assert info.value.limit == "max_stream_packets"
    assert "MediaPolicy.max_stream_packets" in str(info.value)
    frames, _ = VideoMediaIO(
        image_io, 4, video_backend=backend, policy=tight.replace(max_stream_packets=60)
    ).load_bytes(data)
    assert frames.shape[0] == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, "many", True])
def test_max_stream_packets_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_stream_packets"):
        MediaPolicy(max_stream_packets=bad)


@pytest.fixture(scope="module")
def mpeg4_in_mp4() -> bytes:
    return encode_clip(codec="mpeg4", container="mp4", frames=30)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_mpeg4_part2_in_mp4_reads_its_frame_size_from_the_codec_header(
    image_io: ImageMediaIO, mpeg4_in_mp4: bytes, backend: str
) -> None:
    # MP4 leaves MPEG-4 Part 2's frame size to the codec's own header.
    frames, metadata = VideoMediaIO(image_io, 4, video_backend=backend).load_bytes(mpeg4_in_mp4)
    assert frames.shape == (4, 48, 64, 3)
    assert read_numbers(frames) == metadata["frames_indices"] == [0, 9, 19, 29]


def test_mpeg4_part2_in_mp4_still_holds_the_pixel_cap(
    image_io: ImageMediaIO, mpeg4_in_mp4: bytes
) -> None:
    with pytest.raises(DecodeError, match="max_pixels"):
        VideoMediaIO(image_io, 4, policy=MediaPolicy(max_pixels=100)).load_bytes(mpeg4_in_mp4)
    with pytest.raises(DecodeError):
        VideoMediaIO(image_io, 4).load_bytes(mpeg4_in_mp4[: len(mpeg4_in_mp4) // 3])
