"""The limits one video decode runs under, taken from a ``MediaPolicy`` once.

Pure accounting: no decoder is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._policy import MediaPolicy, check_pixels
from ..budget import reserve_output

__all__ = ["VideoLimits"]


@dataclass(frozen=True)
class VideoLimits:
    """The frame size, frame count and decoded-output budget for one video decode.

    ``max_decoded_bytes`` is the budget for the returned RGB frames used when no
    guarded decode is current; the current decode's budget (``budget.reserve_output``)
    applies otherwise.

    Example::

        limits = VideoLimits.from_policy(MediaPolicy(max_pixels=1920 * 1080))
        limits.check_pixels(3840, 2160)  # raises TooLargeError
    """

    max_pixels: int
    max_frames: int
    max_decoded_bytes: int
    #: Packets one stream may hold: its index is built from all of them.
    max_packets: int = 3_000_000

    def __post_init__(self) -> None:
        for name, least in (
            ("max_pixels", 0),
            ("max_frames", 1),
            ("max_decoded_bytes", 0),
            ("max_packets", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"VideoLimits.{name} must be an integer >= {least}, not {value!r}")

    @classmethod
    def from_policy(cls, policy: MediaPolicy) -> VideoLimits:
        """The video limits of ``policy``: ``max_pixels``, ``max_video_frames``,
        ``max_decoded_bytes_for("video")`` and ``max_stream_packets``."""
        return cls(
            max_pixels=policy.max_pixels,
            max_frames=policy.max_video_frames,
            max_decoded_bytes=policy.max_decoded_bytes_for("video"),
            max_packets=policy.max_stream_packets,
        )

    def check_pixels(self, width: int, height: int, *, what: str = "a video frame") -> None:
        """Refuse a frame of ``width`` x ``height`` over ``max_pixels``.

        Raises:
            TooLargeError: over ``max_pixels`` (``limit="max_pixels"``).
        """
        check_pixels(width, height, self.max_pixels, what=what)

    def reserve_frames(self, count: int, width: int, height: int) -> None:
        """Refuse ``count`` RGB frames of ``width`` x ``height`` before they are allocated
        when they are over the decoded-output budget (the current decode's, else
        ``max_decoded_bytes``).

        Raises:
            TooLargeError: over the budget (``limit="max_decoded_bytes"``).
        """
        reserve_output(
            count * width * height * 3,
            f"{count} video frames of {width}x{height}",
            fallback=self.max_decoded_bytes,
        )
