"""MediaCache: hits, expiry, LRU budget, integrity, sharing, privacy, faults, connector use."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from builders import LoopbackServer, Route, png_bytes
from mediagate import DecodeError, MediaCache, MediaConnector, MediaPolicy
from mediagate._cache import BLOCK_SIZE


class Clock:
    """A settable wall clock that also ticks a little on every read (strict order)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[MediaCache]:
    with MediaCache(tmp_path / "cache") as c:
        yield c


def data_files(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "data").glob("*/*") if p.is_file())


def index_rows(directory: Path) -> tuple[list[tuple[str, int, int]], tuple[int, int]]:
    """(file, size, billed) of every row, and the (billed, entries) running totals."""
    with sqlite3.connect(directory / "index.sqlite3") as conn:
        rows = conn.execute("SELECT file, size, billed FROM entries").fetchall()
        totals = conn.execute("SELECT billed, entries FROM totals").fetchone()
    conn.close()
    return rows, totals


# -- basic behaviour ------------------------------------------------------------------------


def test_miss_then_hit_and_stats(cache: MediaCache) -> None:
    url = "https://example.com/a.png"
    assert cache.get(url) is None
    cache.put(url, b"payload")
    assert cache.get(url) == b"payload"
    assert cache.get("https://example.com/b.png") is None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 2, 1)
    assert stats.bytes_stored == BLOCK_SIZE


def test_put_replaces_and_is_visible_to_another_instance(tmp_path: Path) -> None:
    url = "https://example.com/a.png"
    with MediaCache(tmp_path / "c") as first:
        first.put(url, b"old")
        first.put(url, b"new" * 2000)
        with MediaCache(tmp_path / "c") as second:
            assert second.get(url) == b"new" * 2000
            assert second.stats().entries == 1
            assert second.stats().bytes_stored == 2 * BLOCK_SIZE
    assert len(data_files(tmp_path / "c")) == 1


def test_file_names_carry_nothing_from_the_url(cache: MediaCache) -> None:
    cache.put("https://secret-host.example/private-name.jpg?token=abc", b"x")
    names = [str(p.relative_to(cache.directory)) for p in cache.directory.rglob("*")]
    assert names and not any(
        word in name for name in names for word in ("secret", "private", "token", "example")
    )


def test_ttl_expiry(tmp_path: Path) -> None:
    clock = Clock()
    with MediaCache(tmp_path / "c", ttl=60.0, clock=clock) as c:
        c.put("https://h/a", b"a")
        clock.now += 59.0
        assert c.get("https://h/a") == b"a"
        clock.now += 2.0
        assert c.get("https://h/a") is None
        assert c.stats().entries == 0 and c.stats().bytes_stored == 0
    assert data_files(tmp_path / "c") == []


def test_putting_the_same_bytes_renews_the_entry(tmp_path: Path) -> None:
    clock = Clock()
    with MediaCache(tmp_path / "c", ttl=60.0, clock=clock) as c:
        c.put("https://h/a", b"same")
        (before,) = data_files(tmp_path / "c")
        clock.now += 50.0
        c.put("https://h/a", b"same")
        clock.now += 50.0
        assert c.get("https://h/a") == b"same"
        assert data_files(tmp_path / "c") == [before]
        assert c.stats().bytes_stored == BLOCK_SIZE


def test_expired_entries_are_dropped_by_later_writes(tmp_path: Path) -> None:
    clock = Clock()
    with MediaCache(tmp_path / "c", ttl=60.0, clock=clock) as c:
        for i in range(5):
            c.put(f"https://h/{i}", b"x")
        clock.now += 120.0
        c.put("https://h/new", b"y")
        assert c.stats().entries == 1
    assert len(data_files(tmp_path / "c")) == 1


