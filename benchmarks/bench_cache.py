"""MediaCache: insert cost against the number of entries, and a hit against a download.

1. A full cache (every insert evicts the least recently used entry) of 100 entries
   against one of 50,000: the cost of an insert must not grow with the entry count
   (target: ratio under 2x).
2. Reading a 1 MB image from the cache against downloading it from a loopback server on
   a new connection (target: the hit at least 5x faster). The same pair through
   ``MediaConnector.fetch_image`` (decode included) is reported for context.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result, alternate, ratio
from mediagate import MediaCache, MediaConnector, MediaPolicy
from mediagate._build import image_bytes
from mediagate._cache import BLOCK_SIZE
from mediagate._fetch import HttpFetcher
from mediagate._loopback import LoopbackServer, Route
from mediagate._urls import parse_url

WORK = Path(__file__).resolve().parent / ".work"
POLICY = MediaPolicy(allow_private_networks=True)


def fill(cache: MediaCache, count: int, payload: bytes) -> None:
    """Add ``count`` entries quickly: one transaction for the rows, plain writes for files.

    The rows and files look exactly like those ``put`` makes (same layout, checksums and
    billing), so the inserts timed afterwards see a realistic index and folder.
    """
    crc = zlib.crc32(payload)
    billed = max(1, -(-len(payload) // BLOCK_SIZE)) * BLOCK_SIZE
    rows = []
    start = time.time() - count
    for i in range(count):
        hashed = hashlib.sha256(f"https://fill.example/{i}".encode()).hexdigest()
        file = f"{hashed[:2]}/{hashed}.{secrets.token_hex(8)}"
        path = cache.directory / "data" / file
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.close(fd)
        rows.append((hashed, file, len(payload), billed, crc, start + i, start + i))
    with sqlite3.connect(cache.directory / "index.sqlite3") as conn:
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute(
            "UPDATE totals SET billed = billed + ?, entries = entries + ? WHERE id = 0",
            (billed * count, count),
        )
    conn.close()


def insert_cost(quick: bool) -> Result:
    payload = b"p" * 200
    sizes = (100, 10_000 if quick else 50_000)
    root = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=WORK))
    caches: dict[str, MediaCache] = {}
    try:
        for size in sizes:
            cache = MediaCache(root / str(size), max_bytes=size * BLOCK_SIZE, ttl=24 * 3600.0)
            fill(cache, size, payload)
            caches[f"{size} entries"] = cache
        counter = iter(range(10**9))
        batch = 100

        def inserter(cache: MediaCache) -> Callable[[], None]:
            def run() -> None:
                for _ in range(batch):
                    cache.put(f"https://new.example/{next(counter)}", payload)

            return run

        times = alternate(
            {name: inserter(c) for name, c in caches.items()},
            runs=5 if quick else 9,
            warmup=1,
        )
        per_insert = {name: [t / batch for t in ts] for name, ts in times.items()}
        for name, cache in caches.items():
            stats = cache.stats()
            assert stats.entries == int(name.split()[0]), stats
        return Result(
            group="cache",
            workload=f"insert into a full cache (evicts one LRU entry each), {len(payload)} B",
            times=per_insert,
            target=f"{sizes[-1]} entries/{sizes[0]} entries < 2x",
        )
    finally:
        for cache in caches.values():
            cache.close()
        shutil.rmtree(root, ignore_errors=True)


def one_megabyte_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    side = 560
    while True:
        data = image_bytes(
            rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "JPEG", quality=85
        )
        if len(data) >= 2**20:
            return data
        side += 40


def hit_vs_download(quick: bool) -> list[Result]:
    body = one_megabyte_jpeg()
    root = Path(tempfile.mkdtemp(prefix="bench-cache-", dir=WORK))
    runs = 10 if quick else 30
    try:
        route = Route(body, headers={"Content-Type": "image/jpeg"})
        with LoopbackServer({"/image.jpg": route}) as server, MediaCache(root / "c") as cache:
            url = server.url("/image.jpg")
            ref = parse_url(url)
            cache.put(ref.url, body)

            def cold() -> None:
                fetcher = HttpFetcher(POLICY)  # a new connection pool: a cold download
                try:
                    assert len(fetcher.fetch(ref, limit=2**25, timeout=10).data) == len(body)
                finally:
                    fetcher.close()

            def warm() -> None:
                assert cache.get(ref.url) is not None

            bytes_result = Result(
                group="cache",
                workload=f"get {len(body) / 2**20:.2f} MB: loopback download vs cache hit",
                times=alternate({"cold download": cold, "cache hit": warm}, runs=runs),
                target="hit >= 5x faster",
            )
            uncached = MediaConnector(policy=POLICY)
            cached = MediaConnector(policy=POLICY, cache=cache)
            try:
                cached.fetch_image(url)
                image_result = Result(
                    group="cache",
                    workload="fetch_image of the same JPEG, decode included",
                    times=alternate(
                        {
                            "cold download": lambda: uncached.fetch_image(url),
                            "cache hit": lambda: cached.fetch_image(url),
                        },
                        runs=runs,
                    ),
                    target="(context)",
                )
            finally:
                uncached.close()
                cached.close()
        return [bytes_result, image_result]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False) -> list[Result]:
    """Run every comparison; ``quick`` uses fewer runs and a 10,000-entry large cache."""
    WORK.mkdir(parents=True, exist_ok=True)
    results = [insert_cost(quick), *hit_vs_download(quick)]
    first, second = results[0].times
    results[0].note = f"ratio {ratio(results[0], second, first):.2f}x"
    for result in results[1:]:
        result.note = f"hit {ratio(result, 'cold download', 'cache hit'):.1f}x faster"
    return results


def table(results: list[Result]) -> str:
    lines = ["| workload | side | median | target | result |", "|---|---|---|---|---|"]
    for result in results:
        for side in result.times:
            lines.append(
                f"| {result.workload} | {side} | {result.median(side) * 1e6:,.0f} µs "
                f"| {result.target} | {result.note} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
