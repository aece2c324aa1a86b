"""Sources: where the bytes of a reference come from, registered by URL scheme.

The connector runs every reference through one flow (parse -> rules -> cache -> source
-> decode). Every scheme is served by a ``Source`` registered here: the built-in
``http``/``https`` (the guarded fetcher), ``data`` and ``file`` (the local-file reader
under the allowed folder) exactly as one from outside the package is::

    @SOURCE_REGISTRY.register("mem")
    class MemorySource:
        cacheable = False

        def fetch(self, ref, *, policy, limit, timeout):
            return SourceResult(data=STORE[ref.host + ref.path])

A source gets the parsed reference (``ref.scheme``, ``ref.host``, ``ref.path``, ``ref.url``),
the policy in force, the byte budget of the item (``limit``) and the total deadline in
seconds; it judges what its own rules need (a bucket allowlist, say) before any I/O,
streams at most ``limit + 1`` bytes and raises ``MediaError`` subclasses (anything else it
raises becomes a ``FetchError``). ``check``, ``fetch_async``, ``close`` and ``aclose`` are
optional (see ``Source``). Sources marked ``cacheable`` share the download cache, filed
under the rules that judged the fetch.
"""

from __future__ import annotations

from . import builtin as _builtin
from .base import SOURCE_REGISTRY, Source, SourceResult

__all__ = ["SOURCE_REGISTRY", "Source", "SourceResult"]

del _builtin  # imported for its registrations

SOURCE_REGISTRY.register_lazy("s3", "mediagate._sources.objectstore:ObjectStoreSource", extra="s3")
SOURCE_REGISTRY.register_lazy("gs", "mediagate._sources.objectstore:ObjectStoreSource", extra="gcs")
