"""A source registered from outside the package, through public names only, is fetched,
cached, budgeted and error-mapped like a built-in one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        if len(data) > limit:
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
    with MediaConnector(policy=MediaPolicy(max_bytes=100)) as conn:
        with pytest.raises(TooLargeError):
            conn.fetch_image("mem://media/a.png")


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
