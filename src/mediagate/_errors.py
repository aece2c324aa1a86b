"""The errors mediagate raises, each carrying the HTTP status a server should answer.

::

    MediaError                      base; .http_status, .url
    ├── PolicyError(ValueError)     refused before any I/O (403, or 400 for a malformed reference)
    │   └── LocalMediaDisabledError(RuntimeError)
    │                               a file: URL while no allowed local folder is configured
    ├── OptionError(ValueError)     an unknown key or a bad value in media_io_kwargs (400)
    ├── TooLargeError(ValueError)   a byte, pixel, frame, duration or tensor limit (413)
    ├── FetchError(ConnectionError) upstream status or network failure (502; 422 for an
    │                               upstream 4xx other than 408/429)
    │   └── FetchTimeout(TimeoutError)
    │                               the total deadline passed (504)
    └── DecodeError(ValueError)     not decodable (422) or an unsupported format (415)

Anything else raised while parsing, fetching, decoding or converting untrusted input is
translated at one boundary (``error_boundary``): ``MemoryError`` becomes ``TooLargeError``,
everything else ``DecodeError`` (or the class the caller names), with the original chained
as ``__cause__`` and logged at debug level on the ``mediagate`` logger, never shown.

Builtin parents are there so code that already catches ``ValueError`` or
``ConnectionError`` keeps working. Messages say what went wrong and which limit or
option to change; they never carry payload bytes, object reprs or resolved addresses.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

__all__ = [
    "DecodeError",
    "FetchError",
    "FetchTimeout",
    "LocalMediaDisabledError",
    "MediaError",
    "OptionError",
    "PolicyError",
    "TooLargeError",
    "as_media_error",
    "error_boundary",
]

logger = logging.getLogger("mediagate")


class MediaError(Exception):
    """Base of every error mediagate raises on purpose."""

    http_status: int = 500

    #: Where in a request the offending reference is (``messages[0].content[1].image_url.url``),
    #: set by the request resolver; ``None`` for a single reference.
    param: str | None = None

    def __init__(self, message: str, *, url: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.url = url
        if http_status is not None:
            self.http_status = http_status

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructor arguments do not survive the default pickling.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[MediaError], message: str, state: dict[str, object]) -> MediaError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class PolicyError(MediaError, ValueError):
    """The reference was refused by policy before any I/O."""

    http_status = 403


class LocalMediaDisabledError(PolicyError, RuntimeError):
    """A ``file:`` URL arrived but no allowed local media folder is configured."""


class OptionError(MediaError, ValueError):
    """An unknown option, or an option value of the wrong type or range."""

    http_status = 400

    def __init__(self, message: str, *, option: str, url: str | None = None):
        super().__init__(message, url=url)
        self.option = option


class TooLargeError(MediaError, ValueError):
    """A byte, pixel, frame, duration or tensor limit was exceeded."""

    http_status = 413

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        value: float | None = None,
        maximum: float | None = None,
        url: str | None = None,
    ):
        super().__init__(message, url=url)
        self.limit = limit
        self.value = value
        self.maximum = maximum

    @classmethod
    def over_max_bytes(cls, what: str, size: int, limit: int, *, estimate: bool = False) -> Self:
        """The error for ``what`` of ``size`` bytes (or about that many) over ``limit``."""
        amount = f"about {size}" if estimate else str(size)
        return cls(
            f"{what} is {amount} bytes, over max_bytes={limit} "
            f"(raise MediaPolicy.max_bytes to allow it)",
            limit="max_bytes",
            value=size,
            maximum=limit,
        )


#: Upstream 4xx answers that say "not now" rather than "not this": a timeout (408) or
#: rate limiting (429) is a failed fetch the client may retry (502), not a bad reference.
TRANSIENT_UPSTREAM = frozenset({408, 429})


class FetchError(MediaError, ConnectionError):
    """The upstream answered with an error status, or the network failed."""

    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        url: str | None = None,
        http_status: int | None = None,
    ):
        if (
            http_status is None
            and upstream_status is not None
            and 400 <= upstream_status < 500
            and upstream_status not in TRANSIENT_UPSTREAM
        ):
            http_status = 422
        super().__init__(message, url=url, http_status=http_status)
        self.upstream_status = upstream_status


class FetchTimeout(FetchError, TimeoutError):
    """The total deadline for a fetch passed."""

    http_status = 504


class DecodeError(MediaError, ValueError):
    """The bytes are not decodable media, or the format is not supported."""

    http_status = 422


class RangeReadUnsupported(DecodeError):
    """The media cannot be decoded from part of a remote file (it needs a linear read, or
    the server does not serve ranges consistently): the whole file is read instead. The
    connector handles it; it reaches a caller only from a decoder used directly."""


def as_media_error(
    exc: BaseException, what: str, *, default: type[MediaError] = DecodeError
) -> MediaError:
    """The ``MediaError`` that stands for ``exc`` raised while handling ``what``.

    A ``MediaError`` is returned as it is; ``MemoryError`` becomes ``TooLargeError``;
    anything else a ``default`` (``DecodeError`` unless told) whose message names
    ``what`` and nothing of the original exception.
    """
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, MemoryError):
        return TooLargeError(
            f"{what} needs more memory than this server allows (lower the request's size "
            "or raise MediaPolicy.max_decoded_bytes)",
            limit="memory",
        )
    if default is DecodeError:
        return DecodeError(f"{what} could not be decoded (corrupt, truncated or unsupported)")
    return default(f"{what} failed")


@contextlib.contextmanager
def error_boundary(what: str, *, default: type[MediaError] = DecodeError) -> Iterator[None]:
    """Translate anything but a ``MediaError`` raised in the block (see ``as_media_error``).

    ``BaseException``s that are not ``Exception``s (cancellation, interrupts, exit) and
    ``ImportError`` (a missing optional dependency is the server's fault, not the
    input's) pass through unchanged.
    """
    try:
        yield
    except (MediaError, ImportError):
        raise
    except Exception as exc:
        error = as_media_error(exc, what, default=default)
        logger.debug(
            "%s: %s translated to %s", what, type(exc).__name__, type(error).__name__, exc_info=exc
        )
        raise error from exc
