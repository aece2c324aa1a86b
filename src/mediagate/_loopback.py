"""A threaded HTTP server on 127.0.0.1, for the demo, the test suite and the benchmarks.

Each path answers with a :class:`Route` (a body, a status, extra headers, a delay);
paths without one go to an optional ``fallback`` and otherwise answer 404. The server
logs every request (path and headers), gauges how many are being answered at once, and
stays quiet: no access log, and clients that hang up early raise nothing.

Nothing in ``import mediagate`` imports this module.
"""

from __future__ import annotations

import http.server
import mimetypes
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, cast

__all__ = ["Gauge", "LoopbackServer", "Request", "Route", "folder_routes"]


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering.
    delay: float = 0.0


_NOT_FOUND = Route(b"not found", 404)


class Request(NamedTuple):
    """One request as the server read it."""

    path: str
    headers: dict[str, str]


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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = cast(_Server, self.server).owner
        route = owner._take(self.path, dict(self.headers.items()))
        self.send_response(route.status)
        for key, value in {"Content-Length": str(len(route.body)), **route.headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 stalls bursts of clients
    daemon_threads = True

    def __init__(self, owner: LoopbackServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stops reading (an oversized body it refused) is no error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 (a free port), serving from the moment it is made.

    ``routes`` maps a request path (query included) to its :class:`Route` and may be
    changed while the server runs; ``fallback(path)`` answers the paths it lacks (``None``
    for 404). Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        *,
        fallback: Callable[[str], Route | None] | None = None,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.fallback = fallback
        self.requests: list[Request] = []
        self.gauge = Gauge()
        self._lock = threading.Lock()
        self._httpd = _Server(self)
        self.port: int = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
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
        with self._lock:
            return sum(1 for request in self.requests if path is None or request.path == path)

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

    def _take(self, path: str, headers: dict[str, str]) -> Route:
        """Log one request, wait out its route's delay under the gauge, return the route."""
        with self._lock:
            self.requests.append(Request(path, headers))
        route = self.routes.get(path)
        if route is None and self.fallback is not None:
            route = self.fallback(path)
        route = route or _NOT_FOUND
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
