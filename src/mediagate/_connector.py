"""MediaConnector: where parse, policy, cache, source and decode meet.

A reference flows one way: ``parse_url`` -> policy checks -> cache -> source (the
guarded fetcher, a ``data:`` payload, or a file under the allowed root) -> a
``MediaIO`` -> the result. Sync and async twins share every decision; they differ only
in how they wait: the sync twin blocks its own thread, the async twin awaits network
I/O on the private fetch loop and runs decoding in a bounded worker pool, so the
caller's event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

from ._errors import (
    FetchError,
    LocalMediaDisabledError,
    OptionError,
    TooLargeError,
    error_boundary,
)
from ._fetch import HttpFetcher, judge_address, judge_target, run_on_fetch_loop
from ._local import check_allowed_root, read_under_root
from ._media._helpers import cpu_count
from ._media.base import MediaIO, MediaWithBytes
from ._media.budget import DecodedBudget
from ._media.image import ImageMediaIO
from ._policy import MODALITIES, MediaPolicy
from ._registry import Registry
from ._sources import SOURCE_REGISTRY, SourceResult
from ._urls import (
    ParsedURL,
    base64_payload,
    check_data_url_size,
    check_domain,
    decode_data_url,
    parse_data_url,
    parse_url,
)

if TYPE_CHECKING:
    import torch

    from ._cache import MediaCache

__all__ = ["MEDIA_CONNECTOR_REGISTRY", "LoadReport", "MediaConnector"]

_M = TypeVar("_M")
_R = TypeVar("_R")
_P = ParamSpec("_P")
_IO = TypeVar("_IO", bound=MediaIO[Any])

#: Keywords the connector passes to the MediaIOs it builds; a request option of the
#: same name is refused instead of colliding with them.
RESERVED_OPTIONS = frozenset({"policy", "image_io", "decoded_budget", "self"})


def _entry(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """The connector's error boundary for one sync entry point."""

    @functools.wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with error_boundary("the media reference"):
            return method(*args, **kwargs)

    return guarded


