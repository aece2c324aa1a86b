"""Object storage: ``s3://bucket/key`` and ``gs://bucket/key`` through fsspec.

Rules come first and do no I/O: the bucket (``scheme://bucket``) must be in
``MediaPolicy.allowed_buckets`` (none is by default) and the key must be a plain,
non-empty object name. Credentials and endpoints come only from
``MediaPolicy.storage_options[scheme]``, never from the reference. Then the object is
stat'ed and refused when it is larger than the byte budget before any of its body is
read; the body is read in ranged chunks against the total deadline.

``s3fs`` and ``gcsfs`` are imported when the first reference of their scheme is
fetched (``pip install 'mediagate[s3]'`` / ``'mediagate[gcs]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

from .._errors import FetchError, FetchTimeout, PolicyError, TooLargeError
from .base import SourceResult

#: Imported here so that a missing ``fsspec`` makes the registry name the extra to install.
fsspec: Any = importlib.import_module("fsspec")
fsspec_async: Any = importlib.import_module("fsspec.asyn")

if TYPE_CHECKING:
    from .._policy import MediaPolicy
    from .._urls import ParsedURL

__all__ = ["CHUNK_BYTES", "ObjectStoreSource", "object_location"]

#: Bytes asked for in one ranged read.
CHUNK_BYTES = 8 * 1024 * 1024

#: The fsspec protocol and the ``mediagate[...]`` extra of each scheme.
_PROTOCOLS: dict[str, tuple[str, str]] = {"s3": ("s3", "s3"), "gs": ("gcs", "gcs")}

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]")
#: Characters that fsspec filesystems read as a version or generation suffix, or that
#: are never part of a well-formed object name.
_UNSAFE_KEY = re.compile(r"[\x00-\x1f\x7f?#\\]")

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "401", "Forbidden"}
)
_TIMEOUT_NAMES = frozenset(
    {"ConnectTimeoutError", "ReadTimeoutError", "ServerTimeoutError", "TimeoutError"}
)


def object_location(ref: ParsedURL, policy: MediaPolicy) -> tuple[str, str]:
    """The ``(bucket, key)`` that ``ref`` names, once the policy allows it (no I/O).

    Raises:
        PolicyError: the bucket is not in ``allowed_buckets`` (403), or the bucket name or
            key is malformed (400).
    """
    bucket = ref.host
    if f"{ref.scheme}://{bucket}" not in policy.allowed_buckets:
        raise PolicyError(
            f"the {ref.scheme} bucket is not in MediaPolicy.allowed_buckets", url=ref.url
        )
    if not _BUCKET.fullmatch(bucket):
        raise PolicyError(f"the {ref.scheme} bucket name is malformed", http_status=400)
    raw = ref.path[1:] if ref.path.startswith("/") else ref.path
    key = unquote(raw)
    if not key or key.endswith("/"):
        raise PolicyError(f"the {ref.scheme} reference names no object", http_status=400)
    segments = key.split("/")
    if any(part in ("", ".", "..") for part in segments) or _UNSAFE_KEY.search(key):
        raise PolicyError(
            f"the {ref.scheme} object key has empty, '.' or '..' segments or unsafe characters",
            http_status=400,
        )
    return bucket, key


def _codes(exc: BaseException) -> set[str]:
    """Error codes and statuses found on ``exc`` and the exceptions it was raised from."""
    found: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found.add(type(current).__name__)
        for attr in ("code", "status", "status_code"):
            value = getattr(current, attr, None)
            if isinstance(value, (int, str)):
                found.add(str(value))
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            error = response.get("Error", {})
            if isinstance(error, Mapping) and error.get("Code") is not None:
                found.add(str(error["Code"]))
        current = current.__cause__ or current.__context__
    return found


def _translated(exc: Exception, scheme: str) -> FetchError:
    """The ``FetchError`` that stands for a storage client's ``exc`` (no details shown)."""
    codes = _codes(exc)
    if isinstance(exc, FileNotFoundError) or codes & _NOT_FOUND_CODES:
        return FetchError(f"the {scheme} object or bucket does not exist", upstream_status=404)
    if isinstance(exc, PermissionError) or codes & _DENIED_CODES:
        return FetchError(f"access to the {scheme} object was denied", upstream_status=403)
    if isinstance(exc, TimeoutError) or codes & _TIMEOUT_NAMES:
        return FetchTimeout(f"reading the {scheme} object took longer than the deadline")
    return FetchError(f"reading the {scheme} object failed")


@contextlib.contextmanager
def _storage_errors(scheme: str) -> Iterator[None]:
    try:
        yield
    except (FetchError, TooLargeError, PolicyError, ImportError):
        raise
    except Exception as exc:
        raise _translated(exc, scheme) from exc


