"""Remote files read through HTTP range requests, under the same guard as a download.

``open_ranged`` asks for the whole file with an open range (``Range: bytes=0-``), the way
a media player starts. The first answer decides:

- ``200`` (ranges ignored) or a file smaller than the threshold: the answer is read on
  to the end and is the plain download (one request, nothing fetched twice);
- ``206`` with a consistent ``Content-Range`` for a file at or above the threshold: the
  first block is kept, the answer abandoned, and a ``RemoteFile`` reads the rest on
  demand.

Every request of one reference goes through one private connection pool whose resolver
judges each host once and then pins its addresses (``PinnedResolver``): a name that
answers differently later is never dialled at the new address. The first request's
redirect hops are judged hop by hop (``HttpFetcher.final_response``); later requests
go to the URL that answered and may not redirect. All requests share one deadline and
one byte budget (``max_bytes``: every byte received counts), and their number and size
are capped (``max_range_requests``, ``max_range_request_bytes``).

A later answer that is not a ``206`` for exactly the bytes asked, or whose length,
``ETag`` or ``Last-Modified`` differ from the first, ends range reading with
``InconsistentRanges``: the caller downloads the file again, plainly.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import blake3
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from .._errors import FetchError, FetchTimeout, MediaError, RangeReadUnsupported, TooLargeError
from .._policy import MediaPolicy
from .._urls import ParsedURL
from ._http import (
    _HEADERS,
    FetchResult,
    HttpFetcher,
    read_body,
    resolve_judged,
    resolve_results,
    translate_client_error,
)
from ._loop import run_sync

__all__ = [
    "BLOCK_SIZE",
    "BlockStore",
    "InconsistentRanges",
    "PinnedResolver",
    "RangeOptions",
    "RemoteFile",
    "open_ranged",
]

#: Bytes per block: what is fetched, cached and counted at least at once.
BLOCK_SIZE = 256 * 1024

#: Read-ahead starts at one block and doubles while reads go on from where the last
#: one ended, up to this many bytes (and ``max_range_request_bytes``).
MAX_READ_AHEAD = 4 * 1024 * 1024

#: Bytes kept from the first answer before it is abandoned for range requests (at most
#: ``max_range_request_bytes``).
FIRST_READ = 4 * BLOCK_SIZE

#: ASCII digits only (``\d`` also takes other scripts' digits, which ``int`` reads), and
#: at most 19 of them: a longer number is no file's size (and past 4300 digits ``int``
#: refuses it), so the header is malformed.
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})$")


class InconsistentRanges(RangeReadUnsupported):
    """The server answered a range request other than it answered the first: what was
    read so far cannot be trusted; download the file again."""


class BlockStore(Protocol):
    """Where fetched blocks of one version of one file are kept between loads."""

    def get(self, index: int) -> bytes | None:
        """Block ``index``, or ``None`` when not kept."""
        ...

    def put(self, index: int, data: bytes) -> None:
        """Keep block ``index``."""
        ...


@dataclass(frozen=True)
class RangeOptions:
    """The limits of one reference's range reads (from the policy)."""

    limit: int
    max_requests: int
    max_request_bytes: int
    threshold: int


class PinnedResolver(AbstractResolver):
    """Resolves each host once, judges every address, and answers the same addresses
    every later time: connections of one reference all go where the first was judged."""

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy
        self._pinned: dict[tuple[str, int], list[ResolveResult]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host.lower().rstrip("."), port)
        pinned = self._pinned.get(key)
        if pinned is None:
            infos = await resolve_judged(host, port, self._policy, family)
            pinned = resolve_results(host, infos)
            self._pinned[key] = pinned
        return list(pinned)

    async def close(self) -> None:
        return None


def _session(policy: MediaPolicy) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(policy),
        use_dns_cache=False,
        limit=2,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
        read_bufsize=1 << 18,
        headers=_HEADERS,
    )


def _validators(response: aiohttp.ClientResponse) -> tuple[str | None, str | None]:
    return response.headers.get("ETag"), response.headers.get("Last-Modified")


def _content_range(response: aiohttp.ClientResponse) -> tuple[int, int, int] | None:
    """``(first, last, total)`` of a ``Content-Range: bytes a-b/total``, if well formed."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None
    first, last, total = (int(g) for g in match.groups())
    if first > last or last >= total:
        return None
    return first, last, total


@dataclass
class _State:
    """What one reference's requests have used so far."""

    deadline: float
    options: RangeOptions
    charge: Callable[[int], None]
    requests: int = 0
    fetched: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def count(self, size: int) -> None:
        """Count ``size`` more bytes received.

        Raises:
            TooLargeError: over the reference's byte budget.
        """
        self.fetched += size
        if self.fetched > self.options.limit:
            raise TooLargeError.over_max_bytes(
                "the bytes read through range requests", self.fetched, self.options.limit
            )
        self.charge(size)


