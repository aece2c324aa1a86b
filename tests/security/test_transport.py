"""R1-R7: transport resources. Bounded bytes, bounded memory, one total deadline.

Every server here is on loopback and every server-side loop is bounded; the fetch
deadlines are one second, so the slow cases finish in about that.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from builders import png_bytes
from mediagate import (
    FetchError,
    FetchTimeout,
    MediaConnector,
    MediaError,
    MediaPolicy,
    TooLargeError,
)

pytestmark = pytest.mark.usefixtures("loopback_only")

MiB = 1 << 20
DEADLINE = 1.0
POLICY = MediaPolicy(allowed_networks=["127.0.0.1/32"], timeout=DEADLINE, max_bytes=MiB)


def png(size: tuple[int, int] = (3, 2)) -> bytes:
    return png_bytes(Image.new("RGB", size, (10, 20, 30)))


@pytest.fixture
def conn(make_connector: Callable[..., MediaConnector]) -> MediaConnector:
    return make_connector(POLICY)


def fails(
    conn: MediaConnector, url: str, kind: type[MediaError], clean_error: Callable[..., None]
) -> tuple[MediaError, float, int]:
    """Fetch ``url`` expecting ``kind``; returns the error, the seconds taken and the
    peak of Python memory traced meanwhile (all threads)."""
    gc.collect()
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(kind) as info:
            conn.fetch_image(url)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < DEADLINE + 1
    clean_error(info.value)
    return info.value, elapsed, peak


def next_good(conn: MediaConnector, server: Any, respond: Any) -> None:
    server.route("/good", respond.reply(png()))
    assert conn.fetch_image(server.url("/good")).size == (3, 2)


# ---------------------------------------------------------------------------
# R1: Content-Length over the budget


def test_r1_huge_content_length_is_refused_before_reading(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    async def headers_only(req: Any, writer: Any, srv: Any) -> bool:
        writer.write(respond.head(200, [("Content-Length", str(10**12))]) + b"\0" * 1000)
        await writer.drain()
        # No more body: a client that waited for it would end in FetchTimeout instead.
        await srv.wait_stopping(10)
        return False

    http_server.route("/img", headers_only)
    err, _, _ = fails(conn, http_server.url("/img"), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError)
    assert err.limit == "max_bytes"
    assert err.maximum == MiB
    assert err.http_status == 413
    next_good(conn, http_server, respond)


def test_r1_content_length_one_over_is_refused_and_exactly_at_is_read(
    http_server: Any, respond: Any, make_connector: Any, clean_error: Any
) -> None:
    body = png()
    http_server.route("/img", respond.reply(body))
    tight = make_connector(POLICY.replace(max_bytes=len(body) - 1))
    fails(tight, http_server.url("/img"), TooLargeError, clean_error)
    exact = make_connector(POLICY.replace(max_bytes=len(body)))
    assert exact.fetch_image(http_server.url("/img")).size == (3, 2)


# ---------------------------------------------------------------------------
# R2: bodies that do not stop


@pytest.mark.parametrize("chunked", [True, False])
def test_r2_endless_body_stops_at_the_budget(
    chunked: bool, http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    http_server.route("/img", respond.endless(chunked=chunked))
    err, _, peak = fails(conn, http_server.url("/img"), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError)
    assert peak < 8 * MiB
    # The client stopped reading soon after the budget: the server could not push
    # more than the budget plus what socket buffers hold.
    assert http_server.bytes_sent < 64 * MiB
    next_good(conn, http_server, respond)


def test_r2_chunked_body_without_length_over_the_budget(
    http_server: Any, respond: Any, make_connector: Any, clean_error: Any
) -> None:
    body = png((64, 64))

    async def chunked(req: Any, writer: Any, srv: Any) -> bool:
        writer.write(respond.head(200, [("Transfer-Encoding", "chunked")]))
        for i in range(0, len(body), 7):
            piece = body[i : i + 7]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    http_server.route("/img", chunked)
    tight = make_connector(POLICY.replace(max_bytes=len(body) - 1))
    fails(tight, http_server.url("/img"), TooLargeError, clean_error)
    exact = make_connector(POLICY.replace(max_bytes=len(body)))
    assert exact.fetch_image(http_server.url("/img")).size == (64, 64)


def test_r2_body_longer_than_its_content_length_is_not_read_past_it(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    body = png()
    chunk = b"\0" * 65536

    async def overlong(req: Any, writer: Any, srv: Any) -> bool:
        writer.write(respond.head(200, [("Content-Length", str(len(body)))]) + body)
        for _ in range(256):  # 16 MiB past Content-Length, streamed
            writer.write(chunk)
            await writer.drain()
        return False

    http_server.route("/img", overlong)
    tracemalloc.start()
    try:
        # Content-Length frames the body. Excess bytes that arrive with it make the
        # connection unparseable (FetchError); bytes that arrive later are never read.
        # Either way nothing past Content-Length is taken as media or buffered whole.
        try:
            result = conn.fetch_image(http_server.url("/img"))
        except FetchError as exc:
            clean_error(exc)
        else:
            assert result.original_bytes == body
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB
    next_good(conn, http_server, respond)


def test_r2_body_shorter_than_its_content_length_is_an_error(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    body = png()
    http_server.route("/img", respond.reply(body[:20], content_length=len(body), close=True))
    err, _, _ = fails(conn, http_server.url("/img"), FetchError, clean_error)
    assert not isinstance(err, FetchTimeout)
    next_good(conn, http_server, respond)


# ---------------------------------------------------------------------------
# R3: compression


def test_r3_identity_is_asked_for(http_server: Any, respond: Any, conn: MediaConnector) -> None:
    next_good(conn, http_server, respond)
    assert http_server.requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
def test_r3_compression_bomb_is_never_inflated_past_the_budget(
    encoding: str, http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    size = 256 * MiB
    if encoding == "deflate":
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
        zero = b"\0" * MiB
        bomb = b"".join(packer.compress(zero) for _ in range(size // MiB)) + packer.flush()
    else:
        bomb = respond.gzip_bomb(size)
    assert len(bomb) < MiB  # small on the wire, far over the budget inflated
    http_server.route("/img", respond.reply(bomb, headers=[("Content-Encoding", encoding)]))
    err, _, peak = fails(conn, http_server.url("/img"), TooLargeError, clean_error)
    assert isinstance(err, TooLargeError)
    assert peak < 16 * MiB
    next_good(conn, http_server, respond)


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Encoding", "gzip, gzip")],
        [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],
        [("Content-Encoding", "deflate, gzip")],
        [("Content-Encoding", "br")],
        [("Content-Encoding", "zstd")],
        [("Content-Encoding", "compress")],
        [("Content-Encoding", "gzip;q=1")],
    ],
)
def test_r3_stacked_or_unknown_encodings_are_refused(
    headers: list[tuple[str, str]],
    http_server: Any,
    respond: Any,
    conn: MediaConnector,
    clean_error: Any,
) -> None:
    bomb = respond.gzip_bomb(64 * MiB, layers=2)
    http_server.route("/img", respond.reply(bomb, headers=headers))
    _, _, peak = fails(conn, http_server.url("/img"), FetchError, clean_error)
    assert peak < 16 * MiB
    next_good(conn, http_server, respond)


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip", None, "two members"],
    ids=["corrupt", "truncated", "two-members"],
)
def test_r3_corrupt_compressed_body_is_a_fetch_error(
    body: Any, http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    import gzip

    packed = gzip.compress(png())
    if body is None:
        body = packed[: len(packed) // 2]
    elif body == "two members":
        body = packed + packed
    http_server.route("/img", respond.reply(body, headers=[("Content-Encoding", "gzip")]))
    err, _, _ = fails(conn, http_server.url("/img"), FetchError, clean_error)
    assert "this is not gzip" not in str(err)
    next_good(conn, http_server, respond)


def test_r3_one_honest_gzip_layer_is_inflated(
    http_server: Any, respond: Any, conn: MediaConnector
) -> None:
    import gzip

    body = png()
    http_server.route(
        "/img", respond.reply(gzip.compress(body), headers=[("Content-Encoding", "gzip")])
    )
    assert conn.fetch_image(http_server.url("/img")).original_bytes == body


# ---------------------------------------------------------------------------
# R4 / R5: slow and silent servers meet one total deadline


def test_r4_trickled_body_hits_the_total_deadline(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    # A byte every 0.2 s keeps every per-read timeout happy; the total one is not.
    http_server.route("/img", respond.trickle(0.2))
    err, elapsed, _ = fails(conn, http_server.url("/img"), FetchTimeout, clean_error)
    assert err.http_status == 504
    assert isinstance(err, TimeoutError)
    assert elapsed >= DEADLINE - 0.1
    next_good(conn, http_server, respond)


def test_r4_trickled_headers_hit_the_total_deadline(
    http_server: Any, conn: MediaConnector, clean_error: Any
) -> None:
    async def slow_head(req: Any, writer: Any, srv: Any) -> bool:
        for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 100:
            if srv.stopping:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        return False

    http_server.route("/img", slow_head)
    fails(conn, http_server.url("/img"), FetchTimeout, clean_error)


def test_r4_trickle_across_redirect_hops_shares_one_deadline(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    async def slow_redirect(req: Any, writer: Any, srv: Any) -> bool:
        await asyncio.sleep(0.3)
        next_hop = int(req.path.strip("/r")) + 1
        writer.write(respond.head(302, [("Location", f"/r{next_hop}"), ("Content-Length", "0")]))
        await writer.drain()
        return True

    for i in range(6):
        http_server.route(f"/r{i}", slow_redirect)
    # Each hop is well inside the deadline; together they are not.
    fails(conn, http_server.url("/r0"), FetchTimeout, clean_error)
    assert http_server.count() <= 5


def test_r5_silent_server_times_out(
    http_server: Any, respond: Any, conn: MediaConnector, clean_error: Any
) -> None:
    http_server.route("/img", respond.silent())
    _, elapsed, _ = fails(conn, http_server.url("/img"), FetchTimeout, clean_error)
    assert elapsed >= DEADLINE - 0.1
    next_good(conn, http_server, respond)


@pytest.fixture
def never_accepting() -> Iterator[socket.socket]:
    """A listening socket nobody accepts on: the kernel completes the handshake only."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


