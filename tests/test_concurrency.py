"""Single flight and the bound on concurrent downloads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from builders import LoopbackServer, Route
from mediagate import FetchTimeout, MediaPolicy, TooLargeError
from mediagate._fetch import HttpFetcher
from mediagate._flight import SingleFlight
from mediagate._urls import parse_url

# -- SingleFlight ---------------------------------------------------------------------------


def test_concurrent_callers_share_one_run() -> None:
    calls = 0

    async def work() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"shared"

    async def main() -> list[bytes]:
        flight: SingleFlight[bytes] = SingleFlight()
        results = await asyncio.gather(*(flight.run("k", work) for _ in range(10)))
        assert flight.in_flight() == 0
        results.append(await flight.run("k", work))  # finished keys start afresh
        return results

    assert asyncio.run(main()) == [b"shared"] * 11
    assert calls == 2


def test_distinct_keys_run_separately_and_errors_are_shared() -> None:
    started: list[str] = []

    async def work(key: str) -> str:
        started.append(key)
        await asyncio.sleep(0.01)
        if key == "bad":
            raise ValueError("boom")
        return key

    async def main() -> list[Any]:
        flight: SingleFlight[str] = SingleFlight()
        return await asyncio.gather(
            *(flight.run(k, lambda k=k: work(k)) for k in ["a", "b", "bad", "a", "bad"]),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert results[:2] == ["a", "b"] and results[3] == "a"
    assert all(isinstance(r, ValueError) for r in (results[2], results[4]))
    assert sorted(started) == ["a", "b", "bad"]


def test_a_cancelled_waiter_leaves_the_others_running() -> None:
    cancelled = False

    async def work() -> int:
        nonlocal cancelled
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 7

    async def main() -> tuple[int, bool]:
        flight: SingleFlight[int] = SingleFlight()
        impatient = asyncio.ensure_future(flight.run("k", work))
        patient = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0.01)
        impatient.cancel()
        result = await patient
        return result, impatient.cancelled()

    assert asyncio.run(main()) == (7, True)
    assert not cancelled


def test_the_work_is_cancelled_when_every_waiter_left() -> None:
    async def main() -> tuple[bool, int]:
        state = {"cancelled": False, "runs": 0}

        async def work() -> int:
            state["runs"] += 1
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise
            return 1

        async def quick() -> int:
            state["runs"] += 1
            return 2

        flight: SingleFlight[int] = SingleFlight()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(flight.run("k", work), 0.05)
        await asyncio.sleep(0)
        assert await flight.run("k", quick) == 2  # a new caller does not join the dead run
        return bool(state["cancelled"]), int(state["runs"])

    assert asyncio.run(main()) == (True, 2)


# -- the fetcher ----------------------------------------------------------------------------


POLICY = MediaPolicy(allow_private_networks=True)


def test_in_flight_downloads_are_bounded(server: LoopbackServer) -> None:
    for i in range(6):
        server.routes[f"/{i}"] = Route(b"x" * 100, delay=0.1)
    fetcher = HttpFetcher(POLICY, max_in_flight=2)

    async def burst() -> list[bytes]:
        results = await asyncio.gather(
            *(
                fetcher.fetch_async(parse_url(server.url(f"/{i}")), limit=1000, timeout=10)
                for i in range(6)
            )
        )
        return [r.data for r in results]

    try:
        assert asyncio.run(burst()) == [b"x" * 100] * 6
    finally:
        fetcher.close()
    assert server.count() == 6 and server.gauge.peak == 2


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        HttpFetcher(POLICY, max_in_flight=0)


def test_followers_keep_their_own_deadline_and_budget(server: LoopbackServer) -> None:
    server.routes["/slow"] = Route(b"y" * 1000, delay=0.3)
    fetcher = HttpFetcher(POLICY)
    ref = parse_url(server.url("/slow"))

    async def main() -> list[Any]:
        return await asyncio.gather(
            fetcher.fetch_async(ref, limit=10_000, timeout=5),
            fetcher.fetch_async(ref, limit=10_000, timeout=0.05),
            fetcher.fetch_async(ref, limit=10, timeout=5),
            fetcher.fetch_async(ref, limit=10_000, timeout=5),
            return_exceptions=True,
        )

    try:
        leader, hurried, small, follower = asyncio.run(main())
        # A sync caller shares the loop and the de-duplication too.
        assert fetcher.fetch(ref, limit=10_000, timeout=5).data == b"y" * 1000
    finally:
        fetcher.close()
    assert leader.data == follower.data == b"y" * 1000
    assert isinstance(hurried, FetchTimeout)
    assert isinstance(small, TooLargeError)
    # One download per byte budget while concurrent, one more for the later sync call.
    assert server.count("/slow") == 3


def test_single_flight_can_be_switched_off(server: LoopbackServer) -> None:
    server.routes["/a"] = Route(b"z", delay=0.1)
    fetcher = HttpFetcher(POLICY, single_flight=False)
    ref = parse_url(server.url("/a"))

    async def main() -> None:
        await asyncio.gather(*(fetcher.fetch_async(ref, limit=10, timeout=5) for _ in range(3)))

    try:
        asyncio.run(main())
    finally:
        fetcher.close()
    assert server.count("/a") == 3
