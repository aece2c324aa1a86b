"""The ``pyav`` video loader: seek to keyframes, decode forward only as far as needed.

The sampled frames are split into runs (``plan_runs``): a run starts with a seek to
the keyframe at or before its first frame and decodes forward through the rest of its
frames. The next sampled frame joins the current run unless the keyframe before it
lies far enough ahead that seeking there skips more decoding than a seek costs
(``SEEK_COST_FRAMES``; in memory a seek costs less than decoding one frame, so any
frame skipped pays for it). Packets of frames that are not returned are decoded with
``skip_frame="NONREF"``: the decoder drops the frames nothing else refers to and still
decodes the ones later frames need; the returned frames' packets are decoded in full,
so they come out exactly as a full walk would give them. After the last packet a run
needs, the decoder is drained instead of fed further.

Runs start at keyframes, so they decode independently: for frames of at least
320x240, runs are handed to one single-threaded decoder per core (each on its own
container over the same bytes) when there is enough work; a lone run gets FFmpeg's
frame and slice threading instead. Smaller frames are decoded on the calling thread
with no thread pool. Only the returned frames are converted to RGB, and turned the
way they are shown (each by its own display matrix, else the stream's ``rotate`` tag:
``orientation``); the frames array is shaped by the first frame stored. A frame-size
hint (``frame_size``) is applied in the same swscale pass that converts to RGB (``AREA``
interpolation, with chroma interpolated at full horizontal resolution where this PyAV
can ask for it: without, swscale's packed RGB output smears colour, on grainy 4K
footage a mean 7.4 levels off a full-size decode resized with Pillow, against 2.1 with
it), to the size it gives for the frame as shown: no full-size RGB frame is made, and
the frames array is allocated, and budgeted, at the output size.

Frames are identified by presentation timestamp against the packet index (see
``container.index_stream``), so variable frame rates and B-frames number correctly. When
timestamps are missing, a seek does not land where it should, or the decoder hands
frames out of timestamp order (timestamps that do not say when frames are shown: an
AVI's, which count packets, on a stream with B-frames), the walk starts over from the
first frame and numbers frames by counting them, in the order the decoder gives them;
it never loops: every pass reads each packet at most once per run.
"""

from __future__ import annotations

import bisect
import contextvars
import functools
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from ..._errors import DecodeError
from ..._policy import MediaPolicy
from .. import _helpers
from .._isolation import shared_empty
from ..budget import check_deadline
from ..seekable import RandomAccess, RangeReadUnsupported
from .container import StreamIndex, av_errors, open_video
from .frame_size import FrameSize
from .loader import SAMPLING_OPTIONS, Decoded, SampledVideoLoader, reserve_frames
from .orientation import IDENTITY, Orientation, frame_orientation
from .sampling import short_tail_tolerated

__all__ = ["SAMPLING_OPTIONS", "SEEK_COST_FRAMES", "PyAVVideoLoader", "plan_runs"]

#: What a seek costs, in frames decoded: a run is cut (and the next one seeks) only when
#: the keyframe before the next sampled frame lies more than this many frames past the
#: previous sampled frame. Measured on 720p H.264 in memory, a seek and decoder flush
#: cost less than one frame, and shorter runs also spread better over parallel decoders.
SEEK_COST_FRAMES = 0
# Frames of fewer pixels are decoded and converted on the calling thread: starting
# thread pools costs more than they save on them.
_THREADS_MIN_PIXELS = 320 * 240
# Frames to decode per extra decoder before runs are walked in parallel.
_PARALLEL_MIN_FRAMES = 60
# Parallel decoders at most, whatever the core count: each holds its own reference frames.
_MAX_WORKERS = _helpers.MAX_HELPERS + 1
# A seek that lands past its target is retried once from an earlier keyframe.
_SEEK_RETRIES = 1


@functools.cache
def scaling_interpolation() -> Any:
    """The swscale flags a frame-size hint scales with: ``AREA`` with
    ``FULL_CHR_H_INT`` where this PyAV combines flags (and its swscale takes them),
    else ``"AREA"``."""
    try:
        from av.video.reformatter import Interpolation

        flags: Any = Interpolation.AREA | Interpolation.FULL_CHR_H_INT
        VideoReformatter().reformat(
            VideoFrame(16, 16, "yuv420p"), width=8, height=8, format="rgb24", interpolation=flags
        )
    except Exception:  # an older PyAV: no flags to combine, or not accepted combined
        return "AREA"
    return flags


class _Missed(Exception):
    """Internal: the timestamp walk lost its place; start over by counting frames."""


class PyAVVideoLoader(SampledVideoLoader):
    """Uniformly sample frames from video bytes with PyAV (FFmpeg).

    Example::

        frames, meta = PyAVVideoLoader().load_bytes(mp4_bytes, num_frames=8)
        frames.shape, meta["frames_indices"]  # (8, H, W, 3), [0, 12, ...]
    """

    name: ClassVar[str] = "pyav"
    reads_by_position: ClassVar[bool] = True

    def decode_targets(
        self,
        data: bytes | RandomAccess,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        policy: MediaPolicy,
    ) -> Decoded:
        return _decode_targets(data, container, stream, index, targets, policy, self.frame_size)


