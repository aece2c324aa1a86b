"""Single flight: concurrent calls for the same key share one run of the work.

``SingleFlight.run(key, factory)`` starts ``factory()`` as a task the first time ``key``
is asked for and lets every caller that arrives while it is running await that same
task. Results and exceptions are shared; the key is forgotten as soon as the task ends,
so a later call starts afresh (caching finished results is the cache's job, not this).

A caller that is cancelled (for example by its own deadline) stops waiting without
cancelling the others; the shared task is cancelled only when its last waiter leaves.

All network coroutines run on the one private fetch loop, so a ``SingleFlight`` used
inside them de-duplicates for sync and async callers alike. It is not thread-safe:
use one instance from one event loop (it starts over if it finds itself on another,
as happens in a forked child).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[T]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[T]):
    """De-duplicate concurrent async work by key.

    Example::

        flight: SingleFlight[bytes] = SingleFlight()
        data = await flight.run(url, lambda: download(url))  # one download per url at a time
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, _Call[T]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def in_flight(self) -> int:
        """How many distinct keys are running now."""
        return len(self._calls)

    async def run(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        """Await the running work for ``key``, starting ``factory()`` if there is none.

        Raises:
            Exception: whatever the shared work raised (every waiter sees it).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._calls = {}
            self._loop = loop
        call = self._calls.get(key)
        if call is None:
            call = _Call(asyncio.ensure_future(factory()))
            self._calls[key] = call
            call.task.add_done_callback(functools.partial(self._when_done, key, call))
        call.waiters += 1
        try:
            return await asyncio.shield(call.task)
        finally:
            call.waiters -= 1
            if call.waiters == 0 and not call.task.done():
                # The last interested caller left: nobody will use the result.
                self._forget(key, call)
                call.task.cancel()

    def _when_done(self, key: Hashable, call: _Call[T], _task: asyncio.Future[T]) -> None:
        self._forget(key, call)

    def _forget(self, key: Hashable, call: _Call[T]) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]
