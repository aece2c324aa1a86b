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
import binascii
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    runtime_checkable,
)

import numpy as np
import numpy.typing as npt
from PIL import Image

from ._errors import (
    FetchError,
    FetchTimeout,
    MediaError,
    OptionError,
    RangeReadUnsupported,
    TooLargeError,
    error_boundary,
)
from ._fetch import RemoteFile, run_on_fetch_loop
from ._local import check_allowed_root
from ._media._helpers import cpu_count
from ._media.base import MediaIO, MediaWithBytes
from ._media.budget import DecodedBudget, as_decoded_budget
from ._media.image import ImageMediaIO
from ._modalities import (
    SNIFF_BYTES,
    guess_modality,
    modality_name,
    reference_modality,
)
from ._observe import attach, begin_load, end_load
from ._policy import MODALITIES, MediaPolicy
from ._registry import Registry
from ._sources import SOURCE_REGISTRY, SourceResult
from ._sources.builtin import Connection, ConnectionSource
from ._urls import ParsedURL, parse_url

if TYPE_CHECKING:
    import torch

    from ._cache import MediaCache

__all__ = ["MEDIA_CONNECTOR_REGISTRY", "LoadReport", "LoadedMedia", "MediaConnector"]

_M = TypeVar("_M")
_R = TypeVar("_R")
_P = ParamSpec("_P")
_IO = TypeVar("_IO", bound=MediaIO[Any])

#: What ``fetch_video`` holds: uint8 frames ``[N, H, W, 3]`` and their metadata.
VideoFrames = tuple[npt.NDArray[np.uint8], dict[str, Any]]

#: Keywords the connector passes to the MediaIOs it builds; a request option of the
#: same name is refused instead of colliding with them.
RESERVED_OPTIONS = frozenset({"policy", "image_io", "decoded_budget", "self"})


def _entry_modality(name: str) -> str:
    """The modality a ``fetch_*`` entry point loads ("" for the others)."""
    if not name.startswith("fetch_"):
        return ""
    return name.removeprefix("fetch_").removesuffix("_async")


