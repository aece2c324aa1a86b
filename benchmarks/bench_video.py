"""Video sampling: mediagate's PyAV loader against a sequential OpenCV grab/retrieve walk."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

WORK = Path(__file__).resolve().parent / ".work"
WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 60


def make_clip(gop: int | None, *, seconds: int = SECONDS) -> bytes:
    """A 720p H.264 mp4 of moving texture, cached under ``benchmarks/.work``."""
    name = f"h264_720p_{seconds}s_gop{gop or 'default'}.mp4"
    path = WORK / name
    if path.exists():
        return path.read_bytes()
    rng = np.random.default_rng(0)
    frames = FPS * seconds
    blocks = rng.integers(0, 256, (HEIGHT // 8 + 1, WIDTH // 8 + 1 + frames // 4, 3), np.uint8)
    texture = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(frames):
            image = np.ascontiguousarray(texture[:HEIGHT, 2 * i : 2 * i + WIDTH])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return buf.getvalue()
