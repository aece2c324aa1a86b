"""What the model sees is what the file shows: every sampled frame against FFmpeg's own
decode of the same file at the same presentation time.

For each clip (built here with PyAV's FFmpeg: codecs and containers as phones, browsers
and encoders write them, 10-bit, a variable frame rate), the ground truth is a plain
decode of every frame (``frame.to_ndarray(format="rgb24")``, turned as the display
matrix says) with its time from the stream's first frame. Rotated and mirrored clips
are held to the stored pixels turned in ``video/test_rotation.py``. Each frame a
backend returns must be the truth's frame at the timestamp its metadata reports (pixels
within +-2), and the index it reports must be that frame's place in display order.
"""

from __future__ import annotations

import base64
import functools
import io
import tempfile
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pytest

from builders import encode_clip
from mediagate import DecodeError, MediaConnector

#: (name, encode_clip arguments): every codec family the video allowlist decodes that
#: this FFmpeg can also encode, in the containers they usually come in.
CLIPS: dict[str, dict[str, Any]] = {
    "h264-mp4": {"codec": "libx264", "container": "mp4"},
    "h264-10bit-mp4": {"codec": "libx264", "container": "mp4", "pix_fmt": "yuv420p10le"},
    "hevc-mp4": {
        "codec": "libx265",
        "container": "mp4",
        "options": {"x265-params": "log-level=error"},
    },
    "vp9-webm": {"codec": "libvpx-vp9", "container": "webm"},
    "av1-mkv": {"codec": "libsvtav1", "container": "matroska"},
    "mpeg4-avi": {"codec": "mpeg4", "container": "avi"},
    "mjpeg-avi": {"codec": "mjpeg", "container": "avi", "pix_fmt": "yuvj420p"},
    "h264-vfr-mp4": {
        "codec": "libx264",
        "container": "mp4",
        "frames": 20,
        "rate": 10,
        # Irregular presentation times (in 1/10 s): bunched at first, sparse later.
        "pts": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 20, 25, 30, 36, 42, 49, 56, 64],
    },
}


@dataclass(frozen=True)
class Truth:
    times: list[float]
    frames: list[np.ndarray]


def _display_turn(frame: av.VideoFrame) -> int:
    """Quarter turns (counter-clockwise, for np.rot90) the frame's display matrix asks."""
    rotation = getattr(frame, "rotation", 0) or 0
    return round(rotation / 90) % 4


def ffmpeg_truth(data: bytes) -> Truth:
    """Every frame in display order with its time from the first frame."""
    decoded = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            pixels = frame.to_ndarray(format="rgb24")
            turns = _display_turn(frame)
            decoded.append((float(frame.pts * stream.time_base), np.rot90(pixels, turns)))
    decoded.sort(key=lambda pair: pair[0])
    first = decoded[0][0]
    return Truth([round(t - first, 6) for t, _ in decoded], [f for _, f in decoded])


@pytest.fixture(scope="module", params=sorted(CLIPS))
def clip(request: pytest.FixtureRequest) -> tuple[str, bytes, Truth]:
    name = request.param
    try:
        data = encode_clip(**CLIPS[name])
    except (av.FFmpegError, ValueError) as exc:  # pragma: no cover - an FFmpeg without it
        pytest.fail(f"this FFmpeg cannot build the {name} clip: {exc}")
    return name, data, ffmpeg_truth(data)


def _load(data: bytes, backend: str, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    with MediaConnector({"video": {"video_backend": backend, **options}}) as connector:
        frames, metadata = connector.fetch_video(url)
    return np.asarray(frames), metadata


@functools.cache
def _opencv_decodes(data: bytes) -> bool:
    """Whether the installed OpenCV itself reads a frame of ``data``."""
    import cv2

    with tempfile.NamedTemporaryFile(suffix=".mkv") as handle:
        handle.write(data)
        handle.flush()
        capture = cv2.VideoCapture(handle.name)
        try:
            ok, _ = capture.read()
        finally:
            capture.release()
    return bool(ok)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize(
    "options", [{"num_frames": 6}, {"fps": 3}, {"num_frames": 6, "sampling": "index"}]
)
def test_every_sampled_frame_is_ffmpegs_frame_at_its_timestamp(
    clip: tuple[str, bytes, Truth], backend: str, options: dict[str, Any]
) -> None:
    name, data, truth = clip
    if backend == "opencv" and name.startswith("av1") and not _opencv_decodes(data):
        # This OpenCV's bundled FFmpeg has no AV1 software decoder (builds before 5.1):
        # a typed error, not frames.
        with pytest.raises(DecodeError, match="video_backend='pyav'"):
            _load(data, backend, **options)
        return
    frames, metadata = _load(data, backend, **options)
    assert metadata["total_num_frames"] == len(truth.frames)
    assert len(frames) == len(metadata["frames_indices"]) == len(metadata["timestamps"])
    for frame, index, time in zip(
        frames, metadata["frames_indices"], metadata["timestamps"], strict=True
    ):
        assert truth.times[index] == pytest.approx(time, abs=1e-6), (name, index)
        expected = truth.frames[index]
        assert frame.shape == expected.shape
        difference = np.abs(frame.astype(int) - expected.astype(int)).max()
        assert difference <= 2, (name, backend, index, difference)


def test_the_variable_rate_clip_is_sampled_evenly_in_time() -> None:
    data = encode_clip(**CLIPS["h264-vfr-mp4"])
    _, metadata = _load(data, "pyav", num_frames=8)
    times = metadata["timestamps"]
    duration = metadata["duration"]
    # Eight instants spread over the clip: as many samples in each half.
    assert sum(t < duration / 2 for t in times) == 4
    _, by_index = _load(data, "pyav", num_frames=8, sampling="index")
    assert sum(t < duration / 2 for t in by_index["timestamps"]) > 4
