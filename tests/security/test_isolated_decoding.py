"""Decoding in isolated workers through the public API (SECURITY B3, B4).

A backend that aborts, spins or hogs memory in its worker costs its own request a typed
error; the process and the next requests carry on. Isolated and in-process decodes give
the same results.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time

import numpy as np
import pytest

import crashing_backends  # noqa: F401  (registers the test-* backends)
from builders import encode_clip, jpeg_bytes, png_bytes
from mediagate import (
    AudioMediaIO,
    DecodedBudget,
    DecodeError,
    ImageMediaIO,
    MediaConnector,
    MediaPolicy,
    MediaWithBytes,
    TooLargeError,
    VideoMediaIO,
)
from mediagate._media._isolation import decoder_pool

ISOLATED = MediaPolicy(isolation=True, decode_timeout=3)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return encode_clip("libx264", "mp4", 30, width=64, height=48)


def video_io(backend: str = "pyav", policy: MediaPolicy = ISOLATED) -> VideoMediaIO:
    return VideoMediaIO(ImageMediaIO(policy=policy), 4, video_backend=backend, policy=policy)


def test_a_decoder_that_aborts_costs_one_request(clip: bytes) -> None:
    decoder_pool().warm()
    with pytest.raises(DecodeError) as caught:
        video_io("test-abort").load_bytes(clip)
    assert caught.value.http_status == 422
    assert "crashed" in str(caught.value) and str(os.getpid()) not in str(caught.value)
    frames, meta = video_io().load_bytes(clip)  # the next request on the same pool
    assert frames.shape == (4, 48, 64, 3) and meta["frames_indices"] == [0, 9, 19, 29]


def test_a_decoder_that_never_returns_ends_at_the_deadline(clip: bytes) -> None:
    decoder_pool().warm()
    policy = MediaPolicy(isolation=True, decode_timeout=1)
    start = time.monotonic()
    with pytest.raises(TooLargeError) as caught:
        video_io("test-spin", policy).load_bytes(clip)
    assert caught.value.limit == "decode_timeout"
    assert time.monotonic() - start < 1 + 0.75
    assert video_io().load_bytes(clip)[0].shape[0] == 4


def test_a_decoder_that_hogs_memory_is_stopped_by_its_budget(clip: bytes) -> None:
    policy = MediaPolicy(isolation=True, max_decoded_bytes=32 << 20, decode_timeout=5)
    with pytest.raises(TooLargeError) as caught:
        video_io("test-hog", policy).load_bytes(clip)
    assert caught.value.limit == "memory"
    assert video_io().load_bytes(clip)[0].shape[0] == 4


def test_good_requests_carry_on_beside_a_crashing_one(clip: bytes) -> None:
    policy = ISOLATED
    with MediaConnector(policy=policy) as conn:
        url = "data:video/mp4;base64," + base64.b64encode(clip).decode()

        async def mixed() -> list[object]:
            four = {"num_frames": 4}
            good = [conn.fetch_video_async(url, media_io_kwargs=four) for _ in range(4)]
            bad = conn.fetch_video_async(url, media_io_kwargs={"video_backend": "test-abort"})
            return await asyncio.gather(*good, bad, return_exceptions=True)

        outcomes = asyncio.run(mixed())
    assert isinstance(outcomes[-1], DecodeError)
    for good in outcomes[:-1]:
        assert isinstance(good, MediaWithBytes) and good[0].shape == (4, 48, 64, 3)


def test_isolated_results_equal_in_process_results(clip: bytes) -> None:
    local = MediaPolicy(isolation=False)
    jpeg, png = jpeg_bytes(320, 240), png_bytes()
    for data in (jpeg, png):
        there = ImageMediaIO(policy=ISOLATED).load_bytes(data)
        here = ImageMediaIO(policy=local).load_bytes(data)
        assert there.size == here.size and there.mode == here.mode
        assert np.array_equal(np.asarray(there), np.asarray(here))
        assert there.original_bytes is data  # the caller's bytes, not a copy sent back
    isolated_frames, isolated_meta = video_io().load_bytes(clip)
    frames, meta = video_io(policy=local).load_bytes(clip)
    assert np.array_equal(isolated_frames, frames) and isolated_meta == meta
    wav = AudioMediaIO().encode_base64((np.sin(np.arange(8000) / 9).astype(np.float32), 8000))
    there_audio = AudioMediaIO(policy=ISOLATED).load_base64("audio/wav", wav)
    here_audio = AudioMediaIO(policy=local).load_base64("audio/wav", wav)
    assert np.array_equal(there_audio[0], here_audio[0]) and there_audio[1] == here_audio[1]


def test_typed_errors_and_budgets_cross_the_process_boundary() -> None:
    with pytest.raises(DecodeError) as caught:
        ImageMediaIO(policy=ISOLATED).load_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    assert "0x" not in str(caught.value)
    tight = ISOLATED.replace(max_decoded_bytes=100)
    with pytest.raises(TooLargeError) as too_large:
        ImageMediaIO(policy=tight).load_bytes(png_bytes())
    assert too_large.value.limit == "max_decoded_bytes"
    budget = DecodedBudget(10_000)
    with MediaConnector(policy=ISOLATED, decoded_budget=budget) as conn:
        conn.fetch_image("data:image/png;base64," + base64.b64encode(png_bytes()).decode())
    assert budget.used == 40 * 30 * 3
