"""The ``opencv`` video loader: a sequential grab/retrieve walk with OpenCV.

The bytes are first sniffed and probed with PyAV under the same rules as the ``pyav``
loader (container and codec allowlists, ``max_pixels``, the frame count from the
packet index), then decoded from memory by OpenCV's FFmpeg backend: every frame up to
the last sampled one is grabbed, only the sampled ones are retrieved and converted.

Frames come out turned as they are shown, as the ``pyav`` loader turns them: the
orientation is read with PyAV from the first frame's display matrix (else the stream's
``rotate`` tag), OpenCV's own turning (``CAP_PROP_ORIENTATION_AUTO``, which knows
rotations but not mirrors) is switched off, and each retrieved frame is turned here.
OpenCV numbers frames in the order its decoder hands them over; when the time it gives
a frame (``CAP_PROP_POS_MSEC``) disagrees with the packet index's timestamp for that
number, the timestamps do not say when frames are shown, and the metadata times the
frames by number instead.
A frame-size hint (``frame_size``) is applied right after each sampled frame is
retrieved (``cv2.resize`` with ``INTER_AREA``, before the colour conversion and the
turn), to the size it gives for the frame as shown; the frames array is allocated, and
budgeted, at that size.
Needs ``opencv-python`` (``pip install 'mediagate[opencv]'``).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.stream import VideoStream

from ..._errors import DecodeError, MediaError, TooLargeError
from ..._policy import MediaPolicy
from .._isolation import shared_empty
from ..budget import check_deadline
from ..seekable import RandomAccess, RangeReadUnsupported
from .container import LIBRARY_ERRORS, StreamIndex, av_errors, open_video
from .loader import Decoded, SampledVideoLoader, reserve_frames
from .orientation import IDENTITY, Orientation, frame_orientation
from .sampling import short_tail_tolerated

__all__ = ["OpenCVVideoLoader"]

_LIBRARY_ERRORS: tuple[type[Exception], ...] = (cv2.error, *LIBRARY_ERRORS)

# Packets read at most while looking for the first frame's display matrix.
_PROBE_PACKETS = 64


class OpenCVVideoLoader(SampledVideoLoader):
    """Uniformly sample frames from video bytes with OpenCV.

    Example::

        frames, meta = OpenCVVideoLoader().load_bytes(mp4_bytes, num_frames=8)
    """

    name: ClassVar[str] = "opencv"

    def decode_targets(
        self,
        data: bytes | RandomAccess,
        container: InputContainer,
        stream: VideoStream,
        index: StreamIndex,
        targets: list[int],
        policy: MediaPolicy,
    ) -> Decoded:
        if not isinstance(data, bytes):  # not reads_by_position: never given one
            raise RangeReadUnsupported("the opencv video backend reads whole files")
        width, height = stream.codec_context.width, stream.codec_context.height
        container.close()  # OpenCV decodes from its own reader
        orientation = first_frame_orientation(data, policy, index.rotate_tag)
        output = None
        if self.frame_size is not None:
            output = self.frame_size.output_size(*orientation.shown_size(width, height))
        frames, agreed = _grab_walk(
            data, index.total, targets, width, height, policy, orientation, index, output=output
        )
        return Decoded(frames, orientation, counted=not agreed, coded_size=(width, height))


def first_frame_orientation(
    data: bytes, policy: MediaPolicy, fallback: Orientation = IDENTITY
) -> Orientation:
    """How the stream's first frame is shown, decoded with PyAV: its display matrix, else
    ``fallback``. At most ``_PROBE_PACKETS`` packets are read; a stream that yields no
    frame by then is shown by ``fallback``.

    Raises:
        TooLargeError: past the decode deadline.
        DecodeError: the video cannot be opened or its first packets decoded.
    """
    container, stream = open_video(data, max_pixels=policy.max_pixels)
    try:
        with av_errors("reading the display matrix"):
            ctx = stream.codec_context
            ctx.thread_count = 1
            for count, packet in enumerate(container.demux(stream)):
                check_deadline()
                if count >= _PROBE_PACKETS:
                    break
                if packet.size == 0:
                    continue  # the end-of-stream marker: drained below
                frames = ctx.decode(packet)
                if frames:
                    return frame_orientation(frames[0], fallback)
            frames = ctx.decode(None)
            if frames:
                return frame_orientation(frames[0], fallback)
    finally:
        container.close()
    return fallback


def _grab_walk(
    data: bytes,
    total: int,
    targets: list[int],
    width: int,
    height: int,
    policy: MediaPolicy,
    orientation: Orientation = IDENTITY,
    index: StreamIndex | None = None,
    *,
    output: tuple[int, int] | None = None,
) -> tuple[npt.NDArray[np.uint8], bool]:
    """Grab every frame up to the last target and retrieve the targets, into one array,
    each turned by ``orientation`` (frames of ``width`` x ``height`` as stored) and
    resized to ``output`` (``(width, height)`` as shown; ``None``: the shown size), and
    whether OpenCV timed every frame grabbed as ``index`` does (``_fill``).

    Raises:
        TooLargeError: the frames are over the decoded-output budget, a frame over
            ``max_pixels``, the decode past its deadline, or memory ran out.
        DecodeError: OpenCV cannot open or decode the bytes, or the stream ends early.
    """
    shown_width, shown_height = output or orientation.shown_size(width, height)
    reserve_frames(len(targets), shown_width, shown_height, policy)
    source = io.BytesIO(data)  # must outlive the capture, which reads from it
    try:
        out = shared_empty((len(targets), shown_height, shown_width, 3), np.uint8)
        # OpenCV reads any io.BufferedIOBase; its stubs only name IStreamReader.
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [])  # type: ignore[call-overload]
    except MemoryError as exc:
        raise _out_of_memory() from exc
    except _LIBRARY_ERRORS as exc:
        raise DecodeError("the video could not be opened by OpenCV") from exc
    try:
        if not capture.isOpened():
            raise DecodeError("the video could not be opened by OpenCV")
        _stored_orientation(capture, orientation)
        agreed = _fill(capture, out, total, targets, policy, orientation, index)
    except MediaError:
        raise
    except MemoryError as exc:
        raise _out_of_memory() from exc
    except _LIBRARY_ERRORS as exc:
        raise DecodeError("the video could not be decoded by OpenCV") from exc
    finally:
        capture.release()
    return out, agreed


def _stored_orientation(capture: cv2.VideoCapture, orientation: Orientation) -> None:
    """Have ``capture`` hand frames over as stored (they are turned here).

    Raises:
        DecodeError: this OpenCV turns frames itself and cannot be told not to, and the
            frames need turning.
    """
    auto = getattr(cv2, "CAP_PROP_ORIENTATION_AUTO", None)
    if auto is None:
        return  # an OpenCV that predates turning frames at all
    capture.set(auto, 0)
    if capture.get(auto) and not orientation.identity:
        raise DecodeError(
            "this OpenCV build turns rotated videos itself and cannot be told not to; "
            "use the pyav video backend"
        )


def _out_of_memory() -> TooLargeError:
    return TooLargeError(
        "the video needed more memory than this server allows (decoding with OpenCV); "
        "lower num_frames or MediaPolicy.max_pixels",
        limit="memory",
    )


def _fill(
    capture: cv2.VideoCapture,
    out: npt.NDArray[np.uint8],
    total: int,
    targets: list[int],
    policy: MediaPolicy,
    orientation: Orientation = IDENTITY,
    index: StreamIndex | None = None,
) -> bool:
    """Grab frames in order, retrieving the ones in ``targets`` into ``out``, turned by
    ``orientation``.

    Returns:
        Whether each frame grabbed came out at the time, from the first frame, that
        ``index`` gives its number (to a millisecond and a time-base unit); ``False``
        without an index whose timestamps can be trusted.

    Raises:
        TooLargeError: past the decode deadline, or a frame over ``max_pixels``.
        DecodeError: a target frame cannot be decoded, or the stream ends early.
    """
    width, height = orientation.stored_size(out.shape[2], out.shape[1])
    slot = 0
    number = -1
    last: npt.NDArray[np.uint8] | None = None
    # Each retrieve writes into the previous frame's buffer: one BGR frame at a time.
    bgr: Any = None
    agreed = index is not None and index.exact
    tolerance = 0.001 + float(index.time_base) if index is not None else 0.0
    first_ms = 0.0
    while slot < len(targets) and number + 1 < total:
        check_deadline()
        if not capture.grab():
            break
        number += 1
        if agreed and index is not None:
            ms = float(capture.get(cv2.CAP_PROP_POS_MSEC))
            if number == 0:
                first_ms = ms
            expected = float((index.pts[number] - index.pts[0]) * index.time_base)
            agreed = abs((ms - first_ms) / 1000 - expected) <= tolerance
        if targets[slot] != number:
            continue
        ok, bgr = capture.retrieve(bgr)
        if not ok or bgr is None:
            raise DecodeError(f"frame {number} of the video could not be decoded")
        last = _to_rgb(np.asarray(bgr, dtype=np.uint8), width, height, policy, orientation)
        while slot < len(targets) and targets[slot] == number:
            out[slot] = last
            slot += 1
    if slot < len(targets):
        if number < 0:
            # Nothing at all: a damaged start, or a codec OpenCV's own FFmpeg lacks (AV1
            # in the opencv-python wheels) that the container allowlist accepts.
            raise DecodeError(
                "OpenCV decoded no frame of the video (a damaged file, or a codec its "
                "FFmpeg lacks; video_backend='pyav' has its own decoders)"
            )
        if last is None or not short_tail_tolerated(total, number + 1):
            raise DecodeError(
                f"the video stream ended after {number + 1} of its {total} frames "
                "(damaged or truncated file)"
            )
        out[slot:] = last
        return False
    return agreed


def _to_rgb(
    bgr: npt.NDArray[np.uint8],
    width: int,
    height: int,
    policy: MediaPolicy,
    orientation: Orientation = IDENTITY,
) -> npt.NDArray[np.uint8]:
    """``bgr`` as RGB, resized to the stored ``width`` x ``height`` if it differs, then
    turned by ``orientation``."""
    h, w = bgr.shape[:2]
    policy.check_pixels(w, h, what="a video frame")
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise DecodeError("OpenCV did not decode the video to 3-channel frames")
    if (w, h) != (width, height):
        bgr = np.asarray(
            cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return orientation.apply(rgb)
