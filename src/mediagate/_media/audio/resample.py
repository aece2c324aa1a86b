"""Resampling with soxr while the audio is still being decoded.

Decoders hand blocks of finished mono samples to a ``StreamResampler`` as they go. The
blocks go through one soxr stream, in order, on a helper thread while the decoder keeps
decoding (soxr releases the GIL), so resampling costs little more wall time than
decoding alone. The output is the same as resampling the whole signal at once: a soxr
stream carries its filter state from one block to the next.
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

__all__ = ["QUALITY", "StreamResampler"]

#: The soxr quality recipe: "HQ", 20-bit precision with a steep low-pass.
QUALITY = "HQ"


class StreamResampler:
    """One soxr stream fed block by block; blocks are resampled in the order fed.

    Each block is resampled on ``pool`` when the pool has a thread free and inline
    otherwise; one drain task at a time works through the queue, so no thread ever
    waits on another. Use as a context manager so that a decode that fails half-way
    stops the drain.
    """

    def __init__(self, rate: int, target: int, pool: Executor | None, expected: int) -> None:
        """``expected``: about how many samples will be fed (sizes the output up front)."""
        self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=QUALITY)
        self._pool = pool
        self._lock = threading.Lock()
        self._queued: deque[npt.NDArray[np.float32]] = deque()
        self._drain: Future[None] | None = None
        self._out = MonoBuffer(math.ceil(expected * target / rate) + 64)
        #: Samples handed in so far by ``feed``.
        self.fed = 0

    def feed(self, block: npt.NDArray[np.float32]) -> None:
        """Queue ``block`` (not modified afterwards by the caller) for resampling."""
        self.fed += len(block)
        if self._pool is None:
            self._resample(block)
            return
        with self._lock:
            self._queued.append(block)
            if self._drain is None:
                self._drain = self._pool.submit(self._work)

    def finish(self, tail: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Resample ``tail`` as the last block and return the whole resampled signal."""
        self._settle()
        while self._queued:  # the drain never started: do its work here
            self._resample(self._queued.popleft())
        self._resample(tail, last=True)
        return self._out.result()

    def _resample(self, block: npt.NDArray[np.float32], *, last: bool = False) -> None:
        resampled = self._stream.resample_chunk(block, last=last)
        self._out.claim(len(resampled))[:] = resampled
        self._out.commit(len(resampled))

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._drain = None
                    return
                block = self._queued.popleft()
            self._resample(block)

    def _settle(self) -> None:
        """Wait for a running drain; take back one that has not started."""
        with self._lock:
            drain = self._drain
        if drain is None:
            return
        if drain.cancel():
            with self._lock:
                self._drain = None
        else:
            drain.result()

    def __enter__(self) -> StreamResampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._queued.clear()
            drain = self._drain
        if drain is not None and not drain.cancel():
            drain.exception()  # wait for it to stop; a failed decode reports its own error
