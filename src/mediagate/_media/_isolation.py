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

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import importlib
import io
import itertools
import logging
import math
import mmap
import multiprocessing
import os
import pickle
import re
import resource
import secrets
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeGuard, TypeVar

import numpy as np
import numpy.typing as npt

from .._errors import DecodeError, MediaError, TooLargeError
from ._helpers import cpu_count
from .base import MediaWithBytes
from .budget import current_limits, decoding

__all__ = [
    "ADDRESS_SPACE_HEADROOM",
    "SHARED_COPY_THRESHOLD",
    "THREAD_HEADROOM",
    "DecoderPool",
    "decoder_pool",
    "in_worker",
    "shared_empty",
]

R = TypeVar("R")

_log = logging.getLogger(__name__)

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

#: Arrays at least this large that were not made with ``shared_empty`` are copied into
#: shared memory once instead of being pickled through the pipe.
SHARED_COPY_THRESHOLD = 64 * 1024

#: Seconds a fresh worker may take to start (interpreter, imports) before it is
#: given up on. A cold pool's start-up is not charged to the first call's timeout.
START_TIMEOUT = 60.0

#: Seconds the caller waits for a killed or crashed worker to be reaped before
#: leaving that to a background thread.
REAP_WAIT = 0.05

#: Modules a worker imports before its first call, so their address space is part of
#: the baseline, not of a call's allowance.
WORKER_PRELOAD = ("numpy", "PIL.Image", "av", "soundfile", "simplejpeg")

#: Where shared segments live, and how their names start.
SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "mediagate-"
#: Follows a worker's prefix in the name of its input segment (kept while it lives).
INPUT_MARK = "in-"

_SEGMENT_TOKEN = re.compile(r"[0-9a-f]{32}")
_M_ARENA_MAX = -8
_MALLOC_ARENAS = 2

_WORKER_NAME = "mediagate-decoder-"
_in_worker = False
_worker_prefix = ""
_call_segments: dict[int, _Segment] = {}


def in_worker() -> bool:
    """Whether this process is a decoder worker (also while it is still starting)."""
    return _in_worker or multiprocessing.current_process().name.startswith(_WORKER_NAME)


# ---------------------------------------------------------------------------
# Shared memory segments


class _Segment:
    """One ``/dev/shm`` file mapped into this process."""

    __slots__ = ("address", "mm", "name", "size")

    def __init__(self, name: str, mm: mmap.mmap) -> None:
        self.name = name
        self.mm = mm
        self.size = len(mm)
        whole = np.ndarray((self.size,), np.uint8, buffer=mm)
        self.address: int = whole.__array_interface__["data"][0]

    def array(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        """A C-ordered array over the start of the segment."""
        array: npt.NDArray[Any] = np.ndarray(shape, dtype, buffer=self.mm)
        return array


def _new_segment(nbytes: int, prefix: str | None = None) -> _Segment | None:
    """A fresh segment of ``nbytes`` (reserved up front), or ``None`` if there is no room.

    Its name starts with ``prefix`` (default: this worker's), so whoever sweeps that
    worker's segments removes it too.
    """
    name = f"{_worker_prefix if prefix is None else prefix}{secrets.token_hex(16)}"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(os.path.join(SHM_DIR, name), flags, 0o600)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, nbytes)
        mm = mmap.mmap(fd, nbytes)
    except (OSError, ValueError):
        _unlink(name)
        return None
    finally:
        os.close(fd)
    segment = _Segment(name, mm)
    if prefix is None:  # a worker's output: this call's to hand back
        _call_segments[id(mm)] = segment
    return segment


def _unlink(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(SHM_DIR, name))


