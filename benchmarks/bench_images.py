"""Image workloads: mediagate against the reference media layer and the raw decoder.

Every workload is run by three persistent worker processes (``reference_worker.py``),
one per side, in alternation: reference, mediagate, floor, reference, ... The media are
1920x1080 JPEGs (quality 90) and 1920x1080 PNGs with an alpha channel, generated once
under ``benchmarks/.work/images`` and served from memory by a loopback HTTP server under
distinct URLs (so no side can share one download between requests).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result
from mediagate._build import image_bytes
from mediagate._loopback import LoopbackServer, Route

__all__ = [
    "LIMITS",
    "ImageWorkload",
    "MediaServer",
    "Worker",
    "WorkerError",
    "ensure_media",
    "run",
    "run_images",
    "workloads",
]

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
MEDIA_DIR = WORK / "images"
WORKER_SCRIPT = BENCH / "reference_worker.py"
WIDTH, HEIGHT = 1920, 1080
DISTINCT = {"jpeg": 8, "png": 4}
_SUFFIX = {"jpeg": "jpg", "png": "png"}
_CONTENT_TYPE = {"jpeg": "image/jpeg", "png": "image/png"}


# -- media -----------------------------------------------------------------------------


def _pixels(seed: int, noise: float) -> np.ndarray:
    """A 1920x1080 RGB picture: smooth colour fields, flat rectangles, sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    freq, phase = rng.uniform(0.5, 3.0), rng.uniform(0.0, 6.28)
    red = 127 + 100 * np.sin(x / WIDTH * freq * 6.28 + phase) * np.cos(y / HEIGHT * 3)
    green = 127 + 100 * np.cos((x + y) / (WIDTH + HEIGHT) * freq * 9 + phase)
    blue = x / WIDTH * 153 + y / HEIGHT * 102
    image = np.stack([red, green, blue], axis=-1)
    for _ in range(30):
        x0, y0 = rng.integers(0, WIDTH - 200), rng.integers(0, HEIGHT - 200)
        w, h = rng.integers(20, 200, size=2)
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
    image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    pixels: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return pixels


