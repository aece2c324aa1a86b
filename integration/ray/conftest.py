"""Fixtures for mediagate on Ray Data: a local two-CPU cluster and a loopback media server.

Run with ``make test-ray`` (it installs the pinned Ray first). Everything stays on this
machine: the cluster is started here (no dashboard), and every URL points at the
loopback server below, or at addresses the policy refuses before dialling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

from mediagate._build import encode_clip, jpeg_bytes, png_bytes, soundfile_bytes, tone  # noqa: E402
from mediagate._loopback import LoopbackServer, Route  # noqa: E402

#: A body over the policy's max_bytes below.
OVERSIZED = b"\xff\xd8" + b"\x00" * 300_000


@pytest.fixture(scope="session")
def policy() -> dict[str, object]:
    """The policy every job runs under: loopback allowed, a small byte cap, a short deadline."""
    return {"allowed_networks": ["127.0.0.1/32"], "max_bytes": 200_000, "timeout": 0.5}


def pytest_configure(config: pytest.Config) -> None:
    # Ray and its dependencies warn about their own internals; those are not ours.
    for line in (
        "ignore::DeprecationWarning",
        "ignore::PendingDeprecationWarning",
        "ignore::FutureWarning",
        "ignore::ResourceWarning",
        "ignore::pytest.PytestUnraisableExceptionWarning",
    ):
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    """A local Ray cluster of two CPUs, started for this session and shut down after."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def _route(path: str) -> Route | None:
    """Media by path prefix (``/img/12.jpg``), so each row has a URL of its own."""
    kind = path.split("/")[1] if path.count("/") >= 2 else ""
    return _ROUTES.get(kind)


_ROUTES: dict[str, Route] = {
    "img": Route(jpeg_bytes(64, 48)),
    "png": Route(png_bytes()),
    "wav": Route(soundfile_bytes(tone(0.25, 16000), 16000)),
    "mp4": Route(encode_clip(frames=8)),
    "garbage": Route(b"not media, just words " * 8),
    "big": Route(OVERSIZED),
    "slow": Route(jpeg_bytes(), delay=1.5),
    "private": Route(png_bytes()),
}


@pytest.fixture(scope="session")
def media_server() -> Iterator[LoopbackServer]:
    """Serves ``/<kind>/<n>.<ext>`` for the kinds above; anything else answers 404."""
    with LoopbackServer(fallback=_route) as server:
        yield server
