"""B5: targets fetched through a configured proxy are judged like direct ones.

A tiny forward proxy runs on loopback: it reads absolute-form request lines, counts
them, and relays each to a loopback upstream chosen by the target's host name (its own
"DNS"), so no name ever has to resolve to a routable address. ``fake_dns`` decides
what each test name resolves to locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from builders import png_bytes
from mediagate import FetchError, MediaConnector, MediaError, MediaPolicy, PolicyError

pytestmark = pytest.mark.usefixtures("loopback_only")

PRIVATE = "10.0.0.1"
PUBLIC = "93.184.216.34"


def png() -> bytes:
    return png_bytes(Image.new("RGB", (3, 2), (10, 20, 30)))


class ForwardProxy:
    """An HTTP/1.1 forward proxy on 127.0.0.1 relaying to loopback upstreams by host name."""

    def __init__(self) -> None:
        self.upstreams: dict[str, int] = {}
        self.targets: list[str] = []
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(5) or self._server is None:
            raise RuntimeError("the proxy did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

        self._loop.run_until_complete(start())
        ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            self.targets.append(target)
            parts = urlsplit(target)
            port = self.upstreams.get(parts.hostname or "")
            if port is None:
                writer.write(b"HTTP/1.1 502 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            path = parts.path or "/"
            up_writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Connection: close\r\n\r\n".encode("latin-1")
            )
            await up_writer.drain()
            writer.write(await asyncio.wait_for(up_reader.read(), 5))
            await writer.drain()
            up_writer.close()
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()

    def count(self, host: str) -> int:
        return sum(1 for t in self.targets if urlsplit(t).hostname == host)

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    srv = ForwardProxy()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def upstream(http_server: Any, respond: Any) -> Any:
    """The loopback server behind the proxy, serving ``/img`` (one request per connection)."""
    http_server.route("/img", respond.reply(png(), close=True))
    return http_server


def via(
    make_connector: Callable[..., MediaConnector], proxy_url: str, **policy: Any
) -> MediaConnector:
    return make_connector(MediaPolicy(timeout=2, proxy=proxy_url, **policy))


def refused(
    conn: MediaConnector, url: str, clean_error: Callable[..., None], kind: type[MediaError]
) -> MediaError:
    start = time.monotonic()
    with pytest.raises(kind) as info:
        conn.fetch_image(url)
    assert time.monotonic() - start < 2
    clean_error(info.value, PRIVATE)
    return info.value


@pytest.mark.parametrize("answers", [[PRIVATE], [PUBLIC, PRIVATE], ["::ffff:10.0.0.1"]])
def test_a_name_resolving_private_is_refused_before_the_proxy(
    answers: list[str],
    proxy: ForwardProxy,
    upstream: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    fake_dns.set("internal.test", answers)
    proxy.upstreams["internal.test"] = upstream.port
    conn = via(make_connector, proxy.url)
    refused(conn, "http://internal.test/img", clean_error, PolicyError)
    assert fake_dns.lookups("internal.test") == 1
    assert proxy.connections == 0 and proxy.targets == []
    assert upstream.connections == 0


def test_an_unresolvable_name_is_not_sent_to_the_proxy(
    proxy: ForwardProxy,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    conn = via(make_connector, proxy.url)
    refused(conn, "http://nowhere.test/img", clean_error, FetchError)
    assert proxy.connections == 0


def test_a_private_literal_is_refused_before_the_proxy(
    proxy: ForwardProxy,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    conn = via(make_connector, proxy.url)
    refused(conn, f"http://{PRIVATE}/img", clean_error, PolicyError)
    refused(conn, "http://[::1]/img", clean_error, PolicyError)
    assert proxy.connections == 0


def test_with_trust_proxy_dns_the_proxy_resolves(
    proxy: ForwardProxy,
    upstream: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
) -> None:
    fake_dns.set("internal.test", [PRIVATE])
    proxy.upstreams["internal.test"] = upstream.port
    conn = via(make_connector, proxy.url, trust_proxy_dns=True)
    assert conn.fetch_image("http://internal.test/img").size == (3, 2)
    assert proxy.targets == ["http://internal.test/img"]
    assert fake_dns.lookups("internal.test") == 0
    assert upstream.count("/img") == 1


def test_a_public_name_goes_through_the_proxy(
    proxy: ForwardProxy,
    upstream: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
) -> None:
    fake_dns.set("cdn.test", [PUBLIC])
    proxy.upstreams["cdn.test"] = upstream.port
    conn = via(make_connector, proxy.url)
    assert conn.fetch_image("http://cdn.test/img").size == (3, 2)
    assert proxy.targets == ["http://cdn.test/img"]
    assert fake_dns.lookups("cdn.test") == 1
    assert upstream.count("/img") == 1


def test_a_redirect_to_a_private_name_is_refused_at_that_hop(
    proxy: ForwardProxy,
    upstream: Any,
    respond: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    fake_dns.set("cdn.test", [PUBLIC])
    fake_dns.set("internal.test", [PRIVATE])
    proxy.upstreams["cdn.test"] = upstream.port
    proxy.upstreams["internal.test"] = upstream.port
    upstream.route("/hop", respond.reply(b"", 302, [("Location", "http://internal.test/img")]))
    conn = via(make_connector, proxy.url)
    refused(conn, "http://cdn.test/hop", clean_error, PolicyError)
    assert proxy.targets == ["http://cdn.test/hop"]
    assert proxy.count("internal.test") == 0
    assert upstream.count("/img") == 0
    assert fake_dns.lookups("internal.test") == 1


def test_a_proxy_named_by_a_loopback_host_name_is_usable(
    proxy: ForwardProxy,
    upstream: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    # The proxy is server configuration: its loopback address is not judged as a target.
    fake_dns.set("proxy.test", ["127.0.0.1"])
    fake_dns.set("cdn.test", [PUBLIC])
    fake_dns.set("internal.test", [PRIVATE])
    proxy.upstreams["cdn.test"] = upstream.port
    conn = via(make_connector, f"http://proxy.test:{proxy.port}")
    assert conn.fetch_image("http://cdn.test/img").size == (3, 2)
    assert proxy.targets == ["http://cdn.test/img"]
    refused(conn, "http://internal.test/img", clean_error, PolicyError)
    refused(conn, f"http://proxy.test:{proxy.port}/img", clean_error, PolicyError)
    assert proxy.targets == ["http://cdn.test/img"]


def test_the_async_twin_judges_the_same(
    proxy: ForwardProxy,
    upstream: Any,
    fake_dns: Any,
    make_connector: Callable[..., MediaConnector],
    clean_error: Callable[..., None],
) -> None:
    fake_dns.set("internal.test", [PRIVATE])
    fake_dns.set("cdn.test", [PUBLIC])
    proxy.upstreams["cdn.test"] = upstream.port
    conn = via(make_connector, proxy.url)

    async def main() -> None:
        with pytest.raises(PolicyError) as info:
            await conn.fetch_image_async("http://internal.test/img")
        clean_error(info.value, PRIVATE)
        assert (await conn.fetch_image_async("http://cdn.test/img")).size == (3, 2)

    asyncio.run(main())
    assert proxy.targets == ["http://cdn.test/img"]
