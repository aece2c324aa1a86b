"""Decoder worker processes: crashes, overruns and runaway allocations stay contained.

Each misbehaving call must end in the exact typed error within bounded time, leave no
shared-memory segment behind, and leave the pool able to serve the next call.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

import isolation_plugins as plugins
from mediagate import DecodeError, MediaError, TooLargeError
from mediagate._media import _isolation
from mediagate._media._isolation import DecoderPool, decoder_pool, in_worker, shared_empty
from mediagate._media.budget import DecodeLimits, decoding


def _leftovers(pool: DecoderPool | None = None) -> list[str]:
    """Segments of this process's workers (of ``pool``'s, if given), but for the input
    segments live workers keep."""
    prefix = f"{_isolation.SEGMENT_PREFIX}{os.getpid()}-"
    owned = tuple(pool._prefixes) if pool is not None else (prefix,)
    names = [name for name in os.listdir(_isolation.SHM_DIR) if name.startswith(owned)]
    return [name for name in names if _isolation.INPUT_MARK not in name.removeprefix(prefix)]


def _no_leftovers(within: float = 2.0, pool: DecoderPool | None = None) -> bool:
    deadline = time.monotonic() + within
    while _leftovers(pool):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def pool() -> Iterator[DecoderPool]:
    with DecoderPool(2) as shared:
        shared.warm()
        yield shared
    # Only this pool's segments: the process-wide pool other test modules use sweeps its
    # own on its own schedule.
    assert _no_leftovers(pool=shared)


def run(pool: DecoderPool, fn: Any, *args: Any, timeout: float = 10.0, **kw: Any) -> Any:
    kw.setdefault("memory_limit", None)
    return pool.run(fn, *args, timeout=timeout, what="image", **kw)


def test_calls_run_in_a_worker_process(pool: DecoderPool) -> None:
    flag, pid = run(pool, plugins.worker_state)
    assert flag is True and pid != os.getpid()
    assert in_worker() is False


def test_a_worker_runs_nested_calls_inline(pool: DecoderPool) -> None:
    flag, pid = run(pool, plugins.nested_run)
    assert flag is True and pid != os.getpid()


@pytest.mark.parametrize(
    "fn", [plugins.abort, plugins.segfault, plugins.exit_now, plugins.kill_self]
)
def test_a_dying_worker_is_a_decode_error(pool: DecoderPool, fn: Any) -> None:
    start = time.monotonic()
    with pytest.raises(DecodeError) as info:
        run(pool, fn)
    assert time.monotonic() - start < 2.0
    assert type(info.value) is DecodeError
    assert str(info.value) == "the image decoder crashed on this input"
    assert info.value.http_status == 422
    assert run(pool, plugins.echo, 5) == 5


def test_a_call_past_its_memory_limit_is_too_large(pool: DecoderPool) -> None:
    start = time.monotonic()
    with pytest.raises(TooLargeError) as info:
        run(pool, plugins.allocate, 1 << 36, memory_limit=64 << 20)
    assert info.value.limit == "memory"
    assert time.monotonic() - start < 2.0
    assert run(pool, plugins.echo, "next") == "next"


@pytest.mark.parametrize("fn", [plugins.spin, plugins.spin_native])
def test_a_call_that_never_returns_is_killed_at_its_timeout(pool: DecoderPool, fn: Any) -> None:
    start = time.monotonic()
    with pytest.raises(TooLargeError) as info:
        run(pool, fn, timeout=0.5)
    elapsed = time.monotonic() - start
    assert info.value.limit == "decode_timeout"
    # Killed at its timeout, not left spinning: the upper bound leaves room
    # for a loaded machine to schedule the kill and the replacement worker.
    assert 0.45 <= elapsed < 3.0
    assert run(pool, plugins.echo, 1) == 1


def test_good_calls_succeed_while_a_neighbour_crashes(pool: DecoderPool) -> None:
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            results[i] = run(pool, plugins.sleep, 0.02 * (i % 3))
        except Exception as exc:  # recorded and asserted below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads[:4]:
        thread.start()
    with pytest.raises(DecodeError):
        run(pool, plugins.segfault)
    for thread in threads[4:]:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {i: 0.02 * (i % 3) for i in range(8)}


def test_a_busy_pool_refuses_at_the_timeout() -> None:
    with DecoderPool(1) as single:
        single.warm()
        blocker = threading.Thread(target=run, args=(single, plugins.sleep, 1.5))
        blocker.start()
        time.sleep(0.1)
        start = time.monotonic()
        with pytest.raises(TooLargeError) as info:
            run(single, plugins.echo, 1, timeout=0.3)
        assert info.value.limit == "decode_timeout"
        # Refused before the blocking call ends (1.4 s from here).
        assert time.monotonic() - start < 1.3
        blocker.join(5)
        assert run(single, plugins.echo, 2) == 2


def test_a_media_error_arrives_as_the_same_class(pool: DecoderPool) -> None:
    with pytest.raises(plugins.PluginError) as info:
        run(pool, plugins.raise_plugin_error)
    assert (str(info.value), info.value.detail, info.value.http_status) == (
        "the plugin refused this input",
        "frame 7",
        418,
    )
    with pytest.raises(TooLargeError) as too_large:
        run(pool, plugins.raise_too_large)
    err = too_large.value
    assert (err.limit, err.value, err.maximum) == ("max_video_frames", 5000, 1024)


def test_other_exceptions_are_decode_errors_that_leak_nothing(pool: DecoderPool) -> None:
    secret = b"SECRET-PAYLOAD"
    with pytest.raises(DecodeError) as info:
        run(pool, plugins.raise_value_error, secret)
    assert type(info.value) is DecodeError
    assert str(info.value) == "the image decoder failed on this input"
    assert info.value.__cause__ is not None
    assert "SECRET" not in str(info.value.__cause__)
    assert "ValueError" in str(info.value.__cause__)


def test_an_unpicklable_result_is_a_decode_error(pool: DecoderPool) -> None:
    with pytest.raises(DecodeError, match="cannot be sent back"):
        run(pool, plugins.unpicklable)
    assert run(pool, plugins.echo, 3) == 3


def test_limits_of_the_calling_decode_hold_in_the_worker(pool: DecoderPool) -> None:
    with decoding(DecodeLimits.starting_now("image", 100, 5.0)):
        assert run(pool, plugins.reserve, 100) == 100
        with pytest.raises(TooLargeError) as info:
            run(pool, plugins.reserve, 101)
    assert info.value.limit == "max_decoded_bytes"


def test_a_shared_array_is_mapped_not_copied(pool: DecoderPool) -> None:
    frame = run(pool, plugins.frame, 1080, 1920)
    assert frame.shape == (1080, 1920, 3) and frame.dtype == np.uint8
    assert isinstance(frame.base, mmap.mmap)
    assert frame[0, :4, 0].tolist() == [0, 1, 2, 3]
    assert int(frame[1:].min()) == int(frame[1:].max()) == 7
    assert frame.flags.writeable
    assert _leftovers(pool) == []


def test_views_of_one_segment_share_one_mapping(pool: DecoderPool) -> None:
    result = run(pool, plugins.frames_and_view, 4)
    frames, last = result["frames"], result["last"]
    assert result["meta"] == {"fps": 25.0, "n": 4}
    assert np.shares_memory(frames, last)
    assert frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert _leftovers(pool) == []


def test_large_plain_arrays_go_through_shared_memory(pool: DecoderPool) -> None:
    big = run(pool, plugins.plain_array, 1 << 18)
    assert isinstance(big.base, mmap.mmap)
    assert np.array_equal(big, np.arange(1 << 18, dtype=np.float32))
    small = run(pool, plugins.plain_array, 10)
    assert not isinstance(small.base, mmap.mmap)
    assert small.tolist() == list(range(10))


def test_images_come_back_over_shared_memory(pool: DecoderPool) -> None:
    gray = run(pool, plugins.image, 640, 480, "L")
    assert isinstance(gray, Image.Image) and (gray.mode, gray.size) == ("L", (640, 480))
    assert gray.getpixel((5, 5)) == 7 and gray.readonly
    rgb = run(pool, plugins.image, 640, 480, "RGB")
    assert rgb.mode == "RGB" and rgb.getpixel((639, 479)) == (1, 2, 3)
    assert _leftovers(pool) == []


def test_input_bytes_handed_back_are_the_callers_own(pool: DecoderPool) -> None:
    data = os.urandom(1 << 16)
    back, size = run(pool, plugins.same_bytes, data)
    assert back is data and size == len(data)


def test_segments_of_a_dead_or_finished_call_are_removed() -> None:
    with DecoderPool(1) as own:
        assert run(own, plugins.dangling_segment) == 1 << 20
        assert _leftovers(own) == []  # a finished call's unused segment is gone at once
        with pytest.raises(DecodeError):
            run(own, plugins.segment_then_abort)
        prefixes = tuple(own._prefixes)
    # A crashed worker's segments are swept when it is reaped, and every worker's are
    # swept again when the pool closes.
    assert not [n for n in os.listdir(_isolation.SHM_DIR) if n.startswith(prefixes)]


def test_ordinary_video_decodes_fit_under_the_memory_limit(pool: DecoderPool) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(8):
            picture = np.full((240, 320, 3), i * 20, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        container.mux(stream.encode())
    count, shape = run(pool, plugins.decode_video, buffer.getvalue(), memory_limit=8 << 20)
    assert (count, shape) == (8, (240, 320, 3))


def test_a_forged_reply_cannot_name_code_or_files() -> None:
    prefix = f"{_isolation.SEGMENT_PREFIX}{os.getpid()}-99-"
    forged = pickle.dumps(("ok", [], pickle.dumps(os.system)))
    with pytest.raises(pickle.UnpicklingError):
        _isolation._read_reply(forged, prefix, ())
    escape = ("array", "../../etc/passwd", 4096, np.dtype(np.uint8), (4096,), (1,), 0)

    class Forger(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return escape if obj == "x" else None

    payload = io.BytesIO()
    Forger(payload, protocol=5).dump("x")
    with pytest.raises(pickle.UnpicklingError):
        _isolation._read_reply(pickle.dumps(("ok", [], payload.getvalue())), prefix, ())


def test_shared_empty_outside_a_worker_is_plain_memory() -> None:
    array = shared_empty((3, 4), np.int16)
    assert array.shape == (3, 4) and array.dtype == np.int16
    assert not isinstance(array.base, mmap.mmap)


def test_the_process_pool_is_one_per_process() -> None:
    assert decoder_pool() is decoder_pool()
    assert decoder_pool().size >= 1
    assert issubclass(TooLargeError, MediaError)


def test_segments_of_a_parent_that_is_gone_are_swept() -> None:
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = _isolation.SEGMENT_PREFIX
    stale = os.path.join(_isolation.SHM_DIR, f"{prefix}{child.stdout.strip()}-0-x")
    mine = os.path.join(_isolation.SHM_DIR, f"{prefix}{os.getpid()}-0-x")
    for path in (stale, mine):
        with open(path, "wb"):
            pass
    try:
        assert _isolation._sweep_orphans() >= 1
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        for path in (stale, mine):
            if os.path.exists(path):
                os.unlink(path)


def test_large_inputs_travel_through_a_reused_segment_that_goes_with_the_pool() -> None:
    payload = os.urandom(3 << 20)
    with DecoderPool(1) as own:
        for _ in range(3):
            assert run(own, plugins.echo, payload) is payload  # the caller's own object back
        prefixes = tuple(own._prefixes)  # this pool's workers only
        inputs = [n for n in os.listdir(_isolation.SHM_DIR) if n.startswith(prefixes)]
        assert len(inputs) == 1 and _isolation.INPUT_MARK in inputs[0]  # reused by every call
    assert not any(n.startswith(prefixes) for n in os.listdir(_isolation.SHM_DIR))
