"""Decode-time frame size: 32 frames of a 4K clip for a model that takes at most 448x448.

Both sides sample the same 32 frames uniformly from a 4K (3840x2160) H.264 clip with
mediagate's ``pyav`` backend, in this process, and end with the same 32 frames of
448x252:

* ``mediagate``: ``VideoMediaIO(num_frames=32, max_frame_size=[448, 448])``; each frame
  is scaled in the swscale pass that converts it to RGB, and the frames array is
  allocated at 448x252.
* ``no hint``: ``VideoMediaIO(num_frames=32)`` returns the full 3840x2160 frames (about
  800 MB of RGB), then each is resized with Pillow (bicubic) to 448x252, as a model's
  image processor does with the frames it is handed.

The clip is 5 s of 4K30 (a textured camera pan with a moving object and film grain,
x264 preset veryfast, CRF 23, x264's default keyframe interval), generated here with
PyAV on first use and cached under ``benchmarks/.work`` (about 15 s to build). The sides
alternate (``_common.alternate``: one warm-up, 5 timed runs each; 1 with ``--quick``);
then one more run of each side measures the peak growth of the resident set (Linux
``VmHWM``, ``reference_worker.PeakRSS``, in the table's peak column), which counts
FFmpeg's decoder buffers (the same on both sides) as well as the arrays, and, in the
same run, the peak of the arrays alone (``tracemalloc``). The note gives both peaks and
the mean absolute difference between the two sides' frames (0-255 levels).

Run: ``python benchmarks/bench_frame_size.py [--quick]``.
"""

from __future__ import annotations

import gc
import math
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from _common import Result, alternate
from bench_video import encode_h264_cached
from mediagate import ImageMediaIO, MediaPolicy, VideoMediaIO
from reference_worker import PeakRSS

WORK = Path(__file__).resolve().parent / ".work"
#: Part of the cached clip's name: change it when ``scene`` or the encoding changes.
CLIP_VERSION = "grain1"
WIDTH, HEIGHT, FPS, SECONDS = 3840, 2160, 30, 5
FRAMES = 32
BOX = (448, 448)
#: Both sides decode in this process, so the memory they use is this process's.
POLICY = MediaPolicy(isolation=False)


def make_clip() -> bytes:
    """The 4K H.264 mp4 of ``scene``, cached under ``benchmarks/.work``."""
    path = WORK / f"{CLIP_VERSION}_2160p_{SECONDS}s.mp4"
    return encode_h264_cached(path, scene(FPS * SECONDS), size=(WIDTH, HEIGHT), preset="veryfast")


def scene(frames: int, *, seed: int = 0) -> Iterator[npt.NDArray[np.uint8]]:
    """A multi-scale colour texture (coarse shapes down to single pixels) panned by a
    camera, an ellipse crossing it on its own path, and grain (four fields in turn), so
    that inter frames carry motion and residual, and downscaling has detail to treat."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for cell, amplitude in ((512, 70), (128, 45), (32, 35), (8, 28), (2, 18)):
        coarse = rng.normal(0, 1, (HEIGHT // cell + 2, WIDTH // cell + 2, 3)).astype(np.float32)
        smooth = cv2.resize(
            coarse, (WIDTH + 2 * cell, HEIGHT + 2 * cell), interpolation=cv2.INTER_CUBIC
        )
        texture += amplitude * smooth[cell : cell + HEIGHT, cell : cell + WIDTH]
    canvas = np.clip(texture + 128, 0, 255).astype(np.uint8)
    del texture
    grains = [rng.integers(-4, 5, (HEIGHT, WIDTH, 3)).astype(np.int16) for _ in range(4)]
    for i in range(frames):
        t = i / FPS
        shift = [
            [1, 0, 200 * math.sin(2 * math.pi * t / 10)],
            [0, 1, 100 * math.sin(2 * math.pi * t / 7)],
        ]
        image = cv2.warpAffine(
            canvas,
            np.float32(shift),
            (WIDTH, HEIGHT),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        ox = int(WIDTH / 2 + WIDTH * 0.35 * math.sin(2 * math.pi * t / 7))
        oy = int(HEIGHT / 2 + HEIGHT * 0.3 * math.sin(2 * math.pi * t / 5))
        cv2.ellipse(image, (ox, oy), (270, 180), (t * 40) % 360, 0, 360, (230, 60, 40), -1)
        yield np.asarray(cv2.add(image, grains[i % 4], dtype=cv2.CV_8U), dtype=np.uint8)


def with_hint(data: bytes) -> npt.NDArray[np.uint8]:
    """The frames decoded straight to the model's size."""
    io_ = VideoMediaIO(ImageMediaIO(), FRAMES, policy=POLICY, max_frame_size=list(BOX))
    frames, _ = io_.load_bytes(data)
    return np.asarray(frames)