def _encode(fmt: str, seed: int) -> bytes:
    if fmt == "jpeg":
        return image_bytes(_pixels(seed, noise=12.0), "JPEG", quality=90)
    rgb = _pixels(seed, noise=3.0)
    alpha = np.clip(rgb[:, :, 0].astype(np.int32) + 64, 0, 255).astype(np.uint8)
    return image_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def ensure_media(formats: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """The distinct test images (of ``formats``; default all), generated on first use."""
    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {}
    wanted = set(DISTINCT if formats is None else formats)
    for fmt, count in DISTINCT.items():
        if fmt not in wanted:
            continue
        files[fmt] = []
        for seed in range(count):
            path = MEDIA_DIR / f"{fmt}_{WIDTH}x{HEIGHT}_{seed}.{_SUFFIX[fmt]}"
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(_encode(fmt, seed))
                tmp.replace(path)
            files[fmt].append(path)
    return files


# -- the loopback server ---------------------------------------------------------------


class MediaServer:
    """Serves ``/<fmt>/<n>.<ext>`` from memory on 127.0.0.1; n picks image ``n % distinct``."""

    def __init__(self, files: dict[str, list[Path]]) -> None:
        self._blobs = {fmt: [path.read_bytes() for path in paths] for fmt, paths in files.items()}
        self._server: LoopbackServer | None = None

    def _route(self, path: str) -> Route | None:
        try:
            fmt, name = path.strip("/").split("/")
            body = self._blobs[fmt][int(name.split(".")[0]) % len(self._blobs[fmt])]
        except (KeyError, ValueError):
            return None
        return Route(body, headers={"Content-Type": _CONTENT_TYPE[fmt]})

    def url(self, fmt: str, index: int) -> str:
        assert self._server is not None, "the server runs inside its with block"
        return self._server.url(f"/{fmt}/{index}.{_SUFFIX[fmt]}")

    def __enter__(self) -> MediaServer:
        self._server = LoopbackServer(fallback=self._route)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.stop()


# -- workers ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker could not start or could not run a command."""


class Worker:
    """A ``reference_worker.py`` process for one side, driven one JSON line at a time."""

    def __init__(
        self,
        side: str,
        python: Path | str,
        *,
        script: Path = WORKER_SCRIPT,
        side_flag: str = "--side",
        log_name: str = "worker",
    ) -> None:
        self.side = side
        WORK.mkdir(parents=True, exist_ok=True)
        self.log_path = WORK / f"{log_name}-{side}.log"
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        env.pop("VLLM_MEDIA_CACHE", None)  # the reference's download cache stays off
        env.pop("MEDIAGATE_MEDIA_CACHE", None)
        env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._log = self.log_path.open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            [str(python), str(script), side_flag, side],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=str(BENCH.parent),
        )
        hello = self._read()
        if not hello.get("ok"):
            self.close()
            raise WorkerError(f"{side} worker failed to start: {hello.get('error')}")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=10)
            raise WorkerError(f"{self.side} worker exited: {self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def log_tail(self, lines: int = 3) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"{self.side} worker is gone: {self.log_tail()}") from exc
        answer = self._read()
        if not answer.get("ok"):
            raise WorkerError(f"{self.side}: {answer.get('error')}")
        return answer

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write('{"op": "quit"}\n')
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()


# -- workloads -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageWorkload:
    """One image workload; ``targets`` use the harness's ``"a/b >= Nx"`` form."""

    name: str
    fmt: str  # "jpeg" | "png"
    source: str  # "http" | "data" | "bytes"
    count: int
    concurrency: int
    output: str  # "array" | "pil"
    targets: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        kind = "JPEG" if self.fmt == "jpeg" else "PNG+alpha"
        if self.source == "bytes":
            how = "decode from bytes, one at a time"
        elif self.concurrency > 1:
            how = f"{self.source}, {self.count} with {self.concurrency} in flight"
        else:
            how = f"{self.source}, one at a time (x{self.count})"
        result = "np.asarray" if self.output == "array" else "PIL"
        return f"{kind} {WIDTH}x{HEIGHT}, {how} -> {result}"


SPEEDUP_2X = "reference/mediagate >= 2x"
NO_SLOWER = "reference/mediagate >= 1x"
NEAR_FLOOR = "mediagate/floor <= 1.3x"


def workloads(quick: bool = False) -> list[ImageWorkload]:
    """The image workloads, smaller counts when ``quick``."""
    jpegs, pngs, singles = (32, 8, 8) if quick else (256, 64, 32)
    return [
        ImageWorkload("jpeg_http_16", "jpeg", "http", jpegs, 16, "array", (SPEEDUP_2X,)),
        ImageWorkload("jpeg_http_1", "jpeg", "http", singles, 1, "array", (SPEEDUP_2X,)),
        ImageWorkload("jpeg_http_16_pil", "jpeg", "http", jpegs, 16, "pil", (NO_SLOWER,)),
        ImageWorkload("jpeg_http_1_pil", "jpeg", "http", singles, 1, "pil", (NO_SLOWER,)),
        ImageWorkload("jpeg_data_16", "jpeg", "data", jpegs, 16, "array", (SPEEDUP_2X,)),
        ImageWorkload("jpeg_data_1", "jpeg", "data", singles, 1, "array", (SPEEDUP_2X,)),
        ImageWorkload("jpeg_decode", "jpeg", "bytes", singles, 1, "array", (NEAR_FLOOR,)),
        ImageWorkload("png_http_16", "png", "http", pngs, 16, "array"),
        ImageWorkload("png_http_1", "png", "http", singles, 1, "array"),
        ImageWorkload("png_data_16", "png", "data", pngs, 16, "array"),
        ImageWorkload("png_decode", "png", "bytes", singles, 1, "array", (NEAR_FLOOR,)),
    ]


#: What limits a workload whose target is missed, by workload name (from profiling).
_JPEG_ARRAY_LIMIT = (
    "mediagate decodes at the floor (simplejpeg: one libjpeg-turbo pass straight into the "
    "array; see the decode row), so the ratio is capped by the reference's own cost, "
    "Pillow's libjpeg-turbo decode plus the np.asarray copy out of its 4-byte RGB layout: "
    "18-21 ms per 1080p image on this machine against a floor of 8.5-9 ms (the 2x target "
    "was set where the reference took 37 ms). One at a time over http, a profile of one "
    "image: decode 8.8 ms, loopback GET 1.3 ms (bare aiohttp takes the same), thread "
    "hand-offs 0.7 ms (caller loop -> fetch loop 0.3, decode pool -> fetch loop 0.3, "
    "back to the caller 0.1; thread wake-ups on this VM); 2x would need the decode alone. "
    "A baseline JPEG without restart markers cannot be split across cores, and "
    "libjpeg-turbo's fast DCT and fast upsampling change pixels (up to ~100 levels at "
    "edges) against what Pillow gives, so neither is used. With 16 in flight both sides "
    "are CPU-bound on 2 cores and pay the same ~3 ms of CPU per image for HTTP on both "
    "ends (the loopback server runs on the same cores), which caps the ratio near 2x"
)
_LIMITS_BY_NAME: dict[str, str] = {
    "jpeg_http_16": _JPEG_ARRAY_LIMIT,
    "jpeg_http_1": _JPEG_ARRAY_LIMIT,
    "jpeg_data_16": _JPEG_ARRAY_LIMIT,
    "jpeg_data_1": _JPEG_ARRAY_LIMIT,
    "jpeg_decode": "the result wrapper, header probe and pixel check on top of simplejpeg",
    "png_decode": "Pillow's PNG inflate is the floor; compositing alpha onto the background "
    "costs ~5 ms more than the floor's plain convert('RGB')",
}

#: The same notes by workload label (what a ``Result`` carries), quick and full.
LIMITS: dict[str, str] = {
    w.label: _LIMITS_BY_NAME[w.name]
    for quick in (False, True)
    for w in workloads(quick)
    if w.name in _LIMITS_BY_NAME
}


def command_for(
    workload: ImageWorkload, files: dict[str, list[Path]], server: MediaServer
) -> dict[str, Any]:
    """The worker command for ``workload``: the URLs (http) and the files behind them."""
    paths = files[workload.fmt]
    behind = [str(paths[i % len(paths)]) for i in range(workload.count)]
    if workload.source == "http":
        items = [server.url(workload.fmt, i) for i in range(workload.count)]
    else:
        items = behind
    return {
        "op": "run",
        "workload": workload.name,
        "fmt": workload.fmt,
        "source": workload.source,
        "items": items,
        "files": behind,
        "concurrency": workload.concurrency,
        "output": workload.output,
    }


def _measure(
    workers: dict[str, Worker], command: dict[str, Any], runs: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str], dict[str, Any]]:
    """Alternate the sides run by run; a side that fails is dropped with its reason."""
    times: dict[str, list[float]] = {side: [] for side in workers}
    peaks: dict[str, list[int]] = {side: [] for side in workers}
    failed: dict[str, str] = {}
    shapes: dict[str, Any] = {}
    for round_index in range(warmup + runs):
        for side, worker in workers.items():
            if side in failed:
                continue
            try:
                answer = worker.request(command)
            except WorkerError as exc:
                failed[side] = str(exc)
                continue
            shapes[side] = answer.get("shape")
            if round_index >= warmup:
                times[side].append(float(answer["elapsed"]))
                peaks[side].append(int(answer["peak_rss"]))
    times = {side: values for side, values in times.items() if values}
    peak = {side: int(statistics.median(values)) for side, values in peaks.items() if values}
    return times, peak, failed, shapes


