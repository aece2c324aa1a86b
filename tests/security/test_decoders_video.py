"""SECURITY.md D5-D9 for video: truncated files, playlists, rare codecs, frame and
pixel bombs. Each refused input raises a typed error whose text leaks nothing, and the
next good request succeeds."""

from __future__ import annotations

import base64
import functools
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from builders import encode_clip, paint
from media.video.video_builders import read_numbers
from mediagate import (
    DecodeError,
    ImageMediaIO,
    MediaError,
    MediaPolicy,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._media.video import container as container_module
from mediagate._media.video import pyav as pyav_module

BACKENDS = ["pyav", "opencv"]


@pytest.fixture(scope="module")
def good_clip() -> bytes:
    return encode_clip(frames=30, gop=10)


@pytest.fixture(params=BACKENDS)
def video_io(request: pytest.FixtureRequest) -> Callable[..., VideoMediaIO]:
    def make(num_frames: int = 4, **kwargs: Any) -> VideoMediaIO:
        return VideoMediaIO(ImageMediaIO(), num_frames, video_backend=request.param, **kwargs)

    return make


def refused(
    error: type[MediaError],
    call: Callable[[], Any],
    clean_error: Callable[..., None],
    *secrets: str | bytes,
) -> MediaError:
    """``call`` raises ``error`` with a clean message."""
    with pytest.raises(error) as info:
        call()
    clean_error(info.value, *secrets)
    return info.value


def still_works(io: VideoMediaIO, good_clip: bytes) -> None:
    frames, meta = io.load_bytes(good_clip)
    assert read_numbers(frames) == meta["frames_indices"]


# -- D5 truncated files ------------------------------------------------------------------


def _truncations() -> Iterator[tuple[str, bytes]]:
    plain = encode_clip(frames=30, gop=10)
    yield "mp4 cut in half (index at the end is lost)", plain[: len(plain) // 2]
    faststart = encode_clip(frames=30, gop=10, faststart=True)
    yield "faststart mp4 cut in half", faststart[: len(faststart) // 2]
    yield "faststart mp4 missing its last bytes", faststart[:-3]
    yield "faststart mp4, header only", faststart[:200]
    avi = encode_clip("mpeg4", "avi", frames=30, gop=10)
    yield "avi cut in half", avi[: len(avi) // 2]


TRUNCATED = dict(_truncations())


@pytest.mark.parametrize("case", sorted(TRUNCATED))
def test_d5_truncated_video_is_a_decode_error(
    video_io: Callable[..., VideoMediaIO],
    good_clip: bytes,
    clean_error: Callable[..., None],
    case: str,
) -> None:
    io = video_io(4)
    refused(DecodeError, lambda: io.load_bytes(TRUNCATED[case]), clean_error)
    still_works(io, good_clip)


def test_d5_garbage_after_a_valid_signature(
    video_io: Callable[..., VideoMediaIO], good_clip: bytes, clean_error: Callable[..., None]
) -> None:
    io = video_io(4)
    payload = good_clip[:32] + os.urandom(4096)
    refused(DecodeError, lambda: io.load_bytes(payload), clean_error, payload[32:48])
    still_works(io, good_clip)


# -- D6 playlists and concat lists -------------------------------------------------------


@pytest.fixture
def local_file(tmp_path: Path) -> Iterator[Path]:
    """A readable clip on disk whose access time shows any read."""
    path = tmp_path / "private.ts"
    path.write_bytes(encode_clip("mpeg2video", "mpegts", frames=10))
    yield path


def _untouched(path: Path) -> Callable[[], bool]:
    # Under relatime an access time older than the modification time moves on any read.
    os.utime(path, (0, time.time()))
    return lambda: path.stat().st_atime == 0


def _playlists(path: Path) -> dict[str, bytes]:
    return {
        "hls": (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n"
            f"#EXTINF:1.0,\nfile://{path}\n#EXT-X-ENDLIST\n"
        ).encode(),
        "hls, bom and blank lines": ("\ufeff\n\n#EXTM3U\n#EXTINF:1.0,\n" + str(path)).encode(),
        "ffconcat": f"ffconcat version 1.0\nfile '{path}'\n".encode(),
    }


@pytest.mark.parametrize("kind", ["hls", "hls, bom and blank lines", "ffconcat"])
def test_d6_playlists_never_open_the_file(
    video_io: Callable[..., VideoMediaIO],
    good_clip: bytes,
    local_file: Path,
    clean_error: Callable[..., None],
    kind: str,
) -> None:
    io = video_io(4)
    untouched = _untouched(local_file)
    payload = _playlists(local_file)[kind]
    refused(DecodeError, lambda: io.load_bytes(payload), clean_error, str(local_file))
    assert untouched()
    encoded = base64.b64encode(payload).decode()
    refused(DecodeError, lambda: io.load_base64("video/mp4", encoded), clean_error)
    assert untouched()
    still_works(io, good_clip)


@pytest.mark.parametrize("demuxer", ["hls", "concat"])
def test_d6_nested_opens_are_refused_even_past_the_sniffer(
    monkeypatch: pytest.MonkeyPatch,
    local_file: Path,
    clean_error: Callable[..., None],
    demuxer: str,
) -> None:
    # Second line of defence: were the sniffer fooled into naming a playlist demuxer,
    # FFmpeg's format allowlist and the refusing nested-open hook still stop it.
    monkeypatch.setattr(container_module, "sniff_container", lambda data: demuxer)
    untouched = _untouched(local_file)
    payload = _playlists(local_file)["hls" if demuxer == "hls" else "ffconcat"]
    refused(
        DecodeError,
        lambda: container_module.open_video(payload, max_pixels=10**6),
        clean_error,
        str(local_file),
    )
    assert untouched()


def test_d6_the_nested_open_hook_alone_blocks_hls(local_file: Path) -> None:
    import io

    import av

    untouched = _untouched(local_file)
    playlist = _playlists(local_file)["hls"]
    with pytest.raises(PermissionError):
        av.open(io.BytesIO(playlist), format="hls", io_open=container_module._refuse_nested_open)
    assert untouched()


# -- D7 codecs off the allowlist ---------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "container", "pix_fmt"),
    [("jpeg2000", "mp4", "yuv420p"), ("ffv1", "matroska", "yuv420p"), ("png", "avi", "rgb24")],
)
def test_d7_rare_codecs_are_refused_before_decoding(
    video_io: Callable[..., VideoMediaIO],
    good_clip: bytes,
    monkeypatch: pytest.MonkeyPatch,
    clean_error: Callable[..., None],
    codec: str,
    container: str,
    pix_fmt: str,
) -> None:
    payload = encode_clip(codec, container, frames=5, pix_fmt=pix_fmt)
    io = video_io(4)
    calls: list[int] = []
    real = pyav_module._decode_targets
    monkeypatch.setattr(pyav_module, "_decode_targets", lambda *a: calls.append(1) or real(*a))
    err = refused(DecodeError, lambda: io.load_bytes(payload), clean_error)
    assert codec in str(err) and err.http_status == 415
    assert calls == []  # refused from the stream header, no frame decoded
    still_works(io, good_clip)


# -- D8 frame bombs ----------------------------------------------------------------------


@pytest.mark.usefixtures("in_process_decoding")
def test_d8_jpeg_sequence_of_5000_frames_is_cut_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, clean_error: Callable[..., None]
) -> None:
    image_io = ImageMediaIO()
    decoded: list[int] = []
    real = image_io.load_base64
    monkeypatch.setattr(image_io, "load_base64", lambda t, d: decoded.append(1) or real(t, d))
    one = VideoMediaIO(image_io).encode_base64(np.stack([paint(9)]))
    payload = ",".join([one] * 5000)
    policy = MediaPolicy(max_video_frames=16)
    for num_frames in (-1, 5000, 10_000):
        decoded.clear()
        io = VideoMediaIO(image_io, num_frames, policy=policy)
        started = time.perf_counter()
        frames, meta = io.load_base64("video/jpeg", payload)
        assert time.perf_counter() - started < 2
        assert frames.shape[0] == 16 and len(decoded) == 16
        assert meta["frames_indices"] == list(range(16))
    default = VideoMediaIO(image_io, -1).load_base64("video/jpeg", payload)
    assert default[0].shape[0] == MediaPolicy().max_video_frames


def test_d8_minus_one_never_exceeds_the_policy_cap(
    video_io: Callable[..., VideoMediaIO], good_clip: bytes
) -> None:
    io = video_io(-1, policy=MediaPolicy(max_video_frames=3))
    frames, meta = io.load_bytes(good_clip)
    assert frames.shape[0] == 3 and meta["frames_indices"] == [0, 14, 29]


def test_d8_ten_hour_clip_is_capped_and_bounded(
    video_io: Callable[..., VideoMediaIO], good_clip: bytes
) -> None:
    from fractions import Fraction

    import av

    # 600 frames at one frame a minute: ten hours of video in a few kilobytes.
    buffer = __import__("io").BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(1, 60))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(600):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(paint(i % 256), format="rgb24")))
        out.mux(stream.encode())
    policy = MediaPolicy(max_video_frames=24)
    for kwargs in ({"num_frames": -1}, {"num_frames": -1, "fps": 30.0}):
        io = video_io(policy=policy, **kwargs)
        started = time.perf_counter()
        frames, meta = io.load_bytes(buffer.getvalue())
        assert time.perf_counter() - started < 5
        assert frames.shape[0] == 24
        assert meta["duration"] == pytest.approx(36_000)
        assert read_numbers(frames) == [i % 256 for i in meta["frames_indices"]]
    still_works(video_io(4), good_clip)