def _sweep(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix``; returns how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    stale = [name for name in names if name.startswith(prefix)]
    for name in stale:
        _unlink(name)
    return len(stale)


def _sweep_orphans() -> int:
    """Remove segments left by parents that are gone; returns how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    removed = 0
    for name in names:
        owner = name[len(SEGMENT_PREFIX) :].split("-", 1)[0]
        if not name.startswith(SEGMENT_PREFIX) or not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            _unlink(name)
            removed += 1
        except OSError:
            continue
    return removed


def shared_empty(shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """An uninitialised array that a worker hands back to the parent without a copy.

    Inside a decoder worker the array lives in shared memory that the parent maps
    when the result arrives; elsewhere (or when shared memory is short) it is
    ``np.empty(shape, dtype)``.

    Raises:
        ValueError: a negative dimension (as ``np.empty``).
        TypeError: ``dtype`` is not a data type (as ``np.empty``).
    """
    dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    kind = np.dtype(dtype)
    if not _in_worker or kind.hasobject or min(dims, default=1) < 0:
        return np.empty(dims, kind)
    nbytes = math.prod(dims) * kind.itemsize
    segment = _new_segment(nbytes) if nbytes > 0 else None
    if segment is None:
        return np.empty(dims, kind)
    return segment.array(dims, kind)


def _segment_of(array: npt.NDArray[Any]) -> _Segment | None:
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    segment = _call_segments.get(id(base))
    return segment if segment is not None and segment.mm is base else None


# ---------------------------------------------------------------------------
# Worker side: pickling results


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain data (what an image's ``info`` may carry back)."""
    if type(value) in (str, bytes, int, float, bool) or value is None:
        return True
    if type(value) is tuple and depth < 2:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _is_module_function(fn: object) -> bool:
    qualname = getattr(fn, "__qualname__", "")
    return callable(fn) and "<" not in qualname and "." not in qualname


class _ResultPickler(pickle.Pickler):
    """Pickles a result, sending large buffers through shared memory."""

    def __init__(self, file: io.BytesIO, inputs: Sequence[object]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._inputs = {id(obj): index for index, obj in enumerate(inputs) if type(obj) is bytes}
        self._keep = inputs
        self.used: dict[str, _Segment] = {}

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is bytes:
            index = self._inputs.get(id(obj))
            return None if index is None else ("input", index)
        if kind is np.ndarray:
            return self._array_id(obj)
        if kind is MediaWithBytes:
            return self._pending_id(obj)
        image_module = sys.modules.get("PIL.Image")
        if image_module is not None and isinstance(obj, image_module.Image):
            return self._image_id(obj)
        torch = sys.modules.get("torch")
        if torch is not None and kind is torch.Tensor:
            return self._tensor_id(obj)
        return None

    def _array_id(self, array: npt.NDArray[Any]) -> tuple[Any, ...] | None:
        if array.dtype.hasobject or array.size == 0:
            return None
        segment = _segment_of(array)
        if segment is None:
            if array.nbytes < SHARED_COPY_THRESHOLD:
                return None
            segment = _new_segment(array.nbytes)
            if segment is None:
                return None
            copy = segment.array(array.shape, array.dtype)
            np.copyto(copy, array)
            array = copy
        self.used[segment.name] = segment
        offset = array.__array_interface__["data"][0] - segment.address
        layout = (array.dtype, array.shape, array.strides, offset)
        return ("array", segment.name, segment.size, *layout)

    def _pending_id(self, result: MediaWithBytes[Any]) -> tuple[Any, ...] | None:
        state = result.__dict__
        to_media = state.get("_to_media")
        if "media" in state or not _is_module_function(to_media):
            return None
        ref = (getattr(to_media, "__module__", ""), getattr(to_media, "__qualname__", ""))
        return ("pending", state["_array"], state["original_bytes"], ref, state["_known"])

    def _image_id(self, image: Any) -> tuple[Any, ...] | None:
        data: bytes = image.tobytes()
        segment = _new_segment(len(data)) if len(data) >= SHARED_COPY_THRESHOLD else None
        if segment is not None:
            segment.mm[: len(data)] = data
            self.used[segment.name] = segment
        # Small images (or no shared memory) travel inline, still as plain pixel data.
        where: str | bytes = data if segment is None else segment.name
        palette = image.getpalette("RGBA") if image.mode in ("P", "PA") else None
        info = {k: v for k, v in image.info.items() if _plain(v)}
        return (
            "image",
            where,
            len(data) if segment is None else segment.size,
            image.mode,
            image.size,
            palette,
            info,
            image.format,
        )

    def _tensor_id(self, tensor: Any) -> tuple[Any, ...] | None:
        torch = sys.modules["torch"]
        if tensor.layout != torch.strided or tensor.device.type != "cpu" or tensor.requires_grad:
            return None
        dense = tensor.detach().contiguous()
        try:
            return ("tensor", dense.numpy(), None, tuple(dense.shape))
        except (TypeError, RuntimeError):
            raw = dense.reshape(-1).view(torch.uint8).numpy()
            return ("tensor", raw, str(dense.dtype).removeprefix("torch."), tuple(dense.shape))


def _encode_reply(status: str, value: object, inputs: Sequence[object]) -> bytes:
    buffer = io.BytesIO()
    pickler = _ResultPickler(buffer, inputs)
    pickler.dump(value)
    for key, segment in list(_call_segments.items()):
        if segment.name not in pickler.used:
            _unlink(segment.name)
        del _call_segments[key]
    names = sorted(pickler.used)
    return pickle.dumps((status, names, buffer.getvalue()), protocol=pickle.HIGHEST_PROTOCOL)


# ---------------------------------------------------------------------------
# Worker side: the loop and the limits


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


# The input segment this worker has mapped (name, mapping), replaced when it grows.
_input_mapping: list[tuple[str, mmap.mmap]] = []


def _unstage(arg: object) -> object:
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
    global _in_worker, _worker_prefix
    _in_worker = True
    _worker_prefix = prefix
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


# ---------------------------------------------------------------------------
# Parent side: reading replies


_SAFE_GLOBALS = frozenset(
    {
        ("builtins", "complex"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        ("fractions", "Fraction"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("mediagate._errors", "_rebuild"),
        ("mediagate._media.base", "MediaWithBytes"),
    }
)


class _ReplyUnpickler(pickle.Unpickler):
    """Reads a worker's reply: data types only, shared segments mapped once."""

    def __init__(self, data: bytes, prefix: str, inputs: Sequence[object]) -> None:
        super().__init__(io.BytesIO(data))
        self._prefix = prefix
        self._inputs = inputs
        self._mapped: dict[str, mmap.mmap] = {}

    def find_class(self, module: str, name: str) -> Any:
        loaded = sys.modules.get(module)
        if loaded is None or "." in name:
            raise pickle.UnpicklingError("a worker reply named a module not in use")
        found = getattr(loaded, name, None)
        allowed = (module, name) in _SAFE_GLOBALS or (
            isinstance(found, type) and issubclass(found, MediaError)
        )
        if not allowed and module.startswith("numpy.dtypes"):
            allowed = isinstance(found, type) and issubclass(found, np.dtype)
        if not allowed and module == "torch":
            allowed = type(found).__name__ == "dtype"
        if not allowed:
            raise pickle.UnpicklingError("a worker reply named a global outside the allowlist")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("bad reference in a worker reply")
        kind = pid[0]
        if kind == "input" and type(pid[1]) is int and 0 <= pid[1] < len(self._inputs):
            return self._inputs[pid[1]]
        if kind == "array" and len(pid) == 7:
            return self._array(*pid[1:])
        if kind == "pending" and len(pid) == 5:
            return self._pending(*pid[1:])
        if kind == "image" and len(pid) == 8:
            return self._image(*pid[1:])
        if kind == "tensor" and len(pid) == 4:
            return self._tensor(*pid[1:])
        raise pickle.UnpicklingError("bad reference in a worker reply")

    def _map(self, name: object, size: object) -> mmap.mmap:
        if not isinstance(name, str) or not isinstance(size, int) or size <= 0:
            raise pickle.UnpicklingError("bad segment in a worker reply")
        token = name[len(self._prefix) :]
        if not name.startswith(self._prefix) or not _SEGMENT_TOKEN.fullmatch(token):
            raise pickle.UnpicklingError("bad segment in a worker reply")
        mapped = self._mapped.get(name)
        if mapped is not None:
            return mapped
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(SHM_DIR, name), flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                raise pickle.UnpicklingError("bad segment in a worker reply")
            if info.st_size != size:
                raise pickle.UnpicklingError("bad segment in a worker reply")
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._mapped[name] = mapped
        return mapped

    def _array(
        self,
        name: object,
        size: object,
        dtype: object,
        shape: object,
        strides: object,
        offset: object,
    ) -> npt.NDArray[Any]:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(offset, int):
            raise pickle.UnpicklingError("bad array in a worker reply")
        if not _int_tuple(shape) or not _int_tuple(strides) or len(shape) != len(strides):
            raise pickle.UnpicklingError("bad array in a worker reply")
        mapped = self._map(name, size)
        array: npt.NDArray[Any] = np.ndarray(
            shape, dtype, buffer=mapped, offset=offset, strides=strides
        )
        return array

    def _pending(
        self, array: object, original: object, ref: object, known: object
    ) -> MediaWithBytes[Any]:
        if not isinstance(array, np.ndarray) or not isinstance(original, bytes):
            raise pickle.UnpicklingError("bad result in a worker reply")
        if not isinstance(known, dict) or not isinstance(ref, tuple) or len(ref) != 2:
            raise pickle.UnpicklingError("bad result in a worker reply")
        module, name = ref
        if not isinstance(module, str) or not module.startswith("mediagate."):
            raise pickle.UnpicklingError("bad result in a worker reply")
        to_media = getattr(sys.modules.get(module), str(name), None)
        if to_media is None or not _is_module_function(to_media):
            raise pickle.UnpicklingError("bad result in a worker reply")
        return MediaWithBytes.from_array(array, original, to_media, known=known)

    def _image(
        self,
        name: object,
        size: object,
        mode: object,
        dims: object,
        palette: object,
        info: object,
        fmt: object,
    ) -> Any:
        from PIL import Image

        if not isinstance(mode, str) or not isinstance(dims, tuple):
            raise pickle.UnpicklingError("bad image in a worker reply")
        source = name if isinstance(name, bytes) else self._map(name, size)
        pixels = np.frombuffer(source, np.uint8)
        image = Image.frombuffer(mode, dims, pixels, "raw", mode, 0, 1)
        if isinstance(palette, list):
            image.putpalette(palette, "RGBA")
        if isinstance(info, dict):
            image.info.update(info)
        if isinstance(fmt, str):
            image.format = fmt
        return image

    def _tensor(self, array: object, reinterpret: object, shape: object) -> Any:
        import torch

        if not isinstance(array, np.ndarray) or not isinstance(shape, tuple):
            raise pickle.UnpicklingError("bad tensor in a worker reply")
        tensor = torch.from_numpy(array)
        if reinterpret is None:
            return tensor
        dtype = getattr(torch, str(reinterpret), None)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError("bad tensor in a worker reply")
        return tensor.view(dtype).reshape(shape)


def _int_tuple(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(type(n) is int for n in value)


def _read_reply(reply: bytes, prefix: str, inputs: Sequence[object]) -> tuple[str, object]:
    """Unpickle a worker's reply; the segments it names are unlinked whatever happens.

    Raises:
        pickle.UnpicklingError, OSError, ValueError, TypeError: an unreadable reply.
    """
    status, names, payload = _ReplyUnpickler(reply, prefix, ()).load()
    try:
        value = _ReplyUnpickler(payload, prefix, inputs).load()
    finally:
        for name in names if isinstance(names, list) else ():
            if isinstance(name, str) and name.startswith(prefix) and "/" not in name:
                _unlink(name)
    return str(status), value


class NotIsolatable(Exception):
    """The call (its function or arguments) cannot be pickled to a worker process."""


class _RemoteError(Exception):
    """A non-media exception raised in a worker (type name only)."""


# ---------------------------------------------------------------------------
# Parent side: workers and the pool


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
        self.conn.close()
        self.process.close()
        if self.input is not None:
            self.input.mm.close()
            self.input = None
        _sweep(self.prefix)
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
        self._serial = itertools.count()
        self._pid = os.getpid()
        self._reapers: set[threading.Thread] = set()
        self._prefixes: set[str] = set()
        self._swept = False

    @property
    def size(self) -> int:
        """How many workers the pool runs at most."""
        return self._size

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
        ``DecodeLimits`` (if any) are current in the worker too.

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
            try:
                message_parts = (fn, worker.stage(args), timeout, memory_limit, limits)
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
            return self._await(worker, args, deadline, timeout, memory_limit, what)  # type: ignore[no-any-return]

    def _await(
        self,
        worker: _Worker,
        args: tuple[Any, ...],
        deadline: float,
        timeout: float,
        memory_limit: int | None,
        what: str,
    ) -> Any:
        left = deadline - time.monotonic() if math.isfinite(deadline) else None
        try:
            ready = worker.conn.poll(None if left is None else max(0.0, left))
            reply = worker.conn.recv_bytes() if ready else None
        except (EOFError, OSError) as exc:
            self._discard(worker)
            raise DecodeError(f"the {what} decoder crashed on this input", http_status=422) from exc
        if reply is None:
            self._discard(worker)
            raise _overran(what, timeout)
        try:
            status, value = _read_reply(reply, worker.prefix, args)
        except Exception as exc:
            self._discard(worker)
            raise DecodeError(f"the {what} decoder returned an unreadable result") from exc
        self._release(worker)
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
            worker = _Worker(next(self._serial))
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
