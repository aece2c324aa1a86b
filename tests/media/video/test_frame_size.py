"""Decode-time frame sizes: ``max_frame_size`` (a box or a pixel budget) and ``resize_to``.

The clips are H.264 at 640x360 whose every frame is a different picture (a gradient
whose phase follows the frame number) with a coloured block in each corner, so a
wrong frame, a wrong turn or a squashed frame all show in the pixels. The frames a hint
gives are compared with what a model processor would otherwise do: decode at full size,
then resize each frame with Pillow.
"""

from __future__ import annotations

import base64
import io
import math
import tracemalloc
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from av.video.stream import VideoStream
from PIL import Image

from mediagate import (
    VIDEO_LOADER_REGISTRY,
    DecodeError,
    ImageMediaIO,
    MediaPolicy,
    OptionError,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._media import image as image_module
from mediagate._media.budget import DecodedBudget
from mediagate._media.video.frame_size import MAX_FRAME_SIDE, FrameSize
from mediagate._media.video.loader import SampledVideoLoader

WIDTH, HEIGHT = 640, 360
FRAMES = 8
BACKENDS = ("pyav", "opencv")
IN_PROCESS = MediaPolicy(isolation=False)

RED, GREEN, BLUE, WHITE = (230, 30, 30), (30, 200, 30), (30, 30, 230), (240, 240, 240)
COLOURS = {"red": RED, "green": GREEN, "blue": BLUE, "white": WHITE}
#: The stored frame's corners: top-left, top-right, bottom-left, bottom-right.
STORED = ("red", "green", "blue", "white")
#: The same corners once the frame is turned a quarter clockwise.
TURNED_90 = ("blue", "red", "white", "green")

ONE = 1 << 16  # 1.0 in a display matrix's 16.16 entries
ROTATE_90 = [0, ONE, 0, -ONE, 0, 0, HEIGHT * ONE, 0, 1 << 30]


def picture(number: int, width: int = WIDTH, height: int = HEIGHT) -> npt.NDArray[np.uint8]:
    """Frame ``number``: a diagonal gradient shifted by the number, a block in each corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (xx * 255 // width + number * 40) % 256
    image[..., 1] = (yy * 255 // height + number * 25) % 256
    image[..., 2] = ((xx + yy) // 3 + number * 60) % 256
    side = min(width, height) // 5
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
    return image


@cache
def clip(
    width: int = WIDTH, height: int = HEIGHT, *, rotated: bool = False, frames: int = FRAMES
) -> bytes:
    """H.264 mp4 of ``picture`` frames; ``rotated``: a display matrix turns them a quarter
    clockwise (a phone held upright)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 4
        stream.options = {"preset": "veryfast", "crf": "18"}
        if rotated:
            stream.set_display_matrix(ROTATE_90)
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture(i, width, height), "rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


@cache
def textured_clip() -> bytes:
    """H.264 of 640x360 colour texture down to single pixels: detail that a decoder's
    scaler blurs or smears if it interpolates the colour planes coarsely."""
    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        for _ in range(3):
            texture = np.zeros((HEIGHT, WIDTH, 3), np.float32)
            for cell, amplitude in ((64, 60), (16, 45), (4, 35), (1, 20)):
                coarse = rng.normal(0, 1, (HEIGHT // cell + 2, WIDTH // cell + 2, 3))
                smooth = cv2.resize(
                    coarse.astype(np.float32),
                    (WIDTH + 2 * cell, HEIGHT + 2 * cell),
                    interpolation=cv2.INTER_CUBIC,
                )
                texture += amplitude * smooth[cell : cell + HEIGHT, cell : cell + WIDTH]
            image = np.clip(texture + 128, 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, "rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


needs_matrix = pytest.mark.skipif(
    not hasattr(VideoStream, "set_display_matrix"), reason="PyAV cannot write display matrices"
)


def video_io(backend: str = "pyav", num_frames: int = 4, **options: Any) -> VideoMediaIO:
    policy = options.pop("policy", IN_PROCESS)
    return VideoMediaIO(
        ImageMediaIO("RGB"), num_frames, video_backend=backend, policy=policy, **options
    )


def pillow_resized(frame: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.int16]:
    """What a model processor does with a full-size frame: Pillow's bicubic resize."""
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC), np.int16)


def mean_abs_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def corners(frame: npt.NDArray[np.uint8]) -> tuple[str, ...]:
    """The colour names of the four corner blocks: top-left, top-right, bottom-left,
    bottom-right (sampled well inside each block, at any frame size or squeeze: a block
    spans at least a ninth of the frame each way)."""
    height, width = frame.shape[:2]

    def ends(length: int) -> list[slice]:
        inset, size = max(1, round(length * 0.02)), max(1, round(length * 0.05))
        return [slice(inset, inset + size), slice(length - inset - size, length - inset)]

    rows, cols = ends(height), ends(width)
    names = []
    for r in rows:
        for c in cols:
            mean = frame[r, c].reshape(-1, 3).mean(axis=0)
            distance, name = min((float(np.abs(mean - v).sum()), n) for n, v in COLOURS.items())
            assert distance < 60, f"no corner block here (mean {mean})"
            names.append(name)
    return tuple(names)


# -- the size rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "source", "expected"),
    [
        (FrameSize(box=(448, 448)), (3840, 2160), (448, 252)),
        (FrameSize(box=(448, 448)), (2160, 3840), (252, 448)),
        (FrameSize(box=(448, 448)), (320, 180), (320, 180)),  # never enlarged
        (FrameSize(box=(1000, 100)), (640, 360), (178, 100)),  # the tighter side decides
        (FrameSize(pixels=448 * 448), (3840, 2160), (597, 336)),
        (FrameSize(pixels=10**9), (640, 360), (640, 360)),
        (FrameSize(pixels=1), (1000, 1), (1, 1)),
        (FrameSize(pixels=10), (1, 1000), (1, 10)),  # a side held at 1
        (FrameSize(exact=(224, 224)), (3840, 2160), (224, 224)),
        (FrameSize(exact=(800, 600)), (64, 48), (800, 600)),  # exact may enlarge
    ],
)
def test_output_sizes(hint: FrameSize, source: tuple[int, int], expected: tuple[int, int]) -> None:
    assert hint.output_size(*source) == expected


def test_fitted_sizes_keep_the_aspect_ratio_and_stay_within_the_hint() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        w, h = (int(v) for v in rng.integers(1, 8000, 2))
        bw, bh = (int(v) for v in rng.integers(1, 2000, 2))
        budget = int(rng.integers(1, 4_000_000))
        for hint in (FrameSize(box=(bw, bh)), FrameSize(pixels=budget)):
            ow, oh = hint.output_size(w, h)
            assert 1 <= ow <= w and 1 <= oh <= h
            if hint.box is not None:
                assert ow <= bw and oh <= bh
            else:
                assert ow * oh <= budget
            if min(ow, oh) >= 20:  # rounding a side by under a pixel moves the ratio
                assert abs(ow / oh - w / h) / (w / h) < 0.1


# -- every backend, both hints -----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("options", "size"),
    [
        ({"max_frame_size": [160, 160]}, (160, 90)),
        ({"max_frame_size": (100, 400)}, (100, 56)),
        ({"max_frame_size": 160 * 90}, (160, 90)),
        ({"max_frame_size": 5000}, (94, 53)),
        ({"resize_to": [96, 128]}, (96, 128)),
        ({"max_frame_size": [4000, 4000]}, (WIDTH, HEIGHT)),
    ],
)
def test_frames_come_out_at_the_size_asked(
    backend: str, options: dict[str, Any], size: tuple[int, int]
) -> None:
    frames, meta = video_io(backend, **options).load_bytes(clip())
    assert frames.shape == (4, size[1], size[0], 3)
    assert (meta["width"], meta["height"]) == size
    assert (meta["original_width"], meta["original_height"]) == (WIDTH, HEIGHT)
    assert (meta["coded_width"], meta["coded_height"]) == (WIDTH, HEIGHT)
    assert meta["frames_indices"] == [0, 2, 4, 7]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "options",
    [{"max_frame_size": [160, 160]}, {"max_frame_size": 200 * 112}, {"resize_to": [120, 120]}],
)
def test_frames_are_the_full_decode_resized(backend: str, options: dict[str, Any]) -> None:
    full, meta = video_io(backend, FRAMES).load_bytes(clip())
    small, small_meta = video_io(backend, FRAMES, **options).load_bytes(clip())
    assert small_meta["frames_indices"] == meta["frames_indices"]
    size = (small.shape[2], small.shape[1])
    expected = [pillow_resized(frame, size) for frame in full]
    for number, frame in enumerate(small):
        assert mean_abs_diff(frame, expected[number]) < 3.0
        # The pictures differ frame to frame: a wrong frame would be far off.
        assert mean_abs_diff(frame, expected[(number + 1) % FRAMES]) > 20
    assert corners(small[0]) == STORED


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("box", [[160, 160], [100, 100]])
def test_fine_colour_detail_is_scaled_like_a_full_decode(backend: str, box: list[int]) -> None:
    full, _ = video_io(backend, 3).load_bytes(textured_clip())
    small, _ = video_io(backend, 3, max_frame_size=box).load_bytes(textured_clip())
    size = (small.shape[2], small.shape[1])
    for frame, whole in zip(small, full, strict=True):
        # Two resamplers never agree exactly on single-pixel detail (OpenCV's area
        # filter against Pillow's bicubic: about 3); smeared colour planes are 9 or more.
        assert mean_abs_diff(frame, pillow_resized(whole, size)) < 5.0


