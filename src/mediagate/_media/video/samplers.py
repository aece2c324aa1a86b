"""The model-specific video samplers vLLM 0.33 picks from a model's video processor.

A model's video processor expects its frames sampled a certain way; vLLM names the
loader that does it after the processor's class (``VIDEO_PROCESSOR_BACKENDS`` holds
the same table). Each sampler here is the ``pyav`` loader with that model's rule in
place of uniform sampling, and returns the frame indices and the metadata vLLM's
loader of the same name returns:

* ``qwen3_vl`` (``Qwen3VLVideoProcessor``, ``Cosmos3EdgeVideoProcessor``): ``n =
  int(total / source_fps * min(fps, 30))`` clamped to ``[min_frames, min(max_frames,
  768)]`` and to ``total``; ``round(linspace(0, total - 1, n))``.
* ``qwen2_vl`` (``Qwen2VLVideoProcessor``, also Qwen2.5-VL's): ``n = total / source_fps *
  min(fps, 30)`` clamped the same way, floored to a multiple of ``temporal_patch_size``;
  the indices of ``torch.arange(0, total, total / n)`` in float32 (``_arange_float32``
  computes the same float32 values with numpy), truncated, the last clamped to
  ``total - 1``.
* ``opencv_dynamic`` (``Glm4vVideoProcessor``): a clip of at most ``max_duration``
  seconds is sampled at ``fps`` (frame ``ceil(i * source_fps / fps)`` for ``i <
  floor(duration * fps)``); a longer one at ``int(max_duration * fps)`` instants spread
  over its whole duration.

The metadata is vLLM's: ``total_num_frames``, ``fps`` and ``duration`` of the stream
(from the packet index: ``duration = total / fps``), ``video_backend`` as vLLM reports
it (``"opencv"`` for the Qwen samplers, ``"opencv_dynamic"``), ``frames_indices`` (the
distinct frames, ascending; vLLM's reader drops repeats) and ``do_sample_frames``
(every frame was taken: the processor samples again).

What vLLM does and these do not:

* ``num_frames`` does not set the count (vLLM ignores it too); it, and the policy's
  ``max_video_frames``, only bound it: the Qwen samplers fold the bound into
  ``max_frames``, ``opencv_dynamic`` thins its frames evenly down to it.
* Where vLLM's rule picks no frame and vLLM fails (``opencv_dynamic`` on a clip
  shorter than ``1 / fps``, or with ``max_duration * fps`` below 1; ``qwen2_vl`` on a
  clip of fewer frames than ``temporal_patch_size``, or with ``min_frames`` below it on
  a very short clip), ``opencv_dynamic`` returns the first frame and ``qwen2_vl``
  raises ``DecodeError``.
* vLLM reads the frame count and rate from OpenCV's header estimate; here they come
  from the packet index, so a variable-frame-rate clip or a container whose header
  miscounts can give other indices (the numbers here count the frames there are).
* vLLM's decoder options (``backend``, ``frame_recovery``, ...) are accepted and not
  needed (see ``io.DECODER_OPTIONS``); the reported ``video_backend`` stays the same.
* Options have bounds: ``fps`` in ``(0, 1000]``, ``min_frames`` and ``max_frames`` in
  ``[1, 100000]``, ``temporal_patch_size`` in ``[1, 16]``, ``max_duration`` in ``(0,
  86400]``; anything else is an ``OptionError``, where vLLM would sample oddly or fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from ..._errors import DecodeError, OptionError
from ..._policy import MediaPolicy
from ..base import OptionSpec, opt_int
from ..budget import check_deadline
from ..seekable import RandomAccess
from .container import StreamIndex
from .pyav import PyAVVideoLoader
from .sampling import build_metadata, cap_num_frames, finite_number

__all__ = [
    "DynamicSampler",
    "Qwen2VLSampler",
    "Qwen3VLSampler",
    "dynamic_indices",
    "qwen2_vl_indices",
    "qwen3_vl_indices",
]

#: The most frames the Qwen samplers return, whatever ``max_frames`` says (vLLM's cap).
QWEN_MAX_FRAMES = 768
#: The highest sampling rate the Qwen samplers use; a higher ``fps`` is lowered to it.
QWEN_MAX_FPS = 30.0

_MAX_FPS_OPTION = 1000.0
_MAX_FRAMES_OPTION = 100_000
_MAX_DURATION_OPTION = 86_400.0
# Indices computed per step of the dynamic rule, between two looks at the deadline.
_CHUNK = 1 << 16
# Lanes of one vector step of torch's CPU arange kernel for float32 (8 on every build).
_ARANGE_LANES = 8

_check_fps = finite_number(0.0, exclusive_minimum=True)
_check_max_duration = finite_number(0.0, exclusive_minimum=True)


def _bounded(check: Any, maximum: float) -> Any:
    def bounded(modality: str, key: str, value: Any) -> Any:
        checked = check(modality, key, value)
        if checked > maximum:
            raise OptionError(
                f"{modality} option {key!r} must be at most {maximum:g} (got {checked!r})",
                option=key,
            )
        return checked

    return bounded


_FPS_SPEC = OptionSpec(
    _bounded(_check_fps, _MAX_FPS_OPTION),
    "frames per second of video to sample (> 0, at most 1000; default 2)",
)
_MIN_FRAMES_SPEC = OptionSpec(
    opt_int(1, _MAX_FRAMES_OPTION), "the fewest frames to sample (default 4)"
)
_MAX_FRAMES_SPEC = OptionSpec(
    opt_int(1, _MAX_FRAMES_OPTION),
    f"the most frames to sample (default and ceiling {QWEN_MAX_FRAMES})",
)

#: Options of ``qwen3_vl``.
QWEN3_VL_OPTIONS: Mapping[str, OptionSpec] = {
    "fps": _FPS_SPEC,
    "min_frames": _MIN_FRAMES_SPEC,
    "max_frames": _MAX_FRAMES_SPEC,
}
#: Options of ``qwen2_vl``.
QWEN2_VL_OPTIONS: Mapping[str, OptionSpec] = {
    **QWEN3_VL_OPTIONS,
    "temporal_patch_size": OptionSpec(
        opt_int(1, 16), "the frame count is a multiple of this (default 2)"
    ),
}
#: Options of ``opencv_dynamic``.
DYNAMIC_OPTIONS: Mapping[str, OptionSpec] = {
    "fps": _FPS_SPEC,
    "max_duration": OptionSpec(
        _bounded(_check_max_duration, _MAX_DURATION_OPTION),
        "clips up to this many seconds are sampled at fps, longer ones spread "
        "int(max_duration * fps) frames over their length (default 300)",
    ),
}


def _option(specs: Mapping[str, OptionSpec], key: str, value: Any, default: Any) -> Any:
    return default if value is None else specs[key].check("video", key, value)


def qwen3_vl_indices(
    total: int,
    source_fps: float,
    *,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = QWEN_MAX_FRAMES,
) -> list[int]:
    """The frames vLLM 0.33's ``qwen3_vl`` loader samples from ``total`` frames at
    ``source_fps``: ascending and distinct.

    Raises:
        ValueError: ``total`` is below 1 or ``source_fps`` is not positive.
    """
    _check_source(total, source_fps)
    count = int(total / source_fps * min(fps, QWEN_MAX_FPS))
    count = min(max(count, min_frames), min(max_frames, QWEN_MAX_FRAMES), total)
    picked = np.linspace(0, total - 1, count).round().astype(np.int64)
    return _distinct(picked)


def qwen2_vl_indices(
    total: int,
    source_fps: float,
    *,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = QWEN_MAX_FRAMES,
    temporal_patch_size: int = 2,
) -> list[int]:
    """The frames vLLM 0.33's ``qwen2_vl`` loader samples from ``total`` frames at
    ``source_fps``: ascending and distinct (the count before repeats are dropped is a
    multiple of ``temporal_patch_size``).

    Raises:
        ValueError: ``total`` is below 1 or ``source_fps`` is not positive.
        DecodeError: the rule samples no frame (fewer than ``temporal_patch_size``
            frames, or fewer wanted with ``min_frames`` below it).
        OptionError: ``max_frames`` is below ``temporal_patch_size``.
    """
    _check_source(total, source_fps)
    limit = math.floor(min(max_frames, QWEN_MAX_FRAMES, total) / temporal_patch_size)
    limit *= temporal_patch_size
    if limit == 0:
        if total < temporal_patch_size:
            raise DecodeError(
                f"the video has {total} frame(s), fewer than temporal_patch_size "
                f"({temporal_patch_size})"
            )
        raise OptionError(
            f"video option 'max_frames' ({max_frames}, or max_video_frames) must be at "
            f"least temporal_patch_size ({temporal_patch_size})",
            option="max_frames",
        )
    wanted: float = total / source_fps * min(fps, QWEN_MAX_FPS)
    count = min(max(wanted, min_frames), limit, total)
    count = math.floor(count / temporal_patch_size) * temporal_patch_size
    if count == 0:
        raise DecodeError(
            f"the video is too short to sample a multiple of temporal_patch_size "
            f"({temporal_patch_size}) at fps {fps:g} with min_frames {min_frames}"
        )
    values = _arange_float32(total, total / count)
    picked = np.minimum(values.astype(np.int32), total - 1)
    return _distinct(picked)


def dynamic_indices(
    total: int,
    source_fps: float,
    duration: float,
    *,
    fps: float = 2.0,
    max_duration: float = 300.0,
) -> list[int]:
    """The frames vLLM 0.33's ``opencv_dynamic`` loader samples from ``total`` frames at
    ``source_fps`` lasting ``duration`` seconds: ascending and distinct, at least one.

    Raises:
        ValueError: ``total`` is below 1 or ``source_fps`` is not positive.
        TooLargeError: the decode deadline passed.
    """
    _check_source(total, source_fps)
    last = total - 1
    if duration <= max_duration:
        count = math.floor(duration * fps)
        if count < 1:
            return [0]
        hit = np.zeros(total, dtype=bool)
        for start in range(0, count, _CHUNK):
            check_deadline()
            steps = np.arange(start, min(count, start + _CHUNK), dtype=np.float64)
            picked = np.minimum(np.ceil(steps * source_fps / fps), last).astype(np.int64)
            hit[picked] = True
            if picked[-1] >= last:
                break  # every later step lands on the last frame too
        return [int(i) for i in np.flatnonzero(hit)]
    samples = max(1, int(max_duration * fps))
    if samples >= total:
        return list(range(total))
    seconds = np.linspace(0, duration, samples, endpoint=True)
    return _distinct(np.minimum(np.ceil(seconds * source_fps), last).astype(np.int64))


def _check_source(total: int, source_fps: float) -> None:
    if total < 1:
        raise ValueError("a video stream needs at least one frame to sample")
    if not source_fps > 0:
        raise ValueError("the source frame rate must be positive")


def _distinct(picked: npt.NDArray[np.integer[Any]]) -> list[int]:
    """The distinct values of ``picked``, ascending (what vLLM's frame reader keeps)."""
    return [int(i) for i in np.unique(picked)]


def _arange_float32(end: int, step: float) -> npt.NDArray[np.float32]:
    """``torch.arange(0, end, step)`` as float32, value for value, from torch's CPU kernel.

    The length is ``ceil(end / step)`` in double. Elements come in pairs of vector steps
    of ``_ARANGE_LANES``: lane ``k`` of the step starting at ``j`` is ``float32(float32(j
    * step) + k * step)`` (the sum in double); the remainder past the last pair is
    ``float32(i * step)``.
    """
    size = math.ceil(end / step)
    index = np.arange(size, dtype=np.int64)
    values = (index.astype(np.float64) * step).astype(np.float32)
    paired = size // (2 * _ARANGE_LANES) * (2 * _ARANGE_LANES)
    if paired:
        lane = index[:paired] % _ARANGE_LANES
        base = ((index[:paired] - lane).astype(np.float64) * step).astype(np.float32)
        values[:paired] = (base.astype(np.float64) + lane * step).astype(np.float32)
    return values


class _ModelSampler(PyAVVideoLoader):
    """A model's sampling rule on top of the ``pyav`` loader's decoding."""

    #: ``metadata["video_backend"]``, as vLLM's loader of the same name reports it.
    reported_backend: ClassVar[str] = "opencv"
    takes_num_frames: ClassVar[bool] = False

    def describe(self, index: StreamIndex, targets: list[int]) -> dict[str, Any]:
        return build_metadata(
            total_num_frames=index.total,
            fps=index.fps,
            duration=index.duration,
            video_backend=self.reported_backend,
            frames_indices=targets,
            do_sample_frames=len(targets) == index.total,
        )


class Qwen3VLSampler(_ModelSampler):
    """Qwen3-VL's frames: about ``fps`` frames per second, at least ``min_frames``, at
    most ``max_frames`` (and 768), evenly spread (vLLM's ``qwen3_vl``).

    Example::

        frames, meta = Qwen3VLSampler().load_bytes(mp4_bytes)  # 2 frames a second
    """

    name: ClassVar[str] = "qwen3_vl"
    options: ClassVar[Mapping[str, OptionSpec]] = QWEN3_VL_OPTIONS

    def load_bytes(
        self,
        data: bytes | RandomAccess,
        num_frames: int = -1,
        *,
        fps: float | None = None,
        min_frames: int | None = None,
        max_frames: int | None = None,
        policy: MediaPolicy | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the frames Qwen3-VL's rule picks from ``data``.

        Args:
            data: the container bytes.
            num_frames: the most frames returned (``-1``: the policy's cap); it bounds
                the count, it does not set it.
            fps: frames per second of video to sample (default 2; above 30 counts as 30).
            min_frames: the fewest frames (default 4; never more than the clip has).
            max_frames: the most frames (default and ceiling 768).
            policy: limits (``max_pixels``, ``max_video_frames``); default ``MediaPolicy()``.

        Returns:
            ``(frames, metadata)`` as vLLM's ``qwen3_vl`` loader returns them.

        Raises:
            OptionError: an option of the wrong type or out of range.
            TooLargeError, DecodeError: as ``PyAVVideoLoader.load_bytes``.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        specs = self.options
        rate = _option(specs, "fps", fps, 2.0)
        low = _option(specs, "min_frames", min_frames, 4)
        high = min(_option(specs, "max_frames", max_frames, QWEN_MAX_FRAMES), cap)

        def rule(index: StreamIndex) -> list[int]:
            return qwen3_vl_indices(
                index.total, index.fps, fps=rate, min_frames=low, max_frames=high
            )

        return self.load_sampled(data, rule, policy)


class Qwen2VLSampler(_ModelSampler):
    """Qwen2-VL's and Qwen2.5-VL's frames: about ``fps`` frames per second, in
    multiples of ``temporal_patch_size``, evenly stepped (vLLM's ``qwen2_vl``).

    Example::

        frames, meta = Qwen2VLSampler().load_bytes(mp4_bytes, fps=1.0)
    """

    name: ClassVar[str] = "qwen2_vl"
    options: ClassVar[Mapping[str, OptionSpec]] = QWEN2_VL_OPTIONS

    def load_bytes(
        self,
        data: bytes | RandomAccess,
        num_frames: int = -1,
        *,
        fps: float | None = None,
        min_frames: int | None = None,
        max_frames: int | None = None,
        temporal_patch_size: int | None = None,
        policy: MediaPolicy | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the frames Qwen2-VL's rule picks from ``data``.

        Args:
            data: the container bytes.
            num_frames: the most frames returned (``-1``: the policy's cap); it bounds
                the count, it does not set it.
            fps: frames per second of video to sample (default 2; above 30 counts as 30).
            min_frames: the fewest frames (default 4).
            max_frames: the most frames (default and ceiling 768).
            temporal_patch_size: the count is a multiple of it (default 2).
            policy: limits (``max_pixels``, ``max_video_frames``); default ``MediaPolicy()``.

        Returns:
            ``(frames, metadata)`` as vLLM's ``qwen2_vl`` loader returns them.

        Raises:
            OptionError: an option of the wrong type or out of range, or ``max_frames``
                below ``temporal_patch_size``.
            DecodeError: fewer frames than ``temporal_patch_size``; as
                ``PyAVVideoLoader.load_bytes``.
            TooLargeError: as ``PyAVVideoLoader.load_bytes``.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        specs = self.options
        rate = _option(specs, "fps", fps, 2.0)
        low = _option(specs, "min_frames", min_frames, 4)
        high = min(_option(specs, "max_frames", max_frames, QWEN_MAX_FRAMES), cap)
        patch = _option(specs, "temporal_patch_size", temporal_patch_size, 2)

        def rule(index: StreamIndex) -> list[int]:
            return qwen2_vl_indices(
                index.total,
                index.fps,
                fps=rate,
                min_frames=low,
                max_frames=high,
                temporal_patch_size=patch,
            )

        return self.load_sampled(data, rule, policy)


class DynamicSampler(_ModelSampler):
    """GLM-4V's frames: ``fps`` frames per second of a clip up to ``max_duration``
    seconds, ``int(max_duration * fps)`` spread over a longer one (vLLM's
    ``opencv_dynamic``).

    Example::

        frames, meta = DynamicSampler().load_bytes(mp4_bytes)  # 2 frames a second
    """

    name: ClassVar[str] = "opencv_dynamic"
    reported_backend: ClassVar[str] = "opencv_dynamic"
    options: ClassVar[Mapping[str, OptionSpec]] = DYNAMIC_OPTIONS

    def load_bytes(
        self,
        data: bytes | RandomAccess,
        num_frames: int = -1,
        *,
        fps: float | None = None,
        max_duration: float | None = None,
        policy: MediaPolicy | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Decode the frames GLM-4V's rule picks from ``data``.

        Args:
            data: the container bytes.
            num_frames: the most frames returned (``-1``: the policy's cap); more are
                thinned evenly down to it.
            fps: frames per second of video to sample (default 2).
            max_duration: seconds sampled at ``fps``; a longer clip is sampled at
                ``int(max_duration * fps)`` instants over its length (default 300).
            policy: limits (``max_pixels``, ``max_video_frames``); default ``MediaPolicy()``.

        Returns:
            ``(frames, metadata)`` as vLLM's ``opencv_dynamic`` loader returns them.

        Raises:
            OptionError: an option of the wrong type or out of range.
            TooLargeError, DecodeError: as ``PyAVVideoLoader.load_bytes``.
        """
        policy = policy or MediaPolicy()
        cap = cap_num_frames(num_frames, policy.max_video_frames)
        specs = self.options
        rate = _option(specs, "fps", fps, 2.0)
        seconds = _option(specs, "max_duration", max_duration, 300.0)

        def rule(index: StreamIndex) -> list[int]:
            picked = dynamic_indices(
                index.total, index.fps, index.duration, fps=rate, max_duration=seconds
            )
            if len(picked) > cap:
                keep = np.linspace(0, len(picked) - 1, cap).astype(np.int64)
                picked = [picked[int(i)] for i in keep]
            return picked

        return self.load_sampled(data, rule, policy)
