"""The loopback server's byte ranges, pacing, HEAD and scripted answers.

The suite's range-mode tests and the range benchmark stand on these answers, so they
are checked here with a plain stdlib client on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from builders import LoopbackServer, Route, jpeg_bytes
from mediagate import FetchError, ImageMediaIO, MediaConnector
from mediagate._loopback import Request, range_answer

BODY = bytes(range(256)) * 4  # 1024 bytes, each offset's value is offset % 256
ETAG = '"v1"'
MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"


@pytest.fixture
def served(server: LoopbackServer) -> LoopbackServer:
    server.routes["/f"] = Route(
        BODY,
        headers={"Content-Type": "video/mp4"},
        ranges=True,
        etag=ETAG,
        last_modified=MODIFIED,
    )
    return server


def get(
    server: LoopbackServer, path: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names), body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=100-199", 100, 199),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=-5000", 0, 1023),  # a suffix longer than the file is the whole file
        ("bytes=1020-9999", 1020, 1023),  # an end past the file is cut to it
        ("bytes=7-7", 7, 7),
        (" bytes = 3 - 4 ", 3, 4),
    ],
)
def test_each_range_form_answers_206_with_exactly_its_span(
    served: LoopbackServer, header: str, first: int, last: int
) -> None:
    status, headers, body = get(served, "/f", Range=header)
    assert status == 206
    assert body == BODY[first : last + 1]
    assert headers["content-range"] == f"bytes {first}-{last}/1024"
    assert headers["content-length"] == str(last - first + 1)
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"] == ETAG and headers["last-modified"] == MODIFIED
    assert headers["content-type"] == "video/mp4"


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_answers_416_with_the_size(
    served: LoopbackServer, header: str
) -> None:
    status, headers, body = get(served, "/f", Range=header)
    assert (status, body) == (416, b"")
    assert headers["content-range"] == "bytes */1024"
    assert headers["accept-ranges"] == "bytes"


def test_any_range_of_an_empty_file_is_unsatisfiable(server: LoopbackServer) -> None:
    server.routes["/empty"] = Route(b"", ranges=True)
    assert get(server, "/empty", Range="bytes=0-")[0] == 416
    assert get(server, "/empty", Range="bytes=-1")[0] == 416
    assert get(server, "/empty")[:1] == (200,)


@pytest.mark.parametrize(
    "header",
    [None, "bytes=0-1,5-6", "bytes=9-3", "bytes=-", "items=0-9", "bytes=a-b", "rubbish"],
)
def test_no_range_or_one_to_ignore_answers_200_with_the_whole_file(
    served: LoopbackServer, header: str | None
) -> None:
    status, headers, body = get(served, "/f", **({"Range": header} if header else {}))
    assert (status, body) == (200, BODY)
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-length"] == "1024"
    assert "content-range" not in headers
    assert headers["etag"] == ETAG


def test_if_range_with_another_validator_answers_the_whole_file(served: LoopbackServer) -> None:
    assert get(served, "/f", Range="bytes=0-9", **{"If-Range": ETAG})[0] == 206
    assert get(served, "/f", Range="bytes=0-9", **{"If-Range": MODIFIED})[0] == 206
    status, _, body = get(served, "/f", Range="bytes=0-9", **{"If-Range": '"v0"'})
    assert (status, body) == (200, BODY)


def test_a_route_without_ranges_ignores_the_range_header(server: LoopbackServer) -> None:
    server.routes["/plain"] = Route(BODY, etag=ETAG)
    status, headers, body = get(server, "/plain", Range="bytes=0-9")
    assert (status, body) == (200, BODY)
    assert "accept-ranges" not in headers and headers["etag"] == ETAG


def test_head_sends_the_headers_of_get_and_no_body(served: LoopbackServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        # Range is defined for GET only, so HEAD states the whole file's length.
        connection.request("HEAD", "/f", headers={"Range": "bytes=0-9"})
        head = connection.getresponse()
        assert (head.status, head.read()) == (200, b"")
        assert head.getheader("Content-Length") == "1024"
        assert head.getheader("Accept-Ranges") == "bytes" and head.getheader("ETag") == ETAG
        # No body was sent: the next answer on the same connection is read intact.
        connection.request("GET", "/f", headers={"Range": "bytes=0-3"})
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (206, BODY[:4])
    finally:
        connection.close()
    assert [(r.method, r.range) for r in served.requests_for("/f")] == [
        ("HEAD", "bytes=0-9"),
        ("GET", "bytes=0-3"),
    ]


def test_a_paced_body_holds_the_rate(server: LoopbackServer) -> None:
    body = bytes(2_000_000)
    server.routes["/slow"] = Route(body, rate=10e6)
    server.routes["/slow-ranges"] = Route(body, ranges=True, rate=10e6)
    start = time.perf_counter()
    status, _, got = get(server, "/slow")
    assert (status, len(got)) == (200, 2_000_000)
    assert time.perf_counter() - start >= 0.18
    # A range is paced by its own length: half the bytes, half the time or more.
    start = time.perf_counter()
    status, _, got = get(server, "/slow-ranges", Range="bytes=0-999999")
    assert (status, len(got)) == (206, 1_000_000)
    assert time.perf_counter() - start >= 0.09


def test_a_client_that_hangs_up_mid_body_raises_nothing(server: LoopbackServer) -> None:
    server.routes["/long"] = Route(bytes(8_000_000), ranges=True, rate=4e6)  # 2 s of body
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 10
    while server.hung_up == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.hung_up == 1
    assert server.errors == []
    assert get(server, "/long", Range="bytes=0-9")[:1] == (206,)


def script(request: Request, nth: int) -> Route:
    """Honours ranges once, then answers every request with the whole file."""
    answer = range_answer(BODY, request.range, etag=ETAG)
    if nth == 0:
        return answer
    return Route(BODY, 200, {"ETag": ETAG})


def test_a_script_answers_206_then_200(server: LoopbackServer) -> None:
    server.routes["/s"] = Route(respond=script)
    first = get(server, "/s", Range="bytes=0-9")
    second = get(server, "/s", Range="bytes=10-19")
    assert (first[0], first[2]) == (206, BODY[:10])
    assert (second[0], second[2]) == (200, BODY)
    assert "accept-ranges" not in second[1]


def test_a_script_can_change_the_file_and_its_etag_mid_stream(server: LoopbackServer) -> None:
    other = bytes(reversed(BODY))[:900]

    def changes(request: Request, nth: int) -> Route:
        if nth < 2:
            return Route(BODY, ranges=True, etag=ETAG)
        return Route(other, ranges=True, etag='"v2"')

    server.routes["/c"] = Route(respond=changes)
    answers = [get(server, "/c", Range="bytes=0-9") for _ in range(3)]
    assert [a[1]["etag"] for a in answers] == [ETAG, ETAG, '"v2"']
    assert [a[1]["content-range"] for a in answers] == ["bytes 0-9/1024"] * 2 + ["bytes 0-9/900"]
    assert answers[2][2] == other[:10]


def test_a_script_can_state_a_wrong_content_range_or_total(server: LoopbackServer) -> None:
    def lies(request: Request, nth: int) -> Route:
        if nth == 0:
            return range_answer(BODY, request.range, total=5000)
        answer = range_answer(BODY, request.range)
        answer.headers["Content-Range"] = "bytes 500-509/1024"
        return answer

    server.routes["/l"] = Route(respond=lies)
    _, headers, body = get(server, "/l", Range="bytes=0-9")
    assert headers["content-range"] == "bytes 0-9/5000" and body == BODY[:10]
    _, headers, body = get(server, "/l", Range="bytes=0-9")
    assert headers["content-range"] == "bytes 500-509/1024" and body == BODY[:10]


def test_a_script_can_redirect_elsewhere_after_n_requests(server: LoopbackServer) -> None:
    with LoopbackServer({"/f": Route(b"elsewhere", ranges=True)}) as other:

        def moves(request: Request, nth: int) -> Route:
            if nth < 2:
                return range_answer(BODY, request.range)
            return Route(status=302, headers={"Location": other.url("/f")})

        server.routes["/m"] = Route(respond=moves)
        statuses = [get(server, "/m", Range="bytes=0-1")[:2] for _ in range(3)]
        assert [s[0] for s in statuses] == [206, 206, 302]
        assert statuses[2][1]["location"] == other.url("/f")
        assert other.count() == 0  # nothing followed it here


def test_a_script_counts_requests_per_path_and_sees_them(server: LoopbackServer) -> None:
    seen: list[tuple[str, str, int]] = []

    def log(request: Request, nth: int) -> Route:
        seen.append((request.path, request.method, nth))
        return Route(b"ok")

    server.routes["/a"] = Route(respond=log)
    server.routes["/b"] = Route(respond=log)
    for path, method in (("/a", "GET"), ("/b", "HEAD"), ("/a", "HEAD"), ("/a", "GET")):
        get(server, path, method)
    assert seen == [("/a", "GET", 0), ("/b", "HEAD", 0), ("/a", "HEAD", 1), ("/a", "GET", 2)]


def test_a_body_shorter_than_its_stated_length_is_a_short_read_not_a_stall(
    server: LoopbackServer,
) -> None:
    server.routes["/cut"] = Route(BODY[:300], headers={"Content-Length": "1024"})
    start = time.perf_counter()
    with pytest.raises(http.client.IncompleteRead):
        get(server, "/cut")
    assert (
        time.perf_counter() - start < 5
    )  # the connection closed; the client's 10 s timeout did not fire


def test_a_connector_refuses_a_truncated_body_with_a_typed_error(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    jpeg = jpeg_bytes(64, 48)
    server.routes["/cut.jpg"] = Route(jpeg[:300], headers={"Content-Length": str(len(jpeg))})
    with pytest.raises(FetchError):
        connector.load_from_url(server.url("/cut.jpg"), ImageMediaIO())
    assert server.count("/cut.jpg") >= 1


def test_a_request_still_unpacks_as_path_and_headers(served: LoopbackServer) -> None:
    get(served, "/f", Range="bytes=0-1")
    [(path, headers)] = served.requests
    assert path == "/f" and headers["Range"] == "bytes=0-1"
    assert served.requests[0].header("range") == "bytes=0-1"


def test_range_answer_builds_each_answer_without_a_server() -> None:
    assert range_answer(BODY, None).status == 200
    partial = range_answer(BODY, "bytes=-4", etag=ETAG, headers={"Content-Type": "video/mp4"})
    assert (partial.status, bytes(partial.body)) == (206, BODY[-4:])
    assert partial.headers == {
        "Content-Type": "video/mp4",
        "Accept-Ranges": "bytes",
        "ETag": ETAG,
        "Content-Range": "bytes 1020-1023/1024",
    }
    assert range_answer(BODY, "bytes=2000-").headers["Content-Range"] == "bytes */1024"
