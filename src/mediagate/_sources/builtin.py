"""The built-in sources: ``http``/``https``, ``data`` and ``file``.

They are registered in ``SOURCE_REGISTRY`` with the same decorator an outside source
uses, and the connector knows nothing about them but the ``Source`` contract.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .._errors import FetchError, LocalMediaDisabledError
from .._fetch import HttpFetcher, judge_address, judge_target
from .._local import allowed_root, read_under_root
from .._urls import (
    base64_payload,
    check_data_url_size,
    check_domain,
    decode_data_url,
    parse_data_url,
)
from .base import SOURCE_REGISTRY, SourceResult

if TYPE_CHECKING:
    from .._policy import MediaPolicy
    from .._urls import ParsedURL

__all__ = ["Connection", "ConnectionSource", "DataSource", "FileSource", "HttpSource"]


def check_remote(ref: ParsedURL, policy: MediaPolicy) -> None:
    """The http(s) rules that need no I/O: the domain allowlist and an IP-literal host.

    Raises:
        PolicyError: the host is not allowed, or its address is refused.
    """
    check_domain(ref, frozenset(policy.allowed_media_domains))
    if ref.ip is not None:
        judge_address(str(ref.ip), policy)


@SOURCE_REGISTRY.register("http")
@SOURCE_REGISTRY.register("https")
class HttpSource:
    """http(s) through the guarded fetcher: every hop judged, one deadline, capped bodies.

    One connection pool per policy, made on first use and closed with the connector.
    """

    cacheable: ClassVar[bool] = True
    #: The async pipeline of its references runs on the fetch loop, so the caller's loop
    #: is woken once per reference, when the result is ready.
    runs_on_fetch_loop: ClassVar[bool] = True

    def __init__(self) -> None:
        self._fetchers: list[tuple[MediaPolicy, HttpFetcher]] = []
        self._lock = threading.Lock()

    def fetcher(self, policy: MediaPolicy) -> HttpFetcher:
        """The fetcher (and connection pool) serving ``policy``."""
        with self._lock:
            for known, fetcher in self._fetchers:
                if known is policy or known == policy:
                    return fetcher
            fetcher = HttpFetcher(
                policy,
                frozenset(policy.allowed_media_domains),
                max_connections=policy.max_connections,
                max_in_flight=policy.max_in_flight,
            )
            self._fetchers.append((policy, fetcher))
            return fetcher

    def check(self, ref: ParsedURL, *, policy: MediaPolicy) -> None:
        check_remote(ref, policy)

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        got = self.fetcher(policy).fetch(ref, limit=limit, timeout=timeout)
        return SourceResult(data=got.data, content_type=got.content_type, origin=got.url)

    async def fetch_async(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        got = await self.fetcher(policy).fetch_async(ref, limit=limit, timeout=timeout)
        return SourceResult(data=got.data, content_type=got.content_type, origin=got.url)

    def _taken(self) -> list[HttpFetcher]:
        with self._lock:
            fetchers = [fetcher for _, fetcher in self._fetchers]
            self._fetchers.clear()
        return fetchers

    def close(self) -> None:
        for fetcher in self._taken():
            fetcher.close()

    async def aclose(self) -> None:
        for fetcher in self._taken():
            await fetcher.aclose()


@runtime_checkable
class Connection(Protocol):
    """A caller-supplied http(s) transport (see ``MediaConnector(connection=...)``)."""

    def get_bytes(self, url: str, *, timeout: float, allow_redirects: bool) -> bytes: ...

    async def async_get_bytes(
        self, url: str, *, timeout: float, allow_redirects: bool
    ) -> bytes: ...


def _body(data: Any) -> SourceResult:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FetchError("the connection returned something other than bytes")
    return SourceResult(data=bytes(data))


class ConnectionSource:
    """http(s) through a caller-supplied transport; the target is judged first.

    It dials by itself, so its target is resolved and judged here (``judge_target``)
    before the reference is handed to it; the byte budget holds whatever it returns.
    """

    cacheable: ClassVar[bool] = True

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def check(self, ref: ParsedURL, *, policy: MediaPolicy) -> None:
        check_remote(ref, policy)

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        judge_target(ref, policy)
        raw = self.connection.get_bytes(
            ref.url, timeout=timeout, allow_redirects=policy.max_redirects > 0
        )
        return _body(raw)

    async def fetch_async(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        await asyncio.get_running_loop().run_in_executor(None, judge_target, ref, policy)
        raw = await self.connection.async_get_bytes(
            ref.url, timeout=timeout, allow_redirects=policy.max_redirects > 0
        )
        return _body(raw)


@SOURCE_REGISTRY.register("data")
class DataSource:
    """Inline ``data:`` URLs: size judged from the payload's length, base64 handed over
    undecoded (the ``MediaIO`` decodes it once, with the media type)."""

    cacheable: ClassVar[bool] = False
    #: Nothing is downloaded (a request's download budget is not charged).
    local: ClassVar[bool] = True

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        data = parse_data_url(ref.url)
        check_data_url_size(data, limit)
        if data.is_base64:
            return SourceResult(content_type=data.media_type, base64=base64_payload(data))
        return SourceResult(data=decode_data_url(data, limit), content_type=data.media_type)


@SOURCE_REGISTRY.register("file")
class FileSource:
    """``file:`` URLs under ``MediaPolicy.allowed_local_media_path`` (empty disables them)."""

    cacheable: ClassVar[bool] = False
    local: ClassVar[bool] = True

    def check(self, ref: ParsedURL, *, policy: MediaPolicy) -> None:
        if not policy.allowed_local_media_path:
            raise LocalMediaDisabledError(
                "Cannot load local files: file: URLs are disabled; set "
                "allowed_local_media_path to allow a folder"
            )

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        self.check(ref, policy=policy)
        root = allowed_root(policy.allowed_local_media_path)
        return SourceResult(data=read_under_root(root, ref.path, limit), origin=ref.url)
