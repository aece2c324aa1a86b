"""``video/jpeg``: a comma-separated sequence of base64 JPEG frames.

The sequence is cut to ``num_frames`` (already capped by ``max_video_frames``) before
any frame is decoded, so a request with thousands of frames costs no more than one
with the cap. The frames were chosen by the client, so nothing is sampled: metadata
numbers them ``0..n-1`` at ``fps`` (default 1) unless the client says otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..._errors import DecodeError, OptionError, TooLargeError
from ..base import OptionSpec, opt_float, opt_int
from .sampling import build_metadata

__all__ = ["JPEG_SEQUENCE_OPTIONS", "load_jpeg_sequence"]

_BACKEND = "jpeg_sequence"


class _ImageLoader(Protocol):
    def load_base64(self, media_type: str, data: str) -> Any: ...


def _check_indices(modality: str, key: str, value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise OptionError(
            f"{modality} option {key!r} must be a list of non-negative integers", option=key
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
        opt_int(1), "frames in the source video the JPEG frames came from (default n)"
    ),
    "duration": OptionSpec(
        opt_float(0.0, exclusive_minimum=True),
        "seconds of source video (default total_num_frames / fps)",
    ),
}


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
) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
    """Decode the first ``num_frames`` frames of a ``b64,b64,...`` JPEG sequence.

    Args:
        data: the comma-separated base64 frames.
        image_io: decodes one frame (``load_base64("image/jpeg", part)``) to RGB.
        num_frames: the most frames kept (>= 1, already capped by the policy).
        max_bytes: the byte budget of the whole sequence.
        fps: frame rate reported in the metadata (default 1).
        frames_indices, total_num_frames, duration: metadata the client supplied.

    Raises:
        TooLargeError: the sequence exceeds ``max_bytes``.
        OptionError: the client's metadata does not fit the frames kept.
        DecodeError: an empty or undecodable frame, frames of different sizes, or a
            frame that is not RGB.
    """
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
    parts = data.split(",", num_frames)[:num_frames]
    frames: npt.NDArray[np.uint8] | None = None
    for slot, part in enumerate(parts):
        part = part.strip()
        if not part:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence is empty")
        array = np.asarray(image_io.load_base64("image/jpeg", part))
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DecodeError(f"frame {slot} of the JPEG frame sequence did not decode to RGB")
        if frames is None:
            frames = np.empty((len(parts), *array.shape), dtype=np.uint8)
        elif array.shape != frames.shape[1:]:
            raise DecodeError(
                f"frame {slot} of the JPEG frame sequence is {array.shape[1]}x{array.shape[0]}, "
                f"unlike frame 0 ({frames.shape[2]}x{frames.shape[1]})"
            )
        frames[slot] = array
    if frames is None:
        raise DecodeError("the JPEG frame sequence is empty")
    n = len(frames)
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
    metadata = build_metadata(
        total_num_frames=total,
        fps=rate,
        duration=duration if duration is not None else total / rate,
        video_backend=_BACKEND,
        frames_indices=indices,
        do_sample_frames=False,
    )
    return frames, metadata
