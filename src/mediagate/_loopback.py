"""A threaded HTTP server on 127.0.0.1, for the demo, the test suite and the benchmarks.

Each path answers with a :class:`Route`: a body, a status, extra headers, a delay, and
optionally byte ranges (``ranges=True``: 206 / 416 answers to ``Range: bytes=...``), a
paced body (``rate``, bytes per second) or a script (``respond``) that builds the answer
to the nth request on that path, for servers that change their answers as they go.
Paths without a route go to an optional ``fallback`` and otherwise answer 404. GET and
HEAD are served. The server logs every request (method, path and headers), gauges how
many are being answered at once, and stays quiet: no access log, and clients that hang
up early raise nothing.

Nothing in ``import mediagate`` imports this module.
"""

from __future__ import annotations

import http.server
import mimetypes
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

__all__ = [
    "Gauge",
    "LoopbackServer",
    "Request",
    "Route",
    "folder_routes",
    "range_answer",
]

#: What a route sends: bytes, or a view of them (a 206 answer is a view of the body).
Body = bytes | memoryview


@dataclass(frozen=True)
class Request:
    """One request as the server read it.

    It unpacks as ``path, headers``. ``headers`` keep the client's spelling of the
    names; :meth:`header` looks one up whatever its case.
    """

    path: str
    headers: dict[str, str]
    method: str = "GET"

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None when the client sent none."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def range(self) -> str | None:
        """The ``Range`` header, or None."""
        return self.header("Range")

    def __iter__(self) -> Iterator[Any]:
        return iter((self.path, self.headers))


@dataclass
class Route:
    """What the server answers on one path.

    ``ranges=True`` serves ``body`` as a file that answers byte ranges (see
    :func:`range_answer`), with ``etag`` and ``last_modified`` as its validators.
    ``rate`` paces the body at that many bytes per second (per answer). ``respond``
    makes the route a script: ``respond(request, nth)`` returns the route that answers
    the ``nth`` request (0-based, HEAD included) on this path, itself served with its
    own ``ranges``, ``rate`` and ``delay``; this route's other fields are then unused.

    A ``Content-Length`` in ``headers`` replaces the body's length; when the body does
    not match it, the connection is closed after the body, so the client sees a short
    (or long) read rather than a stalled one.
    """

    body: Body = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering.
    delay: float = 0.0
    ranges: bool = False
    #: Bytes per second the body is sent at; None sends it as fast as the socket takes.
    rate: float | None = None
    etag: str | None = None
    last_modified: str | None = None
    respond: Callable[[Request, int], Route] | None = None


