"""One private event loop thread per process drives every network fetch.

Sync callers block on a future; async callers await the same future wrapped for their
own loop, so their loop never runs network code it did not ask for and the connection
pool is shared by both twins.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["on_fetch_loop", "run_async", "run_sync", "submit"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None


def _start() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=main, name="mediagate-fetch", daemon=True)
    thread.start()
    ready.wait()
    return loop


def get_loop() -> asyncio.AbstractEventLoop:
    """The fetch loop, started on first use (and again in a forked child)."""
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _loop.is_closed():
            _loop = _start()
            _pid = os.getpid()
        return _loop


def on_fetch_loop() -> bool:
    """Whether the running event loop (if any) is the fetch loop of this process."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is _loop and _pid == os.getpid()


def submit(coro: Coroutine[Any, Any, T]) -> Future[T]:
    """Schedule ``coro`` on the fetch loop."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the fetch loop and wait for it from this thread."""
    loop = get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("sync fetch called from the fetch loop itself")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the fetch loop and await it from the caller's loop."""
    return await asyncio.wrap_future(submit(coro))
