"""Frames come out turned the way players show them: the display matrix, the rotate tag.

The clips are stored landscape (320x180) with a coloured block in each corner, and say
how to show them with a display matrix (PyAV writes it as the MP4 ``tkhd`` matrix or
Matroska's projection) or a legacy ``rotate`` tag. Which colour lands in which corner
tells a wrong direction or a missing mirror apart from the right one; the stored pixels
come from a plain PyAV decode, and OpenCV's own turning is a second opinion on the
direction of the pure rotations.
"""

from __future__ import annotations

import io
import math
from functools import cache
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from av.video.stream import VideoStream

from mediagate import ImageMediaIO, VideoMediaIO
from mediagate._media import _helpers as helpers_module
from mediagate._media.video import loader as loader_module
from mediagate._media.video import pyav as pyav_module
from mediagate._media.video.opencv import OpenCVVideoLoader
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.samplers import Qwen3VLSampler
from mediagate._media.video.sampling import VLLM_METADATA_KEYS

pytestmark = pytest.mark.skipif(
    not hasattr(VideoStream, "set_display_matrix"), reason="PyAV cannot write display matrices"
)

LOADERS = {"pyav": PyAVVideoLoader, "opencv": OpenCVVideoLoader}

WIDTH, HEIGHT = 320, 180
ONE = 1 << 16  # 1.0 in the matrix's 16.16 entries
W = 1 << 30  # 1.0 in its 2.30 entries

RED, GREEN, BLUE, WHITE = (230, 30, 30), (30, 200, 30), (30, 30, 230), (240, 240, 240)
COLOURS = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}
#: The stored frame's corners: top-left, top-right, bottom-left, bottom-right.
STORED = ("red", "green", "blue", "white")


def _matrix(a: int, b: int, c: int, d: int, tx: int = 0, ty: int = 0) -> list[int]:
    """A display matrix mapping stored (x, y) to shown (a*x + c*y + tx, b*x + d*y + ty)."""
    return [a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, tx * ONE, ty * ONE, W]


#: case -> (display matrix, shown corners (top-left, top-right, bottom-left,
#: bottom-right), rotation and mirror the metadata reports). The translations are
#: those a camera writes, so every shown coordinate is positive.
CASES: dict[str, tuple[list[int], tuple[str, str, str, str], int, bool]] = {
    # A phone held upright: turn a quarter clockwise.
    "rotate-90": (_matrix(0, 1, -1, 0, tx=HEIGHT), ("blue", "red", "white", "green"), 90, False),
    "rotate-180": (
        _matrix(-1, 0, 0, -1, tx=WIDTH, ty=HEIGHT),
        ("white", "blue", "green", "red"),
        180,
        False,
    ),
    "rotate-270": (_matrix(0, -1, 1, 0, ty=WIDTH), ("green", "white", "red", "blue"), 270, False),
    # A front camera's selfie: mirrored left to right.
    "mirror": (_matrix(-1, 0, 0, 1, tx=WIDTH), ("green", "red", "white", "blue"), 0, True),
    # Turned a quarter clockwise and mirrored: the stored frame transposed.
    "transpose": (_matrix(0, 1, 1, 0), ("red", "blue", "green", "white"), 90, True),
}


