"""True time: each frame's presentation timestamp, the presented duration, frames spread
over time rather than over frame numbers.

The ground truth is a plain PyAV decode of the same bytes: every frame in the order the
decoder hands it over, ``frame.pts * stream.time_base``, and the container's duration.
Clips number their frames (``paint``), so a frame returned can be told from its
neighbours.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from fractions import Fraction
from functools import cache
from typing import Any

import av
import numpy as np
import pytest

from builders import encode_clip, paint
from media.video.video_builders import CLIP_NAMES, CLIP_SPECS, read_number, read_numbers
from mediagate import DecodeError, ImageMediaIO, OptionError, VideoMediaIO
from mediagate._media.video.container import index_stream, open_video
from mediagate._media.video.loader import uniform_frames
from mediagate._media.video.opencv import OpenCVVideoLoader
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.registry import VIDEO_LOADER_REGISTRY

LOADERS = {"pyav": PyAVVideoLoader, "opencv": OpenCVVideoLoader}

#: The clip of the issue: a frame at 0 s, one at 0.8 s, then every 0.1 s to 9.8 s.
ISSUE_MS = [0, 800, *range(1000, 9801, 100)]
#: Twenty frames a second for five seconds, then two a second, and a last frame at 9.8 s:
#: by frame number, nearly every sample lands in the first half.
DENSE_THEN_SPARSE_MS = [*range(0, 5000, 50), *range(5000, 9600, 500), 9800]


class Truth:
    """What a plain PyAV decode of ``data`` shows."""

    def __init__(self, data: bytes) -> None:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            decoded = list(container.decode(stream))
            self.container_duration = (container.duration or 0) / 1_000_000
        self.numbers = [read_number(frame.to_ndarray(format="rgb24")) for frame in decoded]
        self.seconds = [float(frame.pts * base) for frame in decoded]

    @property
    def start(self) -> float:
        return min(self.seconds)

    def on_screen(self, instant: float) -> int:
        """The frame (decode position) shown at ``instant`` seconds from the start."""
        shown = [i for i, t in enumerate(self.seconds) if t - self.start <= instant + 1e-9]
        return max(shown, key=lambda i: self.seconds[i])


@cache
def clip(name: str) -> bytes:
    if name in CLIP_SPECS:
        return encode_clip(**CLIP_SPECS[name])
    container, _, times = name.partition(":")
    ms = {"issue": ISSUE_MS, "dense-then-sparse": DENSE_THEN_SPARSE_MS}[times]
    return encode_clip(container=container, frames=len(ms), pts=ms, gop=12)


@pytest.fixture(params=sorted(LOADERS))
def loader_cls(request: pytest.FixtureRequest) -> Any:
    return LOADERS[request.param]


# -- timestamps and duration against the ground truth -----------------------------------


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_constant_rate_timestamps_are_the_frames_own(loader_cls: Any, name: str) -> None:
    data = clip(name)
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, 7)
    indices = meta["frames_indices"]
    assert read_numbers(frames) == indices
    assert meta["timestamps"] == pytest.approx([truth.seconds[i] - truth.start for i in indices])
    assert meta["timestamps"] == pytest.approx([i / 30 for i in indices], abs=1e-3)
    assert meta["duration"] == pytest.approx(truth.container_duration, abs=1e-3)


@pytest.mark.parametrize("name", ["matroska:issue", "mp4:issue", "matroska:dense-then-sparse"])
def test_variable_rate_timestamps_are_the_frames_own(loader_cls: Any, name: str) -> None:
    data = clip(name)
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, -1)
    assert meta["total_num_frames"] == len(truth.seconds)
    assert read_numbers(frames) == meta["frames_indices"] == list(range(len(truth.seconds)))
    assert meta["timestamps"] == pytest.approx([t - truth.start for t in truth.seconds])
    assert meta["duration"] == pytest.approx(truth.container_duration, abs=2e-3)
    assert 9.8 < meta["duration"] < 9.9  # the last frame starts at 9.8 s and lasts a frame


# -- sampling by time -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["matroska:issue", "mp4:issue", "matroska:dense-then-sparse"])
def test_eight_samples_are_the_frames_on_screen_at_eight_even_instants(
    loader_cls: Any, name: str
) -> None:
    data = clip(name)
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, 8)
    last = max(truth.seconds) - truth.start
    expected = [truth.on_screen(k * last / 7) for k in range(8)]
    assert meta["frames_indices"] == expected
    assert read_numbers(frames) == [truth.numbers[i] for i in expected]
    assert sum(t >= last / 2 for t in meta["timestamps"]) >= 4  # half of them in each half


def test_the_index_rule_stays_available_and_bunches_up_where_frames_are_dense(
    loader_cls: Any,
) -> None:
    data = clip("matroska:dense-then-sparse")
    by_index = loader_cls(sampling="index").load_bytes(data, 8)[1]
    by_time = loader_cls().load_bytes(data, 8)[1]
    assert by_index["frames_indices"] == [int(i) for i in np.linspace(0, 110, 8)]
    assert sum(t < 4.9 for t in by_index["timestamps"]) == 7  # 7 of 8 in the first half
    assert sum(t < 4.9 for t in by_time["timestamps"]) == 4


def test_fps_counts_seconds_and_spreads_over_time(loader_cls: Any) -> None:
    data = clip("matroska:issue")
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, -1, fps=1.0)
    count = math.floor(meta["duration"])
    assert len(meta["frames_indices"]) == count == 9
    last = max(truth.seconds) - truth.start
    expected = [truth.on_screen(k * last / (count - 1)) for k in range(count)]
    assert meta["frames_indices"] == expected
    assert read_numbers(frames) == [truth.numbers[i] for i in expected]


def _index(data: bytes) -> Any:
    container, stream = open_video(data, max_pixels=1 << 24)
    try:
        return index_stream(container, stream)
    finally:
        container.close()


def _rate_2997_mkv() -> bytes:
    """29.97 frames a second in Matroska's milliseconds: steps of 33 and 34 ms."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(90):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(paint(i), format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


