"""Draw the README's contact sheet: a generated 6 s clip through ``mediagate fetch --preview``.

Run: ``python docs/contact_sheet.py`` (writes ``docs/contact-sheet.png``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 24, 6
HERE = Path(__file__).resolve().parent


def frame(index: int) -> np.ndarray:
    """A sky-to-ground gradient with a ball crossing it and a counter bar growing."""
    t = index / (FPS * SECONDS)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = 40 + 120 * y / HEIGHT
    image[..., 1] = 90 + 100 * (1 - y / HEIGHT)
    image[..., 2] = 200 - 120 * y / HEIGHT
    cx, cy = 20 + t * (WIDTH - 40), HEIGHT / 2 + 50 * np.sin(6.28 * 2 * t)
    ball = (x - cx) ** 2 + (y - cy) ** 2 < 18**2
    image[ball] = (250, 200, 40)
    image[HEIGHT - 10 :, : int(t * WIDTH)] = (240, 240, 240)
    return image


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "ball.mp4"
        with av.open(str(clip), "w") as out:
            stream = out.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            for i in range(FPS * SECONDS):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")))
            out.mux(stream.encode())
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mediagate",
                "fetch",
                str(clip),
                "--preview",
                str(HERE / "contact-sheet.png"),
                "--media-io-kwargs",
                '{"video": {"num_frames": 8}}',
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