_NOT_FOUND = Route(b"not found", 404)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _span(range_header: str, total: int) -> tuple[int, int] | Literal[False] | None:
    """The inclusive ``(first, last)`` byte span ``range_header`` asks of ``total``
    bytes; False when it is unsatisfiable; None when it is to be ignored (malformed,
    several ranges, or a unit other than bytes)."""
    match = _RANGE.match(range_header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # bytes=-n: the last n bytes
        suffix = int(last)
        if suffix == 0 or total == 0:
            return False
        return max(total - suffix, 0), total - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= total:
        return False
    return start, min(int(last), total - 1) if last else total - 1


def range_answer(
    body: Body,
    range_header: str | None,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    if_range: str | None = None,
    total: int | None = None,
    headers: Mapping[str, str] | None = None,
    rate: float | None = None,
) -> Route:
    """The answer of a server that serves ``body`` in byte ranges, to ``range_header``.

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` get 206 with the span and ``Content-Range:
    bytes a-b/total``; a range that starts past the end (or ``-0``) gets 416 with
    ``Content-Range: bytes */total``; no header, a malformed one, several ranges, or an
    ``if_range`` (the request's ``If-Range``) that is not ``etag`` or ``last_modified``
    get 200 with the whole body. Every answer has ``Accept-Ranges: bytes`` and the
    validators given.

    Args:
        body: The whole file.
        range_header: The request's ``Range`` header, or None.
        etag: Sent as ``ETag``.
        last_modified: Sent as ``Last-Modified``.
        if_range: The request's ``If-Range`` header, or None.
        total: The size to state in ``Content-Range`` (default: the body's, which spans
            are always cut from); a lying server states another.
        headers: More headers (``Content-Type``, say), under the ones above.
        rate: As on :class:`Route`.

    Returns:
        The route to serve (``ranges`` off: it is the answer already).
    """
    size = len(body)
    stated = size if total is None else total
    sent = {**(headers or {}), "Accept-Ranges": "bytes"}
    if etag is not None:
        sent["ETag"] = etag
    if last_modified is not None:
        sent["Last-Modified"] = last_modified
    if range_header is None or (if_range is not None and if_range not in (etag, last_modified)):
        return Route(body, 200, sent, rate=rate)
    span = _span(range_header, size)
    if span is None:
        return Route(body, 200, sent, rate=rate)
    if span is False:
        return Route(b"", 416, {**sent, "Content-Range": f"bytes */{stated}"})
    first, last = span
    view = memoryview(body)[first : last + 1]
    return Route(view, 206, {**sent, "Content-Range": f"bytes {first}-{last}/{stated}"}, rate=rate)


class Gauge:
    """How many requests are in progress now, and the most that ever were at once.

    A request is in progress from the moment its head has been read until its answer
    starts, its route's delay included.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        """Count one more request in progress."""
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        """Count one request fewer in progress."""
        with self._lock:
            self.current -= 1


#: The most bytes written at once to a paced body, and the fewest.
_PACE_MAX, _PACE_MIN = 256 * 1024, 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        owner = cast(_Server, self.server).owner
        route = owner._take(Request(self.path, dict(self.headers.items()), self.command))
        headers = {"Content-Length": str(len(route.body)), **route.headers}
        self.send_response(route.status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if headers["Content-Length"] != str(len(route.body)):
            self.close_connection = True
        if not send_body:
            return
        try:
            self._write(route.body, route.rate)
        except ConnectionError:
            self.close_connection = True
            owner._hung_up()

    def _write(self, body: Body, rate: float | None) -> None:
        """Send ``body``, at ``rate`` bytes per second on average when one is set."""
        if not rate:
            self.wfile.write(body)
            return
        view = memoryview(body)
        chunk = int(min(max(rate / 50, _PACE_MIN), _PACE_MAX))  # about 20 ms a chunk
        start = time.perf_counter()
        for offset in range(0, len(view), chunk):
            piece = view[offset : offset + chunk]
            # Each piece leaves once its bytes are earned: no more than ``rate * t``
            # bytes have been sent ``t`` seconds in.
            ahead = start + (offset + len(piece)) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            self.wfile.write(piece)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 stalls bursts of clients
    daemon_threads = True

    def __init__(self, owner: LoopbackServer, host: str) -> None:
        self.owner = owner
        super().__init__((host, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (an oversized body it refused) is no error here.
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            self.owner.errors.append(repr(error))
            super().handle_error(request, client_address)


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 (a free port), serving from the moment it is made;
    ``host`` binds it to another loopback address (``127.0.0.2``, say) instead.

    ``routes`` maps a request path (query included) to its :class:`Route` and may be
    changed while the server runs; ``fallback(path)`` answers the paths it lacks (``None``
    for 404). ``requests`` logs every request, ``hung_up`` counts answers whose client
    left before the body was sent, and ``errors`` lists anything else that went wrong
    in a handler. Use it as a context manager, or call :meth:`stop`.

    Example::

        with LoopbackServer({"/clip.mp4": Route(data, ranges=True, rate=50e6)}) as server:
            url = server.url("/clip.mp4")
    """

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        *,
        fallback: Callable[[str], Route | None] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.fallback = fallback
        self.requests: list[Request] = []
        self.gauge = Gauge()
        self.hung_up = 0
        self.errors: list[str] = []
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = _Server(self, host)
        self.port: int = self._httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="mediagate-loopback", daemon=True)
        self._thread.start()
        self._stopped = False

    def _serve(self) -> None:
        # A short poll, so stop() returns at once rather than after half a second.
        self._httpd.serve_forever(poll_interval=0.05)

    def url(self, path: str) -> str:
        """The URL of ``path`` (which starts with ``/``) on this server."""
        return self.base + path

    def count(self, path: str | None = None) -> int:
        """How many requests were made for ``path`` (for any path when ``None``)."""
        return len(self.requests_for(path))

    def requests_for(self, path: str | None = None) -> list[Request]:
        """The requests made for ``path`` (for any path when ``None``), in order."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def stop(self) -> None:
        """Stop serving and close the socket; calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _hung_up(self) -> None:
        with self._lock:
            self.hung_up += 1

    def _take(self, request: Request) -> Route:
        """Log one request, build its answer, wait out the answer's delay under the
        gauge, and return the answer."""
        with self._lock:
            self.requests.append(request)
            nth = self._seen[request.path]
            self._seen[request.path] += 1
        route = self.routes.get(request.path)
        if route is None and self.fallback is not None:
            route = self.fallback(request.path)
        route = route or _NOT_FOUND
        if route.respond is not None:
            route = route.respond(request, nth)
        if route.ranges:
            delay = route.delay
            route = range_answer(
                route.body,
                request.range if request.method == "GET" else None,
                etag=route.etag,
                last_modified=route.last_modified,
                if_range=request.header("If-Range"),
                headers=route.headers,
                rate=route.rate,
            )
            route = replace(route, delay=delay)
        else:
            validators = {"ETag": route.etag, "Last-Modified": route.last_modified}
            if any(validators.values()):
                extra = {k: v for k, v in validators.items() if v is not None}
                route = replace(route, headers={**extra, **route.headers})
        self.gauge.enter()
        try:
            if route.delay:
                time.sleep(route.delay)
        finally:
            self.gauge.leave()
        return route


def folder_routes(folder: Path) -> dict[str, Route]:
    """A route per file under ``folder`` (``/name``, ``/sub/name``), typed by its suffix."""
    routes: dict[str, Route] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            routes["/" + path.relative_to(folder).as_posix()] = Route(
                path.read_bytes(), headers={"Content-Type": media_type}
            )
    return routes
