"""Video backends that misbehave on purpose, registered for the isolation tests.

Importing this module registers them; a decoder worker imports it when it unpickles
a ``VideoMediaIO`` that names one, so they exist on both sides of the pool.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt

from mediagate import VIDEO_LOADER_REGISTRY
from mediagate._media import _isolation

VideoResult = tuple[npt.NDArray[np.uint8], dict[str, Any]]


def _frames() -> VideoResult:
    return np.zeros((1, 4, 4, 3), np.uint8), {"total_num_frames": 1}


@VIDEO_LOADER_REGISTRY.register("test-abort")
class AbortingLoader:
    """Calls ``os.abort()`` when it decodes in a worker (and returns one frame otherwise)."""

    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = -1, **options: Any) -> VideoResult:
        if _isolation.in_worker():
            os.abort()
        return _frames()


@VIDEO_LOADER_REGISTRY.register("test-spin")
class SpinningLoader:
    """Never returns when it decodes in a worker: a native decoder stuck in a loop."""

    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = -1, **options: Any) -> VideoResult:
        if _isolation.in_worker():
            while True:
                pass
        return _frames()


@VIDEO_LOADER_REGISTRY.register("test-hog")
class HoggingLoader:
    """Allocates far past any budget when it decodes in a worker."""

    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = -1, **options: Any) -> VideoResult:
        if _isolation.in_worker():
            hoard = [np.ones(1 << 28, np.uint8) for _ in range(64)]
            return np.zeros((len(hoard), 1, 1, 3), np.uint8), {}
        return _frames()
