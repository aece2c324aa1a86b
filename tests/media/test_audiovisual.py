"""Frames and the audio track of one clip from one fetch (``fetch_video(with_audio=True)``)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from builders import LoopbackServer, Route, encode_clip, jpeg_bytes, pyav_audio_bytes, tone
from mediagate import (
    DecodeError,
    MediaConnector,
    MediaPolicy,
    OptionError,
    TooLargeError,
)


def _clip_with_audio(seconds: float = 2.0, rate: int = 48000) -> bytes:
    return pyav_audio_bytes(tone(seconds, rate), rate, "mp4", "aac", video_codec="libx264")


def _url(data: bytes, media_type: str = "video/mp4") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def test_frames_and_audio_come_from_one_download(server: LoopbackServer) -> None:
    server.routes["/talk.mp4"] = Route(_clip_with_audio())
    with MediaConnector(policy=MediaPolicy(allowed_networks=["127.0.0.1/32"])) as connector:
        result = connector.fetch_video(
            server.url("/talk.mp4"),
            media_io_kwargs={"num_frames": 4},
            with_audio=True,
            audio_kwargs={"sample_rate": 16000},
        )
    frames, metadata, audio, rate = result
    assert server.count("/talk.mp4") == 1
    assert frames.shape == (4, 32, 32, 3)
    assert rate == 16000
    assert audio is not None and audio.dtype == np.float32
    # The whole track, at the requested rate, lined up with the frames' clock.
    assert abs(len(audio) / rate - 2.0) < 0.1
    assert metadata["audio_offset"] is not None and abs(metadata["audio_offset"]) < 0.1
    assert metadata["timestamps"][0] == 0.0 and metadata["timestamps"][-1] < 2.0
    assert result.original_bytes == server.routes["/talk.mp4"].body
    # The same frames as a plain video fetch of the clip.
    with MediaConnector() as connector:
        plain, _ = connector.fetch_video(
            _url(server.routes["/talk.mp4"].body), media_io_kwargs={"num_frames": 4}
        )
    assert np.array_equal(frames, plain)


def test_a_silent_clip_has_no_audio_and_no_offset() -> None:
    with MediaConnector() as connector:
        frames, metadata, audio, rate = connector.fetch_video(
            _url(encode_clip()), media_io_kwargs={"num_frames": 2}, with_audio=True
        )
    assert len(frames) == 2
    assert audio is None and rate is None and metadata["audio_offset"] is None


def test_the_async_twin_and_the_native_rate() -> None:
    async def load() -> tuple[float | None, int]:
        async with MediaConnector() as connector:
            result = await connector.fetch_video_async(
                _url(_clip_with_audio(rate=22050)), with_audio=True
            )
        _, _, audio, rate = result
        assert audio is not None
        return rate, len(audio)

    rate, length = asyncio.run(load())
    assert rate == 22050 and abs(length / 22050 - 2.0) < 0.1


def test_frames_and_audio_share_the_videos_decoded_budget() -> None:
    clip = _url(_clip_with_audio(seconds=4.0))
    # Four 32x32 frames fit in 20 kB; four seconds of float32 audio at 16 kHz do not.
    policy = MediaPolicy(max_decoded_bytes=20_000)
    with MediaConnector(policy=policy) as connector:
        connector.fetch_video(clip, media_io_kwargs={"num_frames": 4})
        with pytest.raises(TooLargeError):
            connector.fetch_video(
                clip,
                media_io_kwargs={"num_frames": 4},
                with_audio=True,
                audio_kwargs={"sample_rate": 16000},
            )


def test_a_jpeg_sequence_has_no_audio() -> None:
    with MediaConnector() as connector, pytest.raises(DecodeError, match="no audio"):
        connector.fetch_video(_url(jpeg_bytes(), "video/jpeg"), with_audio=True)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"with_audio": "yes"}, "with_audio"),
        ({"with_audio": 1}, "with_audio"),
        ({"audio_kwargs": {"sample_rate": 16000}}, "audio_kwargs"),
        ({"with_audio": True, "audio_kwargs": {"sample_rate": -5}}, "sample_rate"),
        ({"with_audio": True, "audio_kwargs": {"bogus": 1}}, "bogus"),
    ],
)
def test_bad_audio_options_are_option_errors(options: dict[str, object], option: str) -> None:
    with MediaConnector() as connector, pytest.raises(OptionError) as caught:
        connector.fetch_video(_url(encode_clip()), **options)  # type: ignore[arg-type]
    assert caught.value.option == option
