"""Concurrency: the caller's event loop stays responsive under a burst of image fetches.

64 concurrent ``fetch_image_async`` calls for distinct 1920x1080 JPEGs, served from a
loopback server in another process, run while a ticker task on the caller's loop sleeps
1 ms at a time and records how late it wakes up. Network I/O runs on the private fetch
loop (at most ``max_in_flight`` downloads at once) and decoding in the connector's worker
pool, so the caller's loop should only ever wait for the GIL.

Target: p99 lag under 20 ms.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result
from mediagate import MediaConnector, MediaPolicy
from mediagate._build import image_bytes

CONCURRENCY = 64
TICK = 0.001

_SERVER = textwrap.dedent(
    """
    import sys, threading
    from mediagate._loopback import LoopbackServer, Route

    with open(sys.argv[1], "rb") as handle:
        route = Route(handle.read(), headers={"Content-Type": "image/jpeg"})
    server = LoopbackServer(fallback=lambda path: route)
    print(server.port, flush=True)
    threading.Event().wait()
    """
)


def full_hd_jpeg() -> bytes:
    """A 1920x1080 photo-like JPEG (smooth gradients plus mild noise), about 0.5 MB."""
    y, x = np.mgrid[0:1080, 0:1920]
    rng = np.random.default_rng(0)
    base = np.stack([x * 255 // 1919, y * 255 // 1079, (x + y) * 255 // 2998], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return image_bytes(pixels, "JPEG", quality=90)


@contextmanager
def server_process(body: bytes) -> Iterator[str]:
    """A loopback server in its own process, so its threads do not share our GIL."""
    with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as handle:
        handle.write(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, handle.name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(handle.name)


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - start - TICK)


async def burst_with_ticker(
    connector: MediaConnector, base: str, rounds: int, *, load: bool
) -> tuple[list[float], list[float]]:
    """Loop lag samples and per-round wall times (``load=False`` only ticks)."""
    lags: list[float] = []
    stop = asyncio.Event()
    tick_task = asyncio.ensure_future(ticker(lags, stop))
    walls: list[float] = []
    for r in range(rounds):
        start = time.perf_counter()
        if load:
            images = await asyncio.gather(
                *(connector.fetch_image_async(f"{base}/{r}/{i}.jpg") for i in range(CONCURRENCY))
            )
            # np.asarray is the decoded array itself; ``image.size`` would build the
            # lazy PIL view (a full-frame copy) here, on the loop being measured.
            assert all(np.asarray(image).shape == (1080, 1920, 3) for image in images)
        else:
            await asyncio.sleep(0.3)
        walls.append(time.perf_counter() - start)
    stop.set()
    await tick_task
    return lags, walls


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def run(quick: bool = False) -> list[Result]:
    """Loop lag while 64 concurrent image fetches decode, against an idle loop."""
    rounds = 3 if quick else 10
    body = full_hd_jpeg()
    policy = MediaPolicy(allow_private_networks=True)
    results: list[Result] = []
    with server_process(body) as base, MediaConnector(policy=policy) as connector:
        # Warm the connection pool and the worker pool once.
        asyncio.run(burst_with_ticker(connector, base + "/warm", 1, load=True))
        idle, _ = asyncio.run(burst_with_ticker(connector, base, rounds, load=False))
        lags, walls = asyncio.run(burst_with_ticker(connector, base, rounds, load=True))
    images_per_second = CONCURRENCY / statistics.median(walls)
    for name, samples in (("idle loop", idle), (f"{CONCURRENCY} fetches", lags)):
        results.append(
            Result(
                group="concurrency",
                workload=f"caller loop lag, {name}",
                times={"lag": samples},
                target="p99 < 20 ms" if samples is lags else "(baseline)",
                note=(
                    f"p50 {percentile(samples, 50) * 1e3:.2f} ms, "
                    f"p99 {percentile(samples, 99) * 1e3:.2f} ms, "
                    f"max {max(samples) * 1e3:.2f} ms, {len(samples)} ticks"
                ),
            )
        )
    results[-1].note += (
        f"; {images_per_second:.0f} images/s ({len(body) / 2**10:.0f} KiB 1920x1080 JPEG, "
        f"{connector.max_workers} decode workers, {os.cpu_count()} CPUs)"
    )
    return results


def table(results: list[Result]) -> str:
    lines = ["| workload | target | result |", "|---|---|---|"]
    lines += [f"| {r.workload} | {r.target} | {r.note} |" for r in results]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