# -- D9 pixel bombs ----------------------------------------------------------------------


def _huge_mjpeg_avi(side: int = 16384) -> bytes:
    """A 3-frame MJPEG AVI whose headers and JPEG frames all declare side x side."""
    data = bytearray(encode_clip("mjpeg", "avi", frames=3, pix_fmt="yuvj420p"))
    avih = data.find(b"avih") + 8
    data[avih + 32 : avih + 40] = struct.pack("<II", side, side)
    strf = data.find(b"strf") + 8
    data[strf + 4 : strf + 12] = struct.pack("<ii", side, side)
    for match in re.finditer(rb"\xff\xc0", bytes(data)):
        start = match.start() + 5
        if struct.unpack(">HH", data[start : start + 4]) == (48, 64):
            data[start : start + 4] = struct.pack(">HH", side, side)
    return bytes(data)


def test_d9_stream_declaring_16384_squared_is_too_large(
    video_io: Callable[..., VideoMediaIO], good_clip: bytes, clean_error: Callable[..., None]
) -> None:
    io = video_io(2)
    err = refused(TooLargeError, lambda: io.load_bytes(_huge_mjpeg_avi()), clean_error)
    assert err.limit == "max_pixels" and err.value == 16384 * 16384
    still_works(io, good_clip)


@functools.cache
def _big_clip(codec: str, container: str) -> bytes:
    return encode_clip(codec, container, frames=2, width=2048, height=2048)


@pytest.mark.parametrize(
    ("codec", "container"), [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "avi")]
)
def test_d9_frames_over_the_policy_are_refused_from_the_header(
    video_io: Callable[..., VideoMediaIO],
    good_clip: bytes,
    clean_error: Callable[..., None],
    codec: str,
    container: str,
) -> None:
    payload = _big_clip(codec, container)
    io = video_io(2, policy=MediaPolicy(max_pixels=1_000_000))
    err = refused(TooLargeError, lambda: io.load_bytes(payload), clean_error)
    assert err.value == 2048 * 2048 and err.maximum == 1_000_000
    still_works(io, good_clip)


def test_d9_tiny_policy_refuses_even_small_clips(
    video_io: Callable[..., VideoMediaIO], good_clip: bytes, clean_error: Callable[..., None]
) -> None:
    io = video_io(2, policy=MediaPolicy(max_pixels=1000))
    refused(TooLargeError, lambda: io.load_bytes(good_clip), clean_error)
    still_works(video_io(2), good_clip)
