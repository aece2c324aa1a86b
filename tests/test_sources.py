"""A source registered from outside the package, through public names only, is fetched,
cached, budgeted and error-mapped like a built-in one."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from builders import png_bytes
from mediagate import (
    SOURCE_REGISTRY,
    DecodeError,
    FetchError,
    ImageMediaIO,
    MediaCache,
    MediaConnector,
    MediaPolicy,
    PolicyError,
    Source,
    SourceResult,
    TooLargeError,
)

STORE: dict[str, bytes] = {}
CALLS: list[str] = []


class MemorySource:
    """Serves ``mem://bucket/key`` from ``STORE``; ``mem://secret/...`` is refused."""

    cacheable = True

    def fetch(self, ref: Any, *, policy: MediaPolicy, limit: int, timeout: float) -> SourceResult:
        if ref.host == "secret":
            raise PolicyError("the bucket is not allowed")
        CALLS.append(ref.url)
        if ref.host == "broken":
            raise KeyError("internal detail")
        data = STORE.get(ref.host + ref.path)
        if data is None:
            raise FetchError("no such object", upstream_status=404)
        if len(data) > limit and ref.host != "greedy":
            raise TooLargeError.over_max_bytes("the object", len(data), limit)
        return SourceResult(data=data, origin=ref.url)


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    SOURCE_REGISTRY.register("mem")(MemorySource)
    yield


@pytest.fixture(autouse=True)
def store() -> None:
    STORE.clear()
    CALLS.clear()
    STORE["media/a.png"] = png_bytes()
    STORE["media/junk"] = b"not an image"


def test_a_registered_source_is_fetched_by_both_twins() -> None:
    assert isinstance(MemorySource(), Source)
    with MediaConnector() as conn:
        assert conn.fetch_image("mem://media/a.png").size == (40, 30)
        image = asyncio.run(conn.fetch_image_async("mem://media/a.png"))
        assert np.asarray(image).shape == (30, 40, 3)
        _, report = conn.load_with_report("mem://media/a.png", ImageMediaIO())
    assert report.source == "mem" and report.num_bytes == len(STORE["media/a.png"])
    assert CALLS == ["mem://media/a.png"] * 3


def test_its_errors_are_mapped_like_a_built_in_one() -> None:
    with MediaConnector() as conn:
        with pytest.raises(PolicyError):
            conn.fetch_image("mem://secret/a.png")
        with pytest.raises(FetchError) as missing:
            conn.fetch_image("mem://media/missing.png")
        assert missing.value.http_status == 422  # an upstream 4xx
        with pytest.raises(FetchError) as broken:
            asyncio.run(conn.fetch_image_async("mem://broken/x"))
        assert "internal detail" not in str(broken.value)
        with pytest.raises(DecodeError):
            conn.fetch_image("mem://media/junk")
        with pytest.raises(PolicyError):
            conn.fetch_image("mem://user:pw@media/a.png")
    assert "mem://secret/a.png" not in CALLS


def test_it_is_budgeted_whatever_the_source_returns() -> None:
    STORE["greedy/a.png"] = STORE["media/a.png"]  # served whatever the limit
    with MediaConnector(policy=MediaPolicy(max_bytes=100)) as conn:
        with pytest.raises(TooLargeError):
            conn.fetch_image("mem://media/a.png")
        with pytest.raises(TooLargeError, match="over"):
            conn.fetch_image("mem://greedy/a.png")
        with pytest.raises(TooLargeError):
            asyncio.run(conn.fetch_image_async("mem://greedy/a.png"))


def test_it_shares_the_cache_and_only_decodable_bytes_are_kept(tmp_path: Path) -> None:
    with MediaCache(tmp_path / "cache") as cache, MediaConnector(cache=cache) as conn:
        conn.fetch_image("mem://media/a.png")
        conn.fetch_image("mem://media/a.png")
        asyncio.run(conn.fetch_image_async("mem://media/a.png"))
        for _ in range(2):
            with pytest.raises(DecodeError):
                conn.fetch_image("mem://media/junk")
    assert CALLS == ["mem://media/a.png", "mem://media/junk", "mem://media/junk"]


def test_unknown_schemes_are_still_refused() -> None:
    with MediaConnector() as conn, pytest.raises(PolicyError, match="mem"):
        conn.fetch_image("gopher://media/a.png")


def test_cache_entries_are_kept_apart_by_the_storage_settings(tmp_path: Path) -> None:
    first = MediaPolicy(storage_options={"mem": {"endpoint_url": "http://a.example"}})
    second = MediaPolicy(storage_options={"mem": {"endpoint_url": "http://b.example"}})
    with MediaCache(tmp_path / "cache") as cache:
        for policy in (first, second, first):
            with MediaConnector(cache=cache, policy=policy) as conn:
                conn.fetch_image("mem://media/a.png")
    assert CALLS == ["mem://media/a.png"] * 2  # the third was a hit on the first's entry


@pytest.mark.parametrize("scheme", ["http", "https", "data", "file"])
def test_the_built_in_schemes_are_sources_in_the_same_registry(scheme: str) -> None:
    assert scheme in SOURCE_REGISTRY
    assert isinstance(SOURCE_REGISTRY.load(scheme), Source)