def painted(number: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    """A grey frame with a coloured block in each corner and ``number`` in the middle."""
    image = np.full((height, width, 3), 128, np.uint8)
    side = 40
    for name, (rows, cols) in zip(
        STORED,
        [
            (slice(0, side), slice(0, side)),
            (slice(0, side), slice(width - side, width)),
            (slice(height - side, height), slice(0, side)),
            (slice(height - side, height), slice(width - side, width)),
        ],
        strict=True,
    ):
        image[rows, cols] = COLOURS[name]
    top, left = height // 2 - 8, width // 2 - 32
    for bit in range(8):
        image[top : top + 16, left + bit * 8 : left + bit * 8 + 8] = 255 * ((number >> bit) & 1)
    return image


def build_clip(
    matrix: list[int] | None = None,
    *,
    container: str = "mp4",
    tag: str | None = None,
    frames: int = 6,
    gop: int = 3,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> bytes:
    """H.264 frames of ``painted``, with ``matrix`` as the display matrix and ``tag`` as
    the stream's ``rotate`` tag (kept by Matroska, not by MP4)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if matrix is not None:
            stream.set_display_matrix(matrix)
        if tag is not None:
            stream.metadata["rotate"] = tag
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(painted(i, width, height), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buffer.getvalue()


@cache
def case_clip(case: str, container: str = "mp4") -> bytes:
    return build_clip(CASES[case][0], container=container)


def stored_frames(data: bytes) -> list[npt.NDArray[np.uint8]]:
    """Every frame as stored, from a plain PyAV decode."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def corners(frame: npt.NDArray[np.uint8]) -> tuple[str, ...]:
    """The colour names of the frame's four corners: top-left, top-right, bottom-left,
    bottom-right."""
    height, width = frame.shape[:2]
    patches = [
        frame[5:30, 5:30],
        frame[5:30, width - 30 : width - 5],
        frame[height - 30 : height - 5, 5:30],
        frame[height - 30 : height - 5, width - 30 : width - 5],
    ]
    names = []
    for patch in patches:
        mean = patch.reshape(-1, 3).mean(axis=0)
        distance, name = min((float(np.abs(mean - c).sum()), n) for n, c in COLOURS.items())
        assert distance < 60, f"no corner block here (mean {mean})"
        names.append(name)
    return tuple(names)


def turned(frame: npt.NDArray[np.uint8], rotation: int, mirrored: bool) -> npt.NDArray[np.uint8]:
    """``frame`` turned ``rotation`` degrees clockwise, then mirrored if asked."""
    out = np.rot90(frame, k=-(rotation // 90))
    return out[:, ::-1] if mirrored else out


@pytest.fixture(params=sorted(LOADERS))
def loader(request: pytest.FixtureRequest) -> Any:
    return LOADERS[request.param]()


# -- every backend, every orientation ---------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_frames_come_out_as_players_show_them(loader: Any, case: str) -> None:
    _, shown, rotation, mirrored = CASES[case]
    frames, meta = loader.load_bytes(case_clip(case), 3)
    across, down = (HEIGHT, WIDTH) if rotation in (90, 270) else (WIDTH, HEIGHT)
    assert frames.shape == (3, down, across, 3)
    assert all(corners(frame) == shown for frame in frames)
    assert (meta["width"], meta["height"]) == (across, down)
    assert (meta["coded_width"], meta["coded_height"]) == (WIDTH, HEIGHT)
    assert (meta["rotation"], meta["mirrored"]) == (rotation, mirrored)


def test_a_portrait_phone_clip_is_portrait(loader: Any) -> None:
    frames, _ = loader.load_bytes(case_clip("rotate-90"), 4)
    assert frames.shape == (4, 320, 180, 3)
    # The stored top-left corner (red) is shown top-right: a clockwise quarter turn.
    assert corners(frames[0])[:2] == ("blue", "red")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_pixels_are_the_stored_pixels_turned(loader: Any, case: str) -> None:
    data = case_clip(case)
    _, _, rotation, mirrored = CASES[case]
    frames, meta = loader.load_bytes(data, 3)
    stored = stored_frames(data)
    for frame, number in zip(frames, meta["frames_indices"], strict=True):
        expected = turned(stored[number], rotation, mirrored)
        assert frame.shape == expected.shape
        if loader.name == "pyav":
            assert np.array_equal(frame, expected)  # the same decoder: not resampled
        else:
            # OpenCV converts colours its own way; never resampled from a squashed frame.
            assert np.abs(frame.astype(np.int16) - expected).mean() < 2.0


@pytest.mark.parametrize("case", ["rotate-90", "rotate-180", "rotate-270"])
def test_the_direction_agrees_with_opencvs_own_turning(case: str) -> None:
    data = case_clip(case)
    source = io.BytesIO(data)  # OpenCV reads from it while the capture lives
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [])
    try:
        ok, bgr = capture.read()  # OpenCV turns rotations itself unless told not to
    finally:
        capture.release()
    assert ok
    opencv_view = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    frames, _ = PyAVVideoLoader().load_bytes(data, 1)
    assert frames[0].shape == opencv_view.shape
    assert corners(frames[0]) == corners(opencv_view) == CASES[case][1]


@pytest.mark.parametrize("case", ["rotate-90", "mirror"])
def test_a_matroska_projection_is_applied_too(loader: Any, case: str) -> None:
    frames, meta = loader.load_bytes(case_clip(case, "matroska"), 2)
    assert all(corners(frame) == CASES[case][1] for frame in frames)
    assert (meta["rotation"], meta["mirrored"]) == CASES[case][2:]


# -- the legacy rotate tag, odd matrices ------------------------------------------------


def test_the_legacy_rotate_tag_turns_clockwise(loader: Any) -> None:
    data = build_clip(container="matroska", tag="90")
    with av.open(io.BytesIO(data)) as container:  # the tag is in the file, no matrix
        assert dict(container.streams.video[0].metadata).get("ROTATE") == "90"
    frames, meta = loader.load_bytes(data, 2)
    assert frames.shape == (2, WIDTH, HEIGHT, 3)
    assert all(corners(frame) == CASES["rotate-90"][1] for frame in frames)
    assert (meta["rotation"], meta["mirrored"]) == (90, False)


def test_the_display_matrix_wins_over_the_rotate_tag(loader: Any) -> None:
    data = build_clip(CASES["rotate-180"][0], container="matroska", tag="90")
    frames, meta = loader.load_bytes(data, 2)
    assert frames.shape == (2, HEIGHT, WIDTH, 3)
    assert all(corners(frame) == CASES["rotate-180"][1] for frame in frames)
    assert meta["rotation"] == 180


def test_a_turn_by_another_angle_leaves_the_frames_as_stored(loader: Any) -> None:
    cos = sin = round(math.sqrt(0.5) * ONE)
    data = build_clip([cos, -sin, 0, sin, cos, 0, 0, 0, W])  # 45 degrees
    frames, meta = loader.load_bytes(data, 2)
    assert frames.shape == (2, HEIGHT, WIDTH, 3)
    assert all(corners(frame) == STORED for frame in frames)
    assert (meta["rotation"], meta["mirrored"]) == (0, False)


def test_an_unturned_clip_reports_both_sizes_alike(loader: Any) -> None:
    frames, meta = loader.load_bytes(build_clip(), 2)
    assert all(corners(frame) == STORED for frame in frames)
    assert (meta["width"], meta["height"], meta["coded_width"], meta["coded_height"]) == (
        WIDTH,
        HEIGHT,
        WIDTH,
        HEIGHT,
    )
    assert (meta["rotation"], meta["mirrored"]) == (0, False)


# -- every decoding path turns the frames -----------------------------------------------


def test_the_counting_walk_turns_frames_too(monkeypatch: pytest.MonkeyPatch) -> None:
    real = loader_module.index_stream

    def inexact(*args: Any, **kwargs: Any) -> Any:
        index = real(*args, **kwargs)
        return type(index)(
            index.pts,
            index.keyframes,
            False,
            index.fps,
            index.time_base,
            rotate_tag=index.rotate_tag,
        )

    monkeypatch.setattr(loader_module, "index_stream", inexact)
    data = case_clip("rotate-270")
    frames, meta = PyAVVideoLoader().load_bytes(data, 3)
    stored = stored_frames(data)
    assert frames.shape == (3, WIDTH, HEIGHT, 3) and meta["rotation"] == 270
    for frame, number in zip(frames, meta["frames_indices"], strict=True):
        assert np.array_equal(frame, turned(stored[number], 270, False))


def test_parallel_decoders_turn_frames_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers_module, "cpu_count", lambda: 3)
    monkeypatch.setattr(pyav_module, "_PARALLEL_MIN_FRAMES", 1)
    monkeypatch.setattr(helpers_module, "_pool", None)
    data = build_clip(CASES["transpose"][0], frames=40, gop=5, width=320, height=240)
    frames, meta = PyAVVideoLoader().load_bytes(data, 6)
    stored = stored_frames(data)
    assert frames.shape == (6, 320, 240, 3)
    for frame, number in zip(frames, meta["frames_indices"], strict=True):
        assert np.array_equal(frame, turned(stored[number], 90, True))


# -- through VideoMediaIO, the model samplers, video/jpeg -------------------------------


def test_video_media_io_returns_turned_frames(image_io: ImageMediaIO) -> None:
    for backend in sorted(LOADERS):
        frames, meta = VideoMediaIO(image_io, 4, video_backend=backend).load_bytes(
            case_clip("rotate-90")
        )
        assert frames.shape == (4, WIDTH, HEIGHT, 3) and meta["rotation"] == 90


def test_a_model_sampler_turns_frames_and_keeps_vllms_metadata() -> None:
    frames, meta = Qwen3VLSampler().load_bytes(case_clip("rotate-90"))
    assert frames.shape[1:] == (WIDTH, HEIGHT, 3)
    assert all(corners(frame) == CASES["rotate-90"][1] for frame in frames)
    assert tuple(meta) == VLLM_METADATA_KEYS


def test_video_jpeg_frames_are_not_turned(image_io: ImageMediaIO) -> None:
    # A JPEG sequence has no display matrix: the frames are the client's, as sent.
    portrait = np.stack([turned(painted(i), 90, False) for i in range(3)])
    io_ = VideoMediaIO(image_io, -1)
    frames, meta = io_.load_base64("video/jpeg", io_.encode_base64(portrait))
    assert frames.shape == (3, WIDTH, HEIGHT, 3)
    assert all(corners(frame) == CASES["rotate-90"][1] for frame in frames)
    assert (meta["width"], meta["height"]) == (HEIGHT, WIDTH)
