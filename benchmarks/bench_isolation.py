"""What decoding in isolated worker processes costs, per modality, in the same run.

Each row times the same decodes twice, alternating: ``in-process`` (``MediaPolicy(
isolation=False)``) and ``isolated`` (``isolation=True``: the decode runs in a worker
process and its arrays come back through shared memory). The target is the rule that
decides the default: isolation is on for a modality when it costs at most 10%
(``isolated/in-process <= 1.1x``).

Workloads: 1080p JPEG to an array one at a time and 16 in flight (threads), 32 frames
sampled from a 60 s 720p H.264 clip, 60 s of stereo audio (FLAC and MP3) to mono, and
an image-embedding tensor from base64 safetensors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result, alternate
from bench_audio import workload as audio_workload
from bench_images import ensure_media
from bench_video import make_clip
from mediagate import AudioMediaIO, ImageMediaIO, MediaPolicy, VideoMediaIO

#: The rule that decides the default: isolation is on for a modality when it costs at
#: most 10%; rows of modalities isolated by default are judged against it.
TARGET = "isolated/in-process <= 1.1x"
SIDES = {"in-process": False, "isolated": True}


def _images(isolated: bool) -> ImageMediaIO:
    return ImageMediaIO(policy=MediaPolicy(isolation=isolated))


def _jpegs() -> list[bytes]:
    return [path.read_bytes() for path in ensure_media(["jpeg"])["jpeg"]]


def _one_at_a_time(images: list[bytes], count: int) -> Callable[[ImageMediaIO], None]:
    def run(io: ImageMediaIO) -> None:
        for i in range(count):
            np.asarray(io.load_bytes(images[i % len(images)]))

    return run


def _in_flight(images: list[bytes], count: int, width: int) -> Callable[[ImageMediaIO], None]:
    pool = ThreadPoolExecutor(width)

    def one(io: ImageMediaIO, data: bytes) -> None:
        np.asarray(io.load_bytes(data))

    def run(io: ImageMediaIO) -> None:
        list(pool.map(lambda i: one(io, images[i % len(images)]), range(count)))

    return run


def _row(
    name: str, make_io: Callable[[bool], Any], work: Callable[[Any], None], runs: int
) -> Result:
    ios = {side: make_io(flag) for side, flag in SIDES.items()}
    times = alternate({side: (lambda io=io: work(io)) for side, io in ios.items()}, runs=runs)
    # A modality isolated by default must stay within the rule; the others are reported.
    on = MediaPolicy().isolates(ios["isolated"].modality)
    target = TARGET if on else "(isolation off by default)"
    return Result(group="isolation", workload=name, times=times, target=target)


def run(quick: bool = False) -> list[Result]:
    """The in-process and isolated rows for each modality."""
    runs = 3 if quick else 7
    jpegs = _jpegs()
    count = 8 if quick else 32
    results = [
        _row("1080p JPEG to array, one at a time", _images, _one_at_a_time(jpegs, count), runs),
        _row(
            "1080p JPEG to array, 16 in flight",
            _images,
            _in_flight(jpegs, 4 * count, 16),
            runs,
        ),
    ]
    clip = make_clip(30, seconds=10 if quick else 60)

    def video_io(isolated: bool) -> VideoMediaIO:
        policy = MediaPolicy(isolation=isolated)
        return VideoMediaIO(ImageMediaIO(policy=policy), num_frames=32, policy=policy)

    results.append(_row("32 frames, 720p H.264", video_io, lambda io: io.load_bytes(clip), runs))
    for fmt in ("flac", "mp3"):
        audio = audio_workload(fmt).read_bytes()
        results.append(
            _row(
                f"60 s stereo {fmt.upper()} to mono",
                lambda isolated: AudioMediaIO(policy=MediaPolicy(isolation=isolated)),
                lambda io, audio=audio: io.load_bytes(audio),
                runs,
            )
        )
    results.append(_embedding_row(runs))
    return results


def _embedding_row(runs: int) -> Result:
    import torch

    from mediagate import ImageEmbeddingMediaIO

    io = ImageEmbeddingMediaIO()
    payload = io.encode_base64(torch.randn(576, 4096).to(torch.float16))
    return _row(
        "576x4096 float16 safetensors (base64) to a tensor, x8",
        lambda isolated: ImageEmbeddingMediaIO(policy=MediaPolicy(isolation=isolated)),
        lambda io: [io.load_base64("", payload) for _ in range(8)],
        runs,
    )


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        medians = {side: f"{result.median(side) * 1e3:.1f} ms" for side in result.times}
        print(
            result.workload,
            medians,
            f"{result.median('isolated') / result.median('in-process'):.3f}x",
        )
