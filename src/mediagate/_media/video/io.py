"""VideoMediaIO: video bytes (or a ``video/jpeg`` frame sequence) to sampled RGB frames."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pybase64
import simplejpeg

from ..._errors import DecodeError, OptionError
from ..._policy import MediaPolicy
from ..base import MediaIO, OptionSpec, decode_base64, opt_int, validate_options
from ..budget import DecodedBudget
from ..results import MediaWithBytes
from ..seekable import RandomAccess, RangeReadUnsupported, size_of
from .frame_size import FRAME_SIZE_OPTIONS, FrameSize, frame_size_from_options, resize_frames
from .jpeg_sequence import JPEG_SEQUENCE_OPTIONS, load_jpeg_sequence
from .registry import VIDEO_LOADER_REGISTRY
from .sampling import cap_num_frames, check_num_frames, finite_number

if TYPE_CHECKING:
    from ..image import ImageMediaIO

__all__ = ["DEFAULT_VIDEO_BACKEND", "VideoMediaIO"]

#: The loader used when ``video_backend`` is not given.
DEFAULT_VIDEO_BACKEND = "pyav"

#: JPEG quality of ``encode_base64``.
JPEG_QUALITY = 90

VideoResult = tuple[npt.NDArray[np.uint8], dict[str, Any]]

_FPS = finite_number(0.0, allow_none=True)

#: The decoders vLLM's video loaders can be told to use (``backend``).
DECODER_BACKENDS = ("opencv", "torchcodec", "pynvvideocodec", "deepstream", "pyav")


def _opt_bool(modality: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"{modality} option {key!r} must be true or false", option=key)
    return value


def _opt_choice(*choices: str) -> Any:
    def check(modality: str, key: str, value: Any) -> Any:
        if value is not None and value not in choices:
            raise OptionError(
                f"{modality} option {key!r} must be one of {', '.join(choices)}", option=key
            )
        return value

    return check


def _opt_side(modality: str, key: str, value: Any) -> Any:
    return None if value is None else opt_int(1, 1 << 16)(modality, key, value)


#: Decoder options of vLLM's video loaders. The built-in backends accept them and do
#: not need them: they decode on the CPU with their own FFmpeg threads, always seek
#: exactly, skip a frame that fails to decode by decoding on to the next, and sample
#: uniformly (``max_duration``, ``min_frames``, ``max_frames`` and
#: ``temporal_patch_size`` only steer the model samplers, ``samplers``, so a server's
#: defaults for a model's sampler hold for every backend). A backend that declares an
#: option of the same name gets it.
DECODER_OPTIONS: Mapping[str, OptionSpec] = {
    "backend": OptionSpec(_opt_choice(*DECODER_BACKENDS), "vLLM's decoding codec (not needed)"),
    "max_duration": OptionSpec(
        finite_number(0.0), "seconds the dynamic samplers consider (not needed)"
    ),
    "min_frames": OptionSpec(opt_int(1, 100_000), "a model sampler's fewest frames (not needed)"),
    "max_frames": OptionSpec(opt_int(1, 100_000), "a model sampler's most frames (not needed)"),
    "temporal_patch_size": OptionSpec(
        opt_int(1, 16), "a model sampler's frame-count multiple (not needed)"
    ),
    "frame_recovery": OptionSpec(_opt_bool, "decode on past a failed frame (always done)"),
    "num_ffmpeg_threads": OptionSpec(opt_int(0, 256), "FFmpeg threads (FFmpeg's default)"),
    "seek_mode": OptionSpec(_opt_choice("exact", "approximate"), "seeking (always exact)"),
    "device": OptionSpec(_opt_choice("cpu"), "where frames are decoded (the CPU)"),
    "hw_decoders": OptionSpec(opt_int(0, 1024), "GPU decoders to reserve (none)"),
    "max_width": OptionSpec(_opt_side, "GPU decoder surface width (not needed)"),
    "max_height": OptionSpec(_opt_side, "GPU decoder surface height (not needed)"),
    "pool_size": OptionSpec(
        lambda m, k, v: None if v is None else opt_int(1, 1024)(m, k, v), "GPU decoder pool"
    ),
    "timeout_sec": OptionSpec(finite_number(0.0), "decoder timeout (MediaPolicy.decode_timeout)"),
}

#: The options ``VideoMediaIO`` itself takes.
_OWN_OPTIONS = ("num_frames", "fps", "video_backend", "range_reads", *FRAME_SIZE_OPTIONS)


class VideoMediaIO(MediaIO[MediaWithBytes[VideoResult]]):
    """Uniformly sampled RGB frames and their metadata from video bytes.

    Example::

        io = VideoMediaIO(ImageMediaIO(), num_frames=8)
        frames, meta = io.load_bytes(mp4_bytes)  # a MediaWithBytes; unpacks as a tuple
        frames.shape, meta["frames_indices"]  # (8, H, W, 3), [0, 42, ...]

    Args:
        image_io: decodes the frames of ``video/jpeg`` sequences.
        num_frames: the most frames returned (``-1``: all, up to ``max_video_frames``).
        fps: sample at most this many frames per second of video; for ``video/jpeg``,
            the frame rate reported (default 1).
        video_backend: a ``VIDEO_LOADER_REGISTRY`` name (default ``"pyav"``).
        max_frame_size: decode the frames to fit within ``[width, height]``, or within a
            pixel budget (an integer: ``width * height <= N``), aspect ratio kept, never
            enlarged (``frame_size``).
        range_reads: ``False`` downloads a remote video whole even where the policy
            would read it through range requests (``MediaPolicy.range_reads_above``);
            ``True`` (default) leaves it to the policy.
        resize_to: decode the frames to exactly ``[width, height]`` (not together with
            ``max_frame_size``). Either hint refers to the frame as shown (turned by its
            display matrix); the frames are scaled while they are converted to RGB, and
            the decoded-output budget counts them at that size. The metadata then gives
            ``width`` and ``height`` of the frames returned and ``original_width`` and
            ``original_height`` of the frames as shown.
        policy: the limits (``max_bytes``, ``max_pixels``, ``max_video_frames``).
        **loader_options: the backend's own options (the builtin ``pyav`` and
            ``opencv`` take ``sampling``: ``"time"``, the default, spreads the frames
            over the presentation time, ``"index"`` over the frame numbers), plus
            ``frames_indices``, ``total_num_frames`` and ``duration`` for
            ``video/jpeg`` payloads.

    Raises:
        OptionError: an unknown option, a value of the wrong type or range, both frame
            sizes, a ``resize_to`` over ``max_pixels``, or an unknown or unavailable
            backend (the message lists the available ones).
    """

    modality = "video"

    def __init__(
        self,
        image_io: ImageMediaIO,
        /,
        num_frames: int = 32,
        *,
        fps: float | None = None,
        video_backend: str | None = None,
        max_frame_size: Any = None,
        resize_to: Any = None,
        range_reads: bool = True,
        policy: MediaPolicy | None = None,
        decoded_budget: DecodedBudget | None = None,
        **loader_options: Any,
    ) -> None:
        super().__init__(policy=policy, decoded_budget=decoded_budget)
        self.image_io = image_io
        #: Whether a remote video may be read through range requests (only what the
        #: sampled frames need) when the policy allows it; ``False`` always downloads
        #: the whole file.
        self.range_reads: bool = _opt_bool("video", "range_reads", range_reads)
        self.num_frames: int = check_num_frames(num_frames)
        self.fps: float | None = _FPS("video", "fps", fps)
        #: The size frames are decoded to (``None``: as shown).
        self.frame_size: FrameSize | None = frame_size_from_options(
            max_frame_size, resize_to, max_pixels=self.policy.max_pixels
        )
        backend = DEFAULT_VIDEO_BACKEND if video_backend is None else video_backend
        if not isinstance(backend, str):
            raise OptionError(
                "video option 'video_backend' must be a string", option="video_backend"
            )
        try:
            self._loader_cls: Any = VIDEO_LOADER_REGISTRY.get(backend)
        except (ValueError, ImportError) as exc:
            raise OptionError(
                f"video option 'video_backend': {exc}", option="video_backend"
            ) from exc
        self.video_backend = backend
        jpeg_keys = {
            k: loader_options.pop(k) for k in list(loader_options) if k in JPEG_SEQUENCE_OPTIONS
        }
        self._jpeg_options = validate_options("video", jpeg_keys, JPEG_SEQUENCE_OPTIONS)
        specs: Mapping[str, OptionSpec] | None = getattr(self._loader_cls, "options", None)
        #: vLLM decoder options accepted and not needed by this backend.
        self.decoder_options: dict[str, Any] = {}
        if specs is not None:
            if self.fps is not None and "fps" not in specs:
                raise OptionError(
                    f"video backend {backend!r} does not take option 'fps'", option="fps"
                )
            if self.fps is not None:
                # The backend's own range for fps (a model's sampler needs fps > 0).
                specs["fps"].check("video", "fps", self.fps)
            decoder_keys = {
                k: loader_options.pop(k)
                for k in list(loader_options)
                if k in DECODER_OPTIONS and k not in specs
            }
            self.decoder_options = validate_options("video", decoder_keys, DECODER_OPTIONS)
            loader_options = validate_options(
                "video",
                loader_options,
                specs,
                also_known=(*_OWN_OPTIONS, *JPEG_SEQUENCE_OPTIONS, *DECODER_OPTIONS),
            )
        self.loader_options: dict[str, Any] = loader_options

    @property
    def isolatable(self) -> bool:
        """Built-in backends run isolated under the default policy; a backend that another
        package registers (a GPU decoder, one defined at run time) runs in this process
        unless the policy names ``isolation`` explicitly."""
        module = getattr(self._loader_cls, "__module__", "")
        return self.policy.isolation is not None or module.startswith("mediagate.")

    @property
    def reads_by_position(self) -> bool:
        """Whether ``load_bytes`` takes a ``RandomAccess`` (a remote file read through
        ranges): ``range_reads`` is on and the backend reads only what it needs."""
        return self.range_reads and bool(getattr(self._loader_cls, "reads_by_position", False))

    @property
    def frame_cap(self) -> int:
        """The most frames one item yields: ``num_frames`` capped by the policy."""
        return cap_num_frames(self.num_frames, self.policy.max_video_frames)

    @classmethod
    def merge_kwargs(
        cls,
        default_kwargs: Mapping[str, Any] | None,
        runtime_kwargs: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Shallow merge, request values win; a request that sets only one of ``fps`` and
        ``num_frames`` drops the other from the defaults, and so does one that sets only
        one of ``max_frame_size`` and ``resize_to``.

        Raises:
            OptionError: either input is not a mapping.
        """
        merged = super().merge_kwargs(default_kwargs, runtime_kwargs)
        runtime = runtime_kwargs or {}
        if ("fps" in runtime) != ("num_frames" in runtime):
            merged.pop("num_frames" if "fps" in runtime else "fps", None)
        if ("max_frame_size" in runtime) != ("resize_to" in runtime):
            merged.pop("resize_to" if "max_frame_size" in runtime else "max_frame_size", None)
        return merged

    def load_bytes(self, data: bytes | RandomAccess) -> MediaWithBytes[VideoResult]:
        """Sample frames from container bytes (mp4, webm, mkv, avi, ...): ``(frames,
        metadata)`` with the bytes they came from.

        ``data`` may also be a ``RandomAccess`` (when ``reads_by_position``): only the
        container's index and the packets the sampled frames need are read from it, and
        the result's ``original_bytes`` is empty (the caller names what was read).

        Raises:
            TooLargeError: the bytes, a frame's pixels or the frame count exceed the policy.
            OptionError: ``video/jpeg``-only options were set for a container.
            DecodeError: not a supported, intact video, or the loader returned
                something that is not ``(uint8 [N, H, W, 3] frames, metadata dict)``.
            RangeReadUnsupported: ``data`` is read by position and this video needs a
                linear read (call again with the whole file's bytes).
        """
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, bytes) and not self.reads_by_position:
            raise RangeReadUnsupported(f"video backend {self.video_backend!r} reads whole files")
        self.policy.check_size(size_of(data), "video", what="video")
        if self._jpeg_options:
            key = sorted(self._jpeg_options)[0]
            raise OptionError(
                f"video option {key!r} only applies to video/jpeg frame sequences", option=key
            )
        kwargs = dict(self.loader_options)
        # Options the loader takes when it is built (the builtin loaders' ``sampling``).
        built_with = getattr(self._loader_cls, "constructor_options", ())
        built = {k: kwargs.pop(k) for k in list(kwargs) if k in built_with}
        if self.frame_size is not None and self._sizes_frames:
            built["frame_size"] = self.frame_size
        loader = VIDEO_LOADER_REGISTRY.load(self.video_backend, **built)
        if self.fps is not None:
            kwargs["fps"] = self.fps
        if getattr(self._loader_cls, "wants_policy", False):
            kwargs["policy"] = self.policy
        # A model's sampler sets its own frame count (num_frames does not bound it), up
        # to the policy's cap.
        cap = (
            self.frame_cap
            if getattr(self._loader_cls, "takes_num_frames", True)
            else self.policy.max_video_frames
        )
        result = loader.load_bytes(data, cap, **kwargs)
        return MediaWithBytes(self._checked(result, cap), data if isinstance(data, bytes) else b"")

    def load_base64(self, media_type: str, data: str) -> MediaWithBytes[VideoResult]:
        """Decode base64 video bytes, or a ``video/jpeg`` comma-separated JPEG sequence.

        Raises:
            TooLargeError, OptionError, DecodeError: as ``load_bytes``; invalid base64 or
                an undecodable JPEG frame is a ``DecodeError``.
        """
        if media_type.lower() == "video/jpeg":
            frames = load_jpeg_sequence(
                data,
                image_io=self.image_io,
                num_frames=self.frame_cap,
                max_bytes=self.max_bytes,
                fps=self.fps,
                max_decoded_bytes=self.policy.max_decoded_bytes_for("video"),
                frame_size=self.frame_size,
                **self._jpeg_options,
            )
            text = data.encode("ascii") if isinstance(data, str) else bytes(data)
            return MediaWithBytes(frames, text)
        return self.load_bytes(decode_base64(data, limit=self.max_bytes, what="video"))

    def encode_base64(
        self,
        frames: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
        *,
        video_format: str = "JPEG",
    ) -> str:
        """Comma-joined base64 JPEGs of ``frames`` (``[N, H, W, 3]`` uint8 RGB).

        Raises:
            NotImplementedError: ``video_format`` is not JPEG.
            ValueError: the frames are not uint8 RGB arrays.
        """
        if video_format.upper() not in ("JPEG", "JPG"):
            raise NotImplementedError(f"video_format {video_format!r} is not supported (JPEG only)")
        parts = []
        for frame in frames:
            array = np.asarray(frame)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError("video frames must be uint8 RGB arrays of shape [H, W, 3]")
            encoded = simplejpeg.encode_jpeg(
                np.ascontiguousarray(array), quality=JPEG_QUALITY, colorspace="RGB"
            )
            parts.append(pybase64.b64encode(encoded).decode("ascii"))
        return ",".join(parts)

    def _checked(self, result: Any, cap: int) -> VideoResult:
        """The loader's result, validated and cut to ``cap`` frames."""
        if not isinstance(result, tuple) or len(result) != 2:
            raise DecodeError(f"video backend {self.video_backend!r} returned a malformed result")
        frames, metadata = result
        if (
            not isinstance(frames, np.ndarray)
            or frames.dtype != np.uint8
            or frames.ndim != 4
            or frames.shape[3] != 3
            or frames.shape[0] < 1
            or not isinstance(metadata, dict)
        ):
            raise DecodeError(
                f"video backend {self.video_backend!r} did not return uint8 frames "
                "[N, H, W, 3] and a metadata dict"
            )
        if frames.shape[0] > cap:
            frames = frames[:cap]
            metadata = dict(metadata)
            for key in ("frames_indices", "timestamps"):
                values = metadata.get(key)
                if isinstance(values, list):
                    metadata[key] = values[:cap]
        metadata.setdefault("video_backend", self.video_backend)
        if self.frame_size is not None and not self._sizes_frames:
            frames, metadata = _resized(frames, metadata, self.frame_size)
        return frames, metadata

    @property
    def _sizes_frames(self) -> bool:
        """Whether the backend decodes to ``frame_size`` itself (``takes_frame_size``)."""
        return bool(getattr(self._loader_cls, "takes_frame_size", False))


def _resized(
    frames: npt.NDArray[np.uint8], metadata: dict[str, Any], frame_size: FrameSize
) -> VideoResult:
    """Full-size frames from a backend that does not size them, resized to ``frame_size``
    one at a time, and their metadata with both sizes."""
    shown = (int(frames.shape[2]), int(frames.shape[1]))
    output = frame_size.output_size(*shown)
    frames = resize_frames(frames, output)
    metadata = dict(metadata)
    metadata["width"], metadata["height"] = output
    metadata["original_width"], metadata["original_height"] = shown
    return frames, metadata
