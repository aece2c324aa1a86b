"""The source contract and the registry of sources by URL scheme."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .._registry import Registry

if TYPE_CHECKING:
    from .._policy import MediaPolicy
    from .._urls import ParsedURL

__all__ = ["SOURCE_REGISTRY", "Source", "SourceResult"]


@dataclass(frozen=True)
class SourceResult:
    """The bytes a source fetched, and where they came from (for reports and logs).

    A source holding media inline as base64 text (``data:`` URLs) may hand the text over
    undecoded as ``base64`` with its ``content_type``: the ``MediaIO`` then decodes it
    with ``load_base64(content_type, base64)``, as it would a client's base64 payload.
    """

    data: bytes = b""
    content_type: str | None = None
    #: The reference the bytes were read from, safe to show (no credentials).
    origin: str = ""
    base64: str | None = None

    @property
    def size(self) -> int:
        """Bytes of media held (for base64 text, the bytes it decodes to)."""
        text = self.base64
        if text is None:
            return len(self.data)
        return len(text) // 4 * 3 - text[-2:].count("=")


@runtime_checkable
class Source(Protocol):
    """What a source registered in ``SOURCE_REGISTRY`` offers (see ``mediagate._sources``).

    Optional members, looked up when present: ``check(ref, *, policy)`` judges the
    rules that need no I/O before the cache is consulted (a bucket allowlist, say);
    ``async fetch_async(...)`` is the async twin of ``fetch`` (without it the async
    pipeline runs in the connector's worker pool); ``close()``/``async aclose()`` release
    what the source holds when its connector closes; ``local = True`` marks a source
    that downloads nothing (a request's ``download_budget`` is not charged for it).
    """

    #: Whether fetched bytes may be kept in the download cache.
    cacheable: ClassVar[bool]

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        """Fetch ``ref``'s bytes under ``policy`` within ``limit`` bytes and ``timeout`` s.

        Raises:
            PolicyError: the reference is refused by the source's rules (before any I/O).
            TooLargeError: more than ``limit`` bytes.
            FetchTimeout: the deadline passed.
            FetchError: the object is missing, access was denied, or the transfer failed.
        """
        ...


#: Sources by URL scheme. ``register(scheme)`` is a class decorator; the connector makes
#: one instance of each registered class (``cls()``) and keeps it until it closes.
SOURCE_REGISTRY: Registry[Any] = Registry("media source")