def test_lru_eviction_under_the_byte_budget(tmp_path: Path) -> None:
    with MediaCache(tmp_path / "c", max_bytes=3 * BLOCK_SIZE, clock=Clock()) as c:
        for name in "abc":
            c.put(f"https://h/{name}", name.encode())
        assert c.get("https://h/a") == b"a"  # a is now more recent than b and c
        c.put("https://h/d", b"d")
        assert c.get("https://h/b") is None
        assert [c.get(f"https://h/{n}") for n in "acd"] == [b"a", b"c", b"d"]
        c.put("https://h/e", b"e" * (2 * BLOCK_SIZE))  # needs two blocks: a and c go
        assert [c.get(f"https://h/{n}") for n in "acde"] == [None, None, b"d", b"e" * 8192]
        stats = c.stats()
        assert stats.evictions == 3
        assert stats.bytes_stored == 3 * BLOCK_SIZE
    assert len(data_files(tmp_path / "c")) == 2


def test_flood_of_tiny_entries_keeps_the_budget(tmp_path: Path) -> None:
    with MediaCache(tmp_path / "c", max_bytes=10 * BLOCK_SIZE) as c:
        for i in range(300):
            c.put(f"https://h/{i}", b"t")
        stats = c.stats()
    assert stats.entries == 10 and stats.bytes_stored == 10 * BLOCK_SIZE
    assert stats.evictions == 290
    assert len(data_files(tmp_path / "c")) == 10


def test_entry_larger_than_the_budget_is_not_cached(tmp_path: Path) -> None:
    with MediaCache(tmp_path / "c", max_bytes=2 * BLOCK_SIZE) as c:
        c.put("https://h/small", b"s")
        c.put("https://h/big", b"b" * (2 * BLOCK_SIZE + 1))
        assert c.get("https://h/big") is None
        assert c.get("https://h/small") == b"s"


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "delete"])
def test_corrupt_entries_are_misses_and_removed(cache: MediaCache, damage: str) -> None:
    url = "https://h/a.png"
    cache.put(url, b"0123456789" * 100)
    (path,) = data_files(cache.directory)
    body = path.read_bytes()
    if damage == "flip":
        path.write_bytes(body[:500] + bytes([body[500] ^ 1]) + body[501:])
    elif damage == "truncate":
        path.write_bytes(body[:10])
    elif damage == "extend":
        path.write_bytes(body + b"!")
    else:
        path.unlink()
    assert cache.get(url) is None
    assert cache.stats().entries == 0 and cache.stats().bytes_stored == 0
    cache.put(url, b"fresh")
    assert cache.get(url) == b"fresh"


def test_clear(cache: MediaCache) -> None:
    for i in range(3):
        cache.put(f"https://h/{i}", b"x")
    cache.clear()
    assert cache.get("https://h/0") is None
    assert cache.stats().entries == 0 and cache.stats().bytes_stored == 0
    assert data_files(cache.directory) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        MediaCache("unused", max_bytes=0)
    with pytest.raises(ValueError, match="ttl"):
        MediaCache("unused", ttl=-1)


def test_from_env(tmp_path: Path) -> None:
    assert MediaCache.from_env({}) is None
    env = {
        "MEDIAGATE_MEDIA_CACHE": str(tmp_path / "env-cache"),
        "MEDIAGATE_MEDIA_CACHE_MAX_SIZE_MB": "2",
        "MEDIAGATE_MEDIA_CACHE_TTL_HOURS": "0.5",
    }
    c = MediaCache.from_env(env)
    assert c is not None
    with c:
        assert (c.max_bytes, c.ttl) == (2 * 2**20, 1800.0)
        assert c.directory == tmp_path / "env-cache"


# -- privacy of the folder -----------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_folder_is_private(tmp_path: Path) -> None:
    with MediaCache(tmp_path / "a" / "b") as c:
        c.put("https://h/x", b"x")
    assert mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path / "a" / "b" / "index.sqlite3") == 0o600
    assert all(mode(p) == 0o600 for p in data_files(tmp_path / "a" / "b"))


def test_existing_cache_folder_is_repaired(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    MediaCache(folder).close()
    os.chmod(folder, 0o755)
    MediaCache(folder).close()
    assert mode(folder) == 0o700
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o777)
    os.chmod(empty, 0o777)
    MediaCache(empty).close()
    assert mode(empty) == 0o700


