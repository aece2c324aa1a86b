"""What the builtin container loaders share: their options, the probe and the metadata.

``SampledVideoLoader.load_bytes`` opens the bytes with ``container.open_video`` (sniffing,
allowlists, ``max_pixels``), indexes the stream, picks the frames to return with the
uniform sampling rule, reserves the decoded-output budget for them from the stream's
declared frame size (``reserve_frames``) and builds the metadata; a subclass only
decodes the chosen frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.stream import VideoStream

from ..._policy import MediaPolicy
from ..base import OptionSpec
from .container import StreamIndex, av_errors, index_stream, open_video
from .limits import VideoLimits
from .sampling import build_metadata, cap_num_frames, finite_number, sample_frame_indices

__all__ = ["SAMPLING_OPTIONS", "SampledVideoLoader", "reserve_frames"]

_FPS = finite_number(0.0, allow_none=True)

#: Options every builtin loader takes besides ``num_frames``.
SAMPLING_OPTIONS: Mapping[str, OptionSpec] = {
    "fps": OptionSpec(
        _FPS, "sample at most this many frames per second of video (0 or unset: no cap)"
    ),
}


def reserve_frames(count: int, width: int, height: int, policy: MediaPolicy) -> None:
    """Refuse ``count`` RGB frames of ``width`` x ``height`` before they are allocated
    when they are over the decoded-output budget (the current decode's, else the
    policy's ``max_decoded_bytes_for("video")``).

    Raises:
        TooLargeError: over the budget (``limit="max_decoded_bytes"``).
    """
    VideoLimits.from_policy(policy).reserve_frames(count, width, height)


class SampledVideoLoader:
    """Base of the builtin loaders: everything but decoding the sampled frames."""

    #: Registry name, reported as ``metadata["video_backend"]``.
    name: ClassVar[str] = ""
    #: The options this loader accepts as keywords (checked by ``VideoMediaIO``).
    options: ClassVar[Mapping[str, OptionSpec]] = SAMPLING_OPTIONS
    #: ``VideoMediaIO`` passes its ``MediaPolicy`` as ``policy=``.
    wants_policy: ClassVar[bool] = True

    def load_bytes(
        self,
        data: bytes,
        num_frames: int = -1,
        *,
        fps: float | None = None,
        policy: MediaPolicy | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the uniformly sampled frames of ``data``.

        Args:
            data: the container bytes.
            num_frames: the most frames to return; ``-1`` means the policy's cap.
            fps: sample at most this many frames per second of video.
            policy: limits (``max_pixels``, ``max_video_frames``); default ``MediaPolicy()``.

        Returns:
            ``(frames, metadata)``: uint8 RGB frames ``[N, H, W, 3]`` and the dict of
            ``sampling.build_metadata``.

        Raises:
            OptionError: ``num_frames`` is 0 or not an integer, or ``fps`` is not a
                finite number >= 0.
            TooLargeError: the frame size exceeds ``max_pixels``, the sampled frames
                the decoded-output budget, or the decode its deadline.
            DecodeError: not a supported, intact video.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        fps = _FPS("video", "fps", fps)
        container, stream = open_video(data, max_pixels=policy.max_pixels)
        try:
            index = index_stream(container, stream, max_packets=policy.max_stream_packets)
            targets = sample_frame_indices(
                index.total, num_frames=cap, fps=fps, duration=index.duration
            )
            with av_errors("probing the video stream"):
                width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            reserve_frames(len(targets), width, height, policy)
            frames = self.decode_targets(data, container, stream, index, targets, policy)
        finally:
            container.close()
        metadata = build_metadata(
            total_num_frames=index.total,
            fps=index.fps,
            duration=index.duration,
            video_backend=self.name,
            frames_indices=targets,
            do_sample_frames=len(targets) == index.total,
        )
        return frames, metadata

    def decode_targets(
        self,
        data: bytes,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        policy: MediaPolicy,
    ) -> npt.NDArray[np.uint8]:
        """The frames numbered ``targets`` (ascending) as uint8 RGB ``[N, H, W, 3]``.

        ``container`` is open on ``data`` and not yet decoded from; ``stream`` is its
        checked video stream and ``index`` that stream's packet index.

        Raises:
            TooLargeError: a frame exceeds ``policy.max_pixels``, the frames the
                decoded-output budget, or the decode its deadline.
            DecodeError: the frames cannot be decoded.
        """
        raise NotImplementedError
