"""The guarded HTTP fetcher (aiohttp, chosen for its speed under concurrency).

Every network decision for an http(s) reference is made here, hop by hop:

1. the URL is validated and canonicalised (``_urls.parse_url``); the canonical string
   is sent as it is (``yarl.URL(..., encoded=True)``);
2. the host must be on the domain allowlist, if one is set;
3. an IP-literal host is judged directly; a name is resolved once for the new
   connection by ``GuardedResolver`` and *every* address returned is judged; the
   connection is made to those checked addresses (TLS still verifies the name);
4. redirects are never followed by the client: each ``Location`` goes back to step 1;
5. ``Accept-Encoding: identity`` is asked for, and a compressed answer anyway is
   inflated with a hard cap; ``Content-Length`` over the budget is refused before the
   body is read, and reading stops at ``max_bytes + 1``;
6. one total deadline covers resolution, connects and every read of every hop.

Concurrent fetches of the same URL (with the same byte budget) share one download
(``SingleFlight``), and at most ``max_in_flight`` downloads run at once; the rest wait
for a slot inside their own deadline instead of piling up buffers.

Proxy variables in the environment are ignored; a proxy is used only when the policy
names one. The proxy is server configuration: its own address is not judged against
the target rules. Every hop sent through it is: an IP-literal target directly, a name
resolved here and every address judged before the request goes to the proxy (unless
``MediaPolicy.trust_proxy_dns`` leaves resolution to the proxy). The proxy dials by
name, so that local check cannot pin the address it dials. No cookies are stored or
sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from .._errors import FetchError, FetchTimeout, MediaError, PolicyError, TooLargeError
from .._flight import SingleFlight
from .._policy import MediaPolicy, check_address
from .._urls import ParsedURL, check_domain, redirect_target
from ._loop import get_loop, on_fetch_loop, run_async, run_sync

__all__ = ["FetchResult", "GuardedResolver", "HttpFetcher", "downloads_in_flight", "resolve_judged"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 18
_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "identity",
    "User-Agent": "mediagate/0.1",
}


class _InFlight:
    """How many http(s) requests hold a download slot now, in every ``HttpFetcher``."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self, change: int) -> None:
        with self.lock:
            self.count += change


_IN_FLIGHT = _InFlight()


def downloads_in_flight() -> int:
    """How many http(s) downloads (whole files or range requests) are in progress now."""
    return _IN_FLIGHT.count


def _unresolved() -> FetchError:
    return FetchError("the URL's host name could not be resolved")


def _refused_address(why: str) -> PolicyError:
    # The resolved address is never put in the message.
    return PolicyError(f"the URL's host resolves to {why}")


