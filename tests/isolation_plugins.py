"""Functions that decoder workers import by name in tests/test_isolation.py.

Some of them misbehave on purpose: abort, segfault, exit, allocate without bound,
spin forever. They live in an importable module so spawned workers can unpickle them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from mediagate import MediaError, TooLargeError
from mediagate._media import _isolation


class PluginError(MediaError):
    """A MediaError subclass defined outside mediagate, with its own field."""

    http_status = 418

    def __init__(self, message: str, *, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def echo(value: Any) -> Any:
    return value


def worker_state() -> tuple[bool, int]:
    return _isolation.in_worker(), os.getpid()


def abort() -> None:
    os.abort()


def segfault() -> None:
    ctypes.string_at(0)


def exit_now() -> None:
    sys.exit(3)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def allocate(nbytes: int) -> int:
    chunks = [np.ones(nbytes // 8, dtype=np.uint8) for _ in range(8)]
    return sum(int(c[0]) for c in chunks)


def spin() -> None:
    while True:
        pass


def spin_native() -> None:
    ctypes.CDLL(None).pause()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def raise_plugin_error() -> None:
    raise PluginError("the plugin refused this input", detail="frame 7")


def raise_too_large() -> None:
    raise TooLargeError("too many frames", limit="max_video_frames", value=5000, maximum=1024)


def raise_value_error(secret: bytes) -> None:
    raise ValueError(f"bad payload {secret!r}")


def frame(height: int, width: int) -> npt.NDArray[np.uint8]:
    out = _isolation.shared_empty((height, width, 3), np.uint8)
    out.fill(7)
    out[0, :4, 0] = (0, 1, 2, 3)
    return out


def frames_and_view(n: int) -> dict[str, Any]:
    out = _isolation.shared_empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        out[i] = i
    return {"frames": out, "last": out[-1], "meta": {"fps": 25.0, "n": n}}


def plain_array(n: int) -> npt.NDArray[np.float32]:
    return np.arange(n, dtype=np.float32)


def dangling_segment() -> int:
    scratch = _isolation.shared_empty((1 << 20,), np.uint8)
    scratch[:] = 1
    return int(scratch.sum())


def unpicklable() -> Any:
    return lambda: None


def image(width: int, height: int, mode: str) -> Any:
    from PIL import Image

    return Image.new(mode, (width, height), color=7 if mode in ("L", "P") else (1, 2, 3))


def same_bytes(data: bytes) -> tuple[bytes, int]:
    return data, len(data)


def decode_video(data: bytes) -> tuple[int, tuple[int, ...]]:
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return len(frames), frames[0].shape


def address_space() -> int:
    return _isolation._address_space()


def address_space_growth(data: bytes, threads: int) -> tuple[int, int]:
    import io

    import av

    def peak() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
        return 0

    before = _isolation._address_space()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return peak() - before, sum(f.nbytes for f in frames)


def segment_then_abort() -> None:
    scratch = _isolation.shared_empty((1 << 20,), np.uint8)
    scratch[:] = 1
    os.abort()


def nested_run() -> tuple[bool, int]:
    return _isolation.decoder_pool().run(worker_state, timeout=5, memory_limit=None, what="x")


def reserve(nbytes: int) -> int:
    from mediagate._media.budget import reserve_output

    reserve_output(nbytes, "this item")
    return nbytes