def _reference(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    """The reference an entry point was called with (its first argument after self)."""
    return args[1] if len(args) > 1 else next(iter(kwargs.values()), None)


def _failed_early(modality: str, reference: object) -> LoadReport:
    """The report of a load that failed before it made one (a refused reference or a
    bad option): the source its reference names, if any source does."""
    return LoadReport(source=_source_label(reference), modality=modality)


def _source_label(reference: object) -> str:
    """The registered scheme ``reference`` starts with, else ``"other"`` (never text
    of the reference itself, so labels stay bounded)."""
    if isinstance(reference, str):
        # Only the head is looked at: a data: payload can be many megabytes.
        scheme, colon, _ = reference[:40].partition(":")
        if colon and scheme.lower() in SOURCE_REGISTRY:
            return scheme.lower()
    return "other"


def _entry(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """The connector's error boundary for one sync entry point, where each public load
    ends in one report to the hooks and the log (``_observe``)."""
    modality = _entry_modality(method.__name__)

    @functools.wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        load = begin_load()
        if load is None:
            with error_boundary("the media reference"):
                return method(*args, **kwargs)
        try:
            with error_boundary("the media reference"):
                result = method(*args, **kwargs)
        except BaseException as exc:
            reference = _reference(args, kwargs)
            end_load(load, exc, lambda: _failed_early(modality, reference), reference)
            raise
        end_load(load, None, lambda: _failed_early(modality, None))
        return result

    return guarded


def _entry_async(method: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
    """The connector's error boundary for one async entry point (see ``_entry``)."""
    modality = _entry_modality(method.__name__)

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        load = begin_load()
        if load is None:
            with error_boundary("the media reference"):
                return await method(*args, **kwargs)
        try:
            with error_boundary("the media reference"):
                result = await method(*args, **kwargs)
        except BaseException as exc:
            reference = _reference(args, kwargs)
            end_load(load, exc, lambda: _failed_early(modality, reference), reference)
            raise
        end_load(load, None, lambda: _failed_early(modality, None))
        return result

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
class DownloadBudget(Protocol):
    """What ``MediaConnector(download_budget=...)`` takes: the request's download total."""

    def charge(self, size: int) -> None:
        """Count ``size`` more downloaded bytes; raise to refuse them."""
        ...


@dataclass
class LoadReport:
    """What a load did: where the bytes came from, how many, and time per stage."""

    source: str
    num_bytes: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    #: The modality the bytes were decoded as.
    modality: str = ""
    #: ``"ranges"`` when only parts of a remote video were read (range requests),
    #: ``"full"`` when the whole file was.
    read_mode: str = "full"
    #: HTTP requests made in range mode (0 otherwise).
    range_requests: int = 0
    #: Why range reading gave way to a full download ("" when it did not).
    fallback: str = ""
    #: The remote file's size in range mode (``num_bytes`` is what was fetched of it).
    file_size: int | None = None
    #: Whether a ``MediaCache`` could serve these bytes (an http(s) load through a
    #: connector with a cache); ``cached`` says whether it did.
    cacheable: bool = False
    #: The error class of a failed load (``None`` when it succeeded).
    error_type: str | None = None
    #: Why it failed, a short word from a fixed set (``max_bytes``, ``address``,
    #: ``upstream_4xx``, ... see ``mediagate.on_load``), never text of the reference.
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the load succeeded."""
        return self.error_type is None


@dataclass(frozen=True)
class LoadedMedia:
    """What ``load_media`` returns: the modality chosen, the decoded media (what the
    matching ``fetch_*`` returns) and the load's report."""

    modality: str
    media: Any
    report: LoadReport


@dataclass(frozen=True)
class _Plan(Generic[_M]):
    """How one reference is decoded: the byte budget its fetch runs under and the
    ``MediaIO`` chosen for its bytes (known in advance, or picked from their content)."""

    limit: int
    pick: Callable[[SourceResult], MediaIO[_M]]
    #: The ``MediaIO``, when it is known before the bytes are.
    known: MediaIO[_M] | None = None


def _head(fetched: SourceResult) -> bytes:
    """The first bytes of what a source fetched (base64 text decoded as far as needed)."""
    if fetched.base64 is None:
        return bytes(fetched.data[:SNIFF_BYTES])
    text = fetched.base64[: SNIFF_BYTES // 3 * 4]
    try:
        return binascii.a2b_base64(text.encode("ascii"))
    except (ValueError, UnicodeError):
        return b""


class _CachedBlocks:
    """One file version's blocks in a ``MediaCache``, each under ``prefix`` + its number."""

    def __init__(self, cache: MediaCache, prefix: str) -> None:
        self._cache = cache
        self._prefix = prefix

    def get(self, index: int) -> bytes | None:
        return self._cache.get(f"{self._prefix} block:{index}")

    def put(self, index: int, data: bytes) -> None:
        self._cache.put(f"{self._prefix} block:{index}", data)


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
        max_in_flight: downloads in progress at once; further fetches wait their turn
            (``MediaPolicy.max_in_flight``, default 64).
        decoded_budget: a ``DecodedBudget`` shared by every item this connector decodes
            (one connector per request, as inference servers build them): each item
            reserves its decoded-output budget from it before decoding. Another
            library's budget with ``reserve``/``settle``/``charge`` (vLLM's
            ``MediaDecodedBudget``) is used through ``BorrowedBudget``.
        download_budget: an object whose ``charge(num_bytes)`` is called with the size of
            every download this connector makes (not cache hits, ``data:`` or ``file:``),
            and raises to refuse it (vLLM's ``MediaRequestDownloadBudget`` is one).

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
        max_in_flight: int | None = None,
        decoded_budget: DecodedBudget | None = None,
        download_budget: DownloadBudget | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, MediaPolicy):
            raise TypeError("policy must be a MediaPolicy")
        self.decoded_budget = as_decoded_budget(decoded_budget)
        if download_budget is not None and not callable(getattr(download_budget, "charge", None)):
            raise TypeError("download_budget must have a charge(num_bytes) method")
        self.download_budget = download_budget
        policy = policy if policy is not None else MediaPolicy()
        # The keywords are the compatible spelling of the policy's fields of those names.
        spelled: dict[str, Any] = {}
        if allowed_media_domains:
            spelled["allowed_media_domains"] = allowed_media_domains
        if allowed_local_media_path:
            spelled["allowed_local_media_path"] = allowed_local_media_path
        if max_in_flight is not None:
            spelled["max_in_flight"] = max_in_flight
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
        self._sources: dict[type, Any] = {}
        self._sources_lock = threading.Lock()
        self._connection_source = ConnectionSource(connection) if connection is not None else None
        self._cache_scope = self._judgement_scope()
        self._validate_server_defaults()

    def _judgement_scope(self) -> str:
        """A digest of every rule that decides what may be fetched, and from where: cache
        entries are filed under it, so an entry is served only to connectors that would
        have been allowed to fetch it themselves, through every hop it took."""
        policy = self.policy
        # The policy's repr hides storage settings; their values are hashed in here.
        storage = json.dumps(policy.storage_options, sort_keys=True, default=repr)
        rules = (
            policy.allow_private_networks,
            sorted(str(net) for net in policy.networks),
            policy.max_redirects,
            policy.proxy,
            policy.trust_proxy_dns,
            sorted(self.allowed_media_domains),
            self.connection is not None,
            policy.allowed_buckets,
            storage,
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

    def _taken_sources(self) -> list[Any]:
        with self._sources_lock:
            sources = list(self._sources.values())
            self._sources.clear()
        return sources

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Release what the sources hold (connection pools) and the worker pool."""
        for source in self._taken_sources():
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self._close_pool()

    async def aclose(self) -> None:
        """Release what the sources hold and the worker pool from async code."""
        for source in self._taken_sources():
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
            elif getattr(source, "close", None) is not None:
                source.close()
        self._close_pool()

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

    def _timeout(self, modality: str, fetch_timeout: float | None) -> float:
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
        return self.policy.timeout_for(modality)

    @staticmethod
    def _report(url: object, modality: str = "") -> LoadReport:
        """A new load's report: the one the public call in progress ends with."""
        return attach(LoadReport(source=_source_label(url), modality=modality), url)

    def _parse(self, url: str) -> ParsedURL:
        return parse_url(url, SOURCE_REGISTRY, max_length=self.policy.max_url_length)

    def _source(self, scheme: str) -> Any:
        """This connector's instance of the source registered for ``scheme``."""
        if self.connection is not None and scheme in ("http", "https"):
            return self._connection_source
        cls = SOURCE_REGISTRY.get(scheme)
        with self._sources_lock:
            source = self._sources.get(cls)
            if source is None:
                source = self._sources[cls] = cls()
        return source

    def _cache_for(self, source: Any) -> MediaCache | None:
        return self.cache if getattr(source, "cacheable", False) else None

    def _cache_key(self, ref: ParsedURL) -> str:
        return f"{ref.url} judged:{self._cache_scope}"

    @staticmethod
    def _checked(fetched: Any, limit: int) -> SourceResult:
        """A source's answer, held to the item's byte budget whatever the source did."""
        if isinstance(fetched, (bytes, bytearray, memoryview)):
            fetched = SourceResult(data=bytes(fetched))
        if (
            not isinstance(fetched, SourceResult)
            or not isinstance(fetched.data, (bytes, bytearray, memoryview))
            or not isinstance(fetched.base64, (str, type(None)))
        ):
            raise FetchError("the source returned something other than bytes")
        # Base64 text is measured from its length (exact once decoded, which the MediaIO
        # checks again): a padding's worth of slack.
        slack = 0 if fetched.base64 is None else 3
        if fetched.size > limit + slack:
            what = "the response" if fetched.base64 is None else "the base64 payload"
            raise TooLargeError.over_max_bytes(
                what, fetched.size, limit, estimate=fetched.base64 is not None
            )
        return fetched

    @staticmethod
    def _charge_download(source: Any, fetched: SourceResult, budget: DownloadBudget | None) -> None:
        """Count a download against the request's download budget."""
        if budget is None or getattr(source, "local", False):
            return
        MediaConnector._charge_bytes(fetched.size, budget)

    @staticmethod
    def _charge_bytes(size: int, budget: DownloadBudget) -> None:
        """Count ``size`` downloaded bytes against the request's download budget."""
        try:
            budget.charge(size)
        except MediaError:
            raise
        except Exception as exc:
            raise TooLargeError(
                f"the request's downloads are over its download budget ({exc})",
                limit="download_budget",
            ) from exc

    def _plan(self, media_io: MediaIO[_M]) -> _Plan[_M]:
        return _Plan(self._limit(media_io), lambda fetched: media_io, media_io)

    def _picked(self, plan: _Plan[_M], fetched: SourceResult) -> MediaIO[_M]:
        media_io = plan.pick(fetched)
        self._checked(fetched, self._limit(media_io))
        return media_io

    def _decode(self, plan: _Plan[_M], fetched: SourceResult, report: LoadReport) -> _M:
        media_io = self._picked(plan, fetched)
        report.modality = media_io.modality
        if fetched.base64 is not None:
            return media_io.load_base64(fetched.content_type or "", fetched.base64)
        return media_io.load_bytes(bytes(fetched.data))

    def _start(self, ref: ParsedURL) -> tuple[Any, MediaCache | None]:
        """The source of ``ref`` and the cache it may use, once its no-I/O rules pass."""
        source = self._source(ref.scheme)
        check = getattr(source, "check", None)
        if check is not None:
            check(ref, policy=self.policy)
        return source, self._cache_for(source)

    # -- the sync twin ------------------------------------------------------------------

    def _fetch(
        self, ref: ParsedURL, limit: int, timeout: float, budget: DownloadBudget | None
    ) -> tuple[SourceResult, bool]:
        """Rules -> cache -> source for one parsed reference: its bytes, held to ``limit``
        and charged to ``budget`` when downloaded, and whether the cache had them."""
        source, cache = self._start(ref)
        cached = cache.get(self._cache_key(ref)) if cache is not None else None
        if cached is not None:
            return SourceResult(data=cached), True
        with error_boundary(f"fetching the {ref.scheme} reference", default=FetchError):
            answer = source.fetch(ref, policy=self.policy, limit=limit, timeout=timeout)
        fetched = self._checked(answer, limit)
        self._charge_download(source, fetched, budget)
        return fetched, False

    def _store(self, ref: ParsedURL, fetched: SourceResult) -> None:
        """File bytes that decoded under ``ref`` in the cache, when its source caches."""
        cache = self._cache_for(self._source(ref.scheme))
        if cache is not None:
            cache.put(self._cache_key(ref), bytes(fetched.data))

    def _pipeline(self, ref: ParsedURL, plan: _Plan[_M], timeout: float, report: LoadReport) -> _M:
        """Rules -> cache -> source -> decode for one parsed reference."""
        if self._reads_by_position(ref, plan):
            return self._pipeline_ranged(ref, plan, timeout, report)
        start = time.perf_counter()
        fetched, cached = self._fetch(ref, plan.limit, timeout, self.download_budget)
        return self._decode_fetched(ref, plan, fetched, cached, start, report)

    def _decode_fetched(
        self,
        ref: ParsedURL,
        plan: _Plan[_M],
        fetched: SourceResult,
        cached: bool,
        start: float,
        report: LoadReport,
    ) -> _M:
        """Decode what was fetched for ``ref`` (since ``start``), report, and cache it."""
        report.cached = cached
        report.cacheable = self._cache_for(self._source(ref.scheme)) is not None
        report.num_bytes += fetched.size
        decode_start = time.perf_counter()
        report.stages["fetch"] = decode_start - start
        result = self._decode(plan, fetched, report)
        report.stages["decode"] = time.perf_counter() - decode_start
        if not cached:
            self._store(ref, fetched)
        return result

    # -- range reads ---------------------------------------------------------------------

    def _reads_by_position(self, ref: ParsedURL, plan: _Plan[Any]) -> bool:
        """Whether ``ref`` may be read through range requests: an http(s) reference
        through the guarded fetcher (no proxy), the policy's threshold set, and a
        ``MediaIO`` known in advance that decodes from part of a file."""
        policy = self.policy
        return (
            plan.known is not None
            and bool(getattr(plan.known, "reads_by_position", False))
            and ref.scheme in ("http", "https")
            and self.connection is None
            and policy.range_reads_above is not None
            and policy.proxy is None
        )

    def _pipeline_ranged(
        self, ref: ParsedURL, plan: _Plan[_M], timeout: float, report: LoadReport
    ) -> _M:
        """The pipeline of a reference read by position (blocking; the async twin runs
        it in the pool): cache -> the first request, which either is the whole download
        (a small file, or a server that ignores ranges) or opens a ``RemoteFile`` ->
        decode from it. A decode that needs the whole file falls back to a plain
        download within what is left of the deadline."""
        from ._fetch import InconsistentRanges, RangeOptions, open_ranged

        start = time.perf_counter()
        source, cache = self._start(ref)
        if cache is not None:
            hit = cache.get(self._cache_key(ref))
            if hit is not None:
                return self._decode_fetched(ref, plan, SourceResult(data=hit), True, start, report)
        policy = self.policy
        threshold = cast(int, policy.range_reads_above)
        options = RangeOptions(
            limit=plan.limit,
            max_requests=policy.max_range_requests,
            max_request_bytes=policy.max_range_request_bytes,
            threshold=threshold,
        )
        try:
            with error_boundary(f"fetching the {ref.scheme} reference", default=FetchError):
                opened = open_ranged(
                    source.fetcher(policy),
                    ref,
                    options=options,
                    timeout=timeout,
                    charge=self._download_charger(),
                    blocks=self._block_stores(ref, cache),
                )
        except InconsistentRanges as exc:
            report.fallback = str(exc)
            return self._download_instead(ref, plan, timeout, start, report)
        if not isinstance(opened, RemoteFile):
            fetched = self._checked(
                SourceResult(data=opened.data, content_type=opened.content_type, origin=opened.url),
                plan.limit,
            )
            return self._decode_fetched(ref, plan, fetched, False, start, report)
        media_io = cast(MediaIO[_M], plan.known)
        report.modality = media_io.modality
        report.cacheable = cache is not None
        report.read_mode = "ranges"
        report.file_size = opened.size
        decode_start = time.perf_counter()
        try:
            result = media_io.load_bytes(opened)  # type: ignore[arg-type]
        except RangeReadUnsupported as exc:
            report.fallback = str(exc)
        else:
            if isinstance(result, MediaWithBytes):
                result.original_bytes = opened.fingerprint()
            opened.save()  # the blocks of a decode that succeeded, for later loads
            return result
        finally:
            report.range_requests = opened.requests
            report.num_bytes = opened.fetched
            report.stages["fetch"] = decode_start - start
            report.stages["decode"] = time.perf_counter() - decode_start
            opened.close()
        report.read_mode = "full"
        return self._download_instead(ref, plan, timeout, start, report)

    def _download_instead(
        self, ref: ParsedURL, plan: _Plan[_M], timeout: float, start: float, report: LoadReport
    ) -> _M:
        """The plain download and decode of ``ref``, in what is left of ``timeout``."""
        message = f"fetching the media took longer than timeout={timeout:g} s (MediaPolicy.timeout)"
        left = timeout - (time.perf_counter() - start)
        if left <= 0:
            raise FetchTimeout(message)
        try:
            fetched, cached = self._fetch(ref, plan.limit, left, self.download_budget)
        except FetchTimeout as exc:
            # The download ran out of what was left: the deadline is the whole timeout.
            raise FetchTimeout(message) from exc
        return self._decode_fetched(ref, plan, fetched, cached, start, report)

    def _download_charger(self) -> Callable[[int], None]:
        """Charges bytes received to the request's download budget, as ``_charge_download``."""
        budget = self.download_budget

        def charge(size: int) -> None:
            if budget is not None:
                self._charge_bytes(size, budget)

        return charge

    def _block_stores(
        self, ref: ParsedURL, cache: MediaCache | None
    ) -> Callable[[int, tuple[str | None, str | None], str], Any] | None:
        """The cache's store for the blocks of one version of ``ref`` (a file whose server
        names its version by a strong ``ETag`` or a ``Last-Modified``), if caching."""
        if cache is None:
            return None
        key = self._cache_key(ref)

        def store(size: int, validators: tuple[str | None, str | None], url: str) -> Any:
            etag, modified = validators
            if etag is not None and etag.startswith("W/"):
                etag = None
            if etag is None and modified is None:
                return None
            return _CachedBlocks(cache, f"{key} size:{size} etag:{etag} modified:{modified}")

        return store

    @_entry
    def load_with_report(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> tuple[_M, LoadReport]:
        """``load_from_url`` plus a report of the source, byte count and stage times."""
        report = self._report(url, media_io.modality)
        ref = self._parse(url)
        report.source = ref.scheme
        timeout = self._timeout(media_io.modality, fetch_timeout)
        return self._pipeline(ref, self._plan(media_io), timeout, report), report

    @_entry
    def load_from_url(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> _M:
        """Load ``url`` (http, https, data, file or a registered source's scheme) and
        decode it with ``media_io``.

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

    @_entry_async
    async def load_from_url_async(
        self, url: str, media_io: MediaIO[_M], *, fetch_timeout: float | None = None
    ) -> _M:
        """The async twin of ``load_from_url``: never blocks the running event loop."""
        report = self._report(url, media_io.modality)
        ref = self._parse(url)
        report.source = ref.scheme
        timeout = self._timeout(media_io.modality, fetch_timeout)
        return await self._run_async(ref, self._plan(media_io), timeout, report)

    async def _run_async(
        self, ref: ParsedURL, plan: _Plan[_M], timeout: float, report: LoadReport
    ) -> _M:
        """Run the pipeline of ``ref`` without blocking the caller's loop."""
        source = self._source(ref.scheme)
        if getattr(source, "fetch_async", None) is None:
            # A blocking source: the whole pipeline runs in one worker-pool hop.
            result: _M = await self._in_pool(self._pipeline, ref, plan, timeout, report)
            return result
        pipeline = self._pipeline_async(ref, plan, timeout, report)
        if getattr(source, "runs_on_fetch_loop", False):
            return await run_on_fetch_loop(pipeline)
        return await pipeline

    async def _fetch_async(
        self, ref: ParsedURL, limit: int, timeout: float, budget: DownloadBudget | None
    ) -> tuple[SourceResult, bool]:
        """The async ``_fetch``, for a source with ``fetch_async``; cache reads in the pool."""
        source, cache = self._start(ref)
        key = self._cache_key(ref) if cache is not None else ""
        cached = await self._in_pool(cache.get, key) if cache is not None else None
        if cached is not None:
            return SourceResult(data=cached), True
        with error_boundary(f"fetching the {ref.scheme} reference", default=FetchError):
            answer = await source.fetch_async(ref, policy=self.policy, limit=limit, timeout=timeout)
        fetched = self._checked(answer, limit)
        self._charge_download(source, fetched, budget)
        return fetched, False

    async def _fetch_anywhere(
        self, ref: ParsedURL, limit: int, timeout: float, budget: DownloadBudget | None
    ) -> tuple[SourceResult, bool]:
        """``_fetch`` awaited from any loop: a blocking source in the pool, the guarded
        fetcher on the fetch loop, any other async source here."""
        source = self._source(ref.scheme)
        if getattr(source, "fetch_async", None) is None:
            return await self._in_pool(self._fetch, ref, limit, timeout, budget)
        fetch = self._fetch_async(ref, limit, timeout, budget)
        if getattr(source, "runs_on_fetch_loop", False):
            return await run_on_fetch_loop(fetch)
        return await fetch

    async def _pipeline_async(
        self, ref: ParsedURL, plan: _Plan[_M], timeout: float, report: LoadReport
    ) -> _M:
        """The async ``_pipeline``: the same steps, awaited; blocking steps in the pool."""
        if self._reads_by_position(ref, plan):
            # Every read is a blocking request from the decoder's thread.
            ranged: _M = await self._in_pool(self._pipeline_ranged, ref, plan, timeout, report)
            return ranged
        start = time.perf_counter()
        fetched, cached = await self._fetch_async(ref, plan.limit, timeout, self.download_budget)
        report.cached = cached
        report.cacheable = self._cache_for(self._source(ref.scheme)) is not None
        report.num_bytes += fetched.size
        decode_start = time.perf_counter()
        report.stages["fetch"] = decode_start - start
        result: _M = await self._in_pool(self._decode, plan, fetched, report)
        report.stages["decode"] = time.perf_counter() - decode_start
        if not cached and self._cache_for(self._source(ref.scheme)) is not None:
            await self._in_pool(self._store, ref, fetched)
        return result

    # -- any modality -------------------------------------------------------------------

    def _auto_plan(
        self,
        ref: ParsedURL,
        modality: str,
        media_io_kwargs: Mapping[str, Any] | None,
        video_processor: str | None = None,
    ) -> tuple[_Plan[Any], float]:
        """The plan (and fetch deadline) of a reference whose modality is ``modality``, or
        picked from its content for ``"auto"``: fetched under the budget of the modality
        its name suggests (the largest one when it suggests none), decoded as the
        modality its first bytes show, and held to that modality's budget."""
        if media_io_kwargs is not None and not isinstance(media_io_kwargs, Mapping):
            raise OptionError(
                "media_io_kwargs must map a modality to its options", option="media_io_kwargs"
            )
        options = dict(media_io_kwargs or {})
        if modality != "auto":
            name = modality_name(modality)
            media_io = self.media_io(name, options.get(name), video_processor=video_processor)
            return self._plan(media_io), self.policy.timeout_for(name)
        for key in options:
            modality_name(key)
        named = reference_modality(ref.url)
        candidates = [named] if named is not None else list(MODALITIES)
        limit = max(self.policy.max_bytes_for(name) for name in candidates)
        timeout = max(self.policy.timeout_for(name) for name in candidates)

        def pick(fetched: SourceResult) -> MediaIO[Any]:
            name = guess_modality(ref.url, _head(fetched))
            return self.media_io(name, options.get(name), video_processor=video_processor)

        return _Plan(limit, pick), timeout

    @_entry
    def load_media(
        self,
        url: str,
        modality: str = "auto",
        *,
        media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        fetch_timeout: float | None = None,
    ) -> LoadedMedia:
        """Load ``url`` as ``modality``, or as what its content is (``"auto"``: the first
        bytes decide, then a ``data:`` media type or the file extension, see
        ``guess_modality``). ``media_io_kwargs`` are this request's options by modality.

        Raises: as ``load_from_url``, plus ``OptionError`` for an unknown modality or a
            bad option.
        """
        report = self._report(url)
        ref = self._parse(url)
        report.source = ref.scheme
        plan, timeout = self._auto_plan(ref, modality, media_io_kwargs)
        report.modality = plan.known.modality if plan.known is not None else ""
        timeout = self._timeout("", fetch_timeout) if fetch_timeout is not None else timeout
        media = self._pipeline(ref, plan, timeout, report)
        return LoadedMedia(report.modality, media, report)

    @_entry_async
    async def load_media_async(
        self,
        url: str,
        modality: str = "auto",
        *,
        media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        fetch_timeout: float | None = None,
    ) -> LoadedMedia:
        """The async twin of ``load_media``."""
        report = self._report(url)
        ref = self._parse(url)
        report.source = ref.scheme
        plan, timeout = self._auto_plan(ref, modality, media_io_kwargs)
        report.modality = plan.known.modality if plan.known is not None else ""
        timeout = self._timeout("", fetch_timeout) if fetch_timeout is not None else timeout
        media = await self._run_async(ref, plan, timeout, report)
        return LoadedMedia(report.modality, media, report)

    # -- per-modality helpers -----------------------------------------------------------

    def media_io(
        self,
        modality: str,
        media_io_kwargs: Mapping[str, Any] | None = None,
        *,
        video_processor: str | None = None,
    ) -> MediaIO[Any]:
        """The ``MediaIO`` for ``modality``, with the server defaults merged under
        ``media_io_kwargs`` (this request's options), this connector's policy and its
        request budget; ``image-embedding`` and ``image_embedding`` are the same name.
        ``video_processor`` is as in ``fetch_video``.

        Raises:
            OptionError: an unknown modality, or a bad option.
        """
        name = modality_name(modality)
        if name == "image":
            return self._image_io(..., media_io_kwargs)
        if name == "audio":
            io: MediaIO[Any] = self._audio_io(media_io_kwargs)
        elif name == "video":
            io = self._video_io(..., media_io_kwargs, video_processor)
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
        self, image_mode: str | EllipsisType | None = ..., request: Mapping[str, Any] | None = None
    ) -> ImageMediaIO:
        """The image ``MediaIO``: ``image_mode`` when the caller names one, else the
        server's default mode, else RGB; this request's options over both."""
        options = ImageMediaIO.merge_kwargs(
            self.media_io_kwargs.get("image"), _request_options("image", request)
        )
        if not isinstance(image_mode, EllipsisType):
            options["image_mode"] = image_mode
        return self._budgeted(ImageMediaIO(policy=self.policy, **options))

    def _video_io(
        self,
        image_mode: str | EllipsisType | None = ...,
        request: Mapping[str, Any] | None = None,
        video_processor: str | None = None,
    ) -> Any:
        from ._media.video.io import VideoMediaIO

        options = VideoMediaIO.merge_kwargs(
            self.media_io_kwargs.get("video"), _request_options("video", request)
        )
        backend = self._video_backend(options.get("video_backend"), video_processor)
        if backend is not None:
            options["video_backend"] = backend
        # Frames are RGB arrays whatever the image settings; ``image_mode`` is accepted
        # for the signature vLLM calls.
        return self._budgeted(VideoMediaIO(self._image_io("RGB"), policy=self.policy, **options))

    def _video_backend(self, named: Any, video_processor: str | None) -> Any:
        """The video backend: the one the options name, else the sampler the model's
        video processor expects its frames from, else ``None`` (the default)."""
        if named is not None:
            return named
        from ._media.video.registry import backend_for_video_processor

        return backend_for_video_processor(video_processor)

    def _audio_io(self, request: Mapping[str, Any] | None = None) -> Any:
        from ._media.audio import AudioMediaIO

        return self._budgeted(AudioMediaIO(policy=self.policy, **self._options("audio", request)))

    def _embedding_io(self, modality: str, request: Mapping[str, Any] | None = None) -> Any:
        from ._media import embedding

        cls = {
            "image_embedding": embedding.ImageEmbeddingMediaIO,
            "audio_embedding": embedding.AudioEmbeddingMediaIO,
            "video_embedding": embedding.VideoEmbeddingMediaIO,
        }[modality]
        return self._budgeted(cls(policy=self.policy, **self._options(modality, request)))

    @_entry
    def fetch_image(
        self,
        image_url: str,
        *,
        image_mode: str | EllipsisType | None = ...,
        media_io_kwargs: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[Image.Image]:
        """Load an image; ``media_io_kwargs`` are this request's image options.

        ``image_mode`` (a Pillow mode, or ``None`` to keep each image's own) wins when
        given; left out, the server's ``media_io_kwargs["image"]["image_mode"]`` applies,
        else RGB.

        Raises: as ``load_from_url``, plus ``OptionError`` for bad options.
        """
        return self.load_from_url(image_url, self._image_io(image_mode, media_io_kwargs))

    @_entry_async
    async def fetch_image_async(
        self,
        image_url: str,
        *,
        image_mode: str | EllipsisType | None = ...,
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

    def _video_or_audiovisual_io(
        self,
        image_mode: str | EllipsisType | None,
        media_io_kwargs: Mapping[str, Any] | None,
        video_processor: str | None,
        with_audio: bool,
        audio_kwargs: Mapping[str, Any] | None,
    ) -> Any:
        io = self._video_io(image_mode, media_io_kwargs, video_processor)
        if with_audio is not True and with_audio is not False:
            raise OptionError("with_audio must be True or False", option="with_audio")
        if not with_audio:
            if audio_kwargs is not None:
                raise OptionError("audio_kwargs need with_audio=True", option="audio_kwargs")
            return io
        from ._media.audiovisual import VideoAudioMediaIO

        return self._budgeted(VideoAudioMediaIO(io, self._audio_io(audio_kwargs)))

    @_entry
    def fetch_video(
        self,
        video_url: str,
        *,
        image_mode: str | EllipsisType | None = ...,
        video_processor: str | None = None,
        media_io_kwargs: Mapping[str, Any] | None = None,
        with_audio: bool = False,
        audio_kwargs: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[Any]:
        """Load sampled video frames ``[N, H, W, 3]`` and their metadata, with the
        container bytes (``frames, metadata = result`` unpacks it).

        ``video_processor`` names the model's video processor (its class name): the
        backend ``VIDEO_PROCESSOR_BACKENDS`` maps it to, or one registered under that
        name, samples the frames unless the server set a ``video_backend``.
        Frames are always RGB; ``image_mode`` is accepted and has no effect.

        ``with_audio=True`` decodes the clip's audio track from the same download too
        (``audio_kwargs`` are its audio options, e.g. ``{"sample_rate": 16000}``) and
        returns ``frames, metadata, audio, sample_rate`` (a ``VideoWithAudio``; audio
        ``None`` for a silent clip); ``metadata["audio_offset"]`` places the audio on the
        frames' time axis.

        Raises: as ``load_from_url``, plus ``OptionError`` for bad options.
        """
        io = self._video_or_audiovisual_io(
            image_mode, media_io_kwargs, video_processor, with_audio, audio_kwargs
        )
        result: MediaWithBytes[Any] = self.load_from_url(video_url, io)
        return result

    @_entry_async
    async def fetch_video_async(
        self,
        video_url: str,
        *,
        image_mode: str | EllipsisType | None = ...,
        video_processor: str | None = None,
        media_io_kwargs: Mapping[str, Any] | None = None,
        with_audio: bool = False,
        audio_kwargs: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[Any]:
        """The async twin of ``fetch_video``."""
        io = self._video_or_audiovisual_io(
            image_mode, media_io_kwargs, video_processor, with_audio, audio_kwargs
        )
        result: MediaWithBytes[Any] = await self.load_from_url_async(video_url, io)
        return result

    @staticmethod
    def _embedding_report(modality: str, data: object) -> LoadReport:
        """The report of an inline embedding (its size: what its base64 decodes to)."""
        size = SourceResult(data=b"", base64=data).size if isinstance(data, str) else 0
        return attach(LoadReport(source="inline", num_bytes=size, modality=modality), data)

    def _embedding(
        self, modality: str, data: str, report: LoadReport | None = None
    ) -> torch.Tensor:
        report = report if report is not None else self._embedding_report(modality, data)
        start = time.perf_counter()
        result: torch.Tensor = self._embedding_io(modality).load_base64("", data)
        report.stages["decode"] = time.perf_counter() - start
        return result

    @_entry
    def fetch_image_embedding(self, data: str) -> torch.Tensor:
        """Decode a base64 image embedding tensor."""
        return self._embedding("image_embedding", data)

    @_entry_async
    async def fetch_image_embedding_async(self, data: str) -> torch.Tensor:
        """The async twin of ``fetch_image_embedding``."""
        report = self._embedding_report("image_embedding", data)
        result: torch.Tensor = await self._in_pool(self._embedding, "image_embedding", data, report)
        return result

    @_entry
    def fetch_audio_embedding(self, data: str) -> torch.Tensor:
        """Decode a base64 audio embedding tensor."""
        return self._embedding("audio_embedding", data)

    @_entry_async
    async def fetch_audio_embedding_async(self, data: str) -> torch.Tensor:
        """The async twin of ``fetch_audio_embedding``."""
        report = self._embedding_report("audio_embedding", data)
        result: torch.Tensor = await self._in_pool(self._embedding, "audio_embedding", data, report)
        return result

    @_entry
    def fetch_video_embedding(self, data: str) -> torch.Tensor:
        """Decode a base64 video embedding tensor."""
        return self._embedding("video_embedding", data)

    @_entry_async
    async def fetch_video_embedding_async(self, data: str) -> torch.Tensor:
        """The async twin of ``fetch_video_embedding``."""
        report = self._embedding_report("video_embedding", data)
        result: torch.Tensor = await self._in_pool(self._embedding, "video_embedding", data, report)
        return result
