"""A moto S3 server on loopback that records every request it receives.

The WSGI app is moto's own; a thin middleware in front of it counts requests and the
body bytes sent back, and answers ``403 AccessDenied`` for the buckets named in
``denied`` (moto does not check credentials unless IAM authentication is switched on
for the whole process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

ACCESS_KEY = "AKIAMEDIAGATETEST"
SECRET_KEY = "mediagate-test-secret-value"
REGION = "us-east-1"

_DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


@dataclass
class Request:
    """One request the server answered."""

    method: str
    path: str
    status: str = ""
    body_bytes: int = 0


@dataclass
class RecordingS3Server:
    """moto's S3 on ``127.0.0.1`` with an ephemeral port and a request log."""

    denied: set[str] = field(default_factory=set)
    #: Buckets whose answers are sent one byte every ``drip_interval`` seconds.
    dripping: set[str] = field(default_factory=set)
    drip_interval: float = 0.2
    requests: list[Request] = field(default_factory=list)
    _server: BaseWSGIServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", 0, self._recording(app), threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_to(self, bucket: str) -> list[Request]:
        """The requests whose path names ``bucket`` (path-style addressing)."""
        with self._lock:
            return [r for r in self.requests if r.path.strip("/").split("/")[0] == bucket]

    def _recording(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            request = Request(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
            with self._lock:
                self.requests.append(request)

            def recording_start(status: str, headers: list[Any], *args: Any) -> Any:
                request.status = status
                return start_response(status, headers, *args)

            bucket = request.path.strip("/").split("/")[0]
            if bucket in self.denied:
                recording_start(
                    "403 Forbidden",
                    [
                        ("Content-Type", "application/xml"),
                        ("Content-Length", str(len(_DENIED_BODY))),
                    ],
                )
                if request.method == "HEAD":
                    return []
                request.body_bytes = len(_DENIED_BODY)
                return [_DENIED_BODY]
            body = self._counted(app(environ, recording_start), request)
            if bucket in self.dripping and request.method == "GET":
                return self._dripped(body)
            return body

        return middleware

    def _dripped(self, body: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in body:
            for index in range(len(chunk)):
                time.sleep(self.drip_interval)
                yield chunk[index : index + 1]

    @staticmethod
    def _counted(body: Iterable[bytes], request: Request) -> Iterator[bytes]:
        try:
            for chunk in body:
                request.body_bytes += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
