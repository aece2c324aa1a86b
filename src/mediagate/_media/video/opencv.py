"""The ``opencv`` video loader: a sequential grab/retrieve walk with OpenCV.

The bytes are first sniffed and probed with PyAV under the same rules as the ``pyav``
loader (container and codec allowlists, ``max_pixels``, the frame count from the
packet index), then decoded from memory by OpenCV's FFmpeg backend: every frame up to
the last sampled one is grabbed, only the sampled ones are retrieved and converted.
Needs ``opencv-python`` (``pip install 'mediagate[opencv]'``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from ..._errors import DecodeError, TooLargeError
from ..._policy import MediaPolicy
from ..base import OptionSpec
from .container import index_stream, open_video
from .pyav import SAMPLING_OPTIONS
from .sampling import (
    build_metadata,
    cap_num_frames,
    sample_frame_indices,
    short_tail_tolerated,
)

__all__ = ["OpenCVVideoLoader"]


class OpenCVVideoLoader:
    """Uniformly sample frames from video bytes with OpenCV.

    Example::

        frames, meta = OpenCVVideoLoader().load_bytes(mp4_bytes, num_frames=8)
    """

    #: Registry name, reported as ``metadata["video_backend"]``.
    name: ClassVar[str] = "opencv"
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
            ``(frames, metadata)`` as the ``pyav`` loader.

        Raises:
            OptionError: ``num_frames`` is 0 or not an integer.
            TooLargeError: the frame size exceeds ``max_pixels``.
            DecodeError: not a supported, intact video.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        container, stream = open_video(data, max_pixels=policy.max_pixels)
        try:
            index = index_stream(container, stream)
            width, height = stream.codec_context.width, stream.codec_context.height
        finally:
            container.close()
        targets = sample_frame_indices(
            index.total, num_frames=cap, fps=fps, duration=index.duration
        )
        frames = _grab_walk(data, index.total, targets, width, height, policy)
        metadata = build_metadata(
            total_num_frames=index.total,
            fps=index.fps,
            duration=index.duration,
            video_backend=self.name,
            frames_indices=targets,
            do_sample_frames=len(targets) == index.total,
        )
        return frames, metadata


def _grab_walk(
    data: bytes, total: int, targets: list[int], width: int, height: int, policy: MediaPolicy
) -> npt.NDArray[np.uint8]:
    out = np.empty((len(targets), height, width, 3), dtype=np.uint8)
    source = io.BytesIO(data)  # must outlive the capture, which reads from it
    try:
        # OpenCV reads any io.BufferedIOBase; its stubs only name IStreamReader.
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [])  # type: ignore[call-overload]
    except cv2.error as exc:
        raise DecodeError("the video could not be opened by OpenCV") from exc
    try:
        if not capture.isOpened():
            raise DecodeError("the video could not be opened by OpenCV")
        slot = 0
        number = -1
        last: npt.NDArray[np.uint8] | None = None
        while slot < len(targets) and number + 1 < total:
            if not capture.grab():
                break
            number += 1
            if targets[slot] != number:
                continue
            ok, bgr = capture.retrieve()
            if not ok or bgr is None:
                raise DecodeError(f"frame {number} of the video could not be decoded")
            last = _to_rgb(bgr, width, height, policy)
            while slot < len(targets) and targets[slot] == number:
                out[slot] = last
                slot += 1
        if slot < len(targets):
            if last is None or not short_tail_tolerated(total, number + 1):
                raise DecodeError(
                    f"the video stream ended after {number + 1} of its {total} frames "
                    "(damaged or truncated file)"
                )
            out[slot:] = last
    except cv2.error as exc:
        raise DecodeError("the video could not be decoded by OpenCV") from exc
    finally:
        capture.release()
    return out


def _to_rgb(
    bgr: npt.NDArray[np.uint8], width: int, height: int, policy: MediaPolicy
) -> npt.NDArray[np.uint8]:
    h, w = bgr.shape[:2]
    if w * h > policy.max_pixels:
        raise TooLargeError(
            f"a video frame of {w}x{h} pixels exceeds max_pixels={policy.max_pixels} "
            "(raise MediaPolicy.max_pixels to allow it)",
            limit="max_pixels",
            value=w * h,
            maximum=policy.max_pixels,
        )
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise DecodeError("OpenCV did not decode the video to 3-channel frames")
    if (w, h) != (width, height):
        bgr = np.asarray(
            cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