def without_hint(data: bytes) -> npt.NDArray[np.uint8]:
    """Full-size frames, then each resized with Pillow to the size the hint gives."""
    frames, _ = VideoMediaIO(ImageMediaIO(), FRAMES, policy=POLICY).load_bytes(data)
    full = np.asarray(frames)
    scale = min(BOX[0] / full.shape[2], BOX[1] / full.shape[1])
    size = (round(full.shape[2] * scale), round(full.shape[1] * scale))
    out = np.empty((len(full), size[1], size[0], 3), np.uint8)
    for slot, frame in enumerate(full):
        out[slot] = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))
    return out


def peaks(fn: Callable[[], Any]) -> tuple[int, int]:
    """Peak growth of the resident set and peak traced allocation (bytes) while ``fn``
    runs."""
    gc.collect()
    with PeakRSS() as rss:
        tracemalloc.start()
        try:
            fn()
            traced = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return rss.peak_bytes, traced


def run(quick: bool = False) -> list[Result]:
    """Time and memory of both sides on the 4K clip."""
    runs, warmup = (1, 0) if quick else (5, 1)
    data = make_clip()
    sides: dict[str, Callable[[], Any]] = {
        "mediagate": lambda: with_hint(data),
        "no hint": lambda: without_hint(data),
    }
    hinted, resized = with_hint(data), without_hint(data)
    same_size = hinted.shape == resized.shape
    difference = (
        float(np.abs(hinted.astype(np.int16) - resized.astype(np.int16)).mean())
        if same_size
        else math.nan
    )
    times = alternate(sides, runs=runs, warmup=warmup)
    measured = {name: peaks(fn) for name, fn in sides.items()}
    rss = {name: pair[0] for name, pair in measured.items()}
    arrays = {name: pair[1] for name, pair in measured.items()}
    shape = "x".join(str(v) for v in hinted.shape[1:3][::-1])
    note = (
        f"{len(hinted)} frames of {shape} on both sides"
        + ("" if same_size else f" (no hint: {resized.shape})")
        + f"; peak RSS growth {_mib(rss['mediagate'])} with the hint, "
        f"{_mib(rss['no hint'])} without; peak traced arrays {_mib(arrays['mediagate'])} "
        f"with, {_mib(arrays['no hint'])} without"
        + f"; frames differ by {difference:.2f} levels on average"
    )
    result = Result(
        group="frame_size",
        workload=f"4K H.264, {FRAMES} frames to at most {BOX[0]}x{BOX[1]}",
        times=times,
        peak_bytes=rss,
        target="no hint/mediagate >= 1x",
        note=note,
    )
    return [result]


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def table(results: list[Result]) -> str:
    lines = [
        "| workload | with hint (s) | no hint + Pillow (s) | no hint / hint | target | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        hint, full = r.median("mediagate"), r.median("no hint")
        lines.append(
            f"| {r.workload} | {hint:.3f} | {full:.3f} | {full / hint:.2f}x | {r.target} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
