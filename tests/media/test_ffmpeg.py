"""The shared hardened FFmpeg open: nested opens refused, codecs checked before any
decoding, library failures typed; and the video limits object."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import av.logging
import pytest

from builders import encode_clip, pyav_audio_bytes, tone
from mediagate import DecodeError, MediaError, MediaPolicy, TooLargeError
from mediagate._media import _ffmpeg, budget
from mediagate._media._ffmpeg import LIBRARY_ERRORS, StreamRules, ffmpeg_errors, open_stream
from mediagate._media.audio.decode import ALLOWED_AV_CODECS
from mediagate._media.audio.sniff import AV_FORMATS
from mediagate._media.video.container import VIDEO_RULES, av_errors
from mediagate._media.video.limits import VideoLimits

AUDIO_RULES = StreamRules(
    media="audio",
    stream_type=av.AudioStream,
    demuxers=AV_FORMATS,
    codecs=ALLOWED_AV_CODECS,
    no_stream="no audio track",
    unknown_codec="audio codec is not supported",
    bad_codec="audio codec {codec} is not supported",
    match_decoder=True,
    probe_decoders=ALLOWED_AV_CODECS,
)
RULES: dict[str, StreamRules[Any]] = {"video": VIDEO_RULES, "audio": AUDIO_RULES}


def admitting(rules: StreamRules[Any], demuxer: str) -> StreamRules[Any]:
    """``rules`` with ``demuxer`` added, so only the nested-open defences are left."""
    return dataclasses.replace(rules, demuxers=rules.demuxers | {demuxer})


@pytest.fixture(scope="module")
def h264_clip() -> bytes:
    return encode_clip(frames=10)


@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    """A readable clip on disk, in a format the video rules accept."""
    path = tmp_path / "private.ts"
    path.write_bytes(encode_clip("mpeg2video", "mpegts", frames=10))
    return path


def untouched(path: Path) -> Callable[[], bool]:
    """A check that ``path`` was not read since this call (its access time moves on any
    read, under relatime too, while it is older than the modification time)."""
    os.utime(path, (0, time.time()))
    return lambda: path.stat().st_atime == 0


def hls(path: Path) -> bytes:
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n"
        f"#EXTINF:1.0,\nfile://{path}\n#EXT-X-ENDLIST\n"
    ).encode()


def ffconcat(name: str | Path) -> bytes:
    return f"ffconcat version 1.0\nfile '{name}'\n".encode()


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The URLs the nested-open hook is asked for while it refuses them."""
    urls: list[str] = []

    def refuse(url: str, flags: int, options: dict[str, Any]) -> Any:
        urls.append(url)
        raise PermissionError("nested input is not allowed")

    monkeypatch.setattr(_ffmpeg, "refuse_nested_open", refuse)
    yield urls


# -- nested opens ------------------------------------------------------------------------


def test_the_hook_refuses_an_hls_segment_and_the_file_is_never_opened(
    local_file: Path, asked: list[str]
) -> None:
    fresh = untouched(local_file)
    rules = admitting(VIDEO_RULES, "hls")
    with pytest.raises(DecodeError) as info:
        open_stream(hls(local_file), "hls", rules, errors=av_errors)
    assert asked == [f"file://{local_file}"]
    assert isinstance(info.value.__cause__, PermissionError)
    assert str(local_file) not in str(info.value)
    assert fresh()


@pytest.mark.parametrize("options", [{}, {"safe": "0"}], ids=["safe", "unsafe"])
@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_an_ffconcat_list_never_opens_the_file(
    local_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, str],
    relative: bool,
) -> None:
    # The concat demuxer opens the files it lists without the hook: FFmpeg's empty
    # protocol whitelist is what refuses them, even with its own "safe" check off.
    monkeypatch.chdir(local_file.parent)
    fresh = untouched(local_file)
    payload = ffconcat(local_file.name if relative else local_file)
    with pytest.raises(DecodeError):
        open_stream(
            payload, "concat", admitting(VIDEO_RULES, "concat"), options=options, errors=av_errors
        )
    assert fresh()


@pytest.mark.parametrize("media", sorted(RULES))
@pytest.mark.parametrize("demuxer", ["hls", "concat"])
def test_playlist_demuxers_are_off_both_whitelists(
    local_file: Path, asked: list[str], media: str, demuxer: str
) -> None:
    fresh = untouched(local_file)
    payload = hls(local_file) if demuxer == "hls" else ffconcat(local_file)
    with pytest.raises(DecodeError):
        open_stream(payload, demuxer, RULES[media], errors=av_errors)
    assert asked == []
    assert fresh()


# -- codecs ------------------------------------------------------------------------------


def test_a_video_codec_off_the_allowlist_is_refused_before_any_decoder_runs(
    h264_clip: bytes,
) -> None:
    rules = dataclasses.replace(VIDEO_RULES, codecs=frozenset({"vp9"}))
    level = av.logging.get_level()
    av.logging.set_level(av.logging.VERBOSE)
    try:
        with av.logging.Capture() as logs, pytest.raises(DecodeError) as info:
            open_stream(h264_clip, "mov", rules, errors=av_errors)
    finally:
        av.logging.set_level(level)
    assert info.value.http_status == 415
    assert str(info.value) == "video codec 'h264' is not supported (supported: vp9)"
    # While probing, FFmpeg was not allowed to open the H.264 decoder.
    assert any("not on whitelist" in message for _, _, message in logs)