def test_at_a_constant_rate_both_rules_pick_the_same_frames() -> None:
    clips = {name: clip(name) for name in CLIP_NAMES} | {"29.97-mkv": _rate_2997_mkv()}
    for name, data in clips.items():
        index = _index(data)
        assert index.regular, name
        for fps in (None, 0.5, 1.0, 2.0, 3.0, 7.5, 29.0, 30.0, 100.0):
            for num_frames in range(1, index.total + 1):
                picks = [
                    uniform_frames(index, num_frames=num_frames, fps=fps, sampling=rule)
                    for rule in ("time", "index")
                ]
                assert picks[0] == picks[1], (name, fps, num_frames)


def test_sampling_is_a_validated_option(image_io: ImageMediaIO) -> None:
    data = clip("matroska:dense-then-sparse")
    by_index = VideoMediaIO(image_io, 8, sampling="index").load_bytes(data)[1]
    by_time = VideoMediaIO(image_io, 8, sampling="time").load_bytes(data)[1]
    assert (
        by_time["frames_indices"] == VideoMediaIO(image_io, 8).load_bytes(data)[1]["frames_indices"]
    )
    assert by_index["frames_indices"] != by_time["frames_indices"]
    for bad in ("frames", 1, ["time"]):
        with pytest.raises(OptionError) as info:
            VideoMediaIO(image_io, 8, sampling=bad)
        assert info.value.option == "sampling"
    with pytest.raises(OptionError, match="sampling"):
        VideoMediaIO(image_io, video_backend="qwen3_vl", sampling="time")  # its own rule


