"""What every load tells the outside: hooks (``on_load``) and one log line.

Each public load (``fetch_*``, ``load_*``, ``load_with_report``, ``load_media``, their
async twins, and each part of a request the resolver loads) ends in exactly one
``LoadReport`` handed to every registered hook and described by one record on the
``mediagate.load`` logger: DEBUG for a load that succeeded, WARNING for one that was
refused or failed. The connector's entry boundary and the request resolver are the only
callers; nothing here imports them.

Labels that metric systems group by stay bounded: ``error_type`` is a class name,
``reason`` comes from a small fixed vocabulary (``failure_reason``), and the reference
is shown only through ``shown_reference`` (no ``data:`` payload, no userinfo, no query).

Cost when nobody listens: ``observing()`` is one tuple check and one cached
``Logger.isEnabledFor``; a success is formatted only when DEBUG is on for
``mediagate.load``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import (
    FetchError,
    FetchTimeout,
    LocalMediaDisabledError,
    MediaError,
    OptionError,
    PolicyError,
    TooLargeError,
)

if TYPE_CHECKING:
    from ._connector import LoadReport

__all__ = [
    "LoadHook",
    "begin_load",
    "end_load",
    "failure_reason",
    "observing",
    "on_load",
    "report_load",
    "shown_reference",
]

logger = logging.getLogger("mediagate.load")
# The library never prints: without a handler of the application's, records stop here
# instead of reaching logging's last-resort stderr handler.
logging.getLogger("mediagate").addHandler(logging.NullHandler())

#: What ``on_load`` takes: called with the report of every load, in the loading thread.
LoadHook = Callable[["LoadReport"], object]


class _Hook:
    """One registration (the same function registered twice is called twice)."""

    __slots__ = ("fn", "warned")

    def __init__(self, fn: LoadHook) -> None:
        self.fn = fn
        self.warned = False


_hooks: tuple[_Hook, ...] = ()
_hooks_lock = threading.Lock()


def on_load(fn: LoadHook) -> Callable[[], None]:
    """Call ``fn(report)`` once at the end of every load, successful or not.

    ``report`` is the load's ``LoadReport``; on failure ``report.error_type`` names the
    error class and ``report.reason`` why (a short fixed word such as ``max_bytes``,
    ``address``, ``upstream_4xx``), never the reference. A hook that raises is logged
    once at WARNING on ``mediagate.load`` and the load goes on.

    Returns:
        A function that unregisters ``fn`` (calling it again does nothing).

    Raises:
        TypeError: ``fn`` is not callable.

    Example::

        stop = mediagate.on_load(lambda report: print(report.modality, report.num_bytes))
        connector.fetch_image(url)
        stop()
    """
    global _hooks
    if not callable(fn):
        raise TypeError("on_load needs a callable taking a LoadReport")
    hook = _Hook(fn)
    with _hooks_lock:
        _hooks = (*_hooks, hook)

    def unregister() -> None:
        global _hooks
        with _hooks_lock:
            _hooks = tuple(h for h in _hooks if h is not hook)

    return unregister


def observing() -> bool:
    """Whether a finished load has anywhere to go (a hook, or a WARNING record)."""
    return bool(_hooks) or logger.isEnabledFor(logging.WARNING)


# -- the load in progress -----------------------------------------------------------------


@dataclass
class _Load:
    """The outermost public call in progress in this context and the report it made."""

    token: contextvars.Token[_Load | None] | None = None
    report: LoadReport | None = None
    reference: object = None


_current: contextvars.ContextVar[_Load | None] = contextvars.ContextVar(
    "mediagate_load", default=None
)


def begin_load() -> _Load | None:
    """Start observing a load, or ``None`` when nobody listens or a public call further
    out already observes this one (``fetch_image`` calls ``load_from_url``)."""
    if not observing() or _current.get() is not None:
        return None
    load = _Load()
    load.token = _current.set(load)
    return load


def attach(report: LoadReport, reference: object) -> LoadReport:
    """Make ``report`` the one the load in progress ends with (the first one wins)."""
    load = _current.get()
    if load is not None and load.report is None:
        load.report = report
        load.reference = reference
    return report


def end_load(
    load: _Load,
    error: BaseException | None,
    fallback: Callable[[], LoadReport],
    reference: object = None,
) -> None:
    """Finish ``load``: its report (``fallback()`` when it failed before making one)
    gets the error's class and reason and goes to the hooks and the log."""
    if load.token is not None:
        _current.reset(load.token)
        load.token = None
    report = load.report if load.report is not None else fallback()
    report_load(report, error, load.reference if load.report is not None else reference)