def test_an_audio_codec_off_the_allowlist_is_refused_by_its_decoder_name() -> None:
    data = pyav_audio_bytes(tone(0.2, 48000), 48000, "ogg", "libopus")
    container, stream = open_stream(data, "ogg", AUDIO_RULES)
    with container:
        decoder = stream.codec_context.name
    rules = dataclasses.replace(AUDIO_RULES, codecs=ALLOWED_AV_CODECS - {decoder})
    with pytest.raises(DecodeError) as info:
        open_stream(data, "ogg", rules)
    assert info.value.http_status == 415
    assert str(info.value) == f"audio codec {decoder} is not supported"


def test_an_allowed_stream_comes_back_open(h264_clip: bytes) -> None:
    container, stream = open_stream(h264_clip, "mov", VIDEO_RULES)
    with container:
        assert isinstance(stream, av.VideoStream)
        assert stream.codec_context.codec.canonical_name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 10


def test_a_payload_without_a_stream_of_the_modality_is_refused() -> None:
    data = pyav_audio_bytes(tone(0.2, 48000), 48000, "matroska", "libopus")
    with pytest.raises(DecodeError, match=r"^the media has no video stream$"):
        open_stream(data, "matroska", VIDEO_RULES)


# -- library failures --------------------------------------------------------------------


@pytest.mark.parametrize("media", sorted(RULES))
@pytest.mark.parametrize("demuxer", ["mov", "matroska", "ogg"])
def test_garbage_is_a_decode_error(media: str, demuxer: str) -> None:
    garbage = b"\x00\x00\x00\x18ftypgarbage" + os.urandom(4096)
    with pytest.raises(DecodeError) as info:
        open_stream(garbage, demuxer, RULES[media], errors=av_errors)
    assert isinstance(info.value.__cause__, LIBRARY_ERRORS)
    assert "garbage" not in str(info.value)


def test_library_failures_reach_the_caller_untranslated_by_default() -> None:
    with pytest.raises(LIBRARY_ERRORS) as info:
        open_stream(b"garbage" * 100, "mov", VIDEO_RULES)
    assert not isinstance(info.value, MediaError)


class _Unlisted(Exception):
    pass


def test_ffmpeg_errors_translates_library_failures_and_memory() -> None:
    def run(exc: BaseException, **more: Any) -> BaseException:
        with pytest.raises(BaseException) as info, ffmpeg_errors("failed", "no memory", **more):
            raise exc
        return info.value

    cause = av.error.InvalidDataError(1094995529, "Invalid data")
    failed = run(cause)
    assert isinstance(failed, DecodeError) and str(failed) == "failed"
    assert failed.__cause__ is cause
    memory = run(MemoryError())
    assert isinstance(memory, TooLargeError) and memory.limit == "memory"
    assert str(memory) == "no memory"
    refusal = DecodeError("already typed", http_status=415)
    assert run(refusal) is refusal
    assert isinstance(run(_Unlisted()), _Unlisted)
    assert isinstance(run(_Unlisted(), more=(_Unlisted,)), DecodeError)


def test_rules_accept_ffmpeg_names_that_list_one_of_their_demuxers() -> None:
    assert VIDEO_RULES.accepts_format("mov,mp4,m4a,3gp,3g2,mj2")
    assert VIDEO_RULES.accepts_format("matroska,webm")
    assert not VIDEO_RULES.accepts_format("hls")
    assert AUDIO_RULES.accepts_format("mov,mp4,m4a,3gp,3g2,mj2")
    assert not AUDIO_RULES.accepts_format("concat")


# -- VideoLimits -------------------------------------------------------------------------


def test_video_limits_come_from_a_policy() -> None:
    policy = MediaPolicy(
        max_pixels=1000, max_video_frames=8, max_decoded_bytes=5000, max_stream_packets=50
    )
    limits = VideoLimits.from_policy(policy)
    assert limits == VideoLimits(
        max_pixels=1000, max_frames=8, max_decoded_bytes=5000, max_packets=50
    )
    assert repr(limits) == (
        "VideoLimits(max_pixels=1000, max_frames=8, max_decoded_bytes=5000, max_packets=50)"
    )
    default = VideoLimits.from_policy(MediaPolicy())
    assert default.max_decoded_bytes == MediaPolicy().max_decoded_bytes_for("video")
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_pixels = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_pixels", -1), ("max_frames", 0), ("max_decoded_bytes", 1.5), ("max_pixels", True)],
)
def test_video_limits_name_the_bad_field(field: str, value: Any) -> None:
    values: dict[str, Any] = {"max_pixels": 10, "max_frames": 10, "max_decoded_bytes": 10}
    with pytest.raises(ValueError, match=f"^VideoLimits.{field} must be an integer"):
        VideoLimits(**{**values, field: value})


def test_video_limits_refuse_big_frames_and_outputs() -> None:
    limits = VideoLimits(max_pixels=100, max_frames=4, max_decoded_bytes=300)
    limits.check_pixels(10, 10)
    with pytest.raises(TooLargeError) as info:
        limits.check_pixels(11, 10)
    assert info.value.limit == "max_pixels"
    assert str(info.value).startswith("a video frame of 11x10 pixels exceeds max_pixels=100")
    limits.reserve_frames(1, 10, 10)
    with pytest.raises(TooLargeError) as info:
        limits.reserve_frames(2, 10, 10)
    assert info.value.limit == "max_decoded_bytes"
    inside = budget.DecodeLimits.starting_now("video", 1 << 20, 30.0)
    with budget.decoding(inside):
        limits.reserve_frames(2, 10, 10)  # the current decode's budget applies
