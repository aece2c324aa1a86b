"""Resampling with soxr while the audio is still being decoded.

The signal is cut into fixed segments (about 6 s) at points where input and output
samples fall at the same instant. Each segment goes through its own soxr stream, started
a pre-roll (0.1 s) before the segment and run a post-roll past it, and only the outputs
inside the segment are kept: past the pre-roll the filter has forgotten where its stream
started, so the joins differ from one-pass resampling by float32 rounding only (about
1e-7). Segments are independent, so a segment is resampled on a helper thread as soon as
the decoder has finished its samples and the post-roll; when decoding ends, the rest is
cut in two pieces that the caller and a helper resample side by side. The cuts depend
only on the rates and the signal's length, so the result is the same, sample for sample,
whatever the thread timing or the core count.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import Executor, Future

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["PRE_ROLL_SECONDS", "QUALITY", "SEGMENT_FRAMES", "SegmentResampler"]

#: The soxr quality recipe: "HQ", 20-bit precision with a steep low-pass.
QUALITY = "HQ"
#: Input each segment's stream starts ahead of its first kept output and runs past its
#: last (at least; rounded up to whole alignment periods). soxr's HQ filters span a few
#: milliseconds.
PRE_ROLL_SECONDS = 0.1
#: Input samples per segment (at most; rounded down to whole alignment periods).
SEGMENT_FRAMES = 1 << 18
# A segment shorter than this many pre-rolls costs more in overlap than it saves: the
# signal is then resampled by one stream.
_MIN_PRE_ROLLS = 8


def _resample(block: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=QUALITY)
    resampled: npt.NDArray[np.float32] = stream.resample_chunk(block, last=True)
    return resampled


# A piece of the signal to resample: (its place in the output, its input with the pre-
# and post-roll, outputs to skip for the pre-roll, outputs to keep or None for all).
_Piece = tuple[int, npt.NDArray[np.float32], int, int | None]


class SegmentResampler:
    """Resamples one signal segment by segment as its samples are finished.

    ``feed`` is told how far the signal is finished; ``finish`` gives the whole signal
    and returns it resampled. Use as a context manager so that a decode that fails
    half-way stops the helpers.
    """

    def __init__(self, rate: int, target: int, pool: Executor | None) -> None:
        self._rate, self._target = rate, target
        common = math.gcd(rate, target)
        self._in_period, self._out_period = rate // common, target // common
        self._pre_roll = math.ceil(PRE_ROLL_SECONDS * rate / self._in_period) * self._in_period
        segment = SEGMENT_FRAMES // self._in_period * self._in_period
        self._segment = segment if segment >= _MIN_PRE_ROLLS * self._pre_roll else 0
        self._pool = pool
        self._lock = threading.Lock()
        self._ready: deque[_Piece] = deque()
        self._outputs: dict[int, npt.NDArray[np.float32]] = {}
        self._helpers: list[Future[None]] = []
        self._count = 0  # pieces handed out so far
        self._next = 0  # where the next piece starts

    def feed(self, data: npt.NDArray[np.float32], finished: int) -> None:
        """``data[:finished]`` is final (never written again): queue what it completes."""
        if not self._segment:
            return
        ready = []
        while self._next + self._segment + self._pre_roll <= finished:
            ready.append(self._piece(data, self._next, self._next + self._segment, None))
        self._hand_out(ready, inline=self._pool is None)

    def finish(self, native: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The whole signal, resampled (``native`` is all of it at the native rate)."""
        total = len(native)
        if not self._segment:
            return _resample(native, self._rate, self._target)
        rest = []
        # Every whole segment with its post-roll inside the signal (the ones the
        # decoder's progress did not reach yet), then the remainder cut in two, so the
        # cuts depend on the length alone.
        while self._next + self._segment + self._pre_roll <= total:
            rest.append(self._piece(native, self._next, self._next + self._segment, total))
        half = (total - self._next) // 2 // self._in_period * self._in_period
        if half >= _MIN_PRE_ROLLS * self._pre_roll:
            rest.append(self._piece(native, self._next, self._next + half, total))
        rest.append(self._piece(native, self._next, total, total, last=True))
        self._hand_out(rest, inline=True)
        self._stop_helpers(raise_errors=True)
        return np.concatenate([self._outputs[k] for k in range(len(self._outputs))])

    def _piece(
        self,
        data: npt.NDArray[np.float32],
        start: int,
        stop: int,
        total: int | None,
        *,
        last: bool = False,
    ) -> _Piece:
        """The input for the outputs of ``[start, stop)``: from a pre-roll before it to a
        post-roll after it (or to the end of the signal, for the last piece)."""
        index = self._count
        self._count += 1
        self._next = stop
        begin = max(0, start - self._pre_roll)
        end = stop + self._pre_roll if total is None else min(stop + self._pre_roll, total)
        if last:
            end = stop
        keep = None if last else (stop - start) // self._in_period * self._out_period
        skip = (start - begin) // self._in_period * self._out_period
        return index, data[begin:end], skip, keep

    def _hand_out(self, pieces: list[_Piece], *, inline: bool) -> None:
        """Queue ``pieces`` for a helper; with ``inline``, work through the queue here too."""
        if not pieces:
            return
        with self._lock:
            self._ready.extend(pieces)
        if self._pool is not None and len(self._ready) > int(inline):
            self._helpers.append(self._pool.submit(self._work))
        if inline:
            self._work()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._ready:
                    return
                index, block, skip, keep = self._ready.popleft()
            resampled = _resample(block, self._rate, self._target)[skip:]
            self._outputs[index] = resampled if keep is None else resampled[:keep]

    def _stop_helpers(self, *, raise_errors: bool) -> None:
        """Wait for the helpers that started; drop the ones still queued."""
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            if not helper.cancel():
                error = helper.exception()
                if error is not None and raise_errors:
                    raise error

    def __enter__(self) -> SegmentResampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._ready.clear()
        self._stop_helpers(raise_errors=False)
