"""Media and servers built in code for the tests (no downloads, no fixture files)."""

from __future__ import annotations

import base64
import http.server
import io
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


def gradient(width: int, height: int) -> np.ndarray:
    """An RGB image whose pixels differ enough that orientation errors show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * 7 + y * 3) % 256],
        axis=-1,
    ).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, **params: Any) -> bytes:
    return encode(Image.fromarray(gradient(width, height)), "JPEG", quality=95, **params)


def png_bytes(image: Image.Image | None = None) -> bytes:
    return encode(image if image is not None else Image.fromarray(gradient(40, 30)), "PNG")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@dataclass
class Route:
    """What the loopback server answers on one path."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class LoopbackServer:
    """A 127.0.0.1 HTTP server whose routes tests set, counting requests per path."""

    base: str
    routes: dict[str, Route]
    requests: list[tuple[str, dict[str, str]]]
    stop: Callable[[], None]

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str | None = None) -> int:
        return sum(1 for p, _ in self.requests if path is None or p == path)


def start_loopback_server() -> LoopbackServer:
    routes: dict[str, Route] = {}
    requests: list[tuple[str, dict[str, str]]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                requests.append((self.path, dict(self.headers.items())))
            route = routes.get(self.path, Route(b"not found", 404))
            if route.delay:
                time.sleep(route.delay)
            self.send_response(route.status)
            headers = {"Content-Length": str(len(route.body)), **route.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # Clients that stop reading (a refused oversized body) are expected here.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return LoopbackServer(f"http://127.0.0.1:{server.server_address[1]}", routes, requests, stop)
