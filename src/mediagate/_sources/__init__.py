"""Sources: where the bytes of a reference come from, registered by URL scheme.

The connector runs every reference through one flow (parse -> rules -> cache -> source
-> decode). The built-in schemes (``http``/``https``, ``data``, ``file``) are served by the
guarded fetcher, the ``data:`` parser and the local-file reader; any other scheme is served
by a ``Source`` registered here, exactly as one from outside the package would be::

    @SOURCE_REGISTRY.register("mem")
    class MemorySource:
        cacheable = False

        def fetch(self, ref, *, policy, limit, timeout):
            return SourceResult(data=STORE[ref.host + ref.path])

A source gets the parsed reference (``ref.scheme``, ``ref.host``, ``ref.path``, ``ref.url``),
the policy in force, the byte budget of the item (``limit``) and the total deadline in
seconds; it judges what its own rules need (a bucket allowlist, say) before any I/O,
streams at most ``limit + 1`` bytes and raises ``MediaError`` subclasses (anything else it
raises becomes a ``FetchError``). ``fetch_async`` is optional: without it the async twins
run ``fetch`` in the connector's worker pool. Sources marked ``cacheable`` share the
download cache under the same rules as http(s).
"""

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
    """The bytes a source fetched, and where they came from (for reports and logs)."""

    data: bytes
    content_type: str | None = None
    #: The reference the bytes were read from, safe to show (no credentials).
    origin: str = ""


@runtime_checkable
class Source(Protocol):
    """What a source registered in ``SOURCE_REGISTRY`` offers (see the module docstring)."""

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


#: Sources by URL scheme. ``register(scheme)`` is a class decorator; ``load(scheme)``
#: makes an instance.
SOURCE_REGISTRY: Registry[Any] = Registry("media source")

SOURCE_REGISTRY.register_lazy("s3", "mediagate._sources.objectstore:ObjectStoreSource", extra="s3")
SOURCE_REGISTRY.register_lazy("gs", "mediagate._sources.objectstore:ObjectStoreSource", extra="gcs")