def report_load(report: LoadReport, error: BaseException | None, reference: object) -> None:
    """Hand one finished load to the hooks and the log (see the module docstring)."""
    if error is not None:
        report.error_type, report.reason = failure_reason(error)
    _log(report, error, reference)
    for hook in _hooks:
        try:
            hook.fn(report)
        except Exception:
            if not hook.warned:
                hook.warned = True
                logger.warning(
                    "a load hook (%s) raised; the load went on and later errors of this "
                    "hook are not logged",
                    getattr(hook.fn, "__qualname__", type(hook.fn).__name__),
                    exc_info=True,
                )


# -- reasons --------------------------------------------------------------------------------

_LIMIT_WORD = re.compile(r"[a-z][a-z0-9_]{0,39}")

#: Words in a ``PolicyError`` message and the reason they stand for, first match wins.
_POLICY_REASONS: tuple[tuple[str, str], ...] = (
    ("credentials", "credentials"),
    ("allowed_media_domains", "domain"),
    ("resolves to", "address"),
    ("redirect", "redirect"),
    ("scheme", "scheme"),
    ("allowed_local_media_path", "local_path"),
    ("allowed_buckets", "bucket"),
    ("max_url_length", "url_length"),
    ("file_id", "file_id"),
    ("no file with the id", "file_id"),
    ("file lookup", "file_id"),
)


def failure_reason(error: BaseException) -> tuple[str, str]:
    """The error class and the reason of a failed load, for metric labels and logs.

    The reason is a short word from a fixed set, never text of the input:

    - ``TooLargeError``: the limit it names (``max_bytes``, ``max_pixels``, ...);
    - ``PolicyError``: ``address``, ``domain``, ``scheme``, ``credentials``,
      ``redirect``, ``local_path``, ``local_media_disabled``, ``bucket``,
      ``url_length``, ``file_id``, else ``malformed`` (a 400) or ``refused``;
    - ``FetchError``: ``timeout``, ``upstream_4xx``/``upstream_5xx``/..., ``redirects``,
      ``dns`` or ``network``;
    - ``DecodeError``: ``unsupported`` (415) or ``undecodable``;
    - ``OptionError``: ``option``; a missing optional dependency: ``missing_extra``;
      cancellation: ``cancelled``; anything else: ``internal``.
    """
    name = type(error).__name__
    if isinstance(error, TooLargeError):
        limit = getattr(error, "limit", "")
        return name, limit if isinstance(limit, str) and _LIMIT_WORD.fullmatch(limit) else "limit"
    if isinstance(error, LocalMediaDisabledError):
        return name, "local_media_disabled"
    if isinstance(error, PolicyError):
        text = str(error.message)
        for word, reason in _POLICY_REASONS:
            if word in text:
                return name, reason
        if "file" in text or "path" in text:
            return name, "local_path"
        return name, "malformed" if error.http_status == 400 else "refused"
    if isinstance(error, FetchTimeout):
        return name, "timeout"
    if isinstance(error, FetchError):
        status = error.upstream_status
        if isinstance(status, int) and 100 <= status < 600:
            return name, f"upstream_{status // 100}xx"
        text = str(error.message)
        if "max_redirects" in text:
            return name, "redirects"
        if "could not be resolved" in text:
            return name, "dns"
        return name, "network"
    if isinstance(error, OptionError):
        return name, "option"
    if isinstance(error, MediaError):
        # DecodeError and any other MediaError a source or decoder defines.
        return name, "unsupported" if error.http_status == 415 else "undecodable"
    if isinstance(error, ImportError):
        return name, "missing_extra"
    if not isinstance(error, Exception):
        return name, "cancelled"
    return name, "internal"