def judge_address(host: str, policy: MediaPolicy) -> None:
    """Judge one address string; raise ``PolicyError`` when it may not be dialled."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise _refused_address("something that is not an IP address") from None
    why = check_address(address, policy)
    if why is not None:
        raise _refused_address(why)


async def _getaddrinfo(host: str, port: int, family: int) -> list[tuple[Any, ...]]:
    """Resolve ``host`` once, off the event loop.

    Raises:
        FetchError: the name does not resolve.
    """
    loop = asyncio.get_running_loop()
    try:
        # ``socket.getaddrinfo`` is looked up at call time, once per resolution.
        infos = await loop.run_in_executor(
            None,
            lambda: socket.getaddrinfo(host, port, family, socket.SOCK_STREAM),
        )
    except (OSError, UnicodeError) as exc:
        raise _unresolved() from exc
    if not infos:
        raise _unresolved()
    return list(infos)


async def resolve_judged(
    host: str, port: int, policy: MediaPolicy, family: int = socket.AF_UNSPEC
) -> list[tuple[Any, ...]]:
    """Resolve ``host`` once and judge every address returned under ``policy``.

    Returns the ``getaddrinfo`` answers, all of which may be dialled.

    Raises:
        FetchError: the name does not resolve.
        PolicyError: any address it resolves to is refused by the policy.
    """
    infos = await _getaddrinfo(host, port, family)
    # Every answer is judged before any is dialled: one bad address refuses the hop.
    for _, _, _, _, sockaddr in infos:
        judge_address(str(sockaddr[0]), policy)
    return infos


def resolve_results(host: str, infos: list[tuple[Any, ...]]) -> list[ResolveResult]:
    """``getaddrinfo`` answers for ``host`` as aiohttp's resolver results: numeric
    addresses, so the connection dials exactly the addresses that were judged."""
    return [
        {
            "hostname": host,
            "host": str(sockaddr[0]),
            "port": int(sockaddr[1]),
            "family": fam,
            "proto": proto,
            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
        }
        for fam, _, proto, _, sockaddr in infos
    ]


def _proxy_host(policy: MediaPolicy) -> str | None:
    if policy.proxy is None:
        return None
    host = yarl.URL(policy.proxy).host
    return host.lower().rstrip(".") if host else None


class GuardedResolver(AbstractResolver):
    """Resolves a name once per new connection and refuses any non-allowed answer.

    The configured proxy (``MediaPolicy.proxy``) is server configuration, not a
    target: its host name is resolved without judging it against the target rules.
    Targets fetched through the proxy are judged by ``HttpFetcher`` before each
    request is sent.
    """

    def __init__(self, policy: MediaPolicy) -> None:
        self._policy = policy
        self._proxy_host = _proxy_host(policy)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._proxy_host is not None and host.lower().rstrip(".") == self._proxy_host:
            infos = await _getaddrinfo(host, port, family)
        else:
            infos = await resolve_judged(host, port, self._policy, family)
        return resolve_results(host, infos)

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class FetchResult:
    """A fetched body and what was learnt on the way."""

    data: bytes
    url: str
    content_type: str | None
    redirects: int


def _too_large(size: int, limit: int, what: str) -> TooLargeError:
    return TooLargeError.over_max_bytes(what, size, limit)


def _inflater(encodings: list[str]) -> Any:
    """A zlib inflater for one layer of gzip/deflate; ``None`` for identity.

    Raises:
        FetchError: any other Content-Encoding, or more than one layer.
    """
    layers = [
        token.strip().lower()
        for value in encodings
        for token in value.split(",")
        if token.strip().lower() not in ("", "identity")
    ]
    if not layers:
        return None
    if len(layers) == 1 and layers[0] in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if len(layers) == 1 and layers[0] == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise FetchError(
        "the media server sent an unsupported Content-Encoding (only one layer of gzip "
        "or deflate is inflated)"
    )


def _corrupt_encoding() -> FetchError:
    return FetchError("the media server sent a corrupt or incomplete compressed body")


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of ``response``, inflated if it was compressed, refused past
    ``limit`` bytes (by its Content-Length, before reading, or as it arrives)."""
    length = response.content_length
    if length is not None and length > limit:
        raise _too_large(length, limit, "the response (by its Content-Length)")
    inflater = _inflater(response.headers.getall("Content-Encoding", []))
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await response.content.read(_CHUNK)
        if not chunk:
            break
        if inflater is not None:
            if inflater.eof:
                # Data after the end of the compressed stream (a second member).
                raise _corrupt_encoding()
            # Never let zlib produce more than the remaining budget plus one byte.
            try:
                chunk = inflater.decompress(chunk, limit - total + 1)
            except zlib.error as exc:
                raise _corrupt_encoding() from exc
            if inflater.unconsumed_tail:
                raise _too_large(limit + 1, limit, "the inflated response")
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit, "the response")
    if inflater is not None and (not inflater.eof or inflater.unused_data):
        raise _corrupt_encoding()
    return b"".join(chunks)