def test_the_connector_routes_a_built_in_scheme_through_its_registered_source(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.png").write_bytes(STORE["media/a.png"])
    builtin = SOURCE_REGISTRY.get("file")
    seen: list[tuple[str, int]] = []

    class CountingFileSource(builtin):  # type: ignore[misc,valid-type]
        def fetch(self, ref: Any, *, policy: MediaPolicy, limit: int, timeout: float) -> Any:
            seen.append((ref.url, limit))
            return super().fetch(ref, policy=policy, limit=limit, timeout=timeout)

    SOURCE_REGISTRY.register("file", override=True)(CountingFileSource)
    try:
        with MediaConnector(allowed_local_media_path=tmp_path) as conn:
            url = (tmp_path / "a.png").as_uri()
            assert conn.fetch_image(url).size == (40, 30)
            assert asyncio.run(conn.fetch_image_async(url)).size == (40, 30)
    finally:
        SOURCE_REGISTRY.register("file", override=True)(builtin)
    limit = MediaPolicy().max_bytes_for("image")
    assert seen == [(url, limit), (url, limit)]


class GatedSource(MemorySource):
    """A source whose own rule (``check``) refuses ``mem://closed/...`` before any I/O."""

    closed: ClassVar[set[str]] = set()

    def check(self, ref: Any, *, policy: MediaPolicy) -> None:
        if ref.host in self.closed:
            raise PolicyError("the bucket is closed")


def test_a_sources_own_rules_are_judged_before_the_cache_is_consulted(tmp_path: Path) -> None:
    SOURCE_REGISTRY.register("gated", override=True)(GatedSource)
    STORE["closed/a.png"] = STORE["media/a.png"]
    GatedSource.closed.clear()
    with MediaCache(tmp_path / "cache") as cache, MediaConnector(cache=cache) as conn:
        assert conn.fetch_image("gated://closed/a.png").size == (40, 30)
        GatedSource.closed.add("closed")
        with pytest.raises(PolicyError, match="closed"):
            conn.fetch_image("gated://closed/a.png")
        with pytest.raises(PolicyError, match="closed"):
            asyncio.run(conn.fetch_image_async("gated://closed/a.png"))
    assert CALLS == ["gated://closed/a.png"]


class AsyncMemorySource(MemorySource):
    """A source with an async twin: it runs on the caller's loop, not in a worker."""

    loops: ClassVar[list[asyncio.AbstractEventLoop]] = []
    closed_by: ClassVar[list[str]] = []

    async def fetch_async(
        self, ref: Any, *, policy: MediaPolicy, limit: int, timeout: float
    ) -> SourceResult:
        self.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return self.fetch(ref, policy=policy, limit=limit, timeout=timeout)

    async def aclose(self) -> None:
        self.closed_by.append("aclose")


def test_an_async_source_is_awaited_on_the_callers_loop_and_closed_with_the_connector() -> None:
    SOURCE_REGISTRY.register("amem", override=True)(AsyncMemorySource)
    AsyncMemorySource.loops.clear()
    AsyncMemorySource.closed_by.clear()
    STORE["big/a.png"] = STORE["media/a.png"]

    async def main() -> asyncio.AbstractEventLoop:
        async with MediaConnector(policy=MediaPolicy(max_bytes=100)) as conn:
            with pytest.raises(TooLargeError):
                await conn.fetch_image_async("amem://big/a.png")
        async with MediaConnector() as conn:
            image = await conn.fetch_image_async("amem://media/a.png")
            assert image.size == (40, 30)
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert AsyncMemorySource.loops == [loop, loop]
    assert AsyncMemorySource.closed_by == ["aclose", "aclose"]


class InlineSource:
    """Hands over base64 text, as ``data:`` URLs do; ``mem64://bad/...`` answers nonsense."""

    cacheable = False

    def fetch(self, ref: Any, *, policy: MediaPolicy, limit: int, timeout: float) -> Any:
        if ref.host == "bad":
            return SourceResult(base64=12345)  # type: ignore[arg-type]
        if ref.host == "text":
            return "not bytes"
        text = base64.b64encode(STORE["media/a.png"]).decode()
        return SourceResult(content_type="image/png", base64=text)


def test_base64_text_from_a_source_is_decoded_and_budgeted() -> None:
    SOURCE_REGISTRY.register("mem64", override=True)(InlineSource)
    with MediaConnector() as conn:
        loaded, report = conn.load_with_report("mem64://media/a.png", ImageMediaIO())
        assert loaded.size == (40, 30) and report.num_bytes == len(STORE["media/a.png"])
        for url in ("mem64://bad/a.png", "mem64://text/a.png"):
            with pytest.raises(FetchError, match="something other than bytes"):
                conn.fetch_image(url)
    with MediaConnector(policy=MediaPolicy(max_bytes=100)) as conn:
        with pytest.raises(TooLargeError, match="base64"):
            conn.fetch_image("mem64://media/a.png")
        with pytest.raises(TooLargeError, match="base64"):
            asyncio.run(conn.fetch_image_async("mem64://media/a.png"))
