"""A small OpenAI-compatible upstream for the proxy tests: it records every request it
receives and answers with a canned completion (streamed as SSE when asked)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

#: The pieces a streamed answer is sent in, each as one SSE event.
STREAM_PIECES = ("Hel", "lo", " there", "!")


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunk(model: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": text} if text is not None else {}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _response(model: str) -> dict[str, Any]:
    return {
        "id": "resp-1",
        "object": "response",
        "created_at": 1,
        "model": model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg-1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello there!", "annotations": []}],
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
    }


def sse_body(model: str) -> bytes:
    """The exact bytes of the streamed answer."""
    events = [_chunk(model, piece) for piece in STREAM_PIECES]
    events.append(_chunk(model, None, "stop"))
    out = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    return out + b"data: [DONE]\n\n"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", "recording")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.owner.record(Received("GET", self.path, dict(self.headers), b""))
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
        self._answer(200, body.encode(), "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, 256 * 1024 * 1024))
        self.server.owner.record(Received("POST", self.path, dict(self.headers), body))
        request = json.loads(body)
        model = request.get("model", "m")
        if self.path.startswith("/v1/responses"):
            self._answer(200, json.dumps(_response(model)).encode(), "application/json")
            return
        if not request.get("stream"):
            self._answer(200, json.dumps(_completion(model)).encode(), "application/json")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in sse_body(model).split(b"\n\n")[:-1]:
            event += b"\n\n"
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
            time.sleep(self.server.owner.chunk_delay)
        self.wfile.write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: RecordingUpstream) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class RecordingUpstream:
    """The upstream on 127.0.0.1 (a free port); ``received`` lists what it was sent."""

    def __init__(self, *, chunk_delay: float = 0.0) -> None:
        self.received: list[Received] = []
        self.chunk_delay = chunk_delay
        self._lock = threading.Lock()
        self._httpd = _Server(self)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def last(self) -> Any:
        assert self.received, "the upstream received nothing"
        return self.received[-1].json()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RecordingUpstream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
