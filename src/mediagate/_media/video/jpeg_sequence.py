"""``video/jpeg``: a comma-separated sequence of base64 JPEG frames.

The sequence is cut to ``num_frames`` (already capped by ``max_video_frames``) before
any frame is decoded, so a request with thousands of frames costs no more than one
with the cap. The frames' decoded size (``n`` x the first frame's size from its JPEG
header) is held against the decoded-output budget before any frame is decoded, and
again from the first decoded frame before the frames array is allocated; the decode
deadline is checked between frames. The frames were chosen by the client, so nothing
is sampled: metadata numbers them ``0..n-1`` at ``fps`` (default 1) unless the client
says otherwise, times them at frame number over ``fps`` (``timestamps``) and gives
their ``width`` and ``height``. They are not turned here: a container's display matrix
does not apply to JPEG frames (any EXIF orientation is the image decoder's affair).

With a frame-size hint (``frame_size``), the hint sizes the frames in place of the image
decoder's own ``max_image_size``: each JPEG frame is decoded by ``ImageMediaIO`` at the
smallest DCT scale at or above the output size (its ``max_image_size`` path, EXIF
orientation included), then resized exactly to it; the budget is held at the output
size, and the metadata also gives ``original_width`` and ``original_height``, the size
the frames are shown at. A frame whose shown size (from its header and EXIF
orientation) differs from frame 0's is refused, as without the hint. An image decoder
other than ``ImageMediaIO`` decodes each frame at full size, one at a time, and the frame
is resized before the next is decoded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import simplejpeg

from ..._errors import DecodeError, OptionError, TooLargeError
from .._isolation import shared_empty
from ..base import OptionSpec, decode_base64, opt_int
from ..budget import check_deadline, reserve_output
from .frame_size import FrameSize, resize_rgb
from .sampling import build_metadata, finite_number

__all__ = ["JPEG_SEQUENCE_OPTIONS", "MAX_FRAME_NUMBER", "load_jpeg_sequence"]

_BACKEND = "jpeg_sequence"

#: The largest source frame number (and frame count) a client may state: every
#: number up to it is exact as a float, so durations computed from it stay finite.
MAX_FRAME_NUMBER = 2**53

_FPS = finite_number(0.0, allow_none=True)


class _ImageLoader(Protocol):
    def load_base64(self, media_type: str, data: str) -> Any: ...


def _check_indices(modality: str, key: str, value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < MAX_FRAME_NUMBER
        for v in value
    ):
        raise OptionError(
            f"{modality} option {key!r} must be a list of integers in [0, {MAX_FRAME_NUMBER})",
            option=key,
        )
    indices = [int(v) for v in value]
    if any(a >= b for a, b in itertools.pairwise(indices)):
        raise OptionError(f"{modality} option {key!r} must be strictly increasing", option=key)
    return indices


#: Metadata a client may give for its ``video/jpeg`` frames (they apply to nothing else).
JPEG_SEQUENCE_OPTIONS: Mapping[str, OptionSpec] = {
    "frames_indices": OptionSpec(
        _check_indices, "source frame number of each JPEG frame (default 0..n-1)"
    ),
    "total_num_frames": OptionSpec(
        opt_int(1, MAX_FRAME_NUMBER),
        "frames in the source video the JPEG frames came from (default n)",
    ),
    "duration": OptionSpec(
        finite_number(0.0, exclusive_minimum=True),
        "seconds of source video (default total_num_frames / fps)",
    ),
}


def _header_size(part: str, max_bytes: int) -> tuple[int, int] | None:
    """``(width, height)`` from the JPEG header of one base64 frame, without decoding
    it; ``None`` when the frame is not a JPEG (the image decoder then judges it).

    Raises:
        DecodeError: the frame is not valid base64.
        TooLargeError: the frame is over ``max_bytes``.
    """
    raw = decode_base64(part, limit=max_bytes, what="a video/jpeg frame")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(raw)
    except (ValueError, TypeError, OverflowError):
        return None
    return int(width), int(height)


def _fitted(size: tuple[int, int], image_io: _ImageLoader) -> tuple[int, int]:
    """The most ``size`` can be after ``image_io`` fits it in its ``max_image_size``."""
    box = getattr(image_io, "max_image_size", None)
    if isinstance(box, tuple) and len(box) == 2 and all(isinstance(v, int) for v in box):
        return min(size[0], box[0]), min(size[1], box[1])
    return size


def _reserve(count: int, width: int, height: int, fallback: int | None) -> None:
    reserve_output(
        count * width * height * 3,
        f"{count} video/jpeg frames of {width}x{height}",
        fallback=fallback,
    )


def load_jpeg_sequence(
    data: str,
    *,
    image_io: _ImageLoader,
    num_frames: int,
    max_bytes: int,
    fps: float | None = None,
    frames_indices: list[int] | None = None,
    total_num_frames: int | None = None,
    duration: float | None = None,
    max_decoded_bytes: int | None = None,
    frame_size: FrameSize | None = None,
) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
    """Decode the first ``num_frames`` frames of a ``b64,b64,...`` JPEG sequence.

    Args:
        data: the comma-separated base64 frames.
        image_io: decodes one frame (``load_base64("image/jpeg", part)``) to RGB.
        num_frames: the most frames kept (>= 1, already capped by the policy).
        max_bytes: the byte budget of the whole sequence.
        fps: frame rate reported in the metadata (default 1).
        frames_indices, total_num_frames, duration: metadata the client supplied.
        max_decoded_bytes: the decoded-output budget used outside a guarded decode
            (``None``: only the current decode's budget applies).
        frame_size: the size the frames are decoded to (``None``: as the image
            decoder gives them).

    Raises:
        TooLargeError: the sequence exceeds ``max_bytes``, its frames the
            decoded-output budget, or the decode its deadline.
        OptionError: ``fps`` is not a finite number >= 0, or the client's metadata
            does not fit the frames kept.
        DecodeError: an empty or undecodable frame, frames of different sizes, or a
            frame that is not RGB.
    """
    fps = _FPS("video", "fps", fps)
    if not isinstance(data, str):
        raise DecodeError("a video/jpeg payload must be text")
    if len(data) // 4 * 3 > max_bytes + 2:
        raise TooLargeError(
            f"the JPEG frame sequence is larger than max_bytes={max_bytes} bytes "
            "(raise MediaPolicy.max_bytes)",
            limit="max_bytes",
            value=len(data) // 4 * 3,
            maximum=max_bytes,
        )
    parts = [part.strip() for part in data.split(",", num_frames)[:num_frames]]
    if frame_size is None:
        frames = _decode_frames(parts, image_io, max_bytes, max_decoded_bytes)
    else:
        frames, source = _decode_sized(parts, image_io, max_bytes, max_decoded_bytes, frame_size)
    metadata = _metadata(len(frames), fps, frames_indices, total_num_frames, duration)
    metadata["width"], metadata["height"] = int(frames.shape[2]), int(frames.shape[1])
    if frame_size is not None:
        metadata["original_width"], metadata["original_height"] = source
    return frames, metadata


def _decode_frames(
    parts: list[str], image_io: _ImageLoader, max_bytes: int, fallback: int | None
) -> npt.NDArray[np.uint8]:
    """The frames stacked ``[N, H, W, 3]``, budgeted before any is decoded.

    Raises:
        TooLargeError: over the decoded-output budget or past the deadline.
        DecodeError: an empty, undecodable, non-RGB or differently sized frame.
    """
    if not parts or not parts[0]:
        raise DecodeError("frame 0 of the JPEG frame sequence is empty")
    declared = _header_size(parts[0], max_bytes)
    if declared is not None:
        _reserve(len(parts), *_fitted(declared, image_io), fallback)
    frames: npt.NDArray[np.uint8] | None = None
    for slot, part in enumerate(parts):
        check_deadline()
        if not part:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence is empty")
        array = np.asarray(image_io.load_base64("image/jpeg", part))
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence did not decode to RGB")
        if frames is None:
            _reserve(len(parts), array.shape[1], array.shape[0], fallback)
            frames = shared_empty((len(parts), *array.shape), np.uint8)
        elif array.shape != frames.shape[1:]:
            raise DecodeError(
                f"frame {slot} of the JPEG frame sequence is {array.shape[1]}x{array.shape[0]}, "
                f"unlike frame 0 ({frames.shape[2]}x{frames.shape[1]})"
            )
        frames[slot] = array
    if frames is None:
        raise DecodeError("the JPEG frame sequence is empty")
    return frames


def _shown_size(raw: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG as ``ImageMediaIO`` shows it (its EXIF orientation
    applied), from the header; ``None`` when it is not a JPEG simplejpeg can read.

    Raises:
        DecodeError: a JPEG structure over ``ImageMediaIO``'s limits.
    """
    from ..image import _exif_from_bytes, _read_orientation, _walk_jpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(raw)
    except (ValueError, TypeError, OverflowError):
        return None
    exif = _walk_jpeg(raw).exif
    orientation = 1 if exif is None else _read_orientation(lambda: _exif_from_bytes(exif))
    return (int(height), int(width)) if orientation in (5, 6, 7, 8) else (int(width), int(height))


def _reduced_decoder(image_io: Any, source: tuple[int, int], target: tuple[int, int]) -> Any:
    """An ``ImageMediaIO`` like ``image_io`` whose ``max_image_size`` makes a frame shown
    at ``source`` decode at ``target`` or just above (a box covering it at the source's
    aspect ratio), where the exact resize to ``target`` finishes it; ``None`` when
    ``image_io`` is not a plain ``ImageMediaIO``."""
    from ..image import ImageMediaIO

    if type(image_io) is not ImageMediaIO:
        return None
    options = {k: v for k, v in image_io.kwargs.items() if k != "max_image_size"}
    scale = max(target[0] / source[0], target[1] / source[1])
    if scale < 1:
        options["max_image_size"] = tuple(
            min(side, max(1, math.ceil(side * scale - 1e-9))) for side in source
        )
    return ImageMediaIO(image_io.image_mode, policy=image_io.policy, **options)


def _decode_sized(
    parts: list[str],
    image_io: _ImageLoader,
    max_bytes: int,
    fallback: int | None,
    frame_size: FrameSize,
) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """The frames at the size ``frame_size`` gives for frame 0, stacked ``[N, H, W, 3]``,
    and frame 0's shown size; budgeted at the output size before any frame is decoded.

    Raises:
        TooLargeError: over the decoded-output budget or past the deadline.
        DecodeError: an empty, undecodable or non-RGB frame, or one whose shown size
            differs from frame 0's.
    """
    if not parts or not parts[0]:
        raise DecodeError("frame 0 of the JPEG frame sequence is empty")
    declared = _header_size(parts[0], max_bytes)
    if declared is not None:
        _reserve(len(parts), *frame_size.largest_output(*declared), fallback)
    reduced: Any = None
    source: tuple[int, int] | None = None
    target = (0, 0)
    frames: npt.NDArray[np.uint8] | None = None
    for slot, part in enumerate(parts):
        check_deadline()
        if not part:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence is empty")
        raw = decode_base64(part, limit=max_bytes, what="a video/jpeg frame")
        shown = _shown_size(raw)
        if slot == 0 and shown is not None:
            reduced = _reduced_decoder(image_io, shown, frame_size.output_size(*shown))
            if reduced is not None:
                source, target = shown, frame_size.output_size(*shown)
        elif reduced is not None and shown is not None and shown != source:
            raise _unlike(slot, shown, source or shown)
        # Frames the reduced decoder takes are judged by their header above, the others
        # by the size they decode to.
        by_header = reduced is not None and shown is not None
        if by_header:
            array = np.asarray(reduced.load_bytes(raw))
        else:
            array = np.asarray(image_io.load_base64("image/jpeg", part))
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence did not decode to RGB")
        decoded = (int(array.shape[1]), int(array.shape[0]))
        if source is None:  # frame 0, sized by what it decoded to
            source, target = decoded, frame_size.output_size(*decoded)
        elif not by_header and decoded != source:
            raise _unlike(slot, decoded, source)
        if frames is None:
            _reserve(len(parts), *target, fallback)
            frames = shared_empty((len(parts), target[1], target[0], 3), np.uint8)
        frames[slot] = resize_rgb(array, target)
    if frames is None or source is None:
        raise DecodeError("the JPEG frame sequence is empty")
    return frames, source


def _unlike(slot: int, size: tuple[int, int], first: tuple[int, int]) -> DecodeError:
    return DecodeError(
        f"frame {slot} of the JPEG frame sequence is {size[0]}x{size[1]}, "
        f"unlike frame 0 ({first[0]}x{first[1]})"
    )


def _metadata(
    n: int,
    fps: float | None,
    frames_indices: list[int] | None,
    total_num_frames: int | None,
    duration: float | None,
) -> dict[str, Any]:
    """The metadata of ``n`` client-chosen frames.

    Raises:
        OptionError: the client's metadata does not fit the frames, or ``fps`` is so
            low that the duration or a frame's timestamp is not a finite number.
    """
    rate = 1.0 if fps is None or fps <= 0 else float(fps)
    if frames_indices is None:
        indices = list(range(n))
    elif len(frames_indices) < n:
        raise OptionError(
            f"video option 'frames_indices' has {len(frames_indices)} entries for {n} JPEG frames",
            option="frames_indices",
        )
    else:
        indices = list(frames_indices[:n])
    total = total_num_frames if total_num_frames is not None else max(n, indices[-1] + 1)
    if total <= indices[-1]:
        raise OptionError(
            "video option 'total_num_frames' must exceed every frame index",
            option="total_num_frames",
        )
    seconds = duration if duration is not None else total / rate
    if not math.isfinite(seconds):
        raise OptionError(
            "video option 'fps' is too low for a finite duration; give 'duration'",
            option="fps",
        )
    timestamps = [i / rate for i in indices]
    if not math.isfinite(timestamps[-1]):
        raise OptionError("video option 'fps' is too low for finite frame timestamps", option="fps")
    return build_metadata(
        total_num_frames=total,
        fps=rate,
        duration=seconds,
        video_backend=_BACKEND,
        frames_indices=indices,
        do_sample_frames=False,
        timestamps=timestamps,
    )
