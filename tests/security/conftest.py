"""Loopback servers, a fake resolver and guards for the security suite.

Everything here listens on or talks to loopback only. ``RawServer`` is an asyncio HTTP
server on its own thread whose per-path behaviour a test sets (a normal answer, a
redirect, an endless or trickled body, silence, raw bytes); it counts accepted
connections and requests so a test can assert that a refused target saw nothing.

Nothing here is autouse: modules opt in with ``pytestmark = pytest.mark.usefixtures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from mediagate import MediaConnector, MediaError, MediaPolicy

#: Longest any server-side loop may run; tests are far shorter.
SERVER_LOOP_LIMIT = 15.0

# An object address as reprs show it ("at 0x7f..."), not a size such as 30000x30000.
_ADDRESS_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])0x[0-9a-fA-F]{4,}")


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[SeenRequest, asyncio.StreamWriter, "RawServer"], Awaitable[bool]]


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reply(
    body: bytes = b"",
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (),
    *,
    content_length: int | None = None,
    close: bool = False,
) -> Handler:
    """Answer with ``body``; ``content_length`` may lie about its size."""

    async def handle(req: SeenRequest, writer: asyncio.StreamWriter, srv: RawServer) -> bool:
        length = len(body) if content_length is None else content_length
        extra = [("Connection", "close")] if close else []
        writer.write(_head(status, [("Content-Length", str(length)), *headers, *extra]) + body)
        await writer.drain()
        return not close

    return handle


def redirect(location: str, status: int = 302, headers: Sequence[tuple[str, str]] = ()) -> Handler:
    return reply(b"", status, [("Location", location), *headers])


def endless(chunk: bytes = b"\0" * 65536, *, chunked: bool = True) -> Handler:
    """Send ``chunk`` forever (chunked, or with no length until close)."""

    async def handle(req: SeenRequest, writer: asyncio.StreamWriter, srv: RawServer) -> bool:
        headers = [("Transfer-Encoding", "chunked")] if chunked else [("Connection", "close")]
        writer.write(_head(200, headers))
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
        deadline = time.monotonic() + SERVER_LOOP_LIMIT
        while time.monotonic() < deadline and not srv.stopping:
            writer.write(framed)
            srv.bytes_sent += len(chunk)
            await writer.drain()
        return False

    return handle


def trickle(interval: float, total: int = 10_000) -> Handler:
    """Declare ``total`` bytes and send one byte every ``interval`` seconds."""

    async def handle(req: SeenRequest, writer: asyncio.StreamWriter, srv: RawServer) -> bool:
        writer.write(_head(200, [("Content-Length", str(total))]))
        await writer.drain()
        for _ in range(min(total, int(SERVER_LOOP_LIMIT / interval))):
            if srv.stopping:
                break
            await asyncio.sleep(interval)
            writer.write(b"\0")
            await writer.drain()
        return False

    return handle


def silent() -> Handler:
    """Read the request and never answer."""

    async def handle(req: SeenRequest, writer: asyncio.StreamWriter, srv: RawServer) -> bool:
        await srv.wait_stopping(SERVER_LOOP_LIMIT)
        return False

    return handle


def raw(data: bytes) -> Handler:
    """Write ``data`` as the whole answer, then close."""

    async def handle(req: SeenRequest, writer: asyncio.StreamWriter, srv: RawServer) -> bool:
        writer.write(data)
        await writer.drain()
        return False

    return handle


def gzip_bomb(size: int, *, layers: int = 1) -> bytes:
    """``size`` zero bytes, gzipped ``layers`` times."""
    data = gzip.compress(b"\0" * size, compresslevel=9)
    for _ in range(layers - 1):
        data = gzip.compress(data, compresslevel=9)
    return data


class RawServer:
    """An HTTP/1.1 server on a loopback address, run by an asyncio loop on its own thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Handler] = {}
        self.requests: list[SeenRequest] = []
        self.connections = 0
        self.bytes_sent = 0
        self.stopping = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._stop_event: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._main, args=(ready,), name="security-loopback-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(5) or self._server is None:
            raise RuntimeError("the loopback server did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    # -- the server loop -----------------------------------------------------------------

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._stop_event = asyncio.Event()
            self._server = await asyncio.start_server(
                self._serve, self.host, 0, backlog=128, limit=1 << 16
            )

        self._loop.run_until_complete(start())
        ready.set()
        self._loop.run_forever()

    async def wait_stopping(self, limit: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), limit)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            for _ in range(1000):  # requests per connection, bounded
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SERVER_LOOP_LIMIT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                except asyncio.TimeoutError:
                    return
                req = self._parse(head)
                self.requests.append(req)
                handler = self.routes.get(req.path, reply(b"not found", 404))
                keep = await handler(req, writer, self)
                if not keep or req.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    @staticmethod
    def _parse(head: bytes) -> SeenRequest:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.rsplit(" ", 1)[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        return SeenRequest(method, path, headers)

    # -- what tests use ------------------------------------------------------------------

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "/", host: str | None = None) -> str:
        if host is None:
            return f"http://{self.authority}{path}"
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def count(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r.path == path)

    def stop(self) -> None:
        async def shutdown() -> None:
            self.stopping = True
            assert self._stop_event is not None and self._server is not None
            self._stop_event.set()
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


