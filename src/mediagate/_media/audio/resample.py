"""Resampling with soxr while the audio is still being decoded.

One soxr stream resamples the whole signal, fed in order with the samples the decoder
has finished. soxr's streams give the same output however the input is chunked, so the
result equals one-pass ``soxr.resample`` sample for sample, whatever the thread timing
or the core count. The stream runs on a helper thread beside the decoder (soxr releases
the GIL), or inline where there is no helper pool; when decoding ends, only the samples
not yet fed remain to be resampled. The helper runs in a copy of the caller's context,
so the decode deadline is checked between chunks there too.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Executor, Future

import numpy as np
import numpy.typing as npt
import soxr

from ..budget import check_deadline

__all__ = ["QUALITY", "StreamResampler"]

#: The soxr quality recipe: "HQ", 20-bit precision with a steep low-pass.
QUALITY = "HQ"


class StreamResampler:
    """Resamples one signal with one soxr stream as its samples are finished.

    ``feed`` is told how far the signal is finished; ``finish`` gives the whole signal
    and returns it resampled. Use as a context manager so that a decode that fails
    half-way stops the helper.
    """

    def __init__(self, rate: int, target: int, pool: Executor | None) -> None:
        self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality=QUALITY)
        self._pool = pool
        self._lock = threading.Lock()
        self._outputs: list[npt.NDArray[np.float32]] = []
        self._data: npt.NDArray[np.float32] = np.empty(0, dtype=np.float32)
        self._finished = 0  # samples of ``_data`` that are final
        self._fed = 0  # samples given to the stream so far
        self._helper: Future[None] | None = None  # the feeding run in flight, if any
        self._stopped = False

    def feed(self, data: npt.NDArray[np.float32], finished: int) -> None:
        """``data[:finished]`` is final (never written again): resample it beside the
        caller, or here where there is no helper pool."""
        with self._lock:
            self._data, self._finished = data, finished
            if self._helper is not None:
                return  # the helper's run takes it up before it ends
            if self._pool is not None:
                run = contextvars.copy_context().run
                self._helper = self._pool.submit(run, self._drain, helper=True)
                return
        self._drain(helper=False)

    def finish(self, native: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The whole signal, resampled (``native`` is all of it at the native rate).

        Raises:
            TooLargeError: the decode deadline passed (here or on the helper).
        """
        self._wait_for_helper(raise_errors=True)
        check_deadline()
        self._outputs.append(self._stream.resample_chunk(native[self._fed :], last=True))
        self._fed = len(native)
        return np.concatenate(self._outputs)

    def _drain(self, *, helper: bool) -> None:
        """Feed the stream until it has caught up with the decoder. A helper's run
        ends here, under the lock, so that a ``feed`` either sees it running or starts
        the next one; one that fails stays in place for ``finish`` to report.

        Raises:
            TooLargeError: the decode deadline passed.
        """
        while True:
            check_deadline()
            with self._lock:
                data, start, end = self._data, self._fed, self._finished
                if self._stopped or start >= end:
                    if helper:
                        self._helper = None
                    return
            self._outputs.append(self._stream.resample_chunk(data[start:end]))
            self._fed = end

    def _wait_for_helper(self, *, raise_errors: bool) -> None:
        """Let the run in flight end (or drop it if it never started)."""
        with self._lock:
            helper = self._helper
        if helper is None or helper.cancel():
            return
        error = helper.exception()
        if error is not None and raise_errors:
            raise error

    def __enter__(self) -> StreamResampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._stopped = True  # a run in flight stops after the chunk in hand
        self._wait_for_helper(raise_errors=False)