def test_r5_server_that_never_accepts_times_out(
    never_accepting: socket.socket, conn: MediaConnector, clean_error: Any
) -> None:
    port = never_accepting.getsockname()[1]
    fails(conn, f"http://127.0.0.1:{port}/img", FetchTimeout, clean_error)


def test_r5_async_twin_times_out_without_blocking_its_loop(
    http_server: Any, respond: Any, conn: MediaConnector
) -> None:
    http_server.route("/img", respond.silent())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def main() -> None:
        task = asyncio.create_task(ticker())
        start = time.monotonic()
        with pytest.raises(FetchTimeout):
            await conn.fetch_image_async(http_server.url("/img"))
        assert time.monotonic() - start < DEADLINE + 1
        task.cancel()

    asyncio.run(main())
    assert ticks >= 10  # the caller's loop kept running while the fetch waited


# ---------------------------------------------------------------------------
# R6: many concurrent requests


def test_r6_many_concurrent_requests_use_bounded_threads(
    http_server: Any, respond: Any, make_connector: Any
) -> None:
    count = 300
    # Distinct URLs, so no two requests share one download.
    http_server.routes.update({f"/img?{i}": respond.reply(png((32, 32))) for i in range(count)})
    conn = make_connector(POLICY.replace(timeout=20), max_workers=4)
    before = threading.active_count()
    peak_threads = before

    async def one(i: int) -> tuple[int, int]:
        nonlocal peak_threads
        result = await conn.fetch_image_async(http_server.url(f"/img?{i}"))
        peak_threads = max(peak_threads, threading.active_count())
        size: tuple[int, int] = result.size
        return size

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(one(i) for i in range(count)))

    assert asyncio.run(main()) == [(32, 32)] * count
    assert http_server.count() == count
    # One fetch loop and a decode pool of 4 (plus a resolver thread or two at most):
    # never a thread per request.
    assert peak_threads - before <= 12


# ---------------------------------------------------------------------------
# R7: a huge data: URL


@pytest.mark.parametrize("base64", [True, False])
def test_r7_huge_data_url_is_refused_from_its_length(
    base64: bool, make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(POLICY)
    payload = "A" * (64 * MiB) if base64 else "%41" * (16 * MiB)
    url = ("data:image/png;base64," if base64 else "data:image/png,") + payload
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(TooLargeError) as info:
            conn.fetch_image(url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 1
    # Refused without decoding or copying the payload.
    assert peak < 16 * MiB
    clean_error(info.value, "AAAA", "%41%41")
    assert info.value.limit == "max_bytes"


def test_r7_stray_percent_signs_do_not_hide_a_payload_size(
    make_connector: Any, clean_error: Any
) -> None:
    conn = make_connector(POLICY)
    with pytest.raises(TooLargeError):
        conn.fetch_image("data:image/png," + "%" * (2 * MiB))