@pytest.fixture
def http_server() -> Iterator[RawServer]:
    """A fresh server on 127.0.0.1 with no routes (unknown paths answer 404)."""
    srv = RawServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., RawServer]]:
    """``start_server(host="127.0.0.1")``: more servers, all stopped at teardown."""
    started: list[RawServer] = []

    def start(host: str = "127.0.0.1") -> RawServer:
        srv = RawServer(host)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def respond() -> SimpleNamespace:
    """The handler factories (``respond.reply(body)``, ``respond.redirect(url)``, ...)."""
    return SimpleNamespace(
        reply=reply,
        redirect=redirect,
        endless=endless,
        trickle=trickle,
        silent=silent,
        raw=raw,
        head=_head,
        gzip_bomb=gzip_bomb,
    )


@pytest.fixture
def http_server_v6() -> Iterator[RawServer]:
    """A fresh server on ::1 (skips where the host has no IPv6 loopback)."""
    try:
        srv = RawServer("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# Resolution and connection guards


class FakeDNS:
    """Answers ``socket.getaddrinfo`` for test names; anything else fails to resolve.

    ``set(name, [first answers], [second answers], ...)``: each lookup of ``name`` takes
    the next answer list; the last one repeats.
    """

    def __init__(self, real: Callable[..., Any]) -> None:
        self._real = real
        self._answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def set(self, name: str, *answers: Sequence[str]) -> None:
        self._answers[name.lower()] = [list(a) for a in answers]

    def lookups(self, name: str) -> int:
        return sum(1 for c in self.calls if c == name.lower())

    def getaddrinfo(
        self,
        host: str | bytes | None,
        port: str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else (host or "")
        self.calls.append(name.lower())
        queue = self._answers.get(name.lower().rstrip("."))
        if queue is None:
            try:
                literal = ipaddress.ip_address(name)
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "unknown test name") from None
            if not literal.is_loopback:
                raise socket.gaierror(socket.EAI_NONAME, "non-loopback literal in tests")
            return list(self._real(host, port, family, type, proto, flags))
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        out: list[tuple[Any, ...]] = []
        for addr in answer:
            ip = ipaddress.ip_address(addr)
            portnum = int(port or 0)
            if ip.version == 4:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, portnum)))
            else:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, portnum, 0, 0)))
        return out


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


@dataclass
class ConnectGuard:
    """Every outgoing connect, and those refused for leaving loopback."""

    attempts: list[Any] = field(default_factory=list)
    blocked: list[Any] = field(default_factory=list)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectGuard]:
    """Refuse (and record) any socket connect to a non-loopback address."""
    guard = ConnectGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        guard.attempts.append(address)
        try:
            ok = ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except (ValueError, TypeError, IndexError):
            ok = isinstance(address, (str, bytes))  # unix sockets stay local
        if not ok:
            guard.blocked.append(address)
        return ok

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "blocked by the test guard")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            return errno.ECONNREFUSED
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield guard
    assert guard.blocked == [], f"a test tried to leave loopback: {guard.blocked}"


# ---------------------------------------------------------------------------
# Connectors and the invariants every refused input must keep


@pytest.fixture
def make_connector() -> Iterator[Callable[..., MediaConnector]]:
    """``make_connector(policy=..., **connector_kwargs)``; all closed at teardown."""
    made: list[MediaConnector] = []

    def make(policy: MediaPolicy | None = None, **kwargs: Any) -> MediaConnector:
        conn = MediaConnector(policy=policy or MediaPolicy(timeout=2), **kwargs)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


def assert_clean_error(err: BaseException, *secrets: str | bytes) -> None:
    """The error is a ``MediaError`` whose text names no payload, address or secret."""
    assert isinstance(err, MediaError), f"not a MediaError: {type(err).__name__}"
    text = str(err)
    assert text, "an error without a message"
    assert not _ADDRESS_IN_TEXT.search(text), f"an object address in {text!r}"
    assert "<" not in text or " at 0x" not in text
    for secret in secrets:
        shown = secret.decode("latin-1") if isinstance(secret, bytes) else secret
        if len(shown) < 4:
            continue  # too short to tell a leak from a coincidence
        assert shown not in text, f"{shown!r} leaked into {text!r}"


@pytest.fixture
def clean_error() -> Callable[..., None]:
    """The ``assert_clean_error`` check, for test modules."""
    return assert_clean_error