def test_the_backends_agree_at_the_reduced_size() -> None:
    pyav_frames, _ = video_io("pyav", max_frame_size=[200, 200]).load_bytes(clip())
    opencv_frames, _ = video_io("opencv", max_frame_size=[200, 200]).load_bytes(clip())
    assert pyav_frames.shape == opencv_frames.shape
    assert mean_abs_diff(pyav_frames, opencv_frames) < 3.0


def test_a_model_sampler_takes_the_hint_and_keeps_its_frames() -> None:
    full, meta = video_io("qwen3_vl").load_bytes(clip())
    small, small_meta = video_io("qwen3_vl", max_frame_size=[128, 128]).load_bytes(clip())
    assert small.shape == (len(full), 72, 128, 3)
    assert small_meta["frames_indices"] == meta["frames_indices"]
    assert (small_meta["width"], small_meta["height"]) == (128, 72)
    assert (small_meta["original_width"], small_meta["original_height"]) == (WIDTH, HEIGHT)
    assert "width" not in meta  # without a hint, vLLM's metadata as it is


def test_no_hint_leaves_frames_and_metadata_as_they_were() -> None:
    frames, meta = video_io("pyav").load_bytes(clip())
    assert frames.shape == (4, HEIGHT, WIDTH, 3)
    assert "original_width" not in meta and "original_height" not in meta


