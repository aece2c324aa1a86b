"""Media read by position instead of held in memory: a remote file read through ranges.

A decoder that can work from part of a file (the ``pyav`` video loader on an MP4) takes a
``RandomAccess`` in place of bytes: something that knows its size and hands out the bytes
of any span. ``RangeFile`` is a file cursor over one, for FFmpeg; each container opened
on the source gets its own cursor, so parallel decoders never share a position.

``RangeFile(hollow=...)`` reads the given spans as zeros without asking the source. The
video index is built that way for an MP4: the demuxer walks every packet for its
timestamps, and those come from the container's tables, not from the packet data, so the
packets' bytes (the spans the container's own index gives) are never fetched.

A source that cannot serve what a decode needs, or a file that can only be read from
start to end, ends the decode with ``RangeReadUnsupported``; the caller then reads the
whole file and decodes it from memory.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._errors import RangeReadUnsupported

__all__ = [
    "RandomAccess",
    "RangeFile",
    "RangeReadUnsupported",
    "head_of",
    "merged_spans",
    "size_of",
]


class _Holes:
    """The hollow spans the cursors of one ``RangeFile`` share."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []
        self.starts: list[int] = []


@runtime_checkable
class RandomAccess(Protocol):
    """A file of known size whose bytes are read by position."""

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the file).

        Raises:
            MediaError: the bytes cannot be had (the fetch failed, was refused, ran out
                of time or over its byte budget).
        """
        ...


def size_of(data: bytes | RandomAccess) -> int:
    """The length of ``data``, in memory or read by position."""
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else int(data.size)


def head_of(data: bytes | RandomAccess, length: int) -> bytes:
    """The first ``length`` bytes of ``data`` (fewer when it is shorter)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data[:length])
    return data.read_at(0, min(length, int(data.size)))


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over a ``RandomAccess``, itself one.

    Spans set with ``set_hollow`` read as zeros and are never asked of the source; they
    hold for every cursor made from this one (``cursor``), which each keep their own
    position.
    """

    def __init__(self, source: RandomAccess, *, _holes: _Holes | None = None) -> None:
        super().__init__()
        self._source = source
        self._size = int(source.size)
        self._pos = 0
        self._shared = _holes if _holes is not None else _Holes()

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        return self._size

    def cursor(self) -> RangeFile:
        """A new cursor at the start, over the same source and hollow spans."""
        return RangeFile(self._source, _holes=self._shared)

    def set_hollow(self, spans: Sequence[tuple[int, int]]) -> None:
        """Read ``spans`` (sorted, disjoint ``(start, end)`` pairs) as zeros from now on."""
        self._shared.spans = list(spans)
        self._shared.starts = [start for start, _ in spans]

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end), hollow spans as zeros."""
        buffer = bytearray(max(0, min(length, self._size - offset)))
        saved = self._pos
        self._pos = offset
        try:
            self.readinto(buffer)
        finally:
            self._pos = saved
        return bytes(buffer)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError("invalid whence")
        position = base + int(offset)
        if position < 0:
            raise ValueError("negative seek position")
        self._pos = position
        return position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(self._size, start + len(view))
        if end <= start:
            return 0
        position = start
        for hole_start, hole_end in self._holes(start, end):
            if position < hole_start:
                self._fill(view, start, position, hole_start)
            view[hole_start - start : hole_end - start] = bytes(hole_end - hole_start)
            position = hole_end
        if position < end:
            self._fill(view, start, position, end)
        self._pos = end
        return end - start

    def _holes(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` inside hollow spans, in order."""
        found = []
        spans = self._shared.spans
        i = max(0, bisect.bisect_right(self._shared.starts, start) - 1)
        while i < len(spans) and spans[i][0] < end:
            lo, hi = max(spans[i][0], start), min(spans[i][1], end)
            if lo < hi:
                found.append((lo, hi))
            i += 1
        return found

    def _fill(self, view: memoryview, base: int, start: int, end: int) -> None:
        data = self._source.read_at(start, end - start)
        if len(data) != end - start:
            raise OSError("the source returned fewer bytes than it holds")
        view[start - base : end - base] = data


def merged_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` sorted, with overlapping and touching ones joined; empty ones dropped."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