def test_cutting_to_the_cap_cuts_the_timestamps_too(
    image_io: ImageMediaIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Greedy(PyAVVideoLoader):
        """Returns every frame, whatever it is asked for."""

        def load_bytes(self, data: bytes, num_frames: int = -1, **options: Any) -> Any:
            return super().load_bytes(data, -1, **options)

    monkeypatch.setitem(VIDEO_LOADER_REGISTRY._entries, "greedy-for-a-test", Greedy)
    io_ = VideoMediaIO(image_io, 5, video_backend="greedy-for-a-test")
    frames, meta = io_.load_bytes(clip("h264-mp4"))
    assert len(frames) == len(meta["frames_indices"]) == len(meta["timestamps"]) == 5
    assert meta["timestamps"] == pytest.approx([i / 30 for i in range(5)])


# -- headers that lie -------------------------------------------------------------------


def _avi_declaring(frames: int) -> bytes:
    data = bytearray(clip("mpeg4-avi"))
    avih, strh = data.find(b"avih") + 8, data.find(b"strh") + 8
    data[avih + 16 : avih + 20] = struct.pack("<I", frames)  # dwTotalFrames
    data[strh + 32 : strh + 36] = struct.pack("<I", frames)  # dwLength
    return bytes(data)


def test_a_header_that_under_counts_frames_is_not_believed(loader_cls: Any) -> None:
    data = _avi_declaring(10)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames == 10  # what the header says
    frames, meta = loader_cls().load_bytes(data, 4)
    assert meta["total_num_frames"] == 60 and meta["duration"] == pytest.approx(2.0)
    assert read_numbers(frames) == meta["frames_indices"] == [0, 19, 39, 59]


def test_a_header_that_over_counts_frames_reads_as_truncated(loader_cls: Any) -> None:
    # Sixty frames where the header declares six hundred look like a file cut short.
    with pytest.raises(DecodeError, match="truncated"):
        loader_cls().load_bytes(_avi_declaring(600), 4)


def _mkv_declaring_an_hour() -> bytes:
    """The 2-second ``h264-mkv`` clip whose segment header says it lasts an hour."""
    data = bytearray(clip("h264-mkv"))
    at = data.find(b"\x44\x89")  # the Duration element, in milliseconds
    size = data[at + 2] & 0x7F
    assert size in (4, 8)
    data[at + 3 : at + 3 + size] = struct.pack(">f" if size == 4 else ">d", 3_600_000.0)
    return bytes(data)


def test_a_header_that_declares_an_hour_does_not_stretch_the_clip(loader_cls: Any) -> None:
    data = _mkv_declaring_an_hour()
    assert Truth(data).container_duration == pytest.approx(3600)
    frames, meta = loader_cls().load_bytes(data, -1, fps=2.0)
    assert meta["duration"] == pytest.approx(2.0)
    assert read_numbers(frames) == meta["frames_indices"] == [0, 19, 39, 59]
    assert meta["timestamps"] == pytest.approx([0.0, 19 / 30, 39 / 30, 59 / 30], abs=1e-3)


# -- broken timestamps ------------------------------------------------------------------


def _remuxed(pts_ms: list[int]) -> bytes:
    """MJPEG frames (each decodes on its own) muxed into Matroska with ``pts_ms`` as
    their timestamps, in frame order."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 48, "yuvj420p"
    encoder.time_base = Fraction(1, 1000)
    packets = []
    for i in range(len(pts_ms)):
        frame = av.VideoFrame.from_ndarray(paint(i), format="rgb24").reformat(format="yuvj420p")
        frame.pts, frame.time_base = i, Fraction(1, 1000)
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.time_base = Fraction(1, 1000)
        for packet, ms in zip(packets, pts_ms, strict=True):
            packet.stream, packet.time_base = stream, Fraction(1, 1000)
            packet.pts, packet.dts, packet.duration = ms, 0, 40
            out.mux(packet)
    return buffer.getvalue()


def _stripped_ts() -> bytes:
    """MPEG-TS whose video PES headers lose their timestamps for every other frame of
    frames 10 to 19 (the header bytes become stuffing)."""
    data = bytearray(clip("mpeg2-ts"))
    seen = 0
    for at in range(0, len(data) - 187, 188):
        if data[at] != 0x47 or not data[at + 1] & 0x40:
            continue  # not the start of a payload
        start = at + 4 + (1 + data[at + 4] if data[at + 3] & 0x20 else 0)
        if data[start : start + 4] != b"\x00\x00\x01\xe0":
            continue  # not a video PES
        if 10 <= seen < 20 and seen % 2 == 0:
            data[start + 7] &= 0x3F  # no PTS, no DTS
            length = data[start + 8]
            data[start + 9 : start + 9 + length] = b"\xff" * length
        seen += 1
    assert seen == 60
    return bytes(data)


BROKEN: dict[str, Callable[[], bytes]] = {
    "avi counting packets, h264 with b-frames": lambda: encode_clip(
        "libx264", "avi", frames=30, gop=10
    ),
    "repeated timestamps": lambda: _remuxed([400 if 10 <= i < 15 else i * 40 for i in range(30)]),
    "timestamps going back": lambda: _remuxed(
        [i * 40 if i < 15 else (i - 15) * 40 + 20 for i in range(30)]
    ),
    "timestamps jumping back": lambda: _remuxed(
        [i * 40 if i < 15 else (i - 15) * 40 + 100 for i in range(30)]
    ),
    "ts with timestamps stripped": _stripped_ts,
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("num_frames", [4, 7, -1])
def test_broken_timestamps_give_frames_timed_the_way_they_are_returned(
    loader_cls: Any, case: str, num_frames: int
) -> None:
    data = BROKEN[case]()
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, num_frames)
    indices, stamps = meta["frames_indices"], meta["timestamps"]
    assert len(frames) == len(indices) == len(stamps) >= 1
    assert indices == sorted(set(indices)) and indices[0] >= 0 and indices[-1] < len(truth.numbers)
    assert all(math.isfinite(t) for t in stamps) and stamps == sorted(stamps)
    assert 0 <= stamps[-1] < meta["duration"] and math.isfinite(meta["duration"])
    numbers = read_numbers(frames)
    by_count = numbers == indices and stamps == pytest.approx([i / meta["fps"] for i in indices])
    by_time = stamps == pytest.approx(
        [truth.seconds[truth.numbers.index(n)] - truth.start for n in numbers]
    )
    assert by_count or by_time  # each time is the returned frame's own


def test_avi_timestamps_that_count_packets_do_not_shuffle_b_frames(loader_cls: Any) -> None:
    # The decoder hands these frames over in the order they are shown; their AVI
    # timestamps count packets and would put them out of that order.
    data = BROKEN["avi counting packets, h264 with b-frames"]()
    assert sorted(Truth(data).seconds) != Truth(data).seconds
    for num_frames in (10, -1):
        frames, meta = loader_cls().load_bytes(data, num_frames)
        assert read_numbers(frames) == meta["frames_indices"]


def test_stripped_timestamps_are_filled_in_as_a_player_would(loader_cls: Any) -> None:
    data = _stripped_ts()
    truth = Truth(data)
    frames, meta = loader_cls().load_bytes(data, 7)
    assert read_numbers(frames) == meta["frames_indices"]
    assert meta["timestamps"] == pytest.approx(
        [truth.seconds[i] - truth.start for i in meta["frames_indices"]]
    )
