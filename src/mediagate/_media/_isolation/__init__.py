"""Isolated decoder worker processes: a native crash costs one request, not the server.

``DecoderPool.run(fn, *args, timeout=..., memory_limit=..., what=...)`` pickles one
call to a warm worker process (started with the "spawn" method: a fresh interpreter,
safe while the parent runs threads) and waits for its answer. A worker that
segfaults, aborts, exits or is killed becomes a ``DecodeError``; one that runs past
``timeout`` is killed and becomes ``TooLargeError(limit="decode_timeout")``; one that
runs out of its address-space allowance becomes ``TooLargeError(limit="memory")``.
Dead workers are replaced in the background.

Inside a worker every call runs under ``RLIMIT_AS`` (the worker's current address
space + ``memory_limit`` + ``ADDRESS_SPACE_HEADROOM``) and ``RLIMIT_CPU`` (its CPU
time so far + the timeout + 1 s), so the kernel ends a runaway call even when the
parent is gone. The parent's ``DecodeLimits`` (see ``budget.py``) are made current in
the worker for the call, so ``reserve_output`` and ``check_deadline`` hold there too.

Results come back without copying pixel buffers through the pipe: arrays made with
``shared_empty`` live in a ``/dev/shm`` segment that the parent maps; other arrays of
``SHARED_COPY_THRESHOLD`` bytes or more are copied into a segment once. PIL images and
dense CPU torch tensors travel the same way, and input ``bytes`` handed back (as in
``MediaWithBytes.original_bytes``) are answered with the parent's own object. The
parent reads a worker's answer with an unpickler that only accepts the data types a
decoder returns, so a worker taken over by hostile input cannot run code in the
parent through it.
"""

from ._pool import DecoderPool, NotIsolatable, decoder_pool
from ._replies import _read_reply as _read_reply
from ._segments import (
    INPUT_MARK,
    SEGMENT_PREFIX,
    SHARED_COPY_THRESHOLD,
    SHM_DIR,
    in_worker,
    shared_empty,
)
from ._segments import _sweep_orphans as _sweep_orphans
from ._worker import ADDRESS_SPACE_HEADROOM, THREAD_HEADROOM
from ._worker import _address_space as _address_space

__all__ = [
    "ADDRESS_SPACE_HEADROOM",
    "INPUT_MARK",
    "SEGMENT_PREFIX",
    "SHARED_COPY_THRESHOLD",
    "SHM_DIR",
    "THREAD_HEADROOM",
    "DecoderPool",
    "NotIsolatable",
    "decoder_pool",
    "in_worker",
    "shared_empty",
]
