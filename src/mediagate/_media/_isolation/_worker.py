"""A decoder worker process: one call at a time under address-space and CPU limits."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import math
import mmap
import os
import pickle
import resource
import signal
import struct
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

from ..._errors import MediaError
from .._helpers import cpu_count
from ..budget import decoding
from ._replies import _encode_reply
from ._segments import SHM_DIR, _state

MiB = 1 << 20


#: Address space a call may take beyond its ``memory_limit``: lazily imported codec
#: libraries, transient buffers, and (with ``THREAD_HEADROOM``) decoder threads.
#: Measured in a worker with numpy, PIL, av and soundfile loaded (baseline address
#: space about 276 MiB): a 1080p H.264 decode takes, beyond its frames, 134 MiB with
#: FFmpeg's automatic threads on 2 cores and 362 MiB with 16 frame threads.
ADDRESS_SPACE_HEADROOM = 256 * MiB

#: Address space allowed per decoder thread (stack, malloc arena, frame contexts);
#: FFmpeg starts up to one thread per core plus one, 16 at most when automatic.
THREAD_HEADROOM = 32 * MiB

_MAX_AUTO_THREADS = 17

#: Modules a worker imports before its first call, so their address space is part of
#: the baseline, not of a call's allowance.
WORKER_PRELOAD = ("numpy", "PIL.Image", "av", "soundfile", "simplejpeg")

_M_ARENA_MAX = -8

_MALLOC_ARENAS = 2


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * mmap.PAGESIZE


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _headroom() -> int:
    threads = min(cpu_count() + 1, _MAX_AUTO_THREADS)
    return ADDRESS_SPACE_HEADROOM + THREAD_HEADROOM * threads


def _clamp(soft: int, hard: int) -> int:
    return soft if hard == resource.RLIM_INFINITY else min(soft, hard)


@contextlib.contextmanager
def _call_limits(timeout: float, memory_limit: int | None) -> Iterator[None]:
    """Lower RLIMIT_AS and RLIMIT_CPU for one call, and put them back afterwards."""
    saved_as = resource.getrlimit(resource.RLIMIT_AS)
    saved_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    try:
        if math.isfinite(timeout):
            cpu = math.ceil(_cpu_seconds()) + math.ceil(timeout) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (_clamp(cpu, saved_cpu[1]), saved_cpu[1]))
        if memory_limit is not None:
            space = _address_space() + max(0, memory_limit) + _headroom()
            resource.setrlimit(resource.RLIMIT_AS, (_clamp(space, saved_as[1]), saved_as[1]))
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, saved_as)
        resource.setrlimit(resource.RLIMIT_CPU, saved_cpu)


def _limit_malloc_arenas() -> None:
    """Keep glibc from reserving a 64 MiB arena per decoder thread (address space)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).mallopt(_M_ARENA_MAX, _MALLOC_ARENAS)


def _preload() -> None:
    for module in WORKER_PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(module)


@dataclass(frozen=True)
class _Staged:
    """A large ``bytes`` argument left in the worker's input segment instead of the pipe."""

    segment: str
    offset: int
    length: int


@dataclass(frozen=True)
class _Served:
    """A ``RandomAccess`` argument left in the parent: the worker reads it by asking."""

    size: int


#: A worker's read request starts with this (a reply, a pickle, never does), followed by
#: the offset and length; the parent answers ``READ_DATA`` + the bytes, or ``READ_FAILED``.
READ_REQUEST = b"RD"
READ_DATA = b"D"
READ_FAILED = b"F"
READ_FORMAT = struct.Struct("<QQ")


class _PipeSource:
    """The worker's side of a ``_Served`` file: each read is a request to the parent,
    which fetches the bytes under the caller's policy; one request at a time."""

    def __init__(self, conn: Connection, size: int) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.size = size

    def read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            self._conn.send_bytes(READ_REQUEST + READ_FORMAT.pack(offset, length))
            answer = self._conn.recv_bytes()
        if answer[:1] != READ_DATA:
            raise OSError("the parent could not read these bytes")
        return answer[1:]


# The pipe to the parent (set once the worker runs).
_channel: list[Connection] = []

# The input segment this worker has mapped (name, mapping), replaced when it grows.
_input_mapping: list[tuple[str, mmap.mmap]] = []


def _unstage(arg: object) -> object:
    if isinstance(arg, _Served):
        return _PipeSource(_channel[0], arg.size)
    if not isinstance(arg, _Staged):
        return arg
    if not _input_mapping or _input_mapping[0][0] != arg.segment:
        for _, old in _input_mapping:
            old.close()
        _input_mapping.clear()
        fd = os.open(os.path.join(SHM_DIR, arg.segment), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _input_mapping.append((arg.segment, mmap.mmap(fd, 0, prot=mmap.PROT_READ)))
        finally:
            os.close(fd)
    return _input_mapping[0][1][arg.offset : arg.offset + arg.length]


def _perform(message: bytes) -> bytes:
    """Run one pickled call; returns the pickled reply."""
    fn, staged, timeout, memory_limit, limits = pickle.loads(message)
    args = tuple(_unstage(arg) for arg in staged)
    status: str
    value: object
    try:
        with _call_limits(timeout, memory_limit):
            with decoding(limits) if limits is not None else contextlib.nullcontext():
                value, status = fn(*args), "ok"
    except MemoryError:
        value, status = None, "memory"
    except MediaError as exc:
        value, status = exc, "media"
    except Exception as exc:
        value, status = (type(exc).__qualname__, traceback.format_exc()), "error"
    try:
        return _encode_reply(status, value, args)
    except MemoryError:
        return _encode_reply("memory", None, ())
    except Exception:
        return _encode_reply("unpicklable", traceback.format_exc(), ())


def _worker_main(conn: Connection, prefix: str) -> None:
    """Entry point of a worker process: answer calls until the parent goes away."""
    _state.active = True
    _state.prefix = prefix
    _channel.append(conn)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    _limit_malloc_arenas()
    _preload()
    conn.send_bytes(b"ready")
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply = _perform(message)
        conn.send_bytes(reply)
        del reply
