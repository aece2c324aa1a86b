"""Clips for the video tests, built once per session with PyAV (tiny: 64x48)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest

from builders import encode_clip
from media.video.video_builders import CLIP_SPECS
from mediagate import ImageMediaIO


@cache
def _build(name: str) -> bytes:
    return encode_clip(**CLIP_SPECS[name])


@pytest.fixture(scope="session")
def clip() -> Callable[[str], bytes]:
    """``clip(name)``: the bytes of a clip from ``CLIP_SPECS``, built on first use."""
    return _build


@pytest.fixture
def image_io() -> ImageMediaIO:
    return ImageMediaIO("RGB")
