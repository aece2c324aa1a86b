"""Resampling with soxr while the audio is still being decoded.

Decoders hand blocks of finished mono samples to a ``StreamResampler`` as they go. The
blocks go through one soxr stream, in order, on a helper thread while the decoder keeps
decoding (soxr releases the GIL), so resampling costs little more wall time than
decoding alone. A soxr stream carries its filter state from one block to the next, so
this gives exactly what resampling the whole signal at once gives.

When the decoder is faster than the resampler (uncompressed PCM), much of the signal is
still waiting when decoding ends. The rest is then cut in two at a point where input and
output samples line up: the helper's stream resamples the first part (plus a short
overlap, then flushes) while the caller resamples the second with a fresh stream that
starts a pre-roll earlier, whose first outputs are dropped. Past the pre-roll the
filter has forgotten where the stream started, so the second part differs from a
one-pass result only by float32 rounding (about 1e-7).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import Executor, Future

import numpy as np
import numpy.typing as npt
import soxr

from .limits import MonoBuffer

__all__ = ["PRE_ROLL_SECONDS", "QUALITY", "StreamResampler"]

#: The soxr quality recipe: "HQ", 20-bit precision with a steep low-pass.
QUALITY = "HQ"
#: Input a second stream is started ahead of its first kept output (at least; rounded up
#: to whole alignment periods). soxr's HQ filters span a few milliseconds.
PRE_ROLL_SECONDS = 0.1
# The rest is split only when each part would hold this many pre-rolls: below that the
# overlap costs more than the split saves.
_SPLIT_MIN_PRE_ROLLS = 8


def _open_stream(rate: int, target: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(rate, target, 1, dtype="float32", quality=QUALITY)


class StreamResampler:
    """One soxr stream fed block by block; blocks are resampled in the order fed.

    Each block is resampled on ``pool`` when the pool has a thread free and inline
    otherwise; one drain task at a time works through the queue, so no thread ever
    waits on another. Use as a context manager so that a decode that fails half-way
    stops the drain.
    """

    def __init__(self, rate: int, target: int, pool: Executor | None, expected: int) -> None:
        """``expected``: about how many samples will be fed (sizes the output up front)."""
        self._rate, self._target = rate, target
        self._stream = _open_stream(rate, target)
        self._out = MonoBuffer(math.ceil(expected * target / rate) + 64)
        self._pool = pool
        self._lock = threading.Lock()
        # (first sample's index, block, flush after it), in input order.
        self._queued: deque[tuple[int, npt.NDArray[np.float32], bool]] = deque()
        self._drain: Future[None] | None = None
        #: Samples handed in so far by ``feed``.
        self.fed = 0

    def feed(self, block: npt.NDArray[np.float32]) -> None:
        """Queue ``block`` (not modified afterwards by the caller) for resampling."""
        start, self.fed = self.fed, self.fed + len(block)
        if self._pool is None:
            self._resample(block)
        else:
            self._enqueue(start, block, last=False)

    def finish(self, native: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The whole resampled signal, given all of it at the native rate (whose first
        ``fed`` samples are the blocks fed, unchanged)."""
        with self._lock:
            # Blocks the drain has not started are taken back with the unfed rest.
            start = self._queued[0][0] if self._queued else self.fed
            self._queued.clear()
            drain = self._drain
        split = None
        if self._pool is not None:
            # A helper still busy with the block it holds gets the smaller part.
            split = self._split_point(start, len(native), 0.4 if drain is not None else 0.5)
        if split is None:
            self._settle()
            self._resample(native[start:], last=True)
            return self._out.result()
        # The helper's stream resamples up to the split and a pre-roll past it, then
        # flushes; the caller's stream starts a pre-roll before the split, and what it
        # gives past its pre-roll is written over the helper's outputs past the split.
        pre_roll = self._pre_roll()
        self._enqueue(start, native[start : split + pre_roll], last=True)
        second = _open_stream(self._rate, self._target)
        rest = second.resample_chunk(native[split - pre_roll :], last=True)
        self._settle()
        self._out.truncate(self._outputs_for(split))
        self._append(rest[self._outputs_for(pre_roll) :])
        return self._out.result()

    def _resample(self, block: npt.NDArray[np.float32], *, last: bool = False) -> None:
        self._append(self._stream.resample_chunk(block, last=last))

    def _append(self, resampled: npt.NDArray[np.float32]) -> None:
        self._out.claim(len(resampled))[:] = resampled
        self._out.commit(len(resampled))

    def _period(self) -> int:
        """Input samples per alignment period: where an input sample and an output
        sample fall at the same instant."""
        return self._rate // math.gcd(self._rate, self._target)

    def _outputs_for(self, samples: int) -> int:
        """Output samples covering ``samples`` inputs (a whole number of periods)."""
        return samples // self._period() * (self._target // math.gcd(self._rate, self._target))

    def _pre_roll(self) -> int:
        period = self._period()
        return math.ceil(PRE_ROLL_SECONDS * self._rate / period) * period

    def _split_point(self, start: int, end: int, share: float) -> int | None:
        """Where to cut ``[start, end)`` so that about ``share`` of it comes first, or
        ``None`` when a cut is not worth its overlap."""
        pre_roll = self._pre_roll()
        if end - start < 2 * _SPLIT_MIN_PRE_ROLLS * pre_roll:
            return None
        period = self._period()
        split = (start + int((end - start) * share)) // period * period
        return split if split - pre_roll >= 0 and split > start else None

    def _enqueue(self, start: int, block: npt.NDArray[np.float32], *, last: bool) -> None:
        assert self._pool is not None
        with self._lock:
            self._queued.append((start, block, last))
            if self._drain is None:
                self._drain = self._pool.submit(self._work)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._drain = None
                    return
                _, block, last = self._queued.popleft()
            self._resample(block, last=last)

    def _settle(self) -> None:
        """Wait for a running drain; do the work of one that has not started."""
        with self._lock:
            drain = self._drain
        if drain is not None:
            if drain.cancel():
                with self._lock:
                    self._drain = None
            else:
                drain.result()
        while self._queued:  # what a cancelled drain left
            _, block, last = self._queued.popleft()
            self._resample(block, last=last)

    def __enter__(self) -> StreamResampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._queued.clear()
            drain = self._drain
        if drain is not None and not drain.cancel():
            drain.exception()  # wait for it to stop; a failed decode reports its own error
