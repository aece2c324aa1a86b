"""The process-wide pool of helper threads that decoders hand side work to.

Video decoding walks independent runs of frames on it, and audio resampling runs
beside the decoder on it. One pool for the process keeps the thread count bounded by
the cores, not by the number of requests in flight. Work handed to it never waits for
other work on it, so a busy pool only delays, never deadlocks.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_HELPERS", "cpu_count", "helper_pool"]

#: Helper threads at most, whatever the core count.
MAX_HELPERS = 7

_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def helper_pool() -> ThreadPoolExecutor | None:
    """The shared pool of ``cores - 1`` threads (at most ``MAX_HELPERS``), or ``None``
    on a single core, where side work is better done inline; made again after a fork."""
    global _pool
    size = min(cpu_count() - 1, MAX_HELPERS)
    if size < 1:
        return None
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(size, thread_name_prefix="mediagate-helper"))
        return _pool[1]