def test_the_hint_holds_in_an_isolated_decoder() -> None:
    frames, meta = video_io(
        "pyav", policy=MediaPolicy(isolation=True), max_frame_size=[160, 160]
    ).load_bytes(clip())
    assert frames.shape == (4, 90, 160, 3)
    assert (meta["original_width"], meta["original_height"]) == (WIDTH, HEIGHT)


# -- rotation, then the hint ---------------------------------------------------------------


@needs_matrix
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_hint_applies_to_the_frame_as_shown(backend: str) -> None:
    data = clip(rotated=True)
    shown, _ = video_io(backend).load_bytes(data)
    assert shown.shape[1:3] == (WIDTH, HEIGHT)  # portrait: 360 across, 640 down
    small, small_meta = video_io(backend, max_frame_size=[160, 160]).load_bytes(data)
    assert small.shape == (4, 160, 90, 3)
    assert (small_meta["width"], small_meta["height"]) == (90, 160)
    assert (small_meta["original_width"], small_meta["original_height"]) == (HEIGHT, WIDTH)
    assert (small_meta["coded_width"], small_meta["coded_height"]) == (WIDTH, HEIGHT)
    assert small_meta["rotation"] == 90
    for frame, full in zip(small, shown, strict=True):
        assert corners(frame) == TURNED_90
        assert mean_abs_diff(frame, pillow_resized(full, (90, 160))) < 3.0


