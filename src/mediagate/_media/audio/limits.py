"""The limits one audio decode runs under, and the buffer that enforces growth.

Pure accounting: no decoder is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..._errors import DecodeError, TooLargeError
from .._isolation import shared_empty

__all__ = [
    "DECODED_BYTES_PER_SECOND",
    "INITIAL_CAPACITY_CAP",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "SINK_BLOCK_FRAMES",
    "AudioLimits",
    "MonoBuffer",
]

#: The highest sample rate (Hz) accepted from a header or a decoded frame.
MAX_SAMPLE_RATE = 384_000
#: The most channels accepted from a header or a decoded frame.
MAX_CHANNELS = 32
#: Decoded-size budget per second of ``max_seconds``: stereo float32 at MAX_SAMPLE_RATE.
DECODED_BYTES_PER_SECOND = MAX_SAMPLE_RATE * 2 * 4

#: Samples reserved up front on a header's word alone; beyond it the buffer grows.
INITIAL_CAPACITY_CAP = 1 << 24
#: A ``MonoBuffer`` tells its sink how far it is finished every this many samples (about
#: 6 s at 44.1 kHz: a helper thread woken more often costs the decoding thread more in
#: GIL hand-offs than it saves at the end).
SINK_BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class AudioLimits:
    """The duration cap for one decode and the budgets derived from it.

    ``max_output`` is the decoded-output budget in bytes (mono float32 samples as
    returned, after any resampling) used when no guarded decode is current; the
    current decode's budget (``budget.reserve_output``) applies otherwise.
    """

    max_seconds: float
    max_output: int | None = None

    @property
    def max_decoded_bytes(self) -> int:
        """PCM bytes (all channels, float32) a decode may produce before it stops."""
        return math.floor(self.max_seconds * DECODED_BYTES_PER_SECOND)

    def check_format(self, rate: float, channels: int) -> None:
        """Refuse a sample rate or channel count no real audio has.

        Raises:
            TooLargeError: the rate or the channel count is over its ceiling.
            DecodeError: the rate or channel count is not positive.
        """
        if not rate > 0 or channels < 1:
            raise DecodeError("audio declares no sample rate or no channels")
        if rate > MAX_SAMPLE_RATE:
            raise TooLargeError(
                f"audio sample rate is over {MAX_SAMPLE_RATE} Hz",
                limit="sample_rate",
                value=rate,
                maximum=MAX_SAMPLE_RATE,
            )
        if channels > MAX_CHANNELS:
            raise TooLargeError(
                f"audio has more than {MAX_CHANNELS} channels",
                limit="channels",
                value=channels,
                maximum=MAX_CHANNELS,
            )

    def check(self, frames: int, rate: float, channels: int, *, declared: bool = False) -> None:
        """Refuse ``frames`` per channel at ``rate`` if over the duration or size budget.

        Raises:
            TooLargeError: over ``max_seconds`` or over ``max_decoded_bytes``.
        """
        seconds = frames / rate
        how = "declares" if declared else "decodes to"
        if seconds > self.max_seconds:
            raise TooLargeError(
                f"audio {how} more than max_audio_seconds={self.max_seconds:g} s "
                f"(raise MediaPolicy.max_audio_seconds to allow longer audio)",
                limit="max_audio_seconds",
                value=seconds,
                maximum=self.max_seconds,
            )
        decoded = frames * channels * 4
        if decoded > self.max_decoded_bytes:
            raise TooLargeError(
                f"audio {how} more than {self.max_decoded_bytes} bytes of samples "
                f"(the budget follows MediaPolicy.max_audio_seconds)",
                limit="decoded_bytes",
                value=decoded,
                maximum=self.max_decoded_bytes,
            )


class MonoBuffer:
    """A growing float32 buffer that blocks of channel sums are written into.

    The sums are multiplied by ``scale`` (one over the channel count, times whatever
    brings the decoder's integer samples to [-1, 1]) as they are finished. With a ``sink``,
    every ``SINK_BLOCK_FRAMES`` samples it is told how far the buffer is finished (the
    backing array, whose first ``finished`` samples are never written again), so
    resampling can run beside the decoding. With a ``reserve``, every claim first asks
    it whether the buffer may hold that many samples (it raises when not), so the
    buffer never grows past the decoded-output budget, whatever the header said; growth
    stops doubling at ``ceiling`` samples (the most the budget allows).
    """

    def __init__(
        self,
        capacity: int,
        scale: float = 1.0,
        sink: Callable[[npt.NDArray[np.float32], int], None] | None = None,
        reserve: Callable[[int], None] | None = None,
        ceiling: int | None = None,
    ) -> None:
        self._ceiling = ceiling
        if ceiling is not None:
            capacity = min(capacity, ceiling)
        self._data = shared_empty(max(capacity, 1), np.float32)
        self._scale = np.float32(scale)
        self._sink = sink
        self._reserve = reserve
        self._finished = 0
        self.size = 0

    def claim(self, frames: int) -> npt.NDArray[np.float32]:
        """A writable view of the next ``frames`` samples (committed by ``commit``).

        Raises:
            TooLargeError: ``reserve`` refused the buffer's new size.
        """
        end = self.size + frames
        if self._reserve is not None:
            self._reserve(end)
        if end > len(self._data):
            doubled = 2 * len(self._data)
            if self._ceiling is not None:
                doubled = min(doubled, self._ceiling)
            grown = shared_empty(max(end, doubled), np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        return self._data[self.size : end]

    def commit(self, frames: int) -> None:
        self.size += frames
        if self._sink is not None and self.size - self._finished >= SINK_BLOCK_FRAMES:
            self._finish()
            self._sink(self._data, self._finished)

    def result(self) -> npt.NDArray[np.float32]:
        """Every sample, channels averaged."""
        self._finish()
        out = self._data[: self.size]
        if len(self._data) > 2 * self.size + 4096:
            out = out.copy()  # do not keep a mostly empty reservation alive
        return out

    def _finish(self) -> None:
        """Scale the samples committed since the last call; they are final from now on."""
        if self._scale != 1.0:
            self._data[self._finished : self.size] *= self._scale
        self._finished = self.size
