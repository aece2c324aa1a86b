"""The ``pyav`` video loader: seek to keyframes, decode forward only as far as needed.

The sampled frames are split into runs (``plan_runs``): a run starts with a seek to
the keyframe at or before its first frame and decodes forward through the rest of its
frames. The next sampled frame joins the current run unless the keyframe before it
lies far enough ahead that seeking there skips more decoding than a seek costs
(``SEEK_COST_FRAMES``). Packets of frames that are not returned are decoded with
``skip_frame="NONREF"``: the decoder drops the frames nothing else refers to and still
decodes the ones later frames need; the returned frames' packets are decoded in full,
so they come out exactly as a full walk would give them. After the last packet a run
needs, the decoder is drained instead of fed further. FFmpeg's frame threading is on
for streams big enough to gain from it, and only the returned frames are converted to
RGB (by one converter per call).

Frames are identified by presentation timestamp against the packet index (see
``container.index_stream``), so variable frame rates and B-frames number correctly. When
timestamps are missing or a seek does not land where it should, the walk starts over
from the first frame and numbers frames by counting them; it never loops: every pass
reads each packet at most once per run.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from ..._errors import DecodeError
from ..._policy import MediaPolicy
from .container import StreamIndex, av_errors, open_video
from .loader import SAMPLING_OPTIONS, SampledVideoLoader
from .sampling import short_tail_tolerated

__all__ = ["SAMPLING_OPTIONS", "SEEK_COST_FRAMES", "PyAVVideoLoader", "plan_runs"]

#: What a seek costs, in frames decoded: a run is cut (and the next one seeks) only when
#: the keyframe before the next sampled frame lies more than this many frames past the
#: previous sampled frame.
SEEK_COST_FRAMES = 8
# Frames of fewer pixels are decoded and converted on the calling thread: starting
# FFmpeg's thread pools costs more than they save on them.
_THREADS_MIN_PIXELS = 320 * 240
# A seek that lands past its target is retried once from an earlier keyframe.
_SEEK_RETRIES = 1


class _Missed(Exception):
    """Internal: the timestamp walk lost its place; start over by counting frames."""


class PyAVVideoLoader(SampledVideoLoader):
    """Uniformly sample frames from video bytes with PyAV (FFmpeg).

    Example::

        frames, meta = PyAVVideoLoader().load_bytes(mp4_bytes, num_frames=8)
        frames.shape, meta["frames_indices"]  # (8, H, W, 3), [0, 12, ...]
    """

    name: ClassVar[str] = "pyav"

    def decode_targets(
        self,
        data: bytes,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        policy: MediaPolicy,
    ) -> npt.NDArray[np.uint8]:
        return _decode_targets(data, container, stream, index, targets, policy)


def _decode_targets(
    data: bytes,
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    policy: MediaPolicy,
) -> npt.NDArray[np.uint8]:
    out = _Frames(len(targets), policy, threaded=_threaded(stream))
    _configure_decoder(stream)
    if index.exact:
        try:
            with av_errors("decoding"):
                _seek_walk(container, stream, index, targets, out)
            return out.array()
        except _Missed:
            pass
    # Start over on a fresh container and number frames by counting them.
    fresh, fresh_stream = open_video(data, max_pixels=policy.max_pixels)
    try:
        _configure_decoder(fresh_stream)
        with av_errors("decoding"):
            _counting_walk(fresh, fresh_stream, index.total, targets, out)
    finally:
        fresh.close()
    return out.array()


def _threaded(stream: VideoStream) -> bool:
    ctx = stream.codec_context
    return int(ctx.width) * int(ctx.height) >= _THREADS_MIN_PIXELS


def _configure_decoder(stream: VideoStream) -> None:
    """Frame and slice threads on all cores for big frames, none for small ones."""
    ctx = stream.codec_context
    if _threaded(stream):
        ctx.thread_type = "AUTO"
        ctx.thread_count = 0
    else:
        ctx.thread_count = 1


class _Frames:
    """The returned frames: converted to RGB one by one, sized by the first one."""

    def __init__(self, count: int, policy: MediaPolicy, *, threaded: bool) -> None:
        self._count = count
        self._policy = policy
        self._threads = 0 if threaded else 1
        self._converter = VideoReformatter()
        self._out: npt.NDArray[np.uint8] | None = None
        self.filled = [False] * count

    def store(self, frame: VideoFrame, slot: int) -> None:
        """Convert ``frame`` into ``slot`` (resized to the first frame's size if it differs).

        Raises:
            TooLargeError: the frame exceeds ``max_pixels``.
        """
        self._policy.check_pixels(frame.width, frame.height, what="a video frame")
        if self._out is None:
            shape = (self._count, frame.height, frame.width, 3)
            self._out = np.empty(shape, dtype=np.uint8)
        height, width = self._out.shape[1:3]
        rgb = self._converter.reformat(
            frame, width=width, height=height, format="rgb24", threads=self._threads
        )
        self._out[slot] = rgb.to_ndarray()
        self.filled[slot] = True

    def array(self) -> npt.NDArray[np.uint8]:
        """All the frames, ``[N, H, W, 3]``.

        Raises:
            DecodeError: a slot was never filled.
        """
        if self._out is None or not all(self.filled):
            raise DecodeError("the video stream did not yield every sampled frame")
        return self._out


def _key_before(index: StreamIndex, frame: int) -> int:
    """The keyframe at or before ``frame``."""
    return index.keyframes[max(0, bisect.bisect_right(index.keyframes, frame) - 1)]


def plan_runs(index: StreamIndex, targets: list[int], seek_cost: int) -> list[list[int]]:
    """Group the slots of ``targets`` into runs; each run seeks once, then decodes forward.

    A target starts a new run when the keyframe before it lies more than ``seek_cost``
    frames past the previous target: seeking there skips that many frames' decoding.
    """
    runs: list[list[int]] = []
    previous = -1
    for slot, target in enumerate(targets):
        if not runs or _key_before(index, target) - previous - 1 > seek_cost:
            runs.append([slot])
        else:
            runs[-1].append(slot)
        previous = target
    return runs


def _seek_walk(
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    out: _Frames,
) -> None:
    for run in plan_runs(index, targets, SEEK_COST_FRAMES):
        key = _key_before(index, targets[run[0]])
        for attempt in range(_SEEK_RETRIES + 1):
            if attempt:
                # The seek landed past a target: start from the keyframe before.
                key = index.keyframes[max(0, bisect.bisect_left(index.keyframes, key) - 1)]
            container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
            slots = {index.pts[targets[slot]]: slot for slot in run if not out.filled[slot]}
            for frame in _decoded(container, stream, set(slots)):
                slot = slots.get(frame.pts) if frame.pts is not None else None
                if slot is not None:
                    out.store(frame, slot)
            if all(out.filled[slot] for slot in run):
                break
        else:
            raise _Missed


def _decoded(
    container: InputContainer, stream: VideoStream, wanted: set[int]
) -> Iterator[VideoFrame]:
    """Frames decoded from the current position until every packet of ``wanted`` is in.

    Packets whose timestamp is not in ``wanted`` are decoded with ``skip_frame="NONREF"``.
    Once the last wanted packet has been sent, the decoder is drained, so no packet past
    it is decoded; so it is once the decoding timestamp passes every wanted one (a seek
    that landed too late), as no later packet can then be wanted.
    """
    ctx = stream.codec_context
    pending = set(wanted)
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.dts is not None and packet.dts > max(pending):
            break
        if packet.pts in pending:
            ctx.skip_frame = "DEFAULT"
            pending.discard(packet.pts)
        else:
            ctx.skip_frame = "NONREF"
        yield from ctx.decode(packet)
        if not pending:
            break
    ctx.skip_frame = "DEFAULT"
    yield from ctx.decode(None)


def _counting_walk(
    container: InputContainer,
    stream: VideoStream,
    total: int,
    targets: list[int],
    out: _Frames,
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
            out.store(frame, slot)
            slot += 1
        if slot == len(targets):
            return
    if last_frame is None or not short_tail_tolerated(total, number + 1):
        raise DecodeError(
            f"the video stream ended after {number + 1} of its {total} frames "
            "(damaged or truncated file)"
        )
    for missing in range(slot, len(targets)):
        out.store(last_frame, missing)
