"""The container probe: an MP4 or WebM with audio tracks and no video track is audio."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from av.stream import Disposition

from builders import encode_clip, jpeg_bytes, pyav_audio_bytes, tone
from mediagate import MediaConnector, guess_modality, sniff_modality
from mediagate._modalities import SNIFF_BYTES


def _audio(container: str, codec: str, *, video_codec: str | None = None) -> bytes:
    return pyav_audio_bytes(tone(1.0, 48000), 48000, container, codec, video_codec=video_codec)


def _m4a_with_cover_art() -> bytes:
    """AAC in MP4 with a cover picture, which FFmpeg shows as an attached-picture stream."""
    audio = tone(1.0, 48000)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        track = out.add_stream("aac", rate=48000)
        track.layout = "stereo"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height = 64, 48
        cover.pix_fmt = "yuvj420p"
        cover.disposition = Disposition.attached_pic
        picture = av.Packet(jpeg_bytes())
        picture.stream = cover
        picture.pts = picture.dts = 0
        out.mux(picture)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = 48000
        for packet in [*track.encode(frame), *track.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "modality"),
    [
        (_audio("mp4", "aac"), "audio"),
        (_audio("webm", "libopus"), "audio"),
        (_audio("matroska", "flac"), "audio"),
        (_m4a_with_cover_art(), "audio"),
        (_audio("mp4", "aac", video_codec="libx264"), "video"),
        (_audio("webm", "libopus", video_codec="libvpx"), "video"),
        (encode_clip(), "video"),
        (encode_clip(faststart=True), "video"),
    ],
    ids=["m4a", "webm-opus", "mka-flac", "m4a-cover", "mp4-av", "webm-av", "mp4", "mp4-fast"],
)
def test_the_track_list_decides_between_audio_and_video(payload: bytes, modality: str) -> None:
    assert sniff_modality(payload) == modality
    # The bytes win over a name that says otherwise, either way.
    other = "clip.mp4" if modality == "audio" else "song.m4a"
    assert guess_modality(f"https://media.test/{other}", payload[:SNIFF_BYTES]) == modality


def test_a_head_without_the_track_list_is_video_unless_the_name_says_audio() -> None:
    payload = _audio("mp4", "aac")  # the index (moov) comes after the media data
    head = payload[:4096]
    assert sniff_modality(head) == "video"
    assert guess_modality("https://media.test/clip", head) == "video"
    assert guess_modality("https://media.test/song.m4a", head) == "audio"
    assert guess_modality("https://media.test/song.weba", head) == "audio"


@pytest.mark.parametrize(
    "payload",
    [
        b"\x1a\x45\xdf\xa3" + b"\xff" * 200,  # an EBML magic and garbage
        b"\x00\x00\x00\x20ftypisom" + b"\x00" * 24 + b"\x00\x00\x10\x00moov" + b"\xff" * 300,
        b"\x00\x00\x00\x08free" + bytes(range(256)) * 4,
    ],
    ids=["ebml-garbage", "moov-garbage", "free-then-noise"],
)
def test_a_damaged_container_head_is_video_and_raises_nothing(payload: bytes) -> None:
    assert sniff_modality(payload) == "video"
    assert guess_modality("https://media.test/x", payload) == "video"


def test_an_audio_only_webm_without_an_extension_loads_as_audio(tmp_path: Path) -> None:
    (tmp_path / "voice").write_bytes(_audio("webm", "libopus"))
    with MediaConnector(allowed_local_media_path=tmp_path) as connector:
        loaded = connector.load_media((tmp_path / "voice").as_uri())
    samples, rate = loaded.media
    assert loaded.modality == "audio" and rate == 48000 and samples.shape[0] > 40000