def _decode_targets(
    data: bytes | RandomAccess,
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    policy: MediaPolicy,
    frame_size: FrameSize | None = None,
) -> Decoded:
    out = _Frames(len(targets), policy, fallback=index.rotate_tag, frame_size=frame_size)
    big = _big_frames(stream)
    if index.exact:
        runs = plan_runs(index, targets, SEEK_COST_FRAMES)
        workers = _workers(index, targets, runs) if big else 1
        try:
            with av_errors("decoding"):
                if workers > 1:
                    _parallel_walk(
                        data, container, stream, index, targets, runs, out, workers, policy
                    )
                else:
                    _configure_decoder(stream, threads=0 if big else 1)
                    walker = _Walker(container, stream, index, targets, out, threads=int(not big))
                    for run in runs:
                        walker.walk(run)
            return Decoded(out.array(), out.orientation, coded_size=out.coded_size)
        except _Missed:
            if not isinstance(data, bytes):
                raise RangeReadUnsupported(
                    "the video's frames can only be numbered by a linear read"
                ) from None
    # Start over on a fresh container and number frames by counting them.
    fresh, fresh_stream = open_video(data, max_pixels=policy.max_pixels)
    try:
        _configure_decoder(fresh_stream, threads=0 if big else 1)
        with av_errors("decoding"):
            agreed = _counting_walk(fresh, fresh_stream, index, targets, out, int(not big))
    finally:
        fresh.close()
    return Decoded(out.array(), out.orientation, counted=not agreed, coded_size=out.coded_size)


def _big_frames(stream: VideoStream) -> bool:
    ctx = stream.codec_context
    return int(ctx.width) * int(ctx.height) >= _THREADS_MIN_PIXELS


