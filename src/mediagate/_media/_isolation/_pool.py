"""The parent side: worker processes, the pool that hands them calls, and outcomes."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import math
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..._errors import DecodeError, FetchError, MediaError, TooLargeError
from .._helpers import cpu_count
from ..budget import current_limits
from ..seekable import RandomAccess
from ._replies import _read_reply
from ._segments import (
    _WORKER_NAME,
    INPUT_MARK,
    SEGMENT_PREFIX,
    SHARED_COPY_THRESHOLD,
    _new_segment,
    _Segment,
    _sweep,
    _sweep_orphans,
    _unlink,
    in_worker,
)
from ._worker import (
    READ_DATA,
    READ_FAILED,
    READ_FORMAT,
    READ_REQUEST,
    _Served,
    _Staged,
    _worker_main,
)

R = TypeVar("R")

# Worker numbers are unique in the process, across pools: a worker's segment names start
# with them, and sweeping one pool's dead worker must never touch another pool's.
_SERIALS = itertools.count()

_log = logging.getLogger("mediagate._media._isolation")

#: Seconds a fresh worker may take to start (interpreter, imports) before it is
#: given up on. A cold pool's start-up is not charged to the first call's timeout.
START_TIMEOUT = 60.0

#: Seconds after a worker is reaped when its segments are swept a second time.
SWEEP_AGAIN_AFTER = 1.0

#: Seconds the caller waits for a killed or crashed worker to be reaped before
#: leaving that to a background thread.
REAP_WAIT = 0.05


class NotIsolatable(Exception):
    """The call (its function or arguments) cannot be pickled to a worker process."""


class _RemoteError(Exception):
    """A non-media exception raised in a worker (type name only)."""


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, serial: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.prefix = f"{SEGMENT_PREFIX}{os.getpid()}-{serial}-"
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main,
            args=(child, self.prefix),
            name=f"{_WORKER_NAME}{serial}",
            daemon=True,
        )
        self.input: _Segment | None = None
        self.input_size = 0
        try:
            self.process.start()
        finally:
            child.close()

    def stage(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` with each large ``bytes`` written to this worker's input segment.

        The segment is kept and reused for the worker's next calls (its pages are
        already in place), and replaced by a larger one when a payload does not fit.
        """
        large = [arg for arg in args if type(arg) is bytes and len(arg) >= SHARED_COPY_THRESHOLD]
        needed = sum(len(arg) for arg in large)
        if not large:
            return args
        if self.input is None or self.input.size < needed:
            if self.input is not None:
                self.input.mm.close()
                _unlink(self.input.name)
                self.input = None
            self.input = _new_segment(max(needed, 2 * self.input_size), self.prefix + INPUT_MARK)
            if self.input is None:
                return args
            self.input_size = self.input.size
        staged: list[Any] = []
        offset = 0
        for arg in args:
            if type(arg) is bytes and len(arg) >= SHARED_COPY_THRESHOLD:
                self.input.mm[offset : offset + len(arg)] = arg
                staged.append(_Staged(self.input.name, offset, len(arg)))
                offset += len(arg)
            else:
                staged.append(arg)
        return tuple(staged)

    def wait_ready(self, timeout: float) -> bool:
        """Whether the worker came up within ``timeout`` seconds."""
        try:
            return self.conn.poll(timeout) and self.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            return False

    def reap(self, wait: float) -> bool:
        """Kill the process, and once it is gone, close the pipe and sweep its segments."""
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join(wait)
        if self.process.exitcode is None:
            return False
        _log.debug("decoder worker ended with exit code %s", self.process.exitcode)
        # The Process object is left to the garbage collector: closing it here races
        # multiprocessing's own exit handler, which joins every child it still lists.
        self.conn.close()
        if self.input is not None:
            self.input.mm.close()
            self.input = None
        _sweep(self.prefix)
        # Once more a moment later: a segment whose file the dying process was still
        # creating when it was reaped is gone then too.
        later = threading.Timer(SWEEP_AGAIN_AFTER, _sweep, args=(self.prefix,))
        later.daemon = True
        later.start()
        return True


