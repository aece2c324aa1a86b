"""EXIF-rotated JPEGs stay on the fast path: decode time against the same image upright.

One 800x600 JPEG (quality 90, the image group's picture) decoded with
``ImageMediaIO().load_bytes`` to an array, upright and with EXIF orientations 6 (the
usual phone portrait), 8, 3 and 2 (mirrored), alternating run by run; medians of many
runs, since one decode takes about 2 ms. Target (from the issue): within 1.2x of the
upright decode.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result

__all__ = ["TARGET", "run"]

TARGET = "rotated/upright <= 1.2x"
ORIENTATIONS = (6, 8, 3, 2)


def run(quick: bool = False) -> list[Result]:
    from PIL import Image

    from bench_images import _pixels
    from mediagate import ImageMediaIO
    from mediagate._build import image_bytes

    pixels = _pixels(0, 12.0)[:600, :800]
    upright = image_bytes(pixels, "JPEG", quality=90)
    decoder = ImageMediaIO()
    runs = 200 if quick else 1500
    results = []
    for orientation in ORIENTATIONS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        rotated = image_bytes(pixels, "JPEG", quality=90, exif=exif.tobytes())
        times: dict[str, list[float]] = {"upright": [], "rotated": []}
        for index in range(runs + 50):
            for side, data in (("upright", upright), ("rotated", rotated)):
                start = time.perf_counter()
                np.asarray(decoder.load_bytes(data))
                if index >= 50:  # warm-up
                    times[side].append(time.perf_counter() - start)
        ratio = statistics.median(times["rotated"]) / statistics.median(times["upright"])
        results.append(
            Result(
                group="exif",
                workload=f"JPEG 800x600, EXIF orientation {orientation} vs upright -> np.asarray",
                times=times,
                target=TARGET,
                note=f"rotated/upright {ratio:.2f}x over {runs} alternating decodes each",
            )
        )
    return results


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(result.workload, result.note)
