"""Shared-memory segments: what a worker hands back without a copy, and cleaning up."""

from __future__ import annotations

import contextlib
import math
import mmap
import multiprocessing
import os
import re
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

#: Arrays at least this large that were not made with ``shared_empty`` are copied into
#: shared memory once instead of being pickled through the pipe.
SHARED_COPY_THRESHOLD = 64 * 1024

#: Where shared segments live, and how their names start.
SHM_DIR = "/dev/shm"

SEGMENT_PREFIX = "mediagate-"

#: Follows a worker's prefix in the name of its input segment (kept while it lives).
INPUT_MARK = "in-"

_SEGMENT_TOKEN = re.compile(r"[0-9a-f]{32}")

_WORKER_NAME = "mediagate-decoder-"


class _WorkerState:
    """Set once in a worker process, when it starts serving calls."""

    active = False
    prefix = ""


_state = _WorkerState()
_call_segments: dict[int, _Segment] = {}


def in_worker() -> bool:
    """Whether this process is a decoder worker (also while it is still starting)."""
    return _state.active or multiprocessing.current_process().name.startswith(_WORKER_NAME)


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
    name = f"{_state.prefix if prefix is None else prefix}{secrets.token_hex(16)}"
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
    if not _state.active or kind.hasobject or min(dims, default=1) < 0:
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