class DecoderPool:
    """Worker processes that run one decode call each, isolated from this process.

    Thread-safe: at most ``workers`` calls run at once; more wait for a free worker
    within their timeout. Workers start on first use, stay warm, and are replaced
    in the background when one crashes or is killed. Inside a worker the pool runs
    calls inline.

    Example::

        pool = DecoderPool(2)
        frames = pool.run(decode, media_io, data, timeout=30.0, memory_limit=2**30,
                          what="video")
        pool.close()
    """

    def __init__(self, workers: int | None = None) -> None:
        self._size = max(1, int(workers) if workers is not None else cpu_count())
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._start_failed = False
        self._closed = False
        self._pid = os.getpid()
        self._reapers: set[threading.Thread] = set()
        self._prefixes: set[str] = set()
        self._swept = False

    @property
    def size(self) -> int:
        """How many workers the pool runs at most."""
        return self._size

    def start(self) -> None:
        """Start any missing workers in the background and return at once."""
        if in_worker():
            return
        with self._cond:
            self._fill()

    def warm(self, timeout: float = START_TIMEOUT) -> None:
        """Start every worker now and wait until they are ready (or ``timeout`` passes)."""
        if in_worker():
            return
        deadline = time.monotonic() + timeout
        with self._cond:
            self._fill()
            while self._starting and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def run(
        self,
        fn: Callable[..., R],
        *args: Any,
        timeout: float,
        memory_limit: int | None,
        what: str,
    ) -> R:
        """Call ``fn(*args)`` in a worker process and return its result.

        ``fn`` must be a module-level function and ``args`` picklable. The current
        ``DecodeLimits`` (if any) are current in the worker too. A ``RandomAccess``
        argument stays here: the worker gets a stand-in whose reads this call answers
        from it (so the worker never fetches anything itself); when a read fails, the
        call raises that read's ``MediaError``.

        Raises:
            DecodeError: the worker crashed, or ``fn`` raised something other than a
                ``MediaError``, or its result could not be sent back.
            TooLargeError: ``timeout`` passed (``limit="decode_timeout"``) or the call
                ran out of memory (``limit="memory"``).
            MediaError: whatever ``MediaError`` ``fn`` raised, same class and fields.
            RuntimeError: the pool was closed, or is used in a forked child.
        """
        if in_worker():
            return fn(*args)
        if os.getpid() != self._pid:
            raise RuntimeError("a DecoderPool cannot be used across fork; use decoder_pool()")
        limits = current_limits()
        deadline = time.monotonic() + timeout
        while True:
            worker, deadline = self._acquire(deadline, timeout, what)
            served = next((a for a in args if isinstance(a, RandomAccess)), None)
            stand_in = _Served(int(served.size)) if served is not None else None
            sent = tuple(stand_in if a is served else a for a in args)
            try:
                message_parts = (fn, worker.stage(sent), timeout, memory_limit, limits)
                message = pickle.dumps(message_parts, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                self._release(worker)
                raise NotIsolatable("the call cannot be sent to a worker process") from exc
            except BaseException:
                self._release(worker)
                raise
            try:
                worker.conn.send_bytes(message)
            except OSError:
                self._discard(worker)
                continue
            return self._await(worker, args, deadline, timeout, memory_limit, what, served)  # type: ignore[no-any-return]

    def _await(
        self,
        worker: _Worker,
        args: tuple[Any, ...],
        deadline: float,
        timeout: float,
        memory_limit: int | None,
        what: str,
        served: RandomAccess | None = None,
    ) -> Any:
        failed: list[MediaError] = []
        while True:
            left = deadline - time.monotonic() if math.isfinite(deadline) else None
            try:
                ready = worker.conn.poll(None if left is None else max(0.0, left))
                reply = worker.conn.recv_bytes() if ready else None
                if reply is not None and reply[:2] == READ_REQUEST and served is not None:
                    worker.conn.send_bytes(_answer_read(served, reply, failed))
                    continue
            except (EOFError, OSError) as exc:
                self._discard(worker)
                if failed:
                    raise failed[0] from None
                raise DecodeError(
                    f"the {what} decoder crashed on this input", http_status=422
                ) from exc
            break
        if reply is None:
            self._discard(worker)
            raise failed[0] if failed else _overran(what, timeout)
        try:
            status, value = _read_reply(reply, worker.prefix, args)
        except Exception as exc:
            self._discard(worker)
            raise DecodeError(f"the {what} decoder returned an unreadable result") from exc
        self._release(worker)
        if failed:
            # The decode failed because a read did: that read's error is the answer.
            raise failed[0]
        return _outcome(status, value, what, memory_limit)

    def _acquire(self, deadline: float, timeout: float, what: str) -> tuple[_Worker, float]:
        with self._cond:
            cold = False
            while True:
                if self._closed:
                    raise RuntimeError("the DecoderPool is closed")
                if self._idle:
                    deadline = time.monotonic() + timeout if cold else deadline
                    return self._idle.pop(), deadline
                if not self._all and self._start_failed:
                    # Workers cannot be had here (a daemonic process, no /dev/shm, no
                    # room): the caller decodes in its own process instead.
                    self._start_failed = False
                    raise NotIsolatable("decoder workers cannot be started in this process")
                self._fill()
                if len(self._all) == 0:
                    cold = True
                    self._cond.wait(START_TIMEOUT)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _overran(what, timeout)
                self._cond.wait(left if math.isfinite(left) else None)

    def _fill(self) -> None:
        """Start workers in the background up to the pool size (lock held)."""
        while not self._closed and len(self._all) + self._starting < self._size:
            self._starting += 1
            threading.Thread(
                target=self._start_one, name="mediagate-decoder-start", daemon=True
            ).start()

    def _start_one(self) -> None:
        worker: _Worker | None = None
        try:
            if not self._swept:
                self._swept = True
                _sweep_orphans()
            worker = _Worker(next(_SERIALS))
            with self._cond:
                self._prefixes.add(worker.prefix)
            ready = worker.wait_ready(START_TIMEOUT)
        except Exception:
            _log.debug("a decoder worker failed to start", exc_info=True)
            ready = False
        with self._cond:
            self._starting -= 1
            keep = worker is not None and ready and not self._closed
            self._start_failed = not keep and not self._closed
            if keep and worker is not None:
                self._all.add(worker)
                self._idle.append(worker)
            self._cond.notify_all()
        if worker is not None and not keep:
            worker.reap(START_TIMEOUT)

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                self._all.discard(worker)
            else:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.reap(REAP_WAIT)

    def _discard(self, worker: _Worker) -> None:
        """Drop a worker that crashed or overran, and start its replacement."""
        with self._cond:
            self._all.discard(worker)
            self._fill()
            self._cond.notify_all()
        if not worker.reap(REAP_WAIT):
            reaper = threading.Thread(
                target=self._reap_later, args=(worker,), name="mediagate-reap", daemon=True
            )
            with self._cond:
                self._reapers.add(reaper)
            reaper.start()

    def _reap_later(self, worker: _Worker) -> None:
        worker.reap(START_TIMEOUT)
        with self._cond:
            self._reapers.discard(threading.current_thread())

    def close(self) -> None:
        """Stop every worker and remove their shared segments. Idempotent."""
        with self._cond:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.close()
        for worker in workers:
            worker.process.join(REAP_WAIT)
            worker.reap(START_TIMEOUT)
        with self._cond:
            reapers = list(self._reapers)
        for reaper in reapers:
            reaper.join(START_TIMEOUT)
        for prefix in list(self._prefixes):
            _sweep(prefix)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer_read(source: RandomAccess, request: bytes, failed: list[MediaError]) -> bytes:
    """The answer to a worker's read request: the bytes from ``source``, or a refusal
    (the error kept in ``failed``; after one failure every read is refused)."""
    if failed:
        return READ_FAILED
    try:
        offset, length = READ_FORMAT.unpack(request[len(READ_REQUEST) :])
        size = int(source.size)
        if offset > size:
            raise DecodeError("the decoder asked for bytes past the end of the file")
        data = source.read_at(offset, min(length, size - offset))
    except MediaError as exc:
        failed.append(exc)
        return READ_FAILED
    except Exception as exc:
        _log.debug("a read for a decoder worker failed", exc_info=True)
        failed.append(FetchError("reading the media for the decoder failed"))
        del exc
        return READ_FAILED
    return READ_DATA + data


def _overran(what: str, timeout: float) -> TooLargeError:
    return TooLargeError(
        f"decoding the {what} took longer than decode_timeout={timeout:g} s "
        f"(MediaPolicy.decode_timeout)",
        limit="decode_timeout",
        maximum=timeout,
    )


def _outcome(status: str, value: object, what: str, memory_limit: int | None) -> Any:
    """The result of a call from its reply, or the error it stands for.

    Raises:
        MediaError: the error the reply stands for.
    """
    if status == "ok":
        return value
    if status == "media" and isinstance(value, MediaError):
        raise value
    if status == "memory":
        raise TooLargeError(
            f"decoding the {what} needed more memory than a decoder may use"
            f" (memory_limit={memory_limit} bytes)",
            limit="memory",
            maximum=memory_limit,
        )
    name, details = value if isinstance(value, tuple) and len(value) == 2 else ("?", value)
    _log.debug("the %s decoder raised %s in its worker:\n%s", what, name, details)
    if status == "unpicklable":
        raise DecodeError(f"the {what} decoder returned a result that cannot be sent back")
    raise DecodeError(f"the {what} decoder failed on this input") from _RemoteError(str(name))


_global_lock = threading.Lock()
_global: tuple[int, DecoderPool] | None = None


def decoder_pool() -> DecoderPool:
    """The process-wide pool (one worker per core), made on first use and after a fork."""
    global _global
    with _global_lock:
        if _global is None or _global[0] != os.getpid():
            pool = DecoderPool()
            atexit.register(pool.close)
            _global = (os.getpid(), pool)
        return _global[1]