def test_a_shared_folder_with_other_files_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    (folder / "someone-else.txt").write_text("hi")
    with pytest.raises(ValueError, match="not private"):
        MediaCache(folder)
    assert mode(folder) == 0o777


# -- faults degrade to misses --------------------------------------------------------------


def test_folder_removed_under_a_live_cache(
    cache: MediaCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.put("https://h/a", b"a")
    shutil.rmtree(cache.directory)
    with caplog.at_level(logging.WARNING, logger="mediagate.cache"):
        assert cache.get("https://h/a") is None
        cache.put("https://h/b", b"b")
        assert cache.get("https://h/b") is None
    assert any(r.name == "mediagate.cache" for r in caplog.records)


def test_rename_failure_is_logged_not_raised(
    cache: MediaCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache.put("https://h/old", b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with caplog.at_level(logging.WARNING, logger="mediagate.cache"):
        cache.put("https://h/new", b"new")
    monkeypatch.undo()
    assert "write failed" in caplog.text
    assert cache.get("https://h/new") is None
    assert cache.get("https://h/old") == b"old"
    assert list((cache.directory / "tmp").iterdir()) == []
    assert cache.stats().entries == 1


def test_index_errors_are_misses(cache: MediaCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked() -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(cache, "_connection", locked)
    cache.put("https://h/a", b"a")
    assert cache.get("https://h/a") is None
    assert cache.stats().misses == 1


# -- several processes ---------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import hashlib, random, sys
    from mediagate import MediaCache

    folder, worker = sys.argv[1], int(sys.argv[2])
    rng = random.Random(worker)

    def body(key, writer, n):
        head = f"{key}|{writer}|{n}|".encode()
        size = rng.randrange(0, 9000)
        fill = hashlib.sha256(head).digest() * (size // 32 + 1)
        return head + fill[:size]

    def valid(key, data):
        parts = data.split(b"|", 3)
        if len(parts) != 4 or parts[0].decode() != key:
            return False
        prefix = b"|".join(parts[:3]) + b"|"
        digest = hashlib.sha256(prefix).digest()
        expected = (digest * (len(parts[3]) // 32 + 1))[: len(parts[3])]
        return parts[3] == expected

    cache = MediaCache(folder, max_bytes=40 * 4096)
    for n in range(150):
        key = f"https://h/{rng.randrange(60)}"
        got = cache.get(key)
        if got is not None and not valid(key, got):
            sys.exit(f"torn entry for {key}")
        if got is None or rng.random() < 0.3:
            cache.put(key, body(key, worker, n))
    cache.close()
    """
)


def test_four_processes_share_one_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shared"  # created by whichever worker comes first
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(folder), str(worker)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for worker in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"Traceback" not in err and b"mediagate.cache" not in err
    rows, (billed, entries) = index_rows(folder)
    assert billed == sum(r[2] for r in rows) <= 40 * BLOCK_SIZE
    assert entries == len(rows) > 0
    assert all(b == max(1, -(-s // BLOCK_SIZE)) * BLOCK_SIZE for _, s, b in rows)
    on_disk = {str(p.relative_to(folder / "data")) for p in data_files(folder)}
    assert on_disk == {r[0] for r in rows}
    assert list((folder / "tmp").iterdir()) == []
    with MediaCache(folder, max_bytes=40 * BLOCK_SIZE) as c:
        for i in range(60):
            key = f"https://h/{i}"
            data = c.get(key)
            assert data is None or data.startswith(key.encode() + b"|")
        assert c.stats().hits == len(rows)


# -- through the connector -----------------------------------------------------------------


@pytest.fixture
def cached_connector(tmp_path: Path) -> Iterator[MediaConnector]:
    policy = MediaPolicy(allow_private_networks=True)
    with MediaCache(tmp_path / "cache") as c, MediaConnector(cache=c, policy=policy) as conn:
        yield conn


def test_second_fetch_is_served_from_the_cache(
    server: LoopbackServer, cached_connector: MediaConnector, tmp_path: Path
) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    first = np.asarray(cached_connector.fetch_image(server.url("/a.png")))
    second = np.asarray(cached_connector.fetch_image(server.url("/a.png")))
    third = np.asarray(asyncio.run(cached_connector.fetch_image_async(server.url("/a.png"))))
    assert server.count("/a.png") == 1
    assert np.array_equal(first, second) and np.array_equal(first, third)
    # A restarted server (a new cache object on the same folder) still hits.
    policy = MediaPolicy(allow_private_networks=True)
    with MediaCache(tmp_path / "cache") as c, MediaConnector(cache=c, policy=policy) as conn:
        assert np.array_equal(np.asarray(conn.fetch_image(server.url("/a.png"))), first)
    assert server.count("/a.png") == 1


def test_undecodable_responses_are_not_cached(
    server: LoopbackServer, cached_connector: MediaConnector
) -> None:
    server.routes["/bad.png"] = Route(b"\x89PNG\r\n\x1a\n not really a png")
    for _ in range(2):
        with pytest.raises(DecodeError):
            cached_connector.fetch_image(server.url("/bad.png"))
    with pytest.raises(DecodeError):
        asyncio.run(cached_connector.fetch_image_async(server.url("/bad.png")))
    assert server.count("/bad.png") == 3
    assert cached_connector.cache.stats().entries == 0


def test_corrupt_entry_is_refetched(
    server: LoopbackServer, cached_connector: MediaConnector
) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    first = np.asarray(cached_connector.fetch_image(server.url("/a.png")))
    (path,) = data_files(cached_connector.cache.directory)
    path.write_bytes(path.read_bytes()[:20])
    again = np.asarray(cached_connector.fetch_image(server.url("/a.png")))
    assert server.count("/a.png") == 2 and np.array_equal(first, again)
    cached_connector.fetch_image(server.url("/a.png"))
    assert server.count("/a.png") == 2


def test_a_broken_cache_never_fails_a_fetch(
    server: LoopbackServer, cached_connector: MediaConnector
) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    shutil.rmtree(cached_connector.cache.directory)
    assert cached_connector.fetch_image(server.url("/a.png")).size == (40, 30)
    image = asyncio.run(cached_connector.fetch_image_async(server.url("/a.png")))
    assert image.size == (40, 30)
    assert server.count("/a.png") == 2


def test_concurrent_fetches_of_one_url_download_once(
    server: LoopbackServer, cached_connector: MediaConnector
) -> None:
    server.routes["/slow.png"] = Route(png_bytes(), delay=0.3)

    async def burst() -> list[np.ndarray]:
        images = await asyncio.gather(
            *(cached_connector.fetch_image_async(server.url("/slow.png")) for _ in range(16))
        )
        return [np.asarray(i) for i in images]

    arrays = asyncio.run(burst())
    assert server.count("/slow.png") == 1
    assert all(np.array_equal(arrays[0], a) for a in arrays)
    assert cached_connector.cache.stats().entries == 1


def test_entry_checksum_sees_every_single_bit_flip() -> None:
    from mediagate._cache import _checksum

    payload = bytearray(os.urandom(8 * 5 + 3))  # whole words and a ragged tail
    reference = _checksum(bytes(payload))
    for index in range(len(payload)):
        for bit in range(8):
            payload[index] ^= 1 << bit
            assert _checksum(bytes(payload)) != reference, (index, bit)
            payload[index] ^= 1 << bit
    assert _checksum(bytes(payload[:-1])) != reference
    assert 0 <= reference < 2**63  # fits SQLite's signed integers


def test_switching_a_fresh_index_waits_out_another_process_lock() -> None:
    import sqlite3

    from mediagate._cache import _with_retries

    attempts: list[int] = []

    def locked_twice() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "wal"

    assert _with_retries(locked_twice) == "wal" and len(attempts) == 3

    def broken() -> str:
        raise sqlite3.OperationalError("no such table: entries")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _with_retries(broken)
