"""Range mode end to end: remote video read through HTTP range requests from loopback servers.

Every load here is compared with a decode of the whole file (frames equal array for array,
metadata equal key for key), and the server's request log says what was asked of it. The
clips are noise (they do not compress) so that a few sampled frames need only part of the
file, and the policy reads by ranges from 64 KiB on.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from builders import LoopbackServer, Route
from mediagate import (
    DecodeError,
    FetchError,
    FetchTimeout,
    ImageMediaIO,
    MediaCache,
    MediaConnector,
    MediaError,
    MediaPolicy,
    PolicyError,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._connector import LoadReport
from mediagate._loopback import Request, range_answer

KiB = 1024
WIDTH, HEIGHT, RATE = 160, 120, 10
ETAG = '"v1"'
MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"
MP4 = {"Content-Type": "video/mp4"}
#: Frames sampled from the long clip: the first, the middle and the last, each at the end
#: of its one-second GOP but the first, so a decode needs three GOPs of twenty.
FRAMES = 3

POLICY = MediaPolicy(
    allowed_networks=["127.0.0.1/32"],
    range_reads_above=64 * KiB,
    isolation=False,
    timeout=20,
)


# -- clips -------------------------------------------------------------------------------


def noise_clip(
    seconds: float,
    *,
    container: str = "mp4",
    codec: str = "libx264",
    seed: int = 0,
    faststart: bool = False,
    fragmented: bool = False,
    folder: Path | None = None,
) -> bytes:
    """``seconds`` of 160x120 noise at 10 fps, a keyframe every second."""
    rng = np.random.default_rng(seed)
    options: dict[str, str] = {}
    if faststart:
        options["movflags"] = "faststart"
    if fragmented:
        options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
    target: Any = io.BytesIO()
    if faststart:
        assert folder is not None
        target = folder / f"clip-{seed}.{container}"
    with av.open(target, "w", format=container, container_options=options) as out:
        stream = out.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = RATE
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast", "scenecut": "0"}
        for _ in range(int(seconds * RATE)):
            image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return target.read_bytes() if faststart else bytes(target.getvalue())


def padded(data: bytes, size: int) -> bytes:
    """``data`` (an MP4 with its index in front) grown to ``size`` bytes by a ``free`` box."""
    extra = size - len(data)
    assert extra >= 8
    return data + extra.to_bytes(4, "big") + b"free" + bytes(extra - 8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Twenty seconds, the index in front (a few MB)."""
    return noise_clip(20, faststart=True, folder=tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def clip_index_last() -> bytes:
    """The same length with the index at the end of the file."""
    return noise_clip(20, seed=1)


# -- loading -----------------------------------------------------------------------------


Frames = npt.NDArray[np.uint8]


def video_io(
    policy: MediaPolicy = POLICY, num_frames: int = FRAMES, **options: Any
) -> VideoMediaIO:
    return VideoMediaIO(ImageMediaIO(), num_frames=num_frames, policy=policy, **options)


def decoded(data: bytes, num_frames: int = FRAMES, **options: Any) -> tuple[Frames, dict[str, Any]]:
    """The frames and metadata of a decode of the whole file in memory."""
    frames, metadata = video_io(num_frames=num_frames, **options).load_bytes(data)
    return np.asarray(frames), dict(metadata)


def load(
    url: str,
    policy: MediaPolicy = POLICY,
    *,
    cache: MediaCache | None = None,
    num_frames: int = FRAMES,
    **options: Any,
) -> tuple[Frames, dict[str, Any], LoadReport]:
    with MediaConnector(policy=policy, cache=cache) as connector:
        (frames, metadata), report = connector.load_with_report(
            url, video_io(policy, num_frames, **options)
        )
    return np.asarray(frames), dict(metadata), report


def assert_same(
    got: tuple[Frames, dict[str, Any], Any], data: bytes, num_frames: int = FRAMES
) -> None:
    frames, metadata = decoded(data, num_frames)
    assert np.array_equal(got[0], frames)
    assert got[1] == metadata


def ranged(server: LoopbackServer, path: str) -> list[str | None]:
    return [r.range for r in server.requests_for(path)]


def _span(request: Request) -> tuple[int, int]:
    """The ``[start, end)`` a closed ``Range: bytes=a-b`` asks for."""
    assert request.range is not None
    first, last = request.range.removeprefix("bytes=").split("-")
    return int(first), int(last) + 1


def asked(request: Request) -> int:
    """How many bytes a closed ``Range: bytes=a-b`` asks for."""
    start, end = _span(request)
    return end - start


def served(data: bytes, **route: Any) -> Route:
    return Route(data, headers=dict(MP4), ranges=True, etag=ETAG, last_modified=MODIFIED, **route)


def scripted(data: bytes, answer: Callable[[Request, int, Route], Route]) -> Route:
    """A range server whose ``nth`` answer (a truthful one given as the third argument)
    ``answer`` may change."""

    def respond(request: Request, nth: int) -> Route:
        truthful = range_answer(
            data, request.range, etag=ETAG, last_modified=MODIFIED, headers=dict(MP4)
        )
        return answer(request, nth, truthful)

    return Route(respond=respond)


def with_headers(route: Route, **headers: str) -> Route:
    return replace(route, headers={**route.headers, **headers})


# -- 1. a server that answers ranges -----------------------------------------------------


def test_a_range_server_gives_the_frames_of_a_download_from_part_of_the_file(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    report = got[2]
    assert report.read_mode == "ranges" and report.fallback == ""
    assert report.file_size == len(clip)
    assert report.range_requests == server.count("/c.mp4") > 1
    assert report.num_bytes < len(clip) // 2
    assert all(rng is not None for rng in ranged(server, "/c.mp4"))
    assert ranged(server, "/c.mp4")[0] == "bytes=0-"


def _load_async(url: str) -> Any:
    """``url`` loaded as video through the connector's async API."""

    async def main() -> Any:
        with MediaConnector(policy=POLICY) as connector:
            return await connector.load_media_async(
                url, "video", media_io_kwargs={"video": {"num_frames": FRAMES}}
            )

    return asyncio.run(main())


def test_the_async_api_reads_by_ranges_too(server: LoopbackServer, clip: bytes) -> None:
    server.routes["/c.mp4"] = served(clip)

    loaded = _load_async(server.url("/c.mp4"))
    frames, metadata = loaded.media
    assert_same((np.asarray(frames), dict(metadata), None), clip)
    assert loaded.report.read_mode == "ranges"
    assert loaded.report.num_bytes < len(clip) // 2
    assert all(rng is not None for rng in ranged(server, "/c.mp4"))


def test_an_isolated_decoder_reads_the_ranges_through_its_parent(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    policy = POLICY.replace(isolation=True)
    assert policy.isolates("video")
    got = load(server.url("/c.mp4"), policy)
    assert_same(got, clip)
    assert got[2].read_mode == "ranges"
    assert got[2].num_bytes < len(clip) // 2
    assert all(rng is not None for rng in ranged(server, "/c.mp4"))


# -- 2. the index at the end -------------------------------------------------------------


def test_an_mp4_with_its_index_at_the_end_reads_by_ranges(
    server: LoopbackServer, clip_index_last: bytes
) -> None:
    assert clip_index_last.find(b"moov") > len(clip_index_last) // 2
    server.routes["/c.mp4"] = served(clip_index_last)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip_index_last)
    assert got[2].read_mode == "ranges"
    assert got[2].num_bytes < len(clip_index_last) // 2


# -- 3. a server that ignores ranges -----------------------------------------------------


def test_a_server_that_ignores_ranges_is_the_plain_download(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = Route(clip, headers=dict(MP4))
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].range_requests == 0
    assert got[2].num_bytes == len(clip)
    assert ranged(server, "/c.mp4") == ["bytes=0-"]


# -- 4. servers that lie -----------------------------------------------------------------


def _later(change: Callable[[Request, Route], Route]) -> Callable[[Request, int, Route], Route]:
    """Truthful to the first request and to plain downloads; ``change`` to later ranges."""

    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0 or request.range is None:
            return truthful
        return change(request, truthful)

    return answer


def _content_range(value: Callable[[int, int, int], str]) -> Callable[[Request, Route], Route]:
    def change(request: Request, truthful: Route) -> Route:
        first, rest = truthful.headers["Content-Range"].removeprefix("bytes ").split("-")
        last, total = rest.split("/")
        return with_headers(truthful, **{"Content-Range": value(int(first), int(last), int(total))})

    return change


def _without_content_range(request: Request, truthful: Route) -> Route:
    return replace(
        truthful, headers={k: v for k, v in truthful.headers.items() if k != "Content-Range"}
    )


def _body(cut: Callable[[bytes], bytes]) -> Callable[[Request, Route], Route]:
    def change(request: Request, truthful: Route) -> Route:
        return replace(truthful, body=cut(bytes(truthful.body)))

    return change


def _body_declared(cut: Callable[[bytes], bytes]) -> Callable[[Request, Route], Route]:
    """The body cut, its ``Content-Length`` still that of the range."""

    def change(request: Request, truthful: Route) -> Route:
        body = bytes(truthful.body)
        return replace(
            truthful, body=cut(body), headers={**truthful.headers, "Content-Length": str(len(body))}
        )

    return change


LIES: dict[str, Callable[[Request, Route], Route]] = {
    "length changes": _content_range(lambda a, b, t: f"bytes {a}-{b}/{t + 4096}"),
    "etag changes": lambda request, truthful: with_headers(truthful, ETag='"v2"'),
    "last-modified changes": lambda request, truthful: with_headers(
        truthful, **{"Last-Modified": "Thu, 02 Jan 2025 00:00:00 GMT"}
    ),
    "validators dropped": lambda request, truthful: replace(
        truthful,
        headers={k: v for k, v in truthful.headers.items() if k not in ("ETag", "Last-Modified")},
    ),
    "wrong start": _content_range(lambda a, b, t: f"bytes {a + 1}-{b}/{t}"),
    "wrong end": _content_range(lambda a, b, t: f"bytes {a}-{b - 1}/{t}"),
    "end past total": _content_range(lambda a, b, t: f"bytes {a}-{t}/{t}"),
    "negative": _content_range(lambda a, b, t: f"bytes -{a}-{b}/{t}"),
    "garbage": _content_range(lambda a, b, t: "bytes x-y/z"),
    "star total": _content_range(lambda a, b, t: f"bytes {a}-{b}/*"),
    "other unit": _content_range(lambda a, b, t: f"items {a}-{b}/{t}"),
    "no content-range": _without_content_range,
    "200 to a range": lambda request, truthful: Route(b"x" * 1000, 200, dict(MP4)),
    "416 to a range": lambda request, truthful: Route(b"", 416, {"Content-Range": "bytes */1"}),
    "500 to a range": lambda request, truthful: Route(b"oops", 500),
    "body short": _body(lambda body: body[:-100]),
    "body long": _body(lambda body: body + bytes(100)),
    "body short, declared whole": _body_declared(lambda body: body[:-100]),
    "compressed": lambda request, truthful: with_headers(truthful, **{"Content-Encoding": "gzip"}),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_server_that_lies_about_a_later_range_is_downloaded_whole(
    server: LoopbackServer, clip: bytes, lie: str
) -> None:
    server.routes["/c.mp4"] = scripted(clip, _later(LIES[lie]))
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    report = got[2]
    assert report.read_mode == "full"
    assert report.fallback
    assert ranged(server, "/c.mp4")[-1] is None  # the download
    assert report.num_bytes >= len(clip)


def test_a_server_that_sends_more_than_its_content_length_serves_the_bytes_it_declared(
    server: LoopbackServer, clip: bytes
) -> None:
    # The client reads what Content-Length says and the connection is dropped after it.
    server.routes["/c.mp4"] = scripted(clip, _later(_body_declared(lambda body: body + bytes(100))))
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "ranges"


FIRST_LIES: dict[str, Callable[[Request, Route], Route]] = {
    "wrong start": _content_range(lambda a, b, t: f"bytes {a + 1}-{b}/{t}"),
    "end past total": _content_range(lambda a, b, t: f"bytes {a}-{t}/{t}"),
    "total 0": _content_range(lambda a, b, t: "bytes 0-0/0"),
    "garbage": _content_range(lambda a, b, t: "bytes zero-many/lots"),
    "no content-range": _without_content_range,
    "compressed": lambda request, truthful: with_headers(truthful, **{"Content-Encoding": "gzip"}),
    "body short, declared whole": _body_declared(lambda body: body[: 100 * KiB]),
}


@pytest.mark.parametrize("lie", list(FIRST_LIES))
def test_a_server_that_lies_in_its_first_answer_is_downloaded_whole(
    server: LoopbackServer, clip: bytes, lie: str
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        return FIRST_LIES[lie](request, truthful) if nth == 0 else truthful

    server.routes["/c.mp4"] = scripted(clip, answer)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback
    assert ranged(server, "/c.mp4") == ["bytes=0-", None]


def test_a_file_replaced_while_read_is_read_again_whole_as_it_now_is(
    server: LoopbackServer, clip: bytes, clip_index_last: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:
            return truthful
        return range_answer(clip_index_last, request.range, etag='"v2"', headers=dict(MP4))

    server.routes["/c.mp4"] = scripted(clip, answer)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip_index_last)
    assert got[2].read_mode == "full" and got[2].fallback


def test_a_server_whose_download_lies_too_is_a_fetch_error(
    server: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:
            return truthful
        # Every later answer, the download included, ends early.
        return replace(
            truthful,
            body=bytes(truthful.body)[:1000],
            headers={**truthful.headers, "Content-Length": str(len(truthful.body))},
        )

    server.routes["/c.mp4"] = scripted(clip, answer)
    with pytest.raises(FetchError):
        load(server.url("/c.mp4"))
    assert ranged(server, "/c.mp4")[-1] is None
    assert server.count("/c.mp4") <= 3


# -- 5. redirects to a refused address ---------------------------------------------------


@pytest.fixture
def elsewhere(clip: bytes) -> Iterator[LoopbackServer]:
    """A server on 127.0.0.2, which the policy refuses, serving the clip too."""
    with LoopbackServer({"/c.mp4": served(clip)}, host="127.0.0.2") as srv:
        yield srv


def test_a_later_range_redirected_to_a_refused_address_is_never_followed(
    server: LoopbackServer, elsewhere: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:
            return truthful
        return Route(b"", 302, {"Location": elsewhere.url("/c.mp4")})

    server.routes["/c.mp4"] = scripted(clip, answer)
    with pytest.raises(PolicyError) as caught:
        load(server.url("/c.mp4"))
    assert "127.0.0.2" not in str(caught.value)
    assert elsewhere.requests == []
    # The range that was redirected, then the download (whose redirect was refused).
    assert ranged(server, "/c.mp4")[-1] is None
    assert server.count("/c.mp4") == 3


def test_a_later_range_redirected_falls_back_to_a_download_that_is_not(
    server: LoopbackServer, elsewhere: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0 or request.range is None:
            return truthful
        return Route(b"", 302, {"Location": elsewhere.url("/c.mp4")})

    server.routes["/c.mp4"] = scripted(clip, answer)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and "302" in got[2].fallback
    assert elsewhere.requests == []


def test_a_first_request_redirected_to_a_refused_address_is_refused(
    server: LoopbackServer, elsewhere: LoopbackServer
) -> None:
    server.routes["/c.mp4"] = Route(b"", 302, {"Location": elsewhere.url("/c.mp4")})
    with pytest.raises(PolicyError):
        load(server.url("/c.mp4"))
    assert elsewhere.requests == []
    assert server.count("/c.mp4") == 1


def test_later_ranges_go_where_the_first_request_was_redirected(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/old.mp4"] = Route(b"", 301, {"Location": "/c.mp4"})
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/old.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "ranges"
    assert server.count("/old.mp4") == 1
    assert server.count("/c.mp4") == got[2].range_requests > 1


# -- 6. one deadline ---------------------------------------------------------------------


def test_slow_ranges_end_at_the_deadline(server: LoopbackServer, clip: bytes) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        return truthful if nth == 0 else replace(truthful, delay=0.4)

    server.routes["/c.mp4"] = scripted(clip, answer)
    start = time.monotonic()
    with pytest.raises(FetchTimeout):
        load(server.url("/c.mp4"), POLICY.replace(timeout=1.0))
    assert time.monotonic() - start < 2.0
    assert server.count("/c.mp4") <= 4


def test_a_slow_first_answer_ends_at_the_deadline(server: LoopbackServer, clip: bytes) -> None:
    server.routes["/c.mp4"] = served(clip, rate=200 * KiB)
    start = time.monotonic()
    with pytest.raises(FetchTimeout):
        load(server.url("/c.mp4"), POLICY.replace(timeout=1.0))
    assert time.monotonic() - start < 2.0
    assert server.count("/c.mp4") == 1


def test_the_download_after_a_fallback_gets_what_is_left_of_the_deadline(
    server: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:
            return truthful
        if request.range is not None:  # slow, then a changed file
            return replace(with_headers(truthful, ETag='"v2"'), delay=0.8)
        return replace(truthful, rate=1000 * KiB)  # the download: seconds

    server.routes["/c.mp4"] = scripted(clip, answer)
    start = time.monotonic()
    with pytest.raises(FetchTimeout, match=r"timeout=1\.5 s"):
        load(server.url("/c.mp4"), POLICY.replace(timeout=1.5))
    assert time.monotonic() - start < 2.5
    assert ranged(server, "/c.mp4")[-1] is None


# -- 7. caps -----------------------------------------------------------------------------


def test_more_ranges_than_max_range_requests_fall_back_to_a_download(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), POLICY.replace(max_range_requests=2))
    assert_same(got, clip)
    assert got[2].read_mode == "full"
    assert "max_range_requests=2" in got[2].fallback
    log = ranged(server, "/c.mp4")
    assert len(log) == 3 and log[-1] is None


def test_max_range_requests_one_is_the_first_request_and_a_download(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), POLICY.replace(max_range_requests=1))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback
    assert ranged(server, "/c.mp4") == ["bytes=0-", None]


def test_a_file_over_max_bytes_is_refused_from_its_first_answer(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    with pytest.raises(TooLargeError):
        load(server.url("/c.mp4"), POLICY.replace(max_bytes=len(clip) - 1))
    assert server.count("/c.mp4") == 1


def test_a_file_over_max_bytes_from_a_server_that_ignores_ranges_is_refused(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = Route(clip, headers=dict(MP4))
    with pytest.raises(TooLargeError):
        load(server.url("/c.mp4"), POLICY.replace(max_bytes=len(clip) - 1))
    assert server.count("/c.mp4") == 1


def test_the_download_after_a_fallback_is_held_to_max_bytes(
    server: LoopbackServer, clip: bytes
) -> None:
    bigger = padded(clip, len(clip) + 512 * KiB)

    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:
            return truthful
        # Replaced by a file over the limit after the first answer.
        return range_answer(bigger, request.range, etag='"v2"', headers=dict(MP4))

    server.routes["/c.mp4"] = scripted(clip, answer)
    with pytest.raises(TooLargeError):
        load(server.url("/c.mp4"), POLICY.replace(max_bytes=len(clip) + 1))
    assert ranged(server, "/c.mp4")[-1] is None


def test_no_range_asks_for_more_than_max_range_request_bytes(
    server: LoopbackServer, clip_index_last: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip_index_last)
    policy = POLICY.replace(max_range_request_bytes=64 * KiB)
    got = load(server.url("/c.mp4"), policy)
    assert_same(got, clip_index_last)
    assert got[2].read_mode == "ranges"
    later = server.requests_for("/c.mp4")[1:]
    assert later and max(asked(r) for r in later) <= 64 * KiB
    # The first request is open-ended (bytes=0-); what was taken of it is capped too.
    assert got[2].num_bytes <= got[2].range_requests * 64 * KiB


class _Tally:
    """A request's download budget that only counts."""

    def __init__(self) -> None:
        self.total = 0

    def charge(self, size: int) -> None:
        self.total += size


def test_range_bytes_and_the_fallback_download_are_both_charged_to_the_request(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = scripted(clip, _later(LIES["etag changes"]))
    tally = _Tally()
    with MediaConnector(policy=POLICY, download_budget=tally) as connector:
        _, report = connector.load_with_report(server.url("/c.mp4"), video_io())
    assert report.read_mode == "full"
    assert tally.total == report.num_bytes > len(clip)


def test_range_bytes_are_charged_to_the_request_as_they_arrive(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    tally = _Tally()
    with MediaConnector(policy=POLICY, download_budget=tally) as connector:
        _, report = connector.load_with_report(server.url("/c.mp4"), video_io())
    assert report.read_mode == "ranges"
    assert tally.total == report.num_bytes < len(clip)


# -- 8. the block cache ------------------------------------------------------------------


def test_cached_blocks_serve_a_later_load_of_other_frames(
    server: LoopbackServer, clip: bytes, tmp_path: Path
) -> None:
    server.routes["/c.mp4"] = Route(clip, headers=dict(MP4), ranges=True, etag=ETAG)
    url = server.url("/c.mp4")
    cache = MediaCache(tmp_path / "cache")
    first = load(url, cache=cache, num_frames=3)
    asked_first = server.count("/c.mp4")
    second = load(url, cache=cache, num_frames=5)
    asked_second = server.count("/c.mp4") - asked_first
    assert_same(first, clip, 3)
    assert_same(second, clip, 5)
    assert first[2].read_mode == second[2].read_mode == "ranges"
    assert second[2].num_bytes < first[2].num_bytes
    assert asked_second <= asked_first
    # Past the first request, the second load asked only for bytes the first did not.
    log = server.requests_for("/c.mp4")
    spans_first = [_span(r) for r in log[1:asked_first]]
    spans_second = [_span(r) for r in log[asked_first + 1 :]]
    assert spans_second
    assert not any(a < d and c < b for a, b in spans_first for c, d in spans_second)
    # And once more with the first frames: everything but the first request is cached.
    third = load(url, cache=cache, num_frames=3)
    assert_same(third, clip, 3)
    assert server.count("/c.mp4") - asked_first - asked_second == 1


@pytest.mark.parametrize("etag", ['W/"weak"', None], ids=["weak etag", "no validators"])
def test_blocks_of_a_file_without_a_strong_validator_are_not_cached(
    server: LoopbackServer, clip: bytes, tmp_path: Path, etag: str | None
) -> None:
    server.routes["/c.mp4"] = Route(clip, headers=dict(MP4), ranges=True, etag=etag)
    url = server.url("/c.mp4")
    cache = MediaCache(tmp_path / "cache")
    first = load(url, cache=cache)
    asked_first = ranged(server, "/c.mp4")
    second = load(url, cache=cache)
    assert_same(second, clip)
    assert ranged(server, "/c.mp4")[len(asked_first) :] == asked_first
    assert second[2].num_bytes == first[2].num_bytes


def test_blocks_cached_by_last_modified_alone_are_reused(
    server: LoopbackServer, clip: bytes, tmp_path: Path
) -> None:
    server.routes["/c.mp4"] = Route(clip, headers=dict(MP4), ranges=True, last_modified=MODIFIED)
    url = server.url("/c.mp4")
    cache = MediaCache(tmp_path / "cache")
    first = load(url, cache=cache)
    again = load(url, cache=cache)
    assert_same(again, clip)
    assert first[2].range_requests > 1
    assert again[2].range_requests == 1  # the first request; every block was cached


def test_a_new_etag_on_the_server_is_a_new_file_for_the_cache(
    server: LoopbackServer, clip: bytes, tmp_path: Path
) -> None:
    # Two different clips of the same length: only the validators tell them apart.
    other = noise_clip(20, seed=7, faststart=True, folder=tmp_path)
    size = max(len(clip), len(other)) + 64
    old, new = padded(clip, size), padded(other, size)
    url = server.url("/c.mp4")
    cache = MediaCache(tmp_path / "cache")
    server.routes["/c.mp4"] = Route(old, headers=dict(MP4), ranges=True, etag='"old"')
    assert_same(load(url, cache=cache), old)
    asked_old = ranged(server, "/c.mp4")
    server.routes["/c.mp4"] = Route(new, headers=dict(MP4), ranges=True, etag='"new"')
    got = load(url, cache=cache)
    assert_same(got, new)
    assert ranged(server, "/c.mp4")[len(asked_old) :] == asked_old


# -- 9. when range mode applies ----------------------------------------------------------


def test_a_file_under_range_reads_above_is_one_plain_request(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), POLICY.replace(range_reads_above=len(clip) + 1))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].range_requests == 0
    assert got[2].num_bytes == len(clip)
    assert ranged(server, "/c.mp4") == ["bytes=0-"]


def test_a_file_of_exactly_range_reads_above_bytes_is_read_by_ranges(
    server: LoopbackServer, clip: bytes
) -> None:
    # "From this many bytes on" (MediaPolicy.range_reads_above, MEDIAGATE_RANGE_READS_ABOVE).
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), POLICY.replace(range_reads_above=len(clip)))
    assert_same(got, clip)
    assert got[2].read_mode == "ranges"


@pytest.mark.parametrize(
    ("policy", "options"),
    [
        (POLICY.replace(range_reads_above=None), {}),
        (POLICY, {"range_reads": False}),
        (POLICY, {"video_backend": "opencv"}),
    ],
    ids=["range_reads_above=None", "range_reads=False", "opencv"],
)
def test_range_mode_off_is_one_plain_download(
    server: LoopbackServer, clip: bytes, policy: MediaPolicy, options: dict[str, Any]
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), policy, **options)
    reference = video_io(**options).load_bytes(clip)
    assert np.array_equal(got[0], np.asarray(reference[0]))
    assert got[1] == dict(reference[1])
    assert got[2].read_mode == "full" and got[2].range_requests == 0 and got[2].fallback == ""
    assert ranged(server, "/c.mp4") == [None]


def test_range_mode_off_from_the_environment(
    server: LoopbackServer, clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAGATE_RANGE_READS_ABOVE", "off")
    monkeypatch.setenv("MEDIAGATE_MAX_RANGE_REQUESTS", "7")
    policy = MediaPolicy.from_env()
    assert policy.range_reads_above is None and policy.max_range_requests == 7
    monkeypatch.setenv("MEDIAGATE_RANGE_READS_ABOVE", "65536")
    assert MediaPolicy.from_env().range_reads_above == 64 * KiB


def test_a_policy_proxy_downloads_whole_through_it(server: LoopbackServer, clip: bytes) -> None:
    target = server.url("/c.mp4")
    server.routes["/c.mp4"] = served(clip)
    with LoopbackServer({target: served(clip)}) as proxy:
        got = load(target, POLICY.replace(proxy=proxy.base))
        assert [r.range for r in proxy.requests] == [None]
    assert_same(got, clip)
    assert got[2].read_mode == "full"
    assert server.requests == []


# -- 10. containers that need a linear read ----------------------------------------------


@pytest.fixture(scope="module")
def linear_clips() -> dict[str, bytes]:
    return {
        "matroska": noise_clip(3, container="matroska"),
        "webm": noise_clip(3, container="webm", codec="libvpx"),
        "mpegts": noise_clip(3, container="mpegts"),
        "fragmented mp4": noise_clip(3, fragmented=True),
    }


@pytest.mark.parametrize("kind", ["matroska", "webm", "mpegts", "fragmented mp4"])
def test_a_container_that_needs_a_linear_read_is_downloaded_whole(
    server: LoopbackServer, linear_clips: dict[str, bytes], kind: str
) -> None:
    data = linear_clips[kind]
    assert len(data) > POLICY.range_reads_above  # type: ignore[operator]
    server.routes["/c"] = served(data)
    got = load(server.url("/c"))
    assert_same(got, data)
    report = got[2]
    assert report.num_bytes >= len(data)
    log = ranged(server, "/c")
    assert log[0] == "bytes=0-"
    if kind == "fragmented mp4" and report.read_mode == "ranges":
        # FFmpeg walks every fragment while it opens the file: all of it is read, in
        # order, by ranges, and nothing twice.
        assert report.num_bytes == len(data) and report.fallback == ""
        return
    assert report.read_mode == "full"
    assert "linear read" in report.fallback
    assert log[-1] is None and len(log) <= 3


# -- 11. hostile numbers -----------------------------------------------------------------


def _first_answer(
    change: Callable[[Request, Route], Route],
) -> Callable[[Request, int, Route], Route]:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        return change(request, truthful) if nth == 0 else truthful

    return answer


@pytest.mark.parametrize(
    "stated", [f"bytes 0-{2**63 - 1}/{2**63}", f"bytes 0-9/{10**19 - 1}"], ids=["2**63", "10**19-1"]
)
def test_a_huge_stated_total_is_too_large_from_the_first_answer(
    server: LoopbackServer, clip: bytes, stated: str
) -> None:
    server.routes["/c.mp4"] = scripted(
        clip,
        _first_answer(
            lambda request, truthful: with_headers(truthful, **{"Content-Range": stated})
        ),
    )
    start = time.monotonic()
    with pytest.raises(TooLargeError):
        load(server.url("/c.mp4"))
    assert time.monotonic() - start < 2
    assert server.count("/c.mp4") == 1


@pytest.mark.parametrize(
    "stated",
    [f"bytes 0-{2**64}/{2**64 + 1}", f"bytes 0-9/{10**400}", "bytes 0-9/" + "9" * 5000],
    ids=["2**64", "400 digits", "5000 digits"],
)
def test_a_stated_total_longer_than_any_file_is_malformed_and_the_file_downloaded(
    server: LoopbackServer, clip: bytes, stated: str
) -> None:
    server.routes["/c.mp4"] = scripted(
        clip,
        _first_answer(
            lambda request, truthful: with_headers(truthful, **{"Content-Range": stated})
        ),
    )
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback
    assert ranged(server, "/c.mp4") == ["bytes=0-", None]


@pytest.mark.parametrize(
    "stated",
    [
        f"bytes 0-{2**63 - 1}/{2**63}",
        "bytes 0-0/0",
        "bytes 0-1/-5",
        "bytes 1e3-2e3/3e3",
        "bytes 0-1/" + "9" * 5000,
        "digits",
    ],
    ids=["2**63", "zero", "negative", "float", "5000 digits", "other digits"],
)
def test_hostile_numbers_in_a_later_content_range_fall_back(
    server: LoopbackServer, clip: bytes, stated: str
) -> None:
    def change(request: Request, truthful: Route) -> Route:
        value = stated
        if stated == "digits":
            # The right numbers in Arabic-Indic digits, sent as UTF-8.
            arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
            value = truthful.headers["Content-Range"].translate(arabic)
            value = value.encode().decode("latin-1")
        return with_headers(truthful, **{"Content-Range": value})

    server.routes["/c.mp4"] = scripted(clip, _later(change))
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback


@pytest.mark.parametrize("length", [str(10**12), "0", "-1", "many"])
def test_a_lying_content_length_on_a_later_range_falls_back(
    server: LoopbackServer, clip: bytes, length: str
) -> None:
    server.routes["/c.mp4"] = scripted(
        clip, _later(lambda request, truthful: with_headers(truthful, **{"Content-Length": length}))
    )
    start = time.monotonic()
    try:
        got = load(server.url("/c.mp4"))
    except MediaError as exc:
        assert isinstance(exc, FetchError)
    else:
        assert_same(got, clip)
        assert got[2].read_mode == "full" and got[2].fallback
    assert time.monotonic() - start < 5


def test_a_first_answer_that_states_a_shorter_file_is_a_decode_error(
    server: LoopbackServer, clip: bytes
) -> None:
    # The file the server states ends before the frames its index lists.
    short = len(clip) // 2
    server.routes["/c.mp4"] = scripted(
        clip,
        lambda request, nth, truthful: range_answer(
            clip[:short], request.range, etag=ETAG, headers=dict(MP4)
        ),
    )
    with pytest.raises(MediaError) as caught:
        load(server.url("/c.mp4"))
    assert isinstance(caught.value, (DecodeError, FetchError))


def test_an_endless_body_for_a_range_is_read_no_further_than_asked(
    server: LoopbackServer, clip: bytes
) -> None:
    endless = bytes(24 * 1024 * KiB)  # stands in for a body that never ends

    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0 or request.range is None:
            return truthful
        return replace(
            truthful, body=endless, headers={**truthful.headers, "Content-Length": str(10**15)}
        )

    server.routes["/c.mp4"] = scripted(clip, answer)
    got = load(server.url("/c.mp4"), POLICY.replace(max_bytes=len(clip) * 3))
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback
    assert got[2].num_bytes < len(clip) * 2


def test_an_endless_first_answer_is_read_no_further_than_the_head(
    server: LoopbackServer, clip: bytes
) -> None:
    endless = clip + bytes(24 * 1024 * KiB)

    def answer(request: Request, nth: int, truthful: Route) -> Route:
        if nth == 0:  # the right Content-Range, then far more body than it says
            return replace(
                truthful, body=endless, headers={**truthful.headers, "Content-Length": str(10**15)}
            )
        return truthful

    server.routes["/c.mp4"] = scripted(clip, answer)
    got = load(server.url("/c.mp4"))
    assert_same(got, clip)
    assert got[2].read_mode == "ranges"
    assert got[2].num_bytes < len(clip)


# -- isolated decoders and the async API on the paths that give way ---------------------


ISOLATED = POLICY.replace(isolation=True)


def test_an_isolated_decoder_falls_back_when_a_later_range_lies(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = scripted(clip, _later(LIES["etag changes"]))
    got = load(server.url("/c.mp4"), ISOLATED)
    assert_same(got, clip)
    assert got[2].read_mode == "full" and got[2].fallback
    # One refused range (the worker asks nothing after it), then the download.
    assert len(ranged(server, "/c.mp4")) == 3


def test_an_isolated_decoder_over_max_range_requests_falls_back(
    server: LoopbackServer, clip: bytes
) -> None:
    server.routes["/c.mp4"] = served(clip)
    got = load(server.url("/c.mp4"), ISOLATED.replace(max_range_requests=2))
    assert_same(got, clip)
    assert "max_range_requests=2" in got[2].fallback
    assert len(ranged(server, "/c.mp4")) == 3


def test_an_isolated_decoder_never_reaches_a_refused_redirect(
    server: LoopbackServer, elsewhere: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        return truthful if nth == 0 else Route(b"", 302, {"Location": elsewhere.url("/c.mp4")})

    server.routes["/c.mp4"] = scripted(clip, answer)
    with pytest.raises(PolicyError):
        load(server.url("/c.mp4"), ISOLATED)
    assert elsewhere.requests == []
    # The next good load, through the same pool of workers, succeeds.
    server.routes["/good.mp4"] = served(clip)
    assert_same(load(server.url("/good.mp4"), ISOLATED), clip)


def test_an_isolated_decoder_ends_at_the_fetch_deadline(
    server: LoopbackServer, clip: bytes
) -> None:
    def answer(request: Request, nth: int, truthful: Route) -> Route:
        return truthful if nth == 0 else replace(truthful, delay=0.4)

    server.routes["/c.mp4"] = scripted(clip, answer)
    start = time.monotonic()
    with pytest.raises(FetchTimeout):
        load(server.url("/c.mp4"), ISOLATED.replace(timeout=1.0))
    assert time.monotonic() - start < 2.0


def test_the_async_api_falls_back_as_the_sync_one(server: LoopbackServer, clip: bytes) -> None:
    server.routes["/c.mp4"] = scripted(clip, _later(LIES["wrong start"]))

    loaded = _load_async(server.url("/c.mp4"))
    frames, metadata = loaded.media
    assert_same((np.asarray(frames), dict(metadata), None), clip)
    assert loaded.report.read_mode == "full" and loaded.report.fallback


def test_blocks_of_a_video_that_does_not_decode_are_not_cached(
    server: LoopbackServer, clip: bytes, tmp_path: Path
) -> None:
    # The stated file ends before the frames its index lists: no decode succeeds.
    short = len(clip) // 2
    server.routes["/c.mp4"] = scripted(
        clip,
        lambda request, nth, truthful: range_answer(
            clip[:short], request.range, etag=ETAG, headers=dict(MP4)
        ),
    )
    cache = MediaCache(tmp_path / "cache")
    with pytest.raises(DecodeError):
        load(server.url("/c.mp4"), cache=cache)
    assert cache.stats().entries == 0
    # The same blocks decode when the server sends the whole file: those are kept.
    server.routes["/c.mp4"] = served(clip)
    load(server.url("/c.mp4"), cache=cache)
    assert cache.stats().entries > 0