def _entry_async(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """The connector's error boundary for one async entry point."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with error_boundary("the media reference"):
            return await method(*args, **kwargs)

    return guarded


def _request_options(modality: str, options: Any) -> dict[str, Any] | None:
    """A request's options for ``modality``, refused when not a mapping of option names.

    Raises:
        OptionError: not a mapping, a key that is not a string, or a reserved name.
    """
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise OptionError(
            f"media_io_kwargs for {modality} must be a mapping, not {type(options).__name__}",
            option=modality,
        )
    for key in options:
        if not isinstance(key, str):
            raise OptionError(f"{modality} option names must be strings", option=str(key))
        if key in RESERVED_OPTIONS:
            raise OptionError(f"{key!r} is not one of the {modality} options", option=key)
    return dict(options)


#: Connectors by name; ``http`` is the built-in one.
MEDIA_CONNECTOR_REGISTRY: Registry[Any] = Registry("media connector")


@runtime_checkable
class Connection(Protocol):
    """A caller-supplied transport for http(s) references."""

    def get_bytes(self, url: str, *, timeout: float, allow_redirects: bool) -> bytes: ...

    async def async_get_bytes(
        self, url: str, *, timeout: float, allow_redirects: bool
    ) -> bytes: ...


@dataclass
class LoadReport:
    """What a load did: where the bytes came from, how many, and time per stage."""

    source: str
    num_bytes: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    cached: bool = False


def _default_workers() -> int:
    return max(1, min(8, cpu_count()))


def _check_media_io_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise OptionError(
            "media_io_kwargs must be a mapping of modality to options", option="media_io_kwargs"
        )
    out: dict[str, dict[str, Any]] = {}
    for modality, options in kwargs.items():
        if modality not in MODALITIES:
            raise OptionError(
                f"unknown modality {modality!r} in media_io_kwargs "
                f"(known: {', '.join(MODALITIES)})",
                option=str(modality),
            )
        out[modality] = _request_options(modality, options) or {}
    return out


@MEDIA_CONNECTOR_REGISTRY.register("http")
class MediaConnector:
    """Resolve media URLs to bytes and decode them with the right ``MediaIO``.

    Example::

        connector = MediaConnector(allowed_media_domains=["images.example.com"])
        image = connector.fetch_image("https://images.example.com/cat.jpg")
        pixels = np.asarray(image)            # HxWx3 uint8

    Args:
        media_io_kwargs: per-modality server defaults, e.g. ``{"video": {"num_frames": 16}}``.
        connection: an optional transport with ``get_bytes``/``async_get_bytes``; the
            default is the guarded fetcher.
        allowed_local_media_path: the folder ``file:`` URLs may read from ("" disables them).
        allowed_media_domains: exact host allowlist for http(s); empty or ``None`` allows any
            host (the network rules of ``policy`` still apply).
        policy: limits and network rules (default ``MediaPolicy()``).
        cache: an optional ``MediaCache`` for http(s) downloads.
        max_workers: size of the decode worker pool used by the async twins.
        max_in_flight: downloads in progress at once; further fetches wait their turn.
        decoded_budget: a ``DecodedBudget`` shared by every item this connector decodes
            (one connector per request, as inference servers build them): each item
            reserves its decoded-output budget from it before decoding.

    Raises:
        ValueError: ``allowed_local_media_path`` is not an existing directory.
        OptionError: ``media_io_kwargs`` has an unknown modality or option.
    """

    def __init__(
        self,
        media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        connection: Connection | None = None,
        *,
        allowed_local_media_path: str | os.PathLike[str] = "",
        allowed_media_domains: list[str] | None = None,
        policy: MediaPolicy | None = None,
        cache: MediaCache | None = None,
        max_workers: int | None = None,
        max_in_flight: int = 64,
        decoded_budget: DecodedBudget | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, MediaPolicy):
            raise TypeError("policy must be a MediaPolicy")
        if decoded_budget is not None and not isinstance(decoded_budget, DecodedBudget):
            raise TypeError("decoded_budget must be a DecodedBudget")
        self.decoded_budget = decoded_budget
        policy = policy if policy is not None else MediaPolicy()
        # The keywords are the compatible spelling of the policy's fields of those names.
        spelled: dict[str, Any] = {}
        if allowed_media_domains:
            spelled["allowed_media_domains"] = allowed_media_domains
        if allowed_local_media_path:
            spelled["allowed_local_media_path"] = allowed_local_media_path
        self.policy = policy.replace(**spelled) if spelled else policy
        self.media_io_kwargs = _check_media_io_kwargs(media_io_kwargs)
        self.connection = connection
        root = self.policy.allowed_local_media_path
        self.allowed_local_media_path: Path | None = check_allowed_root(root) if root else None
        self.allowed_media_domains = frozenset(self.policy.allowed_media_domains)
        self.cache = cache
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
            raise ValueError("max_workers must be a positive integer")
        self.max_workers = max_workers or _default_workers()
        self._pool: ThreadPoolExecutor | None = None
        self._sources: dict[str, Any] = {}
        self._fetcher = HttpFetcher(
            self.policy,
            self.allowed_media_domains,
            max_connections=self.policy.max_connections,
            max_in_flight=max_in_flight,
        )
        self._cache_scope = self._judgement_scope()
        self._validate_server_defaults()

    def _judgement_scope(self) -> str:
        """A digest of every rule that decides what may be fetched: cache entries are
        filed under it, so an entry is served only to connectors that would have been
        allowed to fetch it themselves, through every hop it took."""
        policy = self.policy
        rules = (
            policy.allow_private_networks,
            sorted(str(net) for net in policy.networks),
            policy.max_redirects,
            policy.proxy,
            policy.trust_proxy_dns,
            sorted(self.allowed_media_domains),
            self.connection is not None,
        )
        return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> MediaConnector:
        """A connector configured from ``MEDIAGATE_*`` variables; ``overrides`` win."""
        from ._cache import MediaCache
        from ._config import connector_kwargs_from_env

        kwargs = connector_kwargs_from_env(environ)
        if "policy" not in overrides:
            kwargs["policy"] = MediaPolicy.from_env(environ)
        if "cache" not in overrides:
            kwargs["cache"] = MediaCache.from_env(environ)
        kwargs.update(overrides)
        return cls(**kwargs)

    def _validate_server_defaults(self) -> None:
        # Building each MediaIO once checks every server default eagerly.
        if "image" in self.media_io_kwargs:
            self._image_io()
        if "video" in self.media_io_kwargs:
            self._video_io()
        if "audio" in self.media_io_kwargs:
            self._audio_io()

    # -- the worker pool --------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.max_workers, thread_name_prefix="mediagate-decode"
            )
        return self._pool

    async def _in_pool(self, fn: Callable[..., _R], *args: Any) -> _R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), fn, *args)

    def close(self) -> None:
        """Release the connection pool and the worker pool."""
        self._fetcher.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def aclose(self) -> None:
        """Release the connection pool and the worker pool from async code."""
        await self._fetcher.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MediaConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MediaConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- shared decisions ---------------------------------------------------------------

    def _limit(self, media_io: MediaIO[Any]) -> int:
        return self.policy.max_bytes_for(media_io.modality)

    def _timeout(self, media_io: MediaIO[Any], fetch_timeout: float | None) -> float:
        if fetch_timeout is not None:
            if (
                isinstance(fetch_timeout, bool)
                or not isinstance(fetch_timeout, (int, float))
                or not 0 < fetch_timeout < float("inf")
            ):
                raise OptionError(
                    "fetch_timeout must be a finite number of seconds > 0", option="fetch_timeout"
                )
            return float(fetch_timeout)
        return self.policy.timeout_for(media_io.modality)

    def _load_data_url(self, ref: ParsedURL, media_io: MediaIO[_M]) -> _M:
        return self._load_data_url_sized(ref, media_io)[0]

    def _load_data_url_sized(self, ref: ParsedURL, media_io: MediaIO[_M]) -> tuple[_M, int]:
        data = parse_data_url(ref.url)
        check_data_url_size(data, self._limit(media_io))
        if data.is_base64:
            payload = base64_payload(data)
            size = len(payload) // 4 * 3 - payload[-2:].count("=")
            return media_io.load_base64(data.media_type, payload), size
        raw = decode_data_url(data, self._limit(media_io))
        return media_io.load_bytes(raw), len(raw)

    def _read_file_url(self, ref: ParsedURL, media_io: MediaIO[Any]) -> bytes:
        if self.allowed_local_media_path is None:
            raise LocalMediaDisabledError(
                "file: URLs are disabled; set allowed_local_media_path to allow a folder"
            )
        return read_under_root(self.allowed_local_media_path, ref.path, self._limit(media_io))

    def _check_remote(self, ref: ParsedURL) -> None:
        """The rules that need no I/O, judged before the cache is consulted."""
        check_domain(ref, self.allowed_media_domains)
        if ref.ip is not None:
            judge_address(str(ref.ip), self.policy)

    def _call_connection(self, call: Callable[[], _R]) -> _R:
        with error_boundary("fetching the media through the connection", default=FetchError):
            return call()

    def _checked_body(self, data: Any, media_io: MediaIO[Any]) -> bytes:
        # For caller-supplied connections: the budget holds whatever the transport does.
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FetchError("the connection returned something other than bytes")
        body = bytes(data)
        limit = self._limit(media_io)
        if len(body) > limit:
            raise TooLargeError.over_max_bytes("the response", len(body), limit)
        return body

    def _cache_key(self, ref: ParsedURL) -> str:
        return f"{ref.url} judged:{self._cache_scope}"

    def _cache_get(self, ref: ParsedURL) -> bytes | None:
        if self.cache is None:
            return None
        data: bytes | None = self.cache.get(self._cache_key(ref))
        return data

    def _cache_put(self, ref: ParsedURL, data: bytes) -> None:
        if self.cache is not None:
            self.cache.put(self._cache_key(ref), data)

    def _parse(self, url: str) -> ParsedURL:
        return parse_url(url, SOURCE_REGISTRY.names(), max_length=self.policy.max_url_length)

    def _source(self, scheme: str) -> Any:
        source = self._sources.get(scheme)
        if source is None:
            source = self._sources[scheme] = SOURCE_REGISTRY.load(scheme)
        return source

    def _source_cache_key(self, ref: ParsedURL) -> str:
        # A source's own rules (buckets, endpoints) live in the policy: entries are filed
        # under all of it.
        # The policy's repr hides storage settings; their values are hashed in as well.
        settings = json.dumps(self.policy.storage_options, sort_keys=True, default=repr)
        rules = repr((self._cache_scope, self.policy, settings))
        scope = hashlib.sha256(rules.encode()).hexdigest()
        return f"{ref.url} judged:{scope[:16]}"

    def _source_result(self, fetched: Any, media_io: MediaIO[Any]) -> bytes:
        data = fetched.data if isinstance(fetched, SourceResult) else fetched
        return self._checked_body(data, media_io)

    def _from_source(
        self, source: Any, ref: ParsedURL, media_io: MediaIO[Any], timeout: float
    ) -> bytes:
        with error_boundary(f"fetching the {ref.scheme} reference", default=FetchError):
            fetched = source.fetch(
                ref, policy=self.policy, limit=self._limit(media_io), timeout=timeout
            )
        return self._source_result(fetched, media_io)

    async def _from_source_async(
        self, source: Any, ref: ParsedURL, media_io: MediaIO[Any], timeout: float
    ) -> bytes:
        fetch_async = getattr(source, "fetch_async", None)
        if fetch_async is None:
            return await self._in_pool(self._from_source, source, ref, media_io, timeout)
        with error_boundary(f"fetching the {ref.scheme} reference", default=FetchError):
            fetched = await fetch_async(
                ref, policy=self.policy, limit=self._limit(media_io), timeout=timeout
            )
        return self._source_result(fetched, media_io)

    def _source_cache(self, source: Any) -> MediaCache | None:
        return self.cache if getattr(source, "cacheable", False) else None

    # -- the sync twin ------------------------------------------------------------------

    def _fetch_bytes(self, ref: ParsedURL, media_io: MediaIO[Any], timeout: float) -> bytes:
        if self.connection is not None:
            judge_target(ref, self.policy)
            connection = self.connection
            raw = self._call_connection(
                lambda: connection.get_bytes(
                    ref.url, timeout=timeout, allow_redirects=self.policy.max_redirects > 0
                )
            )
            return self._checked_body(raw, media_io)
        return self._fetcher.fetch(ref, limit=self._limit(media_io), timeout=timeout).data

    @_entry
    def load_with_report(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> tuple[_M, LoadReport]:
        """``load_from_url`` plus a report of the source, byte count and stage times."""
        start = time.perf_counter()
        ref = self._parse(url)
        report = LoadReport(source=ref.scheme)
        if ref.scheme == "data":
            result, report.num_bytes = self._load_data_url_sized(ref, media_io)
            report.stages["decode"] = time.perf_counter() - start
            return result, report
        cache_key: str | None = None
        if ref.scheme == "file":
            data = self._read_file_url(ref, media_io)
        elif ref.scheme not in ("http", "https"):
            source = self._source(ref.scheme)
            timeout = self._timeout(media_io, fetch_timeout)
            cache = self._source_cache(source)
            cache_key = self._source_cache_key(ref) if cache is not None else None
            cached = cache.get(cache_key) if cache is not None and cache_key else None
            report.cached = cached is not None
            data = (
                cached if cached is not None else self._from_source(source, ref, media_io, timeout)
            )
        else:
            self._check_remote(ref)
            timeout = self._timeout(media_io, fetch_timeout)
            cached = self._cache_get(ref)
            report.cached = cached is not None
            data = cached if cached is not None else self._fetch_bytes(ref, media_io, timeout)
        report.num_bytes = len(data)
        report.stages["fetch"] = time.perf_counter() - start
        decode_start = time.perf_counter()
        result = media_io.load_bytes(data)
        report.stages["decode"] = time.perf_counter() - decode_start
        if ref.scheme in ("http", "https") and not report.cached:
            self._cache_put(ref, data)
        elif cache_key is not None and not report.cached and self.cache is not None:
            self.cache.put(cache_key, data)
        return result, report

    @_entry
    def load_from_url(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> _M:
        """Load ``url`` (http, https, data or file) and decode it with ``media_io``.

        Raises:
            PolicyError: the scheme, host, address or path is refused (before any I/O).
            LocalMediaDisabledError: a ``file:`` URL without ``allowed_local_media_path``.
            TooLargeError: a byte, pixel, frame, duration or tensor limit.
            FetchTimeout: the total deadline passed.
            FetchError: an upstream error status or a network failure.
            DecodeError: the bytes are not decodable media.
        """
        return self.load_with_report(url, media_io, fetch_timeout=fetch_timeout)[0]

    # -- the async twin -----------------------------------------------------------------

    async def _fetch_bytes_async(
        self, ref: ParsedURL, media_io: MediaIO[Any], timeout: float
    ) -> bytes:
        if self.connection is not None:
            await self._in_pool(judge_target, ref, self.policy)
            with error_boundary("fetching the media through the connection", default=FetchError):
                raw = await self.connection.async_get_bytes(
                    ref.url, timeout=timeout, allow_redirects=self.policy.max_redirects > 0
                )
            return self._checked_body(raw, media_io)
        # Only reached from ``_remote_pipeline`` running on the fetch loop.
        fetched = await self._fetcher.fetch_on_loop(
            ref, limit=self._limit(media_io), timeout=timeout
        )
        return fetched.data

    @_entry_async
    async def load_from_url_async(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> _M:
        """The async twin of ``load_from_url``: never blocks the running event loop."""
        ref = self._parse(url)
        if ref.scheme == "data":
            return await self._in_pool(self._load_data_url, ref, media_io)
        if ref.scheme == "file":
            data = await self._in_pool(self._read_file_url, ref, media_io)
            return await self._in_pool(media_io.load_bytes, data)
        if ref.scheme not in ("http", "https"):
            return await self._source_pipeline(
                ref, media_io, self._timeout(media_io, fetch_timeout)
            )
        self._check_remote(ref)
        timeout = self._timeout(media_io, fetch_timeout)
        if self.connection is None:
            # Cache, fetch and decode are chained on the fetch loop, so the caller's
            # loop is woken once per reference, when the result is ready.
            return await run_on_fetch_loop(self._remote_pipeline(ref, media_io, timeout))
        # A caller-supplied transport runs on the caller's own loop.
        return await self._remote_pipeline(ref, media_io, timeout)

    async def _source_pipeline(self, ref: ParsedURL, media_io: MediaIO[_M], timeout: float) -> _M:
        source = self._source(ref.scheme)
        cache = self._source_cache(source)
        key = self._source_cache_key(ref) if cache is not None else ""
        cached = await self._in_pool(cache.get, key) if cache is not None else None
        if cached is None:
            data = await self._from_source_async(source, ref, media_io, timeout)
        else:
            data = cached
        result = await self._in_pool(media_io.load_bytes, data)
        if cached is None and cache is not None:
            await self._in_pool(cache.put, key, data)
        return result

    async def _remote_pipeline(self, ref: ParsedURL, media_io: MediaIO[_M], timeout: float) -> _M:
        cached = await self._in_pool(self._cache_get, ref) if self.cache is not None else None
        data = (
            cached if cached is not None else await self._fetch_bytes_async(ref, media_io, timeout)
        )
        result = await self._in_pool(media_io.load_bytes, data)
        if cached is None and self.cache is not None:
            await self._in_pool(self._cache_put, ref, data)
        return result

    # -- per-modality helpers -----------------------------------------------------------

    def media_io(
        self, modality: str, media_io_kwargs: Mapping[str, Any] | None = None
    ) -> MediaIO[Any]:
        """The ``MediaIO`` for ``modality``, with the server defaults merged under
        ``media_io_kwargs`` (this request's options), this connector's policy and its
        request budget; ``image-embedding`` and ``image_embedding`` are the same name.

        Raises:
            OptionError: an unknown modality, or a bad option.
        """
        from ._modalities import modality_name

        name = modality_name(modality)
        if name == "image":
            return self._image_io(None, media_io_kwargs)
        if name == "audio":
            io: MediaIO[Any] = self._audio_io(media_io_kwargs)
        elif name == "video":
            io = self._video_io(None, media_io_kwargs)
        else:
            io = self._embedding_io(name, media_io_kwargs)
        return io

    def _options(self, modality: str, request: Mapping[str, Any] | None) -> dict[str, Any]:
        return MediaIO.merge_kwargs(
            self.media_io_kwargs.get(modality), _request_options(modality, request)
        )

    def _budgeted(self, media_io: _IO) -> _IO:
        media_io.decoded_budget = self.decoded_budget
        return media_io

    def _image_io(
        self, image_mode: str | None = None, request: Mapping[str, Any] | None = None
    ) -> ImageMediaIO:
        options = ImageMediaIO.merge_kwargs(
            self.media_io_kwargs.get("image"), _request_options("image", request)
        )
        if image_mode is not None:
            options["image_mode"] = image_mode
        return self._budgeted(ImageMediaIO(policy=self.policy, **options))

    def _video_io(
        self, image_mode: str | None = None, request: Mapping[str, Any] | None = None
    ) -> Any:
        from ._media.video.io import VideoMediaIO

        options = VideoMediaIO.merge_kwargs(
            self.media_io_kwargs.get("video"), _request_options("video", request)
        )
        return self._budgeted(
            VideoMediaIO(self._image_io(image_mode), policy=self.policy, **options)
        )

    def _audio_io(self, request: Mapping[str, Any] | None = None) -> Any:
        from ._media.audio import AudioMediaIO

        return self._budgeted(AudioMediaIO(policy=self.policy, **self._options("audio", request)))

    def _embedding_io(self, modality: str, request: Mapping[str, Any] | None = None) -> Any:
        from ._media.embedding import AudioEmbeddingMediaIO, ImageEmbeddingMediaIO

        cls = ImageEmbeddingMediaIO if modality == "image_embedding" else AudioEmbeddingMediaIO
        return self._budgeted(cls(policy=self.policy, **self._options(modality, request)))

    @_entry
    def fetch_image(
        self,
        image_url: str,
        *,
        image_mode: str = "RGB",
        media_io_kwargs: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[Image.Image]:
        """Load an image; ``media_io_kwargs`` are this request's image options.

        Raises: as ``load_from_url``, plus ``OptionError`` for bad options.
        """
        return self.load_from_url(image_url, self._image_io(image_mode, media_io_kwargs))

    @_entry_async
    async def fetch_image_async(
        self,
        image_url: str,
        *,
        image_mode: str = "RGB",
        media_io_kwargs: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[Image.Image]:
        """The async twin of ``fetch_image``."""
        image_io = self._image_io(image_mode, media_io_kwargs)
        return await self.load_from_url_async(image_url, image_io)

    @_entry
    def fetch_audio(
        self, audio_url: str, *, media_io_kwargs: Mapping[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], float]:
        """Load audio as mono float32 and its sample rate."""
        result: tuple[npt.NDArray[np.float32], float] = self.load_from_url(
            audio_url, self._audio_io(media_io_kwargs)
        )
        return result

    @_entry_async
    async def fetch_audio_async(
        self, audio_url: str, *, media_io_kwargs: Mapping[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], float]:
        """The async twin of ``fetch_audio``."""
        result: tuple[npt.NDArray[np.float32], float] = await self.load_from_url_async(
            audio_url, self._audio_io(media_io_kwargs)
        )
        return result

    @_entry
    def fetch_video(
        self,
        video_url: str,
        *,
        image_mode: str = "RGB",
        media_io_kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """Load sampled video frames ``[N, H, W, 3]`` and their metadata."""
        result: tuple[npt.NDArray[np.uint8], dict[str, Any]] = self.load_from_url(
            video_url, self._video_io(image_mode, media_io_kwargs)
        )
        return result

    @_entry_async
    async def fetch_video_async(
        self,
        video_url: str,
        *,
        image_mode: str = "RGB",
        media_io_kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        """The async twin of ``fetch_video``."""
        result: tuple[npt.NDArray[np.uint8], dict[str, Any]] = await self.load_from_url_async(
            video_url, self._video_io(image_mode, media_io_kwargs)
        )
        return result

    @_entry
    def fetch_image_embedding(self, data: str) -> torch.Tensor:
        """Decode a base64 image embedding tensor."""
        result: torch.Tensor = self._embedding_io("image_embedding").load_base64("", data)
        return result

    @_entry_async
    async def fetch_image_embedding_async(self, data: str) -> torch.Tensor:
        """The async twin of ``fetch_image_embedding``."""
        io = self._embedding_io("image_embedding")
        result: torch.Tensor = await self._in_pool(io.load_base64, "", data)
        return result

    @_entry
    def fetch_audio_embedding(self, data: str) -> torch.Tensor:
        """Decode a base64 audio embedding tensor."""
        result: torch.Tensor = self._embedding_io("audio_embedding").load_base64("", data)
        return result

    @_entry_async
    async def fetch_audio_embedding_async(self, data: str) -> torch.Tensor:
        """The async twin of ``fetch_audio_embedding``."""
        io = self._embedding_io("audio_embedding")
        result: torch.Tensor = await self._in_pool(io.load_base64, "", data)
        return result
