"""Run one hostile load in a child process under an address-space limit and measure it.

``run_limited("module:function", *args, address_space=..., timeout=...)`` starts a fresh
interpreter (spawn), lowers ``RLIMIT_AS`` to the child's current address-space size plus
``address_space`` bytes, calls the function and reports what escaped, the child's peak
resident memory growth and CPU time. The function must be importable by name (a module
under ``tests/``), and its arguments picklable. A child that dies or outlives
``timeout`` is reported as such, never as a pass.
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "run_limited"]


@dataclass(frozen=True)
class Outcome:
    """What happened in the child."""

    #: Name of the exception class that escaped (``None``: returned normally).
    error: str | None
    #: Whether it was a ``mediagate.MediaError``.
    media_error: bool
    #: ``str()`` of the error, ``""`` if none.
    message: str
    #: The ``limit`` attribute of a ``TooLargeError``, else ``None``.
    limit: str | None
    #: Peak resident memory growth during the call, bytes.
    peak_rss_growth: int
    #: User + system CPU seconds the call used.
    cpu_seconds: float
    #: Wall seconds of the call (measured in the child).
    wall_seconds: float
    #: The child died or was killed before reporting.
    died: bool = False
    #: The parent gave up waiting after ``timeout``.
    timed_out: bool = False


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")  # pragma: no cover


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(target: str, args: tuple[Any, ...], address_space: int, queue: Any) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    import mediagate  # noqa: F401  (imported before measuring: its libraries load once)

    soft = _address_space() + address_space
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    base_rss = _rss_peak()
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    error: BaseException | None = None
    try:
        fn(*args)
    except BaseException as exc:  # report, whatever it is
        error = exc
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    from mediagate import MediaError

    queue.put(
        Outcome(
            error=None if error is None else type(error).__name__,
            media_error=isinstance(error, MediaError),
            message="" if error is None else str(error)[:500],
            limit=getattr(error, "limit", None),
            peak_rss_growth=max(0, _rss_peak() - base_rss),
            cpu_seconds=cpu,
            wall_seconds=wall,
        )
    )


def run_limited(target: str, *args: Any, address_space: int, timeout: float = 30.0) -> Outcome:
    """Call ``target`` (``"module:function"``) with ``args`` in a limited child process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, address_space, queue), daemon=True)
    proc.start()
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                outcome: Outcome = queue.get(timeout=0.1)
                break
            except Exception:  # queue.Empty: still running, or gone without a word
                alive = proc.is_alive()
                if alive and time.monotonic() < end:
                    continue
                if not alive:
                    try:  # it may have reported just before it ended
                        outcome = queue.get(timeout=0.5)
                        break
                    except Exception:
                        pass
                proc.kill()
                proc.join(5)
                return Outcome(None, False, "", None, 0, 0.0, 0.0, died=not alive, timed_out=alive)
    finally:
        queue.close()
    proc.join(5)
    return outcome
