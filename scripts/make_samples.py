"""Regenerate the small sample media bundled for ``mediagate demo`` (under 1 MB in all)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "mediagate" / "_samples"


def gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient(320, 240)).save(OUT / "gradient.jpg", quality=85)

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 220
    rgba[16:48, 16:48, 3] = 255  # an opaque square on a transparent field
    Image.fromarray(rgba, "RGBA").save(OUT / "square.png")

    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(OUT / "tone.wav", tone, 16000, subtype="PCM_16")

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(16):
            frame = np.full((48, 64, 3), i * 16, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (OUT / "counter.mp4").write_bytes(buf.getvalue())

    embedding = np.linspace(-1, 1, 4 * 8, dtype=np.float32).reshape(4, 8)
    header = json.dumps(
        {"embedding": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, embedding.nbytes]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    (OUT / "embedding.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + embedding.tobytes()
    )


if __name__ == "__main__":
    main()