def translate_client_error(exc: BaseException) -> MediaError:
    """The ``MediaError`` an aiohttp failure stands for (its text names nothing of it)."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return FetchError("TLS to the media server failed (certificate or handshake)")
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, MediaError):
        # Our resolver's own error, wrapped by the connector: pass it on as it was.
        return exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FetchError("could not connect to the media server")
    if isinstance(exc, aiohttp.InvalidURL):
        return PolicyError("the URL is malformed", http_status=400)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return FetchError("the media server closed the connection early")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FetchError("the media server sent a malformed or incomplete body")
    if isinstance(exc, aiohttp.ClientResponseError):
        return FetchError("the media server sent a malformed response")
    return FetchError("fetching the media failed")


def _close_session(holder: dict[str, Any]) -> None:
    session = holder.pop("session", None)
    if session is None or session.closed:
        return
    loop = get_loop()
    if not loop.is_closed():
        loop.call_soon_threadsafe(lambda: loop.create_task(session.close()))


class HttpFetcher:
    """Fetch http(s) references under a ``MediaPolicy``; sync and async twins.

    Both twins run the same coroutine on the private fetch loop, over one connection
    pool. ``max_in_flight`` bounds concurrent downloads; ``single_flight`` makes
    concurrent fetches of one URL share a single download.
    """

    def __init__(
        self,
        policy: MediaPolicy,
        allowed_domains: frozenset[str] = frozenset(),
        *,
        max_connections: int = 64,
        max_in_flight: int = 64,
        single_flight: bool = True,
    ) -> None:
        if isinstance(max_in_flight, bool) or max_in_flight < 1:
            raise ValueError("max_in_flight must be a positive integer")
        self.policy = policy
        self.allowed_domains = allowed_domains
        self._max_connections = max_connections
        self._max_in_flight = max_in_flight
        self._flight: SingleFlight[FetchResult] | None = SingleFlight() if single_flight else None
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._holder: dict[str, Any] = {}
        self._finalizer = weakref.finalize(self, _close_session, self._holder)

    async def _session(self) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession | None = self._holder.get("session")
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy),
                use_dns_cache=False,
                limit=self._max_connections,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                read_bufsize=1 << 20,
                headers=_HEADERS,
            )
            self._holder["session"] = session
        return session

    async def _judge_hop(self, hop: ParsedURL) -> None:
        """Judge one hop before anything is sent for it.

        Without a proxy, a host name is resolved and judged by ``GuardedResolver`` as
        the connection is made. Through a proxy the connection goes to the proxy, so
        the target's name is resolved here and every address judged, unless
        ``MediaPolicy.trust_proxy_dns`` leaves resolution to the proxy.

        Raises:
            PolicyError: the host is off the domain allowlist or an address is refused.
            FetchError: the target's name does not resolve.
        """
        check_domain(hop, self.allowed_domains)
        if hop.ip is not None:
            judge_address(str(hop.ip), self.policy)
        elif self.policy.proxy is not None and not self.policy.trust_proxy_dns:
            port = hop.port if hop.port is not None else (443 if hop.scheme == "https" else 80)
            await resolve_judged(hop.host, port, self.policy)

    @contextlib.asynccontextmanager
    async def final_response(
        self,
        session: aiohttp.ClientSession,
        url: ParsedURL,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, ParsedURL, int]]:
        """The 2xx answer for ``url`` after every redirect hop was judged and followed
        (``headers`` sent with each hop), with the URL that gave it and the number of
        redirects; client-library errors inside the block become ``FetchError``.

        Raises:
            PolicyError: a hop was refused.
            FetchError: too many redirects, redirects disabled, an error status, or a
                network failure.
        """
        current = url
        redirects = 0
        while True:
            await self._judge_hop(current)
            try:
                async with session.get(
                    yarl.URL(current.url, encoded=True),
                    allow_redirects=False,
                    proxy=self.policy.proxy,
                    headers=headers,
                ) as response:
                    status = response.status
                    location = response.headers.get("Location")
                    if status in _REDIRECTS and location is not None:
                        redirects += 1
                        if self.policy.max_redirects == 0:
                            raise FetchError(
                                "the media server answered with a redirect and redirects are "
                                "disabled (MediaPolicy.max_redirects=0)",
                                upstream_status=status,
                                http_status=502,
                            )
                        if redirects > self.policy.max_redirects:
                            raise FetchError(
                                f"more than max_redirects={self.policy.max_redirects} redirects",
                                http_status=502,
                            )
                        current = redirect_target(current, location)
                        continue
                    if not 200 <= status < 300:
                        raise FetchError(
                            f"the media server answered HTTP {status}", upstream_status=status
                        )
                    yield response, current, redirects
                    return
            except MediaError:
                raise
            except Exception as exc:
                # The one boundary where client-library errors become ours; anything
                # unforeseen is still a typed FetchError whose text names nothing.
                raise translate_client_error(exc) from exc

    async def _fetch_hops(self, url: ParsedURL, limit: int) -> FetchResult:
        session = await self._session()
        async with self.final_response(session, url) as (response, final, redirects):
            data = await read_body(response, limit)
            return FetchResult(
                data=data,
                url=final.url,
                content_type=response.headers.get("Content-Type"),
                redirects=redirects,
            )

    def _semaphore(self) -> asyncio.Semaphore:
        # Made on (and re-made for) the loop that uses it, e.g. after a fork.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._max_in_flight))
        return self._slots[1]

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the ``max_in_flight`` download slots (``async with``), on the fetch loop;
        counted in ``downloads_in_flight`` while held."""
        async with self._semaphore():
            _IN_FLIGHT.add(1)
            try:
                yield
            finally:
                _IN_FLIGHT.add(-1)

    async def _download(self, url: ParsedURL, limit: int) -> FetchResult:
        async with self.slot():
            return await self._fetch_hops(url, limit)

    async def _fetch(self, url: ParsedURL, limit: int, timeout: float) -> FetchResult:
        if self._flight is None:
            work = self._download(url, limit)
        else:
            # Waiters share the download but each keeps its own deadline.
            work = self._flight.run((url.url, limit), lambda: self._download(url, limit))
        try:
            return await asyncio.wait_for(work, timeout)
        except asyncio.TimeoutError as exc:
            raise FetchTimeout(
                f"fetching the media took longer than timeout={timeout:g} s (MediaPolicy.timeout)"
            ) from exc

    def fetch(self, url: ParsedURL, *, limit: int, timeout: float) -> FetchResult:
        """Fetch ``url`` from this thread (blocking).

        Raises:
            PolicyError: a hop was refused (domain, address, scheme, URL shape).
            TooLargeError: the body is larger than ``limit``.
            FetchTimeout: ``timeout`` seconds passed.
            FetchError: an upstream error status or a network failure.
        """
        return run_sync(self._fetch(url, limit, timeout), timeout + 5)

    async def fetch_async(self, url: ParsedURL, *, limit: int, timeout: float) -> FetchResult:
        """Fetch ``url`` without blocking the caller's event loop (see ``fetch``); awaited
        directly when the caller already runs on the fetch loop."""
        if on_fetch_loop():
            return await self._fetch(url, limit, timeout)
        return await run_async(self._fetch(url, limit, timeout))

    def close(self) -> None:
        """Close the connection pool."""
        session = self._holder.pop("session", None)
        if session is not None and not session.closed:
            run_sync(session.close(), 10)

    async def aclose(self) -> None:
        """Close the connection pool from async code."""
        session = self._holder.pop("session", None)
        if session is not None and not session.closed:
            await run_async(session.close())