def _options_key(options: Mapping[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=lambda value: f"{type(value)}:{value!r}")


class _Deadline:
    """One total deadline over every call a fetch makes to the storage client."""

    def __init__(self, timeout: float, scheme: str) -> None:
        self._end = time.monotonic() + timeout
        self._scheme = scheme

    def _expired(self) -> FetchTimeout:
        return FetchTimeout(f"reading the {self._scheme} object took longer than the deadline")

    def call(self, fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """``fs.method(*args, **kwargs)`` cut off at the deadline.

        The client's own timeouts bound each socket read, not a whole transfer (a body
        sent a byte at a time never trips them), so an async filesystem's coroutine is
        run with what is left of the deadline and cancelled when it passes.
        """
        remaining = self._end - time.monotonic()
        if remaining <= 0:
            raise self._expired()
        if not getattr(fs, "async_impl", False):
            return getattr(fs, method)(*args, **kwargs)
        try:
            return fsspec_async.sync(
                fs.loop, getattr(fs, "_" + method), *args, timeout=remaining, **kwargs
            )
        except TimeoutError as exc:
            raise self._expired() from exc


class ObjectStoreSource:
    """Serves ``s3://`` and ``gs://`` references under ``MediaPolicy`` bucket rules.

    One filesystem instance is kept per scheme, storage options and timeout, so
    policies with different endpoints or credentials never share a client.

    Example::

        policy = MediaPolicy(allowed_buckets=["s3://media-in"],
                             storage_options={"s3": {"endpoint_url": url}})
        image = MediaConnector(policy=policy).fetch_image("s3://media-in/cat.png")
    """

    cacheable: ClassVar[bool] = True

    def __init__(self) -> None:
        self._filesystems: dict[tuple[str, str, float], Any] = {}
        self._lock = threading.Lock()

    def check(self, ref: ParsedURL, *, policy: MediaPolicy) -> None:
        """Refuse a bucket the policy does not allow, or a malformed key (no I/O).

        Raises:
            PolicyError: as ``object_location``.
        """
        object_location(ref, policy)

    def fetch(
        self, ref: ParsedURL, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        """Read ``ref``'s object within ``limit`` bytes and ``timeout`` seconds.

        Raises:
            PolicyError: the bucket is not allowed, or the key is malformed (no I/O done).
            TooLargeError: the object is larger than ``limit`` (its body is not read).
            FetchTimeout: the deadline passed.
            FetchError: the object or bucket is missing (upstream 404), access was denied
                (upstream 403), or the transfer failed.
        """
        bucket, key = object_location(ref, policy)
        if ref.scheme not in _PROTOCOLS:
            raise PolicyError(f"the {ref.scheme} scheme is not object storage", http_status=400)
        deadline = _Deadline(timeout, ref.scheme)
        fs = self._filesystem(ref.scheme, policy.storage_options.get(ref.scheme, {}), timeout)
        path = f"{bucket}/{key}"
        with _storage_errors(ref.scheme):
            info = deadline.call(fs, "info", path)
            if info.get("type") == "directory":
                raise FetchError(
                    f"the {ref.scheme} object or bucket does not exist", upstream_status=404
                )
            size = info.get("size")
            if isinstance(size, int) and size > limit:
                raise TooLargeError.over_max_bytes("the object", size, limit)
            data = self._read(fs, path, size if isinstance(size, int) else None, limit, deadline)
        return SourceResult(data=data, origin=f"{ref.scheme}://{bucket}/{key}")

    def _read(self, fs: Any, path: str, size: int | None, limit: int, deadline: _Deadline) -> bytes:
        end = limit + 1 if size is None else size
        chunks: list[bytes] = []
        received = 0
        while received < end:
            want = min(CHUNK_BYTES, end - received)
            chunk = deadline.call(fs, "cat_file", path, start=received, end=received + want)
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                raise TooLargeError.over_max_bytes("the object", received, limit, estimate=True)
            if len(chunk) < want:
                break
        if size is not None and received != size:
            raise FetchError("the object changed while it was read")
        return b"".join(chunks)

    def _filesystem(self, scheme: str, options: Mapping[str, Any], timeout: float) -> Any:
        key = (scheme, _options_key(options), timeout)
        with self._lock:
            fs = self._filesystems.get(key)
            if fs is None:
                fs = self._filesystems[key] = _make_filesystem(scheme, options, timeout)
        return fs


#: The filesystem class of each scheme. For gs, gcsfs's core JSON-API filesystem: its
#: package-level default adds gRPC clients that look up a bucket's storage layout, which
#: reading objects does not need.
_FILESYSTEMS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "S3FileSystem"),
    "gs": ("gcsfs.core", "GCSFileSystem"),
}


def _make_filesystem(scheme: str, options: Mapping[str, Any], timeout: float) -> Any:
    _, extra = _PROTOCOLS[scheme]
    module_name, class_name = _FILESYSTEMS[scheme]
    try:
        filesystem_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise ImportError(f"{scheme}:// references need pip install 'mediagate[{extra}]'") from exc
    settings = dict(options)
    if scheme == "s3":
        config = dict(settings.pop("config_kwargs", None) or {})
        config.setdefault("connect_timeout", timeout)
        config.setdefault("read_timeout", timeout)
        config.setdefault("retries", {"max_attempts": 1})
        settings["config_kwargs"] = config
    else:
        settings.setdefault("requests_timeout", timeout)
    with _storage_errors(scheme):
        fs = filesystem_class(skip_instance_cache=True, use_listings_cache=False, **settings)
    if scheme == "s3":
        # One attempt per call: the deadline, not s3fs's backoff, bounds a fetch.
        fs.retries = 1
    return fs