def run_images(
    *,
    quick: bool = False,
    reference_python: Path | str | None = None,
    runs: int | None = None,
    only: Sequence[str] | None = None,
    versions: dict[str, str] | None = None,
    log: Any = print,
) -> list[Result]:
    """Run the image workloads; the reference side only when ``reference_python`` is set.

    ``versions``, when given, is filled with the library versions each side reports.
    """
    runs = runs if runs is not None else (3 if quick else 5)
    chosen = [w for w in workloads(quick) if not only or w.name in only]
    unknown = sorted(set(only or ()) - {w.name for w in workloads(quick)})
    if unknown:
        raise ValueError(f"unknown image workloads: {', '.join(unknown)}")
    files = ensure_media({w.fmt for w in chosen})
    workers: dict[str, Worker] = {}
    startup: dict[str, str] = {}
    plan: list[tuple[str, Path | str | None]] = [
        ("reference", reference_python),
        ("mediagate", sys.executable),
        ("floor", sys.executable),
    ]
    results: list[Result] = []
    try:
        for side, python in plan:
            if python is None:
                startup[side] = "not run: no reference environment (--no-reference)"
                continue
            try:
                workers[side] = Worker(side, python)
            except WorkerError as exc:
                startup[side] = f"not run: {exc}"
        with MediaServer(files) as server:
            for workload in chosen:
                log(f"  images/{workload.name}: {workload.label}")
                command = command_for(workload, files, server)
                times, peak, failed, shapes = _measure(workers, command, runs, warmup=1)
                notes = [f"{side} {reason}" for side, reason in startup.items()]
                notes += [f"{side} not run: {reason}" for side, reason in failed.items()]
                if len({json.dumps(shape) for shape in shapes.values()}) > 1:
                    notes.append(f"result shapes differ: {shapes}")
                results.append(
                    Result(
                        group="images",
                        workload=workload.label,
                        times=times,
                        peak_bytes=peak,
                        target="; ".join(workload.targets),
                        note="; ".join(notes),
                    )
                )
        for worker in workers.values():
            if versions is None:
                break
            with suppress(WorkerError):
                versions.update(worker.request({"op": "info"})["versions"])
    finally:
        for worker in workers.values():
            worker.close()
    return results


def _default_reference_python() -> Path | None:
    python = BENCH / ".ref-venv" / "bin" / "python"
    return python if (BENCH / ".ref-venv" / ".stamp").exists() and python.exists() else None


def run(quick: bool = False) -> list[Result]:
    """The image workloads, against the reference when ``benchmarks/.ref-venv`` is built."""
    return run_images(quick=quick, reference_python=_default_reference_python())


def _main() -> None:
    for result in run(quick="--quick" in sys.argv):
        medians = {side: f"{result.median(side) * 1e3:.1f} ms" for side in result.times}
        print(result.workload, medians, result.note)


if __name__ == "__main__":
    _main()
