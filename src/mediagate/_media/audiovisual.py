"""Sampled video frames and the audio track of the same file, from one payload.

Audio-visual models take both from one clip. ``VideoAudioMediaIO`` decodes the frames
with a ``VideoMediaIO`` and the first audio track with an ``AudioMediaIO`` from the same
bytes (one fetch), under one decode's budget and deadline, and says where the audio
starts on the frames' time axis: ``metadata["timestamps"]`` count seconds from the
first video frame, and audio sample ``i`` is at ``audio_offset + i / sample_rate`` on
that axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._errors import DecodeError
from .audio.mediaio import AudioMediaIO
from .base import MediaIO, decode_base64
from .results import MediaWithBytes
from .video.container import av_errors, open_video
from .video.io import VideoMediaIO

__all__ = ["VideoAudioMediaIO", "VideoWithAudio"]


class VideoWithAudio(NamedTuple):
    """Frames ``[N, H, W, 3]`` and their metadata, with the clip's audio (mono float32
    at ``sample_rate``; ``None`` for a clip without an audio track).

    ``metadata["audio_offset"]`` is the time of the first audio sample in seconds from
    the first video frame (negative when the audio starts first; ``None`` without
    audio).
    """

    frames: npt.NDArray[np.uint8]
    metadata: dict[str, Any]
    audio: npt.NDArray[np.float32] | None
    sample_rate: float | None


def _audio_offset(data: bytes, max_pixels: int) -> float | None:
    """Seconds from the first video frame to the first audio sample; ``None`` when the
    container has no audio stream."""
    with av_errors("reading the clip's streams"):
        container, video = open_video(data, max_pixels=max_pixels)
        try:
            if not container.streams.audio:
                return None
            audio = container.streams.audio[0]
            start_audio = (audio.start_time or 0) * float(audio.time_base or 0)
            start_video = (video.start_time or 0) * float(video.time_base or 0)
            return round(start_audio - start_video, 6)
        finally:
            container.close()


class VideoAudioMediaIO(MediaIO[MediaWithBytes[VideoWithAudio]]):
    """Frames (``video_io``) and the audio track (``audio_io``) of one video payload.

    Held to the video modality's byte budget, decoded-bytes budget and decode deadline,
    frames and samples together.

    Raises:
        DecodeError: as either part does (a ``video/jpeg`` sequence has no audio).
    """

    modality = "video"

    def __init__(self, video_io: VideoMediaIO, audio_io: AudioMediaIO) -> None:
        super().__init__(policy=video_io.policy, decoded_budget=video_io.decoded_budget)
        self.video_io = video_io
        self.audio_io = audio_io

    def load_bytes(self, data: bytes) -> MediaWithBytes[VideoWithAudio]:
        data = bytes(data)
        video = self.video_io.load_bytes(data)
        frames, metadata = video.media
        offset = _audio_offset(data, self.policy.max_pixels)
        audio: npt.NDArray[np.float32] | None = None
        rate: float | None = None
        if offset is not None:
            audio, rate = self.audio_io.load_bytes(data)
        metadata = {**metadata, "audio_offset": offset}
        return MediaWithBytes(VideoWithAudio(frames, metadata, audio, rate), data)

    def load_base64(self, media_type: str, data: str) -> MediaWithBytes[VideoWithAudio]:
        if media_type.strip().lower() == "video/jpeg":
            raise DecodeError("a video/jpeg sequence has no audio track")
        return self.load_bytes(decode_base64(data, limit=self.max_bytes))
