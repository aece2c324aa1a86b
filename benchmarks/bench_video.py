"""Video sampling: mediagate's PyAV loader against a sequential OpenCV grab/retrieve walk.

The reference is the usual approach: grab every frame with ``cv2.VideoCapture``,
retrieve (convert) only the sampled ones, with OpenCV's default decoder threading.
Clips are 60 s of 720p30 H.264 generated here with PyAV (``scene``: a textured,
grainy camera pan and zoom with a moving object, x264 preset medium, CRF 23), one
with a keyframe every second and one with every x264 default (keyint 250, scene-cut
detection), cached under ``benchmarks/.work``; the first run spends a few minutes
generating them. Each row's note gives OpenCV's decode cost per frame of its clip.

Run: ``python benchmarks/bench_video.py [--quick]``.
"""

from __future__ import annotations

import io
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from _common import Result, alternate, peak_memory, ratio
from mediagate._media.video.pyav import PyAVVideoLoader
from mediagate._media.video.sampling import sample_frame_indices

WORK = Path(__file__).resolve().parent / ".work"
#: Part of the cached clips' names: change it when ``scene`` or the encoding changes.
CLIP_VERSION = "scene2"
WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 60
CLIPS: dict[str, int | None] = {"1 s GOP": FPS, "250-frame GOP": None}
#: (workload, num_frames, fps, {clip: minimum speed-up})
WORKLOADS: list[tuple[str, int, float | None, dict[str, float]]] = [
    ("8 frames", 8, None, {"1 s GOP": 3.0, "250-frame GOP": 3.0}),
    ("32 frames", 32, None, {"1 s GOP": 3.0, "250-frame GOP": 1.5}),
    ("fps=2 (120 frames)", -1, 2.0, {}),
]


def make_clip(gop: int | None, *, seconds: int = SECONDS) -> bytes:
    """A 720p H.264 mp4 of ``scene``, cached under ``benchmarks/.work``.

    x264 at its default preset (medium), CRF 23 and threading: what most encoders that
    do not tune for speed produce. ``gop=None`` keeps every x264 default (keyint 250 with
    scene-cut detection); otherwise a keyframe every ``gop`` frames.
    """
    path = WORK / f"{CLIP_VERSION}_720p_{seconds}s_gop{gop or 'default'}.mp4"
    return encode_h264_cached(
        path, scene(FPS * seconds), size=(WIDTH, HEIGHT), preset="medium", gop=gop
    )


def encode_h264_cached(
    path: Path,
    frames: Iterator[npt.NDArray[np.uint8]],
    *,
    size: tuple[int, int],
    preset: str,
    gop: int | None = None,
) -> bytes:
    """``frames`` as an H.264 mp4 at ``FPS`` (CRF 23, x264's own frame threading), kept
    at ``path`` and read from there when it exists."""
    if path.exists():
        return path.read_bytes()
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": preset, "crf": "23"}
        # x264's own threading (frame threads, one slice per frame), as its command
        # line encodes; PyAV's default asks for sliced threads, which split every
        # frame into slices that decoders then decode in parallel.
        stream.codec_context.thread_type = "FRAME"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return buf.getvalue()


def scene(frames: int, *, seed: int = 0) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames that cost a decoder what camera footage does.

    A multi-scale texture (coarse shapes down to pixel detail) seen by a camera that
    pans and zooms slowly, a two-colour object crossing it on its own path, and fresh
    grain on every frame: every P and B frame carries motion vectors *and* residual,
    unlike a pure pan, whose inter frames are nearly free to decode.
    """
    rng = np.random.default_rng(seed)
    height, width = 2 * HEIGHT, 2 * WIDTH
    texture = np.zeros((height, width, 3), np.float32)
    for cell, amplitude in ((256, 70), (64, 45), (16, 35), (4, 28), (1, 18)):
        coarse = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        smooth = cv2.resize(
            coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC
        )
        texture += amplitude * smooth[cell : cell + height, cell : cell + width]
    canvas = np.clip(texture + 128, 0, 255).astype(np.uint8)
    grain = np.empty((HEIGHT, WIDTH, 3), np.int16)
    cv2.setRNGSeed(seed)
    for i in range(frames):
        t = i / FPS
        zoom = 1.0 + 0.125 * (1 - math.cos(2 * math.pi * t / 20))
        cx = WIDTH * (1.0 + 0.4 * math.sin(2 * math.pi * t / 30))
        cy = HEIGHT * (1.0 + 0.3 * math.sin(2 * math.pi * t / 17))
        camera = np.array(
            [[zoom, 0, WIDTH / 2 - zoom * cx], [0, zoom, HEIGHT / 2 - zoom * cy]], np.float32
        )
        image = cv2.warpAffine(
            canvas, camera, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        ox = int(WIDTH / 2 + WIDTH * 0.35 * math.sin(2 * math.pi * t / 7))
        oy = int(HEIGHT / 2 + HEIGHT * 0.3 * math.sin(2 * math.pi * t / 5))
        cv2.ellipse(image, (ox, oy), (90, 60), (t * 40) % 360, 0, 360, (230, 60, 40), -1)
        cv2.rectangle(image, (ox - 30, oy - 20), (ox + 30, oy + 20), (40, 200, 240), -1)
        cv2.randn(grain, 0, 4)
        yield np.clip(image.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def opencv_cost_per_frame(data: bytes) -> float:
    """Seconds OpenCV takes to grab (decode) one frame of ``data``, all frames walked."""
    source = io.BytesIO(data)  # must outlive the capture, which reads from it
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [])
    try:
        start, count = time.perf_counter(), 0
        while capture.grab():
            count += 1
        return (time.perf_counter() - start) / max(count, 1)
    finally:
        capture.release()


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
    cost = {
        name: statistics.median(opencv_cost_per_frame(data) for _ in range(1 if quick else 3))
        for name, data in clips.items()
    }
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
                note=("identical frames" if same else "FRAMES DIFFER")
                + f"; opencv decodes {cost[clip_name] * 1e3:.1f} ms/frame",
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