# -- the log line ---------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN_LENGTH = 100


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"%{ord(m.group()):02X}", text)


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text)


def _capped(text: str, length: int = _SHOWN_LENGTH) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def shown_reference(url: object) -> str:
    """A media reference as logs and terminals may show it.

    A ``data:`` URL keeps its media type and loses its payload; credentials
    (``user:pass@``) are dropped; a query or fragment is trimmed to ``?...``; control
    characters and spaces are percent-escaped (no forged log lines); the result is at
    most 100 characters. Text that is not a URL (a base64 tensor) is shown only by its
    length.
    """
    if not isinstance(url, str):
        return "<not a string>"
    scheme = _SCHEME.match(url)
    if scheme is None:
        return f"<{len(url)} chars>"
    if scheme.group(1).lower() == "data":
        # Only the head is looked at: a payload can be many megabytes, never copied.
        comma = url.find(",", 0, 1024)
        end = comma if comma >= 0 else min(len(url), 1024)
        payload = len(url) - end - (1 if comma >= 0 else 0)
        return f"{_capped(_printable(url[:end]), 60)},<{payload} chars>"
    rest = url[scheme.end() : scheme.end() + 2 * _SHOWN_LENGTH + 1024]
    slashes = "//" if rest.startswith("//") else ""
    rest = rest[len(slashes) :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    before, trimmed = rest[:cut], cut < len(rest)
    authority, slash, path = before.partition("/")
    if slashes:
        authority = authority.rpartition("@")[2]
    elif "@" in before:
        # ``http:user:pass@host`` with no slashes: drop everything before the last ``@``.
        authority, slash, path = before.rpartition("@")[2], "", ""
    shown = f"{scheme.group(1)}:{slashes}{authority}{slash}{path}"
    return _capped(_printable(shown) + ("?..." if trimmed else ""))


def _ms(report: LoadReport, stage: str) -> float | None:
    seconds = report.stages.get(stage)
    return None if seconds is None else round(seconds * 1e3, 3)


def _log(report: LoadReport, error: BaseException | None, reference: object) -> None:
    if error is None:
        level = logging.DEBUG
    elif isinstance(error, Exception):
        level = logging.WARNING
    else:
        level = logging.DEBUG  # cancelled or interrupted: not the input's fault
    if not logger.isEnabledFor(level):
        return
    shown = shown_reference(reference) if reference is not None else f"<{report.source}>"
    fetch_ms, decode_ms = _ms(report, "fetch"), _ms(report, "decode")
    fields = {
        "reference": shown,
        "modality": report.modality,
        "source": report.source,
        "num_bytes": report.num_bytes,
        "fetch_ms": fetch_ms,
        "decode_ms": decode_ms,
        "cached": report.cached,
        "error_type": report.error_type,
        "reason": report.reason,
    }
    what = report.modality or "media"
    if error is None:
        logger.debug(
            "loaded %s from %s (%s): %d bytes, fetch %.1f ms, decode %.1f ms%s",
            what,
            shown,
            report.source,
            report.num_bytes,
            fetch_ms or 0.0,
            decode_ms or 0.0,
            ", cached" if report.cached else "",
            extra=fields,
        )
        return
    refused = isinstance(error, (PolicyError, TooLargeError, OptionError))
    message = error.message if isinstance(error, MediaError) else ""
    logger.log(
        level,
        "%s %s from %s (%s): %s (%s)%s",
        "refused" if refused else "failed to load",
        what,
        shown,
        report.source,
        report.error_type,
        report.reason,
        f": {_capped(_one_line(message), 300)}" if message else "",
        extra=fields,
    )