@needs_matrix
@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_to_squeezes_the_shown_frame_not_the_stored_one(backend: str) -> None:
    data = clip(rotated=True)
    shown, _ = video_io(backend).load_bytes(data)
    small, meta = video_io(backend, resize_to=[150, 100]).load_bytes(data)
    assert small.shape == (4, 100, 150, 3)
    assert meta["rotation"] == 90
    for frame, full in zip(small, shown, strict=True):
        assert corners(frame) == TURNED_90
        assert mean_abs_diff(frame, pillow_resized(full, (150, 100))) < 3.0


# -- memory and the decoded-output budget ------------------------------------------------


def _traced_peak(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("backend", "full_frames_held"), [("pyav", 0), ("opencv", 1)])
def test_no_full_size_rgb_frame_is_kept(backend: str, full_frames_held: int) -> None:
    data = clip(1280, 720, frames=6)
    one_frame = 1280 * 720 * 3
    hinted = video_io(backend, 6, max_frame_size=[64, 64])
    unhinted = video_io(backend, 6)
    hinted.load_bytes(data)  # imports and first-use allocations out of the way
    # pyav converts into the small size in one pass; opencv retrieves one full BGR frame
    # at a time and resizes it before the next.
    assert _traced_peak(lambda: hinted.load_bytes(data)) < (full_frames_held + 0.5) * one_frame
    assert _traced_peak(lambda: unhinted.load_bytes(data)) >= 6 * one_frame


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_budget_counts_the_frames_at_their_output_size(backend: str) -> None:
    data = clip()
    full = 4 * WIDTH * HEIGHT * 3
    policy = MediaPolicy(isolation=False, max_decoded_bytes=full // 3)
    with pytest.raises(TooLargeError) as refused:
        video_io(backend, policy=policy).load_bytes(data)
    assert refused.value.limit == "max_decoded_bytes"
    frames, _ = video_io(backend, policy=policy, max_frame_size=[320, 320]).load_bytes(data)
    assert frames.shape == (4, 180, 320, 3)
    # An output over the budget is refused just the same, before any frame is decoded.
    with pytest.raises(TooLargeError) as enlarged:
        video_io(backend, policy=policy, resize_to=[1280, 720]).load_bytes(data)
    assert enlarged.value.limit == "max_decoded_bytes"


def test_a_request_budget_is_charged_the_output_size() -> None:
    io_ = video_io("pyav", max_frame_size=[160, 160])
    io_.decoded_budget = DecodedBudget(1 << 20)
    frames, _ = io_.load_bytes(clip())
    assert io_.decoded_budget.used == frames.nbytes == 4 * 160 * 90 * 3


# -- video/jpeg sequences ----------------------------------------------------------------


def jpeg_sequence(
    count: int = 4, width: int = WIDTH, height: int = HEIGHT, orientation: int = 1
) -> str:
    parts = []
    for i in range(count):
        buffer = io.BytesIO()
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        Image.fromarray(picture(i, width, height)).save(buffer, "JPEG", quality=92, exif=exif)
        parts.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return ",".join(parts)


@pytest.mark.parametrize(
    ("options", "size"),
    [
        ({"max_frame_size": [160, 160]}, (160, 90)),
        ({"max_frame_size": 200 * 112}, (199, 112)),
        ({"resize_to": [100, 100]}, (100, 100)),
        ({"max_frame_size": [2000, 2000]}, (WIDTH, HEIGHT)),
    ],
)
def test_jpeg_sequences_come_out_at_the_size_asked(
    options: dict[str, Any], size: tuple[int, int]
) -> None:
    data = jpeg_sequence()
    full, _ = video_io(num_frames=-1).load_base64("video/jpeg", data)
    frames, meta = video_io(num_frames=-1, **options).load_base64("video/jpeg", data)
    assert frames.shape == (4, size[1], size[0], 3)
    assert (meta["width"], meta["height"]) == size
    assert (meta["original_width"], meta["original_height"]) == (WIDTH, HEIGHT)
    for number, frame in enumerate(frames):
        assert mean_abs_diff(frame, pillow_resized(full[number], size)) < 3.0
        assert mean_abs_diff(frame, pillow_resized(full[(number + 1) % 4], size)) > 20


def test_jpeg_frames_decode_at_a_reduced_dct_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[tuple[int, ...]] = []
    real = image_module._simplejpeg.decode_jpeg

    def spy(*args: Any, **kwargs: Any) -> Any:
        array = real(*args, **kwargs)
        decoded.append(array.shape[:2])
        return array

    monkeypatch.setattr(image_module._simplejpeg, "decode_jpeg", spy)
    frames, _ = video_io(num_frames=-1, max_frame_size=[160, 160]).load_base64(
        "video/jpeg", jpeg_sequence()
    )
    assert frames.shape == (4, 90, 160, 3)
    # libjpeg scales by 1/4 here (160x90 from 640x360): no frame is decoded at full size.
    assert decoded == [(90, 160)] * 4


def test_exif_turned_jpeg_frames_are_fitted_as_shown() -> None:
    data = jpeg_sequence(orientation=6)  # stored landscape, shown turned a quarter clockwise
    full, _ = video_io(num_frames=-1).load_base64("video/jpeg", data)
    assert full.shape[1:3] == (WIDTH, HEIGHT)
    frames, meta = video_io(num_frames=-1, max_frame_size=[160, 160]).load_base64(
        "video/jpeg", data
    )
    assert frames.shape == (4, 160, 90, 3)
    assert (meta["original_width"], meta["original_height"]) == (HEIGHT, WIDTH)
    assert corners(frames[0]) == TURNED_90
    assert mean_abs_diff(frames[0], pillow_resized(full[0], (90, 160))) < 3.0


def test_jpeg_frames_of_another_size_are_refused_with_a_hint() -> None:
    data = jpeg_sequence(2) + "," + jpeg_sequence(1, 320, 180)
    with pytest.raises(DecodeError, match="unlike frame 0"):
        video_io(num_frames=-1, max_frame_size=[160, 160]).load_base64("video/jpeg", data)


def test_jpeg_sequence_budget_counts_the_output_size() -> None:
    data = jpeg_sequence()
    policy = MediaPolicy(isolation=False, max_decoded_bytes=WIDTH * HEIGHT * 3)
    with pytest.raises(TooLargeError) as refused:
        video_io(num_frames=-1, policy=policy).load_base64("video/jpeg", data)
    assert refused.value.limit == "max_decoded_bytes"
    frames, _ = video_io(num_frames=-1, policy=policy, max_frame_size=[320, 320]).load_base64(
        "video/jpeg", data
    )
    assert frames.shape == (4, 180, 320, 3)


# -- a backend that does not size frames itself ------------------------------------------


class FullSizeLoader:
    """A third-party loader with no notion of frame sizes: full 64x48 frames."""

    def load_bytes(
        self, data: bytes, num_frames: int = -1, **options: Any
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        frames = np.stack([picture(i, 64, 48) for i in range(3)])
        return frames, {"frames_indices": [0, 1, 2]}


def test_frames_of_a_backend_that_does_not_size_them_are_resized_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setitem(VIDEO_LOADER_REGISTRY._entries, name, FullSizeLoader)
    frames, meta = video_io(name, max_frame_size=[32, 32]).load_bytes(b"any bytes")
    assert frames.shape == (3, 24, 32, 3)
    assert (meta["width"], meta["height"]) == (32, 24)
    assert (meta["original_width"], meta["original_height"]) == (64, 48)
    assert corners(frames[1]) == STORED


class UnsizedDecoder(SampledVideoLoader):
    """A loader built on the shared base whose decoder knows nothing of frame sizes."""

    name = "unsized"

    def decode_targets(self, data: bytes, container: Any, *args: Any) -> Any:
        targets = args[2]
        return np.stack([picture(number) for number in targets])


def test_frames_of_a_decoder_that_ignores_the_hint_are_resized_after() -> None:
    loader = UnsizedDecoder(frame_size=FrameSize(box=(160, 160)))
    frames, meta = loader.load_bytes(clip(), 2, policy=IN_PROCESS)
    assert frames.shape == (2, 90, 160, 3)
    assert (meta["width"], meta["height"]) == (160, 90)
    assert (meta["original_width"], meta["original_height"]) == (WIDTH, HEIGHT)
    assert mean_abs_diff(frames[1], pillow_resized(picture(7), (160, 90))) < 3.0


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([448, 448], FrameSize(box=(448, 448))),
        ((448, 252), FrameSize(box=(448, 252))),
        ([np.int64(64), 48.0], FrameSize(box=(64, 48))),
        (200_704, FrameSize(pixels=200_704)),
        (np.int32(1000), FrameSize(pixels=1000)),
        (None, None),
    ],
)
def test_accepted_max_frame_size_values(value: Any, expected: FrameSize | None) -> None:
    assert video_io(max_frame_size=value).frame_size == expected


