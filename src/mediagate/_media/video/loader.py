"""What the builtin container loaders share: their options, the probe and the metadata.

``SampledVideoLoader.load_sampled`` opens the bytes with ``container.open_video``
(sniffing, allowlists, ``max_pixels``), indexes the stream, picks the frames to return
with a sampling rule (``load_bytes`` passes the uniform one, by presentation time or by
frame number; a model's sampler passes its own), reserves the decoded-output budget for
them from the stream's declared frame size (``reserve_frames``; with a frame-size hint,
``frame_size``, from the size they are decoded to) and builds the metadata
(``describe``); a subclass only decodes the chosen frames, turned the way they are shown
(``orientation``) and, with a hint, at the size it gives.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.stream import Discard
from av.video.stream import VideoStream

from ..._errors import DecodeError
from ..._policy import MediaPolicy
from ..base import OptionSpec, opt_choice
from ..seekable import RandomAccess, RangeReadUnsupported
from .container import StreamIndex, av_errors, index_remote, index_stream, open_video
from .frame_size import FrameSize, resize_frames
from .limits import VideoLimits
from .orientation import IDENTITY, FrameGeometry, Orientation
from .sampling import (
    build_metadata,
    cap_num_frames,
    finite_number,
    sample_frame_indices,
    sample_frame_times,
)

__all__ = [
    "SAMPLING_OPTIONS",
    "SAMPLING_RULES",
    "Decoded",
    "SampledVideoLoader",
    "SamplingRule",
    "reserve_frames",
    "uniform_frames",
]

_FPS = finite_number(0.0, allow_none=True)

#: The values of the ``sampling`` option: spread the frames evenly over the video's
#: presentation time (the default) or over its frame numbers.
SAMPLING_RULES = ("time", "index")
_SAMPLING = opt_choice(SAMPLING_RULES, allow_none=True)

#: Options every builtin loader takes besides ``num_frames``.
SAMPLING_OPTIONS: Mapping[str, OptionSpec] = {
    "fps": OptionSpec(
        _FPS, "sample at most this many frames per second of video (0 or unset: no cap)"
    ),
    "sampling": OptionSpec(
        _SAMPLING,
        "'time' (default): the frames shown at evenly spaced instants; 'index': evenly "
        "spaced frame numbers (the same frames at a constant frame rate)",
    ),
}


class Decoded(NamedTuple):
    """What ``decode_targets`` returns: the frames as shown, how they were turned,
    whether they were numbered in the decoder's output order because the timestamps
    disagree with it (the metadata then times them by frame number, as for a stream
    whose timestamps are missing), and ``(width, height)`` of the frames as stored
    before a frame-size hint resized them (``None``: the frames are at that size; a
    loader that gives ``None`` under a hint has its frames resized afterwards)."""

    frames: npt.NDArray[np.uint8]
    orientation: Orientation
    counted: bool = False
    coded_size: tuple[int, int] | None = None


def uniform_frames(
    index: StreamIndex, *, num_frames: int, fps: float | None, sampling: str = "time"
) -> list[int]:
    """The frames uniform sampling returns from the stream ``index`` describes.

    ``"index"`` spreads them over the frame numbers (``sample_frame_indices``, with
    ``fps`` against frames / frame rate); ``"time"`` over the presentation time
    (``sample_frame_times``, with ``fps`` against the presented seconds). Timestamps
    that cannot be trusted (missing or repeated) fall back to the frame numbers.
    """
    if sampling == "index" or not index.exact:
        return sample_frame_indices(
            index.total, num_frames=num_frames, fps=fps, duration=index.duration
        )
    return sample_frame_times(
        index.pts, num_frames=num_frames, fps=fps, duration=index.seconds, regular=index.regular
    )


#: A sampling rule: the stream's packet index in, the frame numbers to return out
#: (ascending, distinct, each in ``range(index.total)``, at least one).
SamplingRule = Callable[[StreamIndex], list[int]]


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
    #: Whether ``num_frames`` bounds the frames returned. A loader whose sampling rule
    #: sets its own count (a model's sampler) sets it to ``False``: ``VideoMediaIO``
    #: then passes the policy's ``max_video_frames`` as ``num_frames`` instead.
    takes_num_frames: ClassVar[bool] = True
    #: Options of ``options`` given to the constructor rather than to ``load_bytes``
    #: (``VideoMediaIO`` builds the loader with them).
    constructor_options: ClassVar[tuple[str, ...]] = ("sampling",)
    #: ``VideoMediaIO`` builds the loader with its frame-size hint as ``frame_size=``
    #: (a loader without it gets full-size frames resized after loading).
    takes_frame_size: ClassVar[bool] = True
    #: Whether ``decode_targets`` works on a ``RandomAccess`` (reading only what the
    #: chosen frames need) as well as on bytes.
    reads_by_position: ClassVar[bool] = False

    def __init__(self, *, sampling: str | None = None, frame_size: FrameSize | None = None) -> None:
        """``sampling``: how ``load_bytes`` spreads its frames, ``"time"`` (default) or
        ``"index"`` (``uniform_frames``); ``frame_size``: the size frames are decoded to
        (``frame_size.FrameSize``; ``None``: as shown).

        Raises:
            OptionError: ``sampling`` is neither.
            TypeError: ``frame_size`` is not a ``FrameSize``.
        """
        self.sampling: str = _SAMPLING("video", "sampling", sampling) or "time"
        if frame_size is not None and not isinstance(frame_size, FrameSize):
            raise TypeError("frame_size must be a FrameSize or None")
        self.frame_size: FrameSize | None = frame_size

    def load_bytes(
        self,
        data: bytes | RandomAccess,
        num_frames: int = -1,
        *,
        fps: float | None = None,
        policy: MediaPolicy | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the uniformly sampled frames of ``data``, turned as they are shown.

        Args:
            data: the container bytes, or a ``RandomAccess`` (``reads_by_position``).
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
        sampling = self.sampling

        def uniform(index: StreamIndex) -> list[int]:
            return uniform_frames(index, num_frames=cap, fps=fps, sampling=sampling)

        return self.load_sampled(data, uniform, policy)

    def load_sampled(
        self, data: bytes | RandomAccess, rule: SamplingRule, policy: MediaPolicy
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the frames ``rule`` picks from the stream's index, and describe them.

        ``data`` read by position (a loader with ``reads_by_position``) is indexed from
        the container's tables (``container.index_remote``) and only the packets the
        chosen frames need are read; the frames and metadata are those the bytes give.

        Returns:
            ``(frames, metadata)``: uint8 RGB frames ``[N, H, W, 3]`` and ``describe``'s dict.

        Raises:
            TooLargeError: the frame size exceeds ``max_pixels``, the sampled frames
                the decoded-output budget, or the decode its deadline.
            DecodeError: not a supported, intact video, or the rule picked no frame,
                frames out of order or out of range.
            RangeReadUnsupported: ``data`` is read by position and the video needs a
                linear read (read the whole file and call again with its bytes).
        """
        remote = not isinstance(data, bytes)
        if not isinstance(data, bytes):
            if not self.reads_by_position:
                raise RangeReadUnsupported(f"video backend {self.name!r} reads whole files")
            index = index_remote(
                data, max_pixels=policy.max_pixels, max_packets=policy.max_stream_packets
            )
            if not index.exact:
                raise RangeReadUnsupported(
                    "the video's timestamps number its frames only by a linear read"
                )
        container, stream = open_video(data, max_pixels=policy.max_pixels)
        try:
            if remote:
                # Packets of the other streams are skipped, not read.
                for other in container.streams:
                    if other is not stream:
                        other.discard = Discard.all
            else:
                index = index_stream(container, stream, max_packets=policy.max_stream_packets)
            targets = [int(i) for i in rule(index)]
            if (
                not targets
                or targets[0] < 0
                or targets[-1] >= index.total
                or any(a >= b for a, b in itertools.pairwise(targets))
            ):
                raise DecodeError(
                    f"video backend {self.name!r} chose no valid frames from "
                    f"{index.total} (ascending, distinct, in range)"
                )
            with av_errors("probing the video stream"):
                width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            if self.frame_size is not None:
                # Budgeted at the size they come out at, turned either way.
                width, height = self.frame_size.largest_output(width, height)
            reserve_frames(len(targets), width, height, policy)
            decoded: Any = self.decode_targets(data, container, stream, index, targets, policy)
        finally:
            container.close()
        if not isinstance(decoded, Decoded):
            # A subclass written before orientations: its frames, as it decoded them.
            decoded = Decoded(decoded, IDENTITY)
        frames, orientation, counted, coded_size = decoded
        geometry = FrameGeometry.of(frames, orientation)
        if self.frame_size is not None:
            frames, geometry = _sized(frames, geometry, coded_size, self.frame_size)
        index = dataclasses.replace(index, exact=index.exact and not counted, geometry=geometry)
        metadata = self.describe(index, targets)
        if self.frame_size is not None:
            # Also where ``describe`` leaves the sizes out (a model's sampler).
            sizes = geometry.metadata()
            metadata.update(
                {k: sizes[k] for k in ("width", "height", "original_width", "original_height")}
            )
        return frames, metadata

    def describe(self, index: StreamIndex, targets: list[int]) -> dict[str, Any]:
        """The metadata returned next to the frames numbered ``targets`` of the stream
        ``index`` describes (``sampling.build_metadata``, reported as this backend):
        ``duration`` is the presented one (``StreamIndex.seconds``), ``timestamps`` the
        returned frames' presentation times, and the sizes and orientation those of
        ``index.geometry`` (with a frame-size hint, ``width`` and ``height`` are those
        of the frames returned, ``original_width`` and ``original_height`` those shown
        before resizing)."""
        return build_metadata(
            total_num_frames=index.total,
            fps=index.fps,
            duration=index.seconds,
            video_backend=self.name,
            frames_indices=targets,
            do_sample_frames=len(targets) == index.total,
            timestamps=index.timestamps(targets),
            geometry=index.geometry.metadata() if index.geometry is not None else None,
        )

    def decode_targets(
        self,
        data: bytes | RandomAccess,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        policy: MediaPolicy,
    ) -> Decoded:
        """The frames numbered ``targets`` (ascending) as uint8 RGB ``[N, H, W, 3]``,
        turned as they are shown (``orientation``), and the orientation applied. With a
        frame-size hint (``self.frame_size``) the frames are at the size it gives for the
        shown frame, and ``Decoded.coded_size`` says the size they were stored at.

        ``container`` is open on ``data`` and not yet decoded from; ``stream`` is its
        checked video stream and ``index`` that stream's packet index.

        Raises:
            TooLargeError: a frame exceeds ``policy.max_pixels``, the frames the
                decoded-output budget, or the decode its deadline.
            DecodeError: the frames cannot be decoded.
        """
        raise NotImplementedError


def _sized(
    frames: npt.NDArray[np.uint8],
    geometry: FrameGeometry,
    coded_size: tuple[int, int] | None,
    frame_size: FrameSize,
) -> tuple[npt.NDArray[np.uint8], FrameGeometry]:
    """The frames at the size ``frame_size`` gives, and their geometry saying both sizes.

    ``coded_size`` is the stored size of frames a decoder already resized; ``None``
    means ``frames`` are as shown at full size, and they are resized here.
    """
    orientation = geometry.orientation
    if coded_size is not None:
        output = (int(frames.shape[2]), int(frames.shape[1]))
        return frames, FrameGeometry(*coded_size, orientation, output_size=output)
    shown = orientation.shown_size(geometry.coded_width, geometry.coded_height)
    output = frame_size.output_size(*shown)
    frames = resize_frames(frames, output)
    return frames, dataclasses.replace(geometry, output_size=output)
