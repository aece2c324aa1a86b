"""The ``pyav`` video loader: seek to keyframes, decode forward only as far as needed.

For each sampled frame the walk either keeps decoding forward (when no keyframe lies
between the last decoded frame and the target) or seeks to the keyframe at or before
the target; when the planned seeks would leave less than half of the frames up to the
last target undecoded, it walks forward once instead. Packets of frames that are not
returned are decoded with ``skip_frame="NONREF"``: frames nothing else refers to are
dropped by the decoder, the ones later frames need are still decoded. FFmpeg threading
is on (frame threads for long forward runs, slice threads between frequent seeks), and
only the returned frames are converted to RGB.

Frames are identified by presentation timestamp against the packet index (see
``container.index_stream``), so variable frame rates and B-frames number correctly. When
timestamps are missing or a seek does not land where it should, the walk starts over
from the first frame and numbers frames by counting them; it never loops: every pass
reads each packet at most once per target.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ..._errors import DecodeError, TooLargeError
from ..._policy import MediaPolicy
from ..base import OptionSpec, opt_float
from .container import StreamIndex, av_errors, index_stream, open_video
from .sampling import (
    build_metadata,
    cap_num_frames,
    sample_frame_indices,
    short_tail_tolerated,
)

__all__ = ["SAMPLING_OPTIONS", "PyAVVideoLoader"]

#: Options every builtin loader takes besides ``num_frames``.
SAMPLING_OPTIONS: Mapping[str, OptionSpec] = {
    "fps": OptionSpec(
        opt_float(0.0, allow_none=True),
        "sample at most this many frames per second of video (0 or unset: no cap)",
    ),
}

# Targets at most this many frames past the last decoded frame are reached by decoding
# forward even when a keyframe lies in between.
_FORWARD_SLACK = 1
# Seeks are planned only when they leave at least this share of frames undecoded.
_SEEK_MIN_SAVING = 0.5
# Mean frames decoded per seek from which frame threading is used (see _configure_decoder).
_FRAME_THREADS_MIN_RUN = 48
# A seek that lands past its target is retried once from an earlier keyframe.
_SEEK_RETRIES = 1


class _Missed(Exception):
    """Internal: the timestamp walk lost its place; start over by counting frames."""


class PyAVVideoLoader:
    """Uniformly sample frames from video bytes with PyAV (FFmpeg).

    Example::

        frames, meta = PyAVVideoLoader().load_bytes(mp4_bytes, num_frames=8)
        frames.shape, meta["frames_indices"]  # (8, H, W, 3), [0, 12, ...]
    """

    #: Registry name, reported as ``metadata["video_backend"]``.
    name: ClassVar[str] = "pyav"
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
            OptionError: ``num_frames`` is 0 or not an integer.
            TooLargeError: the frame size exceeds ``max_pixels``.
            DecodeError: not a supported, intact video.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        container, stream = open_video(data, max_pixels=policy.max_pixels)
        try:
            index = index_stream(container, stream)
            targets = sample_frame_indices(
                index.total, num_frames=cap, fps=fps, duration=index.duration
            )
            frames = _decode_targets(data, container, stream, index, targets, policy)
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


def _decode_targets(
    data: bytes,
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    policy: MediaPolicy,
) -> npt.NDArray[np.uint8]:
    width, height = stream.codec_context.width, stream.codec_context.height
    out = np.empty((len(targets), height, width, 3), dtype=np.uint8)
    runs = _plan_runs(index, targets, _FORWARD_SLACK)
    slack = _FORWARD_SLACK
    if sum(runs) > _SEEK_MIN_SAVING * (targets[-1] + 1):
        # Seeking would skip little: walk forward once, with no pipeline drains.
        slack, runs = index.total, [targets[-1] + 1]
    _configure_decoder(stream, sum(runs) / len(runs) if index.exact else index.total)
    if index.exact:
        try:
            with av_errors("decoding"):
                _seek_walk(container, stream, index, targets, out, policy, slack)
            return out
        except _Missed:
            pass
    # Start over on a fresh container and number frames by counting them.
    fresh, fresh_stream = open_video(data, max_pixels=policy.max_pixels)
    try:
        _configure_decoder(fresh_stream, index.total)
        with av_errors("decoding"):
            _counting_walk(fresh, fresh_stream, index.total, targets, out, policy)
    finally:
        fresh.close()
    return out


def _configure_decoder(stream: VideoStream, mean_run: float) -> None:
    """Turn on FFmpeg threading suited to runs of ``mean_run`` frames between seeks.

    Frame threading pays off on long forward runs, but each seek drains and refills its
    pipeline, which costs more than it gains on short runs; slice threading has no
    such latency.
    """
    ctx = stream.codec_context
    ctx.thread_type = "AUTO" if mean_run >= _FRAME_THREADS_MIN_RUN else "SLICE"
    ctx.thread_count = 0


def _key_before(index: StreamIndex, frame: int) -> int:
    """The keyframe at or before ``frame``."""
    return index.keyframes[max(0, bisect.bisect_right(index.keyframes, frame) - 1)]


def _plan_runs(index: StreamIndex, targets: list[int], slack: int) -> list[int]:
    """Frames the seek walk decodes after each seek (non-reference ones included)."""
    runs: list[int] = []
    previous = -1
    for target in targets:
        key = _key_before(index, target)
        if not runs or key > previous + slack:
            runs.append(target - key + 1)
        else:
            runs[-1] += target - previous
        previous = target
    return runs


def _store(frame: VideoFrame, out: npt.NDArray[np.uint8], slot: int, policy: MediaPolicy) -> None:
    if frame.width * frame.height > policy.max_pixels:
        raise TooLargeError(
            f"a video frame of {frame.width}x{frame.height} pixels exceeds "
            f"max_pixels={policy.max_pixels} (raise MediaPolicy.max_pixels to allow it)",
            limit="max_pixels",
            value=frame.width * frame.height,
            maximum=policy.max_pixels,
        )
    height, width = out.shape[1:3]
    out[slot] = frame.to_ndarray(format="rgb24", width=width, height=height)


def _decoded(
    container: InputContainer, stream: VideoStream, wanted: set[int], drain_after: int | None
) -> Iterator[VideoFrame]:
    """Frames decoded from the current position on, non-reference ones skipped unless wanted.

    After sending the packet whose timestamp is ``drain_after`` the decoder is drained,
    so no packets past it are decoded.
    """
    ctx = stream.codec_context
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        ctx.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
        yield from ctx.decode(packet)
        if drain_after is not None and packet.pts == drain_after:
            break
    ctx.skip_frame = "DEFAULT"
    yield from ctx.decode(None)


def _seek_walk(
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    out: npt.NDArray[np.uint8],
    policy: MediaPolicy,
    slack: int,
) -> None:
    frame_of = {ts: i for i, ts in enumerate(index.pts)}
    wanted = {index.pts[t] for t in targets}
    last = -1  # frame number of the last frame the decoder gave back
    frames: Iterator[VideoFrame] | None = None
    slot = 0
    retries = 0
    while slot < len(targets):
        target = targets[slot]
        key = _key_before(index, target)
        if frames is None or key > last + slack:
            if retries:
                # The last seek overshot: start from the keyframe before this one.
                pos = bisect.bisect_left(index.keyframes, key)
                key = index.keyframes[max(0, pos - retries)]
            container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            frames = _decoded(container, stream, wanted, _drain_point(index, targets, slot, slack))
            last = -1
        for frame in frames:
            number = frame_of.get(frame.pts) if frame.pts is not None else None
            if number is None:
                continue
            last = number
            if number < target:
                continue
            if number > target:
                break
            _store(frame, out, slot, policy)
            slot += 1
            retries = 0
            if slot == len(targets) or targets[slot] > number:
                break
            target = targets[slot]
        else:
            frames = None  # this pass ran out of packets
        if slot < len(targets) and last >= targets[slot]:
            # The decoder never produced the target: the seek landed past it.
            if retries >= _SEEK_RETRIES:
                raise _Missed
            retries += 1
            frames = None
        elif frames is None and slot < len(targets) and last < targets[slot]:
            if retries >= _SEEK_RETRIES:
                raise _Missed
            retries += 1


def _drain_point(index: StreamIndex, targets: list[int], slot: int, slack: int) -> int | None:
    """The timestamp after whose packet the decoder may be drained.

    That is the last target reached by decoding forward from ``targets[slot]``: the
    next one after it needs a seek anyway, so packets past it are never worth decoding.
    """
    end = slot
    while end + 1 < len(targets):
        if _key_before(index, targets[end + 1]) > targets[end] + slack:
            break
        end += 1
    if end + 1 == len(targets):
        return None if targets[end] == index.total - 1 else index.pts[targets[end]]
    return index.pts[targets[end]]


def _counting_walk(
    container: InputContainer,
    stream: VideoStream,
    total: int,
    targets: list[int],
    out: npt.NDArray[np.uint8],
    policy: MediaPolicy,
) -> None:
    number = -1
    slot = 0
    last_frame: VideoFrame | None = None
    for frame in container.decode(stream):
        number += 1
        if number >= total:
            break
        last_frame = frame
        while slot < len(targets) and targets[slot] == number:
            _store(frame, out, slot, policy)
            slot += 1
        if slot == len(targets):
            return
    if last_frame is None or not short_tail_tolerated(total, number + 1):
        raise DecodeError(
            f"the video stream ended after {number + 1} of its {total} frames "
            "(damaged or truncated file)"
        )
    while slot < len(targets):
        _store(last_frame, out, slot, policy)
        slot += 1
