"""Add a source (a new URL scheme) and a video backend through public names only."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from mediagate import (
    SOURCE_REGISTRY,
    VIDEO_LOADER_REGISTRY,
    ImageMediaIO,
    MediaConnector,
    MediaPolicy,
    PolicyError,
    SourceResult,
)

buffer = io.BytesIO()
Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, "PNG")
BLOBS = {"frames/red.png": buffer.getvalue()}


@SOURCE_REGISTRY.register("mem")
class MemorySource:
    """``mem://bucket/key`` from a dict; the bucket ``private`` is refused."""

    cacheable = False

    def fetch(self, ref: Any, *, policy: MediaPolicy, limit: int, timeout: float) -> SourceResult:
        if ref.host == "private":
            raise PolicyError("the private bucket is not served")
        return SourceResult(data=BLOBS[ref.host + ref.path])


@VIDEO_LOADER_REGISTRY.register("still")
class StillLoader:
    """A "video" of one picture repeated: any image becomes ``num_frames`` frames."""

    @classmethod
    def load_bytes(cls, data: bytes, num_frames: int = -1, **options: Any) -> Any:
        frame = np.asarray(ImageMediaIO().load_bytes(data))
        count = max(1, num_frames)
        meta = {"total_num_frames": count, "fps": 1.0, "duration": float(count)}
        return np.stack([frame] * count), {**meta, "frames_indices": list(range(count))}


if __name__ == "__main__":
    with MediaConnector() as connector:
        print(connector.fetch_image("mem://frames/red.png").size)
        options = {"video_backend": "still", "num_frames": 4}
        frames, meta = connector.fetch_video("mem://frames/red.png", media_io_kwargs=options)
        print(frames.shape, meta["video_backend"])
        try:
            connector.fetch_image("mem://private/red.png")
        except PolicyError as exc:
            print(f"{type(exc).__name__} ({exc.http_status}): {exc}")
