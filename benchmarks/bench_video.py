"""Video sampling: mediagate's PyAV loader against a sequential OpenCV grab/retrieve walk.

The reference is the usual approach: grab every frame with ``cv2.VideoCapture``,
retrieve (convert) only the sampled ones. Clips are 60 s of 720p H.264 generated here
with PyAV (moving texture, one with a keyframe every second, one with x264's default
250-frame GOP) and cached under ``benchmarks/.work``; the first run spends about a
minute generating them.

Run: ``python benchmarks/bench_video.py [--quick]``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from _common import Result, alternate, peak_memory, ratio
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.sampling import sample_frame_indices

WORK = Path(__file__).resolve().parent / ".work"
WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 60
CLIPS: dict[str, int | None] = {"1 s GOP": FPS, "250-frame GOP": None}
#: (workload, num_frames, fps, {clip: minimum speed-up})
WORKLOADS: list[tuple[str, int, float | None, dict[str, float]]] = [
    ("8 frames", 8, None, {"1 s GOP": 3.0, "250-frame GOP": 3.0}),
    ("32 frames", 32, None, {"1 s GOP": 3.0, "250-frame GOP": 1.5}),
    ("fps=2 (120 frames)", -1, 2.0, {}),
]


def make_clip(gop: int | None, *, seconds: int = SECONDS) -> bytes:
    """A 720p H.264 mp4 of moving texture, cached under ``benchmarks/.work``."""
    path = WORK / f"h264_720p_{seconds}s_gop{gop or 'default'}.mp4"
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
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return buf.getvalue()


def opencv_walk(data: bytes, num_frames: int, fps: float | None) -> list[Any]:
    """The reference: grab every frame up to the last sampled one, retrieve sampled ones."""
    source = io.BytesIO(data)
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [])
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        duration = total / capture.get(cv2.CAP_PROP_FPS)
        wanted = sample_frame_indices(total, num_frames=num_frames, fps=fps, duration=duration)
        chosen, frames = set(wanted), []
        for number in range(wanted[-1] + 1):
            if not capture.grab():
                break
            if number in chosen:
                _, bgr = capture.retrieve()
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return frames
    finally:
        capture.release()


def mediagate_pyav(data: bytes, num_frames: int, fps: float | None) -> Any:
    return PyAVVideoLoader().load_bytes(data, num_frames, fps=fps)


def run(quick: bool = False) -> list[Result]:
    """Sampling time of both approaches on both clips, for each workload."""
    runs, warmup = (1, 0) if quick else (5, 1)
    clips = {name: make_clip(gop) for name, gop in CLIPS.items()}
    results: list[Result] = []
    for workload, num_frames, fps in ((w, n, f) for w, n, f, _ in WORKLOADS):
        targets = next(t for w, _, _, t in WORKLOADS if w == workload)
        for clip_name, data in clips.items():
            sides: dict[str, Callable[[], Any]] = {
                "opencv": partial(opencv_walk, data, num_frames, fps),
                "mediagate": partial(mediagate_pyav, data, num_frames, fps),
            }
            frames, _ = mediagate_pyav(data, num_frames, fps)
            reference = opencv_walk(data, num_frames, fps)
            same = len(reference) == len(frames) and all(
                np.array_equal(a, b) for a, b in zip(reference, frames, strict=False)
            )
            result = Result(
                group="video",
                workload=f"{workload}, {clip_name}",
                times=alternate(sides, runs=runs, warmup=warmup),
                target=f">= {targets[clip_name]:g}x" if clip_name in targets else "(report)",
                note="identical frames" if same else "FRAMES DIFFER",
            )
            if not quick:
                result.peak_bytes["mediagate"] = peak_memory(sides["mediagate"])
                result.peak_bytes["frames"] = int(frames.nbytes)
            results.append(result)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| workload | opencv grab/retrieve (s) | mediagate pyav (s) | speed-up | target | met | "
        "peak traced memory / frames returned | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        speedup = ratio(r, "opencv", "mediagate")
        met = "-"
        if r.target.startswith(">="):
            met = "yes" if speedup >= float(r.target[3:-1]) else "NO"
        memory = "-"
        if r.peak_bytes:
            peak, returned = r.peak_bytes["mediagate"], r.peak_bytes["frames"]
            memory = f"{peak / 2**20:.0f} / {returned / 2**20:.0f} MiB"
        lines.append(
            f"| {r.workload} | {r.median('opencv'):.3f} | {r.median('mediagate'):.3f} | "
            f"{speedup:.2f}x | {r.target} | {met} | {memory} | {r.note} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