HOSTILE = [
    True,
    False,
    0,
    -1,
    -(2**63),
    2**64,
    MAX_FRAME_SIDE**2 + 1,
    math.nan,
    math.inf,
    -math.inf,
    1e300,
    448.5,
    "448",
    "448x448",
    b"448",
    {"width": 448, "height": 448},
    [],
    [448],
    [448, 448, 3],
    [0, 448],
    [448, -1],
    [448, MAX_FRAME_SIDE + 1],
    [True, 448],
    [448, math.nan],
    [448, math.inf],
    [448.5, 448],
    ["448", "448"],
    [None, 448],
    [[448], [448]],
]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_max_frame_size_is_an_option_error(value: Any) -> None:
    with pytest.raises(OptionError) as refused:
        video_io(max_frame_size=value)
    assert refused.value.option == "max_frame_size"


@pytest.mark.parametrize("value", [*HOSTILE, 448, 200_704, np.int64(5)], ids=repr)
def test_hostile_resize_to_is_an_option_error(value: Any) -> None:
    with pytest.raises(OptionError) as refused:
        video_io(resize_to=value)
    assert refused.value.option == "resize_to"


def test_the_two_hints_are_exclusive() -> None:
    with pytest.raises(OptionError, match="cannot be used together") as refused:
        video_io(max_frame_size=[448, 448], resize_to=[224, 224])
    assert refused.value.option == "resize_to"


def test_resize_to_may_not_exceed_max_pixels() -> None:
    policy = MediaPolicy(isolation=False, max_pixels=1920 * 1080)
    assert video_io(policy=policy, resize_to=[1920, 1080]).frame_size == FrameSize(
        exact=(1920, 1080)
    )
    with pytest.raises(OptionError, match="max_pixels") as refused:
        video_io(policy=policy, resize_to=[1921, 1080])
    assert refused.value.option == "resize_to"


def test_a_request_hint_replaces_the_servers_other_hint() -> None:
    merged = VideoMediaIO.merge_kwargs({"max_frame_size": [448, 448]}, {"resize_to": [64, 64]})
    assert merged == {"resize_to": [64, 64]}
    frames, _ = video_io(**merged).load_bytes(clip())
    assert frames.shape == (4, 64, 64, 3)
    kept = VideoMediaIO.merge_kwargs({"max_frame_size": [448, 448]}, {"num_frames": 2})
    assert kept == {"max_frame_size": [448, 448], "num_frames": 2}


def test_the_hints_are_named_among_the_known_options() -> None:
    with pytest.raises(OptionError, match=r"max_frame_size.*resize_to"):
        video_io(max_frame_sise=[448, 448])