def _workers(index: StreamIndex, targets: list[int], runs: list[list[int]]) -> int:
    """How many decoders walk ``runs`` side by side: one per core, when there is enough
    work for each."""
    frames = sum(targets[run[-1]] - _key_before(index, targets[run[0]]) + 1 for run in runs)
    return max(
        1, min(_helpers.cpu_count(), _MAX_WORKERS, len(runs), frames // _PARALLEL_MIN_FRAMES)
    )


def _configure_decoder(stream: VideoStream, *, threads: int) -> None:
    """``threads`` decoder threads (0: one per core), frame and slice threading."""
    ctx = stream.codec_context
    if threads != 1:
        ctx.thread_type = "AUTO"
    ctx.thread_count = threads


class _Frames:
    """The returned frames, as shown, sized by the first one stored (or by what
    ``frame_size`` gives for it); threads fill distinct slots.

    Each frame is turned by its own display matrix, else by ``fallback`` (the stream's
    ``rotate`` tag); ``orientation`` is the first slot's, and ``coded_size`` the size
    the first frame stored was decoded at.
    """

    def __init__(
        self,
        count: int,
        policy: MediaPolicy,
        *,
        fallback: Orientation = IDENTITY,
        frame_size: FrameSize | None = None,
    ) -> None:
        self._count = count
        self._policy = policy
        self._fallback = fallback
        self._frame_size = frame_size
        # swscale's default (bilinear) unless a hint scales: then area averaging, which
        # weighs every source pixel as a downscale should.
        self._interpolation = None if frame_size is None else scaling_interpolation()
        self._lock = threading.Lock()
        self._out: npt.NDArray[np.uint8] | None = None
        self.filled = [False] * count
        self.orientation = fallback
        self.coded_size: tuple[int, int] | None = None

    def store(
        self, frame: VideoFrame, slot: int, converter: VideoReformatter, threads: int
    ) -> None:
        """Convert ``frame`` to RGB into ``slot``, turned as it is shown and resized to
        the first frame's output size if needed (one swscale pass).

        Raises:
            TooLargeError: the frame exceeds ``max_pixels``, or the first frame's output
                size times the frame count the decoded-output budget.
        """
        self._policy.check_pixels(frame.width, frame.height, what="a video frame")
        orientation = frame_orientation(frame, self._fallback)
        with self._lock:
            if self._out is None:
                width, height = orientation.shown_size(frame.width, frame.height)
                if self._frame_size is not None:
                    width, height = self._frame_size.output_size(width, height)
                reserve_frames(self._count, width, height, self._policy)
                self._out = shared_empty((self._count, height, width, 3), np.uint8)
                self.coded_size = (int(frame.width), int(frame.height))
            out = self._out
        width, height = orientation.stored_size(out.shape[2], out.shape[1])
        rgb = converter.reformat(
            frame,
            width=width,
            height=height,
            format="rgb24",
            interpolation=self._interpolation,
            threads=threads,
        )
        out[slot] = orientation.apply(rgb.to_ndarray())
        if slot == 0:
            self.orientation = orientation
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


class _Walker:
    """One decoder walking runs: seek to the keyframe, decode forward to the run's end."""

    def __init__(
        self,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        out: _Frames,
        *,
        threads: int,
    ) -> None:
        self._container, self._stream, self._index = container, stream, index
        self._targets, self._out, self._threads = targets, out, threads
        self._converter = VideoReformatter()

    def walk(self, run: list[int]) -> None:
        """Decode the frames of the slots in ``run``.

        Raises:
            _Missed: a seek landed past a target twice, or the decoder handed frames out
                of timestamp order.
        """
        index, targets, out = self._index, self._targets, self._out
        key = _key_before(index, targets[run[0]])
        for attempt in range(_SEEK_RETRIES + 1):
            if attempt:
                # The seek landed past a target: start from the keyframe before.
                key = index.keyframes[max(0, bisect.bisect_left(index.keyframes, key) - 1)]
            self._container.seek(index.pts[key], stream=self._stream, backward=True)
            slots = {index.pts[targets[slot]]: slot for slot in run if not out.filled[slot]}
            shown: int | None = None
            for frame in _decoded(self._container, self._stream, set(slots)):
                if frame.pts is None:
                    continue
                if shown is not None and frame.pts <= shown:
                    # Frames come out in the order they are shown: these timestamps
                    # do not say when that is.
                    raise _Missed
                shown = frame.pts
                slot = slots.get(frame.pts)
                if slot is not None:
                    out.store(frame, slot, self._converter, self._threads)
            if all(out.filled[slot] for slot in run):
                return
        raise _Missed


def _parallel_walk(
    data: bytes | RandomAccess,
    container: InputContainer,
    stream: VideoStream,
    index: StreamIndex,
    targets: list[int],
    runs: list[list[int]],
    out: _Frames,
    workers: int,
    policy: MediaPolicy,
) -> None:
    """Walk ``runs`` with ``workers`` single-threaded decoders, each on its own container.

    Runs start at keyframes, so they decode independently; each decoder takes the next
    run when it is done with one. This scales better than FFmpeg's frame threading, which
    hands every packet (the skipped ones too) through its pipeline.
    """
    pending = iter(runs)
    lock = threading.Lock()
    failed = threading.Event()

    def work(own: tuple[InputContainer, VideoStream] | None) -> None:
        source, video = own or open_video(data, max_pixels=policy.max_pixels)
        try:
            _configure_decoder(video, threads=1)
            walker = _Walker(source, video, index, targets, out, threads=1)
            while not failed.is_set():
                with lock:
                    run = next(pending, None)
                if run is None:
                    return
                with av_errors("decoding"):
                    walker.walk(run)
        except BaseException:
            failed.set()
            raise
        finally:
            if own is None:
                source.close()

    pool = _helpers.helper_pool()
    # Each helper runs in a copy of this context: the decode's budget and deadline.
    helpers = (
        [pool.submit(contextvars.copy_context().run, work, None) for _ in range(workers - 1)]
        if pool
        else []
    )
    try:
        work((container, stream))
    finally:
        # Helpers still queued behind other requests are not needed any more; the
        # ones that started finish the run they hold.
        errors = [f.exception() for f in helpers if not f.cancel()]
    for error in errors:
        if error is not None:
            raise error


def _decoded(
    container: InputContainer, stream: VideoStream, wanted: set[int]
) -> Iterator[VideoFrame]:
    """Frames decoded from the current position until every packet of ``wanted`` is in.

    Packets whose timestamp is not in ``wanted`` are decoded with ``skip_frame="NONREF"``.
    Once the last wanted packet has been sent, the decoder is drained, so no packet past
    it is decoded; so it is once the decoding timestamp passes every wanted one (a seek
    that landed too late), as no later packet can then be wanted. The decode deadline
    is checked before each packet.

    Raises:
        TooLargeError: the decode deadline passed.
    """
    ctx = stream.codec_context
    pending = set(wanted)
    for packet in container.demux(stream):
        check_deadline()
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
    index: StreamIndex,
    targets: list[int],
    out: _Frames,
    threads: int,
) -> bool:
    """Decode from the start, numbering frames by counting them, and store the targets.

    Returns:
        Whether every frame walked had the timestamp the index gives its number (the
        index's timestamps then time the frames returned).

    Raises:
        DecodeError: the stream ended too early.
        TooLargeError: the decode deadline passed.
    """
    total = index.total
    converter = VideoReformatter()
    number = -1
    slot = 0
    agreed = index.exact
    last_frame: VideoFrame | None = None
    for frame in container.decode(stream):
        check_deadline()
        number += 1
        if number >= total:
            break
        agreed = agreed and frame.pts == index.pts[number]
        last_frame = frame
        while slot < len(targets) and targets[slot] == number:
            out.store(frame, slot, converter, threads)
            slot += 1
        if slot == len(targets):
            return agreed
    if last_frame is None or not short_tail_tolerated(total, number + 1):
        raise DecodeError(
            f"the video stream ended after {number + 1} of its {total} frames "
            "(damaged or truncated file)"
        )
    for missing in range(slot, len(targets)):
        out.store(last_frame, missing, converter, threads)
    return False