def _timed_out(timeout: float) -> FetchTimeout:
    return FetchTimeout(
        f"fetching the media took longer than timeout={timeout:g} s (MediaPolicy.timeout)"
    )


class RemoteFile:
    """A remote file of known size, read by position through range requests
    (``seekable.RandomAccess``). Thread-safe: one request at a time.

    Blocks fetched are kept for the file's life (and, once ``save`` is called after a
    decode from them succeeded, in ``blocks``, when given, for later loads of the same
    version); reads that go on where the last one ended fetch ahead. ``fingerprint``
    names the bytes the reads so far were served.
    """

    def __init__(
        self,
        fetcher: HttpFetcher,
        session: aiohttp.ClientSession,
        url: ParsedURL,
        size: int,
        validators: tuple[str | None, str | None],
        state: _State,
        timeout: float,
        blocks: BlockStore | None = None,
    ) -> None:
        self._fetcher = fetcher
        self._session = session
        self._url = url
        self._size = size
        self._validators = validators
        self._state = state
        self._timeout = timeout
        self._store = blocks
        self._blocks: dict[int, bytes] = {}
        #: Blocks fetched over the network and not yet in ``blocks``.
        self._fresh: set[int] = set()
        self._served: set[int] = set()
        self._next = -1
        self._ahead = 1
        self._lock = threading.Lock()
        #: The error that ended reading, raised again by every later read.
        self._failed: MediaError | None = None
        #: Blocks that came from ``blocks`` instead of the network.
        self.blocks_reused = 0

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        return self._size

    @property
    def requests(self) -> int:
        """HTTP requests made for this file, the first one included."""
        return self._state.requests

    @property
    def fetched(self) -> int:
        """Bytes received over the network for this file."""
        return self._state.fetched

    @property
    def url(self) -> str:
        """The URL the file is read from (after the first request's redirects)."""
        return self._url.url

    def keep(self, first: int, data: bytes) -> None:
        """Keep whole blocks of ``data``, which starts at block ``first``."""
        for i in range(0, len(data) - BLOCK_SIZE + 1, BLOCK_SIZE):
            self._blocks[first + i // BLOCK_SIZE] = data[i : i + BLOCK_SIZE]
            self._fresh.add(first + i // BLOCK_SIZE)
        tail = len(data) % BLOCK_SIZE
        end = first * BLOCK_SIZE + len(data)
        if tail and end == self._size:
            self._blocks[first + len(data) // BLOCK_SIZE] = data[-tail:]
            self._fresh.add(first + len(data) // BLOCK_SIZE)

    def save(self) -> None:
        """Put the blocks fetched so far in ``blocks`` (call it once what was decoded from
        them succeeded: blocks of a file that did not decode are not kept)."""
        if self._store is None:
            return
        with self._lock:
            fresh = sorted(self._fresh)
            self._fresh.clear()
            for index in fresh:
                self._store.put(index, self._blocks[index])

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the file).
        After a read failed, every later read raises the same error.

        Raises:
            InconsistentRanges: the server answered a range request inconsistently.
            RangeReadUnsupported: over ``max_range_requests``.
            TooLargeError: over the byte budget.
            FetchTimeout: the reference's deadline passed.
            FetchError, PolicyError: the request failed or was refused.
        """
        offset = max(0, int(offset))
        end = min(self._size, offset + max(0, int(length)))
        if end <= offset:
            return b""
        first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
        with self._lock:
            # A decoder may retry a read that failed: it fails again, asking nothing.
            if self._failed is not None:
                raise self._failed
            try:
                self._load(first, last)
            except MediaError as exc:
                self._failed = exc
                raise
            self._served.update(range(first, last + 1))
            parts = [self._blocks[i] for i in range(first, last + 1)]
        data = b"".join(parts)
        start = offset - first * BLOCK_SIZE
        return data[start : start + end - offset]

    def fingerprint(self) -> bytes:
        """A digest of the blocks served so far with their places and the file's size
        and validators: what a decode from them depends on, and nothing else."""
        digest = blake3.blake3()
        digest.update(f"{self._size}\0{self._validators}\0".encode())
        with self._lock:
            for index in sorted(self._served):
                digest.update(index.to_bytes(8, "little"))
                digest.update(self._blocks[index])
        return b"mediagate-ranges:" + digest.hexdigest().encode("ascii")

    def close(self) -> None:
        """Close this file's connections."""
        if not self._session.closed:
            run_sync(self._session.close(), 10)

    def _load(self, first: int, last: int) -> None:
        """Have blocks ``first``..``last`` at hand: kept, stored, or fetched in runs."""
        missing = []
        for index in range(first, last + 1):
            if index in self._blocks:
                continue
            stored = self._store.get(index) if self._store is not None else None
            if stored is not None and len(stored) == self._block_length(index):
                self._blocks[index] = stored
                self.blocks_reused += 1
            else:
                missing.append(index)
        if not missing:
            self._track(first, last)
            return
        sequential = first == self._next
        self._ahead = min(self._ahead * 2, self._max_ahead()) if sequential else 1
        runs = _runs(missing)
        # Read ahead past the last missing block, while the blocks there are missing.
        run_first, run_last = runs[-1]
        limit = min(self._block_count() - 1, run_last + self._ahead - 1)
        while run_last < limit and run_last + 1 not in self._blocks:
            run_last += 1
        runs[-1] = (run_first, run_last)
        for run_first, run_last in runs:
            self._fetch_run(run_first, run_last)
        self._track(first, runs[-1][1])

    def _track(self, first: int, last: int) -> None:
        self._next = last + 1

    def _max_ahead(self) -> int:
        return max(1, min(MAX_READ_AHEAD, self._state.options.max_request_bytes) // BLOCK_SIZE)

    def _block_count(self) -> int:
        return (self._size + BLOCK_SIZE - 1) // BLOCK_SIZE

    def _block_length(self, index: int) -> int:
        return min(BLOCK_SIZE, self._size - index * BLOCK_SIZE)

    def _fetch_run(self, first: int, last: int) -> None:
        cap = self._state.options.max_request_bytes
        per_request = max(1, cap // BLOCK_SIZE)
        for start in range(first, last + 1, per_request):
            stop = min(last, start + per_request - 1)
            begin, end = start * BLOCK_SIZE, min(self._size, (stop + 1) * BLOCK_SIZE)
            # A cap under one block takes several requests per block.
            data = b"".join(self._request(at, min(end, at + cap)) for at in range(begin, end, cap))
            self.keep(start, data)

    def _request(self, start: int, end: int) -> bytes:
        state = self._state
        if state.requests >= state.options.max_requests:
            raise RangeReadUnsupported(
                f"the video needs more than max_range_requests="
                f"{state.options.max_requests} range requests"
            )
        left = state.left()
        if left <= 0:
            raise _timed_out(self._timeout)
        state.requests += 1
        return run_sync(self._get(start, end, left), left + 5)

    async def _get(self, start: int, end: int, left: float) -> bytes:
        try:
            return await asyncio.wait_for(self._ranged(start, end), left)
        except asyncio.TimeoutError as exc:
            raise _timed_out(self._timeout) from exc

    async def _ranged(self, start: int, end: int) -> bytes:
        headers = {"Range": f"bytes={start}-{end - 1}"}
        try:
            async with (
                self._fetcher.slot(),
                self._session.get(
                    yarl.URL(self._url.url, encoded=True),
                    allow_redirects=False,
                    headers=headers,
                ) as response,
            ):
                if response.status != 206:
                    raise InconsistentRanges(
                        f"the media server answered a range request with HTTP {response.status}"
                    )
                if _content_range(response) != (start, end - 1, self._size):
                    raise InconsistentRanges(
                        "the media server answered a range request with other bytes than asked"
                    )
                if _validators(response) != self._validators:
                    raise InconsistentRanges("the file changed on the media server while read")
                if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                    raise InconsistentRanges("the media server compressed a range")
                return await _read_exactly(response, end - start, self._state)
        except (FetchError, TooLargeError, RangeReadUnsupported):
            raise
        except Exception as exc:
            raise translate_client_error(exc) from exc


async def _read_exactly(response: aiohttp.ClientResponse, size: int, state: _State) -> bytes:
    """Exactly ``size`` body bytes, each counted as it arrives.

    Raises:
        InconsistentRanges: the body is shorter or longer than its range.
        TooLargeError: over the byte budget.
    """
    length = response.content_length
    if length is not None and length != size:
        raise InconsistentRanges("the media server sent a range of another length than asked")
    chunks = []
    got = 0
    while got <= size:
        try:
            chunk = await response.content.read(min(1 << 18, size + 1 - got))
        except aiohttp.ClientPayloadError as exc:
            # The body ended before its Content-Length (or its chunking broke): a short
            # range, as when the length says so.
            raise InconsistentRanges(
                "the media server sent a range of another length than asked"
            ) from exc
        if not chunk:
            break
        state.count(len(chunk))
        chunks.append(chunk)
        got += len(chunk)
    if got != size:
        raise InconsistentRanges("the media server sent a range of another length than asked")
    return b"".join(chunks)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted block numbers as ``(first, last)`` runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def open_ranged(
    fetcher: HttpFetcher,
    url: ParsedURL,
    *,
    options: RangeOptions,
    timeout: float,
    charge: Callable[[int], None],
    blocks: Callable[[int, tuple[str | None, str | None], str], BlockStore | None] | None = None,
) -> FetchResult | RemoteFile:
    """Start reading ``url``: the whole body (``FetchResult``), or a ``RemoteFile``.

    ``charge(n)`` is called for every ``n`` bytes received (a request's download
    budget); ``blocks(size, validators, url)`` gives the store of this version's blocks,
    if any. The deadline, ``timeout`` seconds from now, covers every request made for
    the file, later reads through the ``RemoteFile`` too.

    Raises:
        PolicyError: a hop was refused.
        TooLargeError: the file is over ``options.limit`` (by its declared size, or as
            read).
        FetchTimeout: the deadline passed.
        FetchError: an error status or a network failure.
    """
    state = _State(deadline=time.monotonic() + timeout, options=options, charge=charge)
    session = run_sync(_make_session(fetcher.policy), 10)
    try:
        state.requests += 1
        opened = run_sync(_first(fetcher, session, url, state, timeout), timeout + 5)
    except BaseException:
        run_sync(session.close(), 10)
        raise
    if isinstance(opened, FetchResult):
        run_sync(session.close(), 10)
        return opened
    final, size, validators, head = opened
    store = blocks(size, validators, final.url) if blocks is not None else None
    remote = RemoteFile(fetcher, session, final, size, validators, state, timeout, store)
    remote.keep(0, head)
    return remote


async def _make_session(policy: MediaPolicy) -> aiohttp.ClientSession:
    return _session(policy)


async def _first(
    fetcher: HttpFetcher,
    session: aiohttp.ClientSession,
    url: ParsedURL,
    state: _State,
    timeout: float,
) -> FetchResult | tuple[ParsedURL, int, tuple[str | None, str | None], bytes]:
    try:
        return await asyncio.wait_for(_first_answer(fetcher, session, url, state), timeout)
    except asyncio.TimeoutError as exc:
        raise _timed_out(timeout) from exc


async def _first_answer(
    fetcher: HttpFetcher, session: aiohttp.ClientSession, url: ParsedURL, state: _State
) -> FetchResult | tuple[ParsedURL, int, tuple[str | None, str | None], bytes]:
    limit = state.options.limit
    async with (
        fetcher.slot(),
        fetcher.final_response(session, url, {"Range": "bytes=0-"}) as (response, final, hops),
    ):
        content_type = response.headers.get("Content-Type")
        if response.status != 206:
            # Ranges ignored: this is the plain download.
            data = await _read_counted(response, limit, state)
            return FetchResult(data=data, url=final.url, content_type=content_type, redirects=hops)
        declared = _content_range(response)
        if (
            declared is None
            or declared[0] != 0
            or response.headers.get("Content-Encoding", "identity").lower() != "identity"
        ):
            raise InconsistentRanges("the media server answered a range request malformed")
        _, last, size = declared
        if size > limit:
            raise TooLargeError.over_max_bytes("the response (by its Content-Range)", size, limit)
        if size < state.options.threshold:
            if last != size - 1:
                raise InconsistentRanges("the media server sent part of a small file")
            data = await _read_counted(response, limit, state)
            if len(data) != size:
                raise FetchError("the media server sent a malformed or incomplete body")
            return FetchResult(data=data, url=final.url, content_type=content_type, redirects=hops)
        head = await _read_head(
            response, min(last + 1, FIRST_READ, state.options.max_request_bytes), state
        )
        # The rest of this answer is not wanted: its connection is dropped, not reused.
        response.close()
        return final, size, _validators(response), head


async def _read_counted(response: aiohttp.ClientResponse, limit: int, state: _State) -> bytes:
    data = await read_body(response, limit)
    state.count(len(data))
    return data


async def _read_head(response: aiohttp.ClientResponse, size: int, state: _State) -> bytes:
    """The first ``size`` bytes of the first answer, each counted as it arrives.

    Raises:
        InconsistentRanges: the body ended first (short of its range, as a later range
            that ends early).
        TooLargeError: over the byte budget.
    """
    chunks = []
    got = 0
    while got < size:
        try:
            chunk = await response.content.read(size - got)
        except aiohttp.ClientPayloadError as exc:
            raise InconsistentRanges("the media server sent less than its first range") from exc
        if not chunk:
            raise InconsistentRanges("the media server sent less than its first range")
        state.count(len(chunk))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
