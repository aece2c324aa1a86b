"""Batch loading of a column of image URLs: mediagate on Ray Data against the usual ways.

The workload is one column of JPEG URLs, each decoded and resized to fit inside
448x448, on this machine's cores, four sides alternating run by run:

- ``mediagate`` (the Ray adapter): ``Dataset.map_batches(mediagate.ray.MediaLoader,
  concurrency=2, batch_size=256, batch_format="pyarrow")`` with
  ``options={"modality": "image", "image_size": [448, 448]}`` (fitted inside, aspect
  kept, letterboxed to 448x448) on ``ray.init(num_cpus=2)``.
- ``plain Ray``: the same dataset through ``map_batches(load_images, batch_size=256)``,
  a function as users write it: ``requests.get`` per URL, Pillow ``Image.open``,
  ``convert("RGB")``, ``thumbnail((448, 448))`` (fitted inside, aspect kept, no
  padding), numpy arrays out.
- ``Daft``: ``col("url").download().decode_image().resize(448, 448)`` on Daft's native
  runner. Daft's ``resize`` takes one fixed width and height for the whole column, so
  it stretches every image to 448x448 (the aspect is not kept); that is as close to
  "fit inside" as its expressions allow.
- ``mediagate batch``: the command line, ``mediagate batch urls.txt --out DIR --modality
  image --image-size 448x448 --allow-private-networks``, without Ray (Parquet shards of
  1,000 rows in a temporary folder; the harness deletes each shard as soon as it is
  written, so 10k rows of 448x448 pixels do not fill the disk). Its time is the whole
  process, interpreter start and imports included.

Each run of each side is a fresh child process (a fresh Ray cluster for the Ray sides,
started before the clock and shut down after it), and every run fetches URLs no run
fetched before. The JPEGs are textured pictures (smooth colour fields, flat rectangles,
sensor-like noise, quality 90) built once and cached under ``benchmarks/.work/``: 240
distinct ones in six sizes from 640x480 to 1920x1080 (``mixed``), and 120 of 512x384
(``small``, for the 100k-row run: small enough to keep it bounded, still larger than
448 so that every side scales down). A ``mediagate._loopback.LoopbackServer`` on
127.0.0.1, in the harness process, serves them from memory under distinct paths
(``/<run>/<row>.jpg``, row ``i`` answering picture ``i % N``); it shares the cores with
the sides, the same for all of them.

Memory: the harness polls ``/proc`` every 0.2 s for the processes under the side's
child and keeps each one's ``VmHWM`` (the kernel's high-water mark of its resident set,
so a peak between two polls still counts; pages of Ray's shared object store count where
a worker touched them). A *worker* is a Ray worker process (``ray::...``) for the Ray
sides and the side's own process for Daft and the command line; its peak is its own
``VmHWM`` plus that of any processes under it. The rows give the largest worker's peak.

Scaling: 1k and 10k rows of the mixed pictures, then 10k and 100k of the small ones;
throughput should stay flat as rows grow, and so should the peak (target: 100k rows at
most 1.3x the peak of 10k rows, same pictures). Times are whole runs (seconds); the
notes give rows per second per core (rows / seconds / 2 cores).

Ray and requests come from the project venv (``mediagate[ray]`` and the test extras);
Daft pins pyarrow below 26, under the project's pyarrow, so it gets a venv of its own,
``benchmarks/.work/daft-venv`` (built on first use, about 30 s; see ``ensure_daft``). A
side whose packages are missing leaves a "not installed" row and the others still run.

Run: ``python benchmarks/bench_batch.py [--quick]`` or ``benchmarks/run.py --only batch``
(the full group takes about an hour on 2 cores, so ``make bench`` leaves it out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import Result  # noqa: E402

WORK = BENCH / ".work"
ROOT = BENCH.parent
#: Part of the cached pictures' folder name: change it when the pictures change.
MEDIA_VERSION = "batch1"
FIT = 448
CORES = 2
BATCH_SIZE = 256
MIXED_SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 720), (1600, 900), (1920, 1080))
SMALL_SIZE = (512, 384)
DISTINCT = {"mixed": 240, "small": 120}
#: Daft's own environment (its pyarrow pin is below the project's).
DAFT_VENV = WORK / "daft-venv"
DAFT_PINS = ("daft==0.7.26", "pyarrow==25.0.1", "tqdm==4.67.3", "numpy==2.3.5")
#: The policy mediagate's sides load under: loopback only.
POLICY = {"allowed_networks": ["127.0.0.1/32"]}
SIDES = ("mediagate", "plain Ray", "Daft", "mediagate batch")
#: How often the harness reads the sides' processes' high-water marks, seconds.
POLL = 0.2


# -- the workload --------------------------------------------------------------------------


def picture(width: int, height: int, seed: int) -> Any:
    """A ``height`` x ``width`` RGB picture: smooth colour fields, flat rectangles, noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    freq, phase = rng.uniform(0.5, 3.0), rng.uniform(0.0, 6.28)
    red = 127 + 100 * np.sin(x / width * freq * 6.28 + phase) * np.cos(y / height * 3)
    green = 127 + 100 * np.cos((x + y) / (width + height) * freq * 9 + phase)
    blue = x / width * 153 + y / height * 102
    image = np.stack([red, green, blue], axis=-1)
    for _ in range(30):
        w, h = (int(v) for v in rng.integers(width // 40, width // 8, size=2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
    image += rng.normal(0.0, 12.0, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def sizes(kind: str) -> list[tuple[int, int]]:
    """The (width, height) of each distinct picture of ``kind`` (``mixed`` or ``small``)."""
    count = DISTINCT[kind]
    if kind == "small":
        return [SMALL_SIZE] * count
    return [MIXED_SIZES[i % len(MIXED_SIZES)] for i in range(count)]


def build_workload(kind: str, folder: Path | None = None, count: int | None = None) -> list[bytes]:
    """The distinct JPEGs of ``kind``, built once and cached under ``folder``."""
    from mediagate._build import image_bytes

    folder = folder or WORK / f"{MEDIA_VERSION}-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    bodies = []
    for seed, (width, height) in enumerate(sizes(kind)[:count]):
        path = folder / f"{seed:04d}_{width}x{height}.jpg"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(image_bytes(picture(width, height, seed), "JPEG", quality=90))
            tmp.replace(path)
        bodies.append(path.read_bytes())
    return bodies


class Server:
    """The pictures under distinct paths: ``/<tag>/<row>.jpg`` answers picture ``row % N``."""

    def __init__(self, bodies: Sequence[bytes]) -> None:
        from mediagate._loopback import LoopbackServer, Route

        self.routes = [Route(b, headers={"Content-Type": "image/jpeg"}) for b in bodies]
        self.server = LoopbackServer(fallback=self._route)

    def _route(self, path: str) -> Any:
        name = path.rsplit("/", 1)[-1]
        stem = name.removesuffix(".jpg")
        return self.routes[int(stem) % len(self.routes)] if stem.isdigit() else None

    def urls(self, tag: str, rows: int) -> list[str]:
        return [self.server.url(f"/{tag}/{i}.jpg") for i in range(rows)]

    def close(self) -> None:
        self.server.stop()


# -- the plain Ray Data function (what users write) -------------------------------------


def load_images(batch: dict[str, Any]) -> dict[str, Any]:
    """Download each URL of the batch with requests and fit it inside 448x448 with Pillow."""
    import io

    import numpy as np
    import requests
    from PIL import Image

    images = []
    for url in batch["url"]:
        response = requests.get(url, timeout=30)
        response.raise_for_status()
        image = Image.open(io.BytesIO(response.content)).convert("RGB")
        image.thumbnail((FIT, FIT))
        images.append(np.asarray(image))
    return {"url": batch["url"], "image": images}


# -- the sides, each in a child process ----------------------------------------------------


def _ray_dataset(urls: list[str]) -> Any:
    import pyarrow as pa
    import ray

    tables = [pa.table({"url": urls[i : i + BATCH_SIZE]}) for i in range(0, len(urls), BATCH_SIZE)]
    return ray.data.from_arrow(tables)


def _start_ray() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def side_mediagate(urls: list[str]) -> dict[str, Any]:
    """The Ray adapter: ``MediaLoader`` actors on ``map_batches``."""
    import ray

    from mediagate.ray import MediaLoader

    _start_ray()
    try:
        start = time.perf_counter()
        ds = _ray_dataset(urls).map_batches(
            MediaLoader,
            fn_constructor_kwargs={
                "options": {"modality": "image", "image_size": [FIT, FIT]},
                "policy": POLICY,
            },
            concurrency=CORES,
            batch_size=BATCH_SIZE,
            batch_format="pyarrow",
        )
        rows = ok = 0
        shape: list[int] = []
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows += batch.num_rows
            ok += batch.column("error_type").null_count  # null: the row loaded
            if not shape:
                shape = list(batch.column("image").type.shape)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"seconds": elapsed, "rows": rows, "ok": ok, "shape": shape}


def side_plain_ray(urls: list[str]) -> dict[str, Any]:
    """``load_images`` as a plain ``map_batches`` function."""
    import ray

    _start_ray()
    try:
        start = time.perf_counter()
        ds = _ray_dataset(urls).map_batches(load_images, batch_size=BATCH_SIZE)
        rows = 0
        shape: list[int] = []
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows += len(batch["url"])
            if not shape:
                shape = list(batch["image"][0].shape)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"seconds": elapsed, "rows": rows, "ok": rows, "shape": shape}


def side_daft(urls: list[str]) -> dict[str, Any]:
    """Daft's download, decode and resize expressions (runs in ``DAFT_VENV``)."""
    import daft
    from daft import col

    start = time.perf_counter()
    df = daft.from_pydict({"url": urls})
    df = df.with_column("image", col("url").download().decode_image().resize(FIT, FIT))
    rows = ok = 0
    shape: list[int] = []
    for part in df.iter_partitions():
        rows += len(part)
        images = part.get_column_by_name("image")
        ok += len(part) - images.null_count() if hasattr(images, "null_count") else len(part)
        if not shape and len(part):
            shape = list(images.slice(0, 1).to_pylist()[0].shape)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "rows": rows, "ok": ok, "shape": shape}


CHILD_SIDES: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "mediagate": side_mediagate,
    "plain Ray": side_plain_ray,
    "Daft": side_daft,
}


def _child(side: str, url_file: Path, out: Path) -> int:
    urls = url_file.read_text(encoding="utf-8").split()
    answer = CHILD_SIDES[side](urls)
    out.write_text(json.dumps(answer), encoding="utf-8")
    sys.stdout.flush()
    # Daft 0.7's runtime can abort in interpreter finalization (PyGILState_Release) after
    # the work is done; nothing is left to clean up, so skip it.
    os._exit(0)


# -- measuring a run -----------------------------------------------------------------------


def _memory(pid: int) -> tuple[int, int] | None:
    """``VmHWM`` and ``RssAnon`` of ``pid`` in bytes (None once it is gone)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(("VmHWM:", "RssAnon:")):
                    found[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        return None
    if "VmHWM" not in found:
        return None  # a kernel thread
    return found["VmHWM"], found.get("RssAnon", 0)


def _ppids() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parents[int(entry)] = int(fields[1])
    return parents


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
            return cmd.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Peaks(threading.Thread):
    """Polls the processes under ``root`` and keeps each one's ``VmHWM``, parent and name."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peak: dict[int, int] = {}
        self.anon: dict[int, int] = {}
        self.parent: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(POLL):
            self.scan()

    def scan(self) -> None:
        parents = _ppids()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.root]
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            memory = _memory(pid)
            if memory is None:
                continue
            self.peak[pid] = max(memory[0], self.peak.get(pid, 0))
            self.anon[pid] = max(memory[1], self.anon.get(pid, 0))
            self.parent.setdefault(pid, parents.get(pid, 0))
            # Ray renames its workers (``ray::MapWorker(...)``) once they start work.
            if not self.names.get(pid, "").startswith("ray::"):
                self.names[pid] = _cmdline(pid)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.scan()

    def worker_peak(self, is_worker: Callable[[int, str], bool], *, anon: bool = False) -> int:
        """The largest worker's peak: its ``VmHWM`` plus that of the processes under it
        (with ``anon``: the largest ``RssAnon`` polled instead, private memory only)."""
        peaks = self.anon if anon else self.peak
        best = 0
        for pid, name in self.names.items():
            if not is_worker(pid, name):
                continue
            total, todo = 0, [pid]
            while todo:
                current = todo.pop()
                total += peaks.get(current, 0)
                todo += [p for p, parent in self.parent.items() if parent == current]
            best = max(best, total)
        return best


def _is_ray_worker(pid: int, name: str) -> bool:
    return name.startswith("ray::") or "default_worker.py" in name


@dataclass
class Run:
    """One run of one side: seconds, rows handed back, rows that decoded, peak per worker."""

    seconds: float
    rows: int
    ok: int
    peak: int
    anon: int
    shape: list[int]


def _daft_python() -> Path:
    return DAFT_VENV / "bin" / "python"


def ensure_daft() -> Path | None:
    """Daft's interpreter, building ``DAFT_VENV`` on first use; None when it cannot be."""
    python = _daft_python()
    stamp = DAFT_VENV / ".installed"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == " ".join(DAFT_PINS):
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(DAFT_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *DAFT_PINS,
            ],
            check=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"Daft could not be installed: {exc}", file=sys.stderr)
        return None
    stamp.write_text(" ".join(DAFT_PINS), encoding="utf-8")
    return python


def missing(side: str) -> str | None:
    """Why ``side`` cannot run here (a package it needs is not installed), or None."""
    import importlib.util

    need = {
        "mediagate": ("ray", "pyarrow"),
        "plain Ray": ("ray", "requests"),
        "mediagate batch": ("pyarrow",),
    }.get(side, ())
    absent = [name for name in need if importlib.util.find_spec(name) is None]
    if side == "mediagate" and importlib.util.find_spec("mediagate.ray") is None:
        absent.append("mediagate.ray")
    if side == "Daft" and ensure_daft() is None:
        absent.append("daft")
    return ", ".join(absent) or None


def run_side(side: str, urls: list[str], scratch: Path) -> Run:
    """One timed run of ``side`` over ``urls`` in a fresh child process."""
    url_file = scratch / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
    answer_file = scratch / "answer.json"
    answer_file.unlink(missing_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    if side == "mediagate batch":
        out = scratch / "shards"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            str(Path(sys.executable).with_name("mediagate")),
            "batch",
            str(url_file),
            "--out",
            str(out),
            "--modality",
            "image",
            "--image-size",
            f"{FIT}x{FIT}",
            "--allow-private-networks",
            "--no-progress",
            "--json",
        ]
    else:
        python = _daft_python() if side == "Daft" else Path(sys.executable)
        command = [str(python), str(Path(__file__).resolve()), "--side", side]
        command += [str(url_file), str(answer_file)]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = Peaks(child.pid)
    peaks.start()
    drain = threading.Thread(target=_drain_shards, args=(scratch / "shards", child), daemon=True)
    if side == "mediagate batch":
        drain.start()
    stdout, stderr = child.communicate(timeout=3600)
    seconds = time.perf_counter() - start
    peaks.stop()
    if child.returncode != 0:
        raise RuntimeError(f"{side} exited {child.returncode}: {stderr.decode()[-2000:]}")
    if side == "mediagate batch":
        drain.join()
        summary = json.loads(stdout)
        ok = int(summary["outcomes"].get("ok", 0))
        answer = {"seconds": seconds, "rows": len(urls), "ok": ok, "shape": [FIT, FIT, 3]}
    else:
        answer = json.loads(answer_file.read_text(encoding="utf-8"))

    def is_worker(pid: int, name: str) -> bool:
        if side in ("mediagate", "plain Ray"):
            return _is_ray_worker(pid, name)
        return pid == child.pid

    peak, anon = peaks.worker_peak(is_worker), peaks.worker_peak(is_worker, anon=True)
    return Run(answer["seconds"], answer["rows"], answer["ok"], peak, anon, answer["shape"])


def _drain_shards(folder: Path, child: subprocess.Popen[bytes]) -> None:
    """Delete each finished shard the command line writes (its rows are counted in its
    summary), so a long run does not fill the disk."""
    while True:
        finished = child.poll() is not None
        for shard in folder.glob("part-*.parquet"):
            shard.unlink(missing_ok=True)
        if finished:
            return
        time.sleep(0.5)


# -- the group -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    label: str
    rows: int
    kind: str
    runs: int


def scales(quick: bool) -> list[Scale]:
    if quick:
        return [
            Scale("500", 500, "mixed", 1),
            Scale("500 small", 500, "small", 1),
            Scale("2k small", 2000, "small", 1),
        ]
    return [
        Scale("1k", 1000, "mixed", 3),
        Scale("10k", 10_000, "mixed", 2),
        Scale("10k small", 10_000, "small", 1),
        Scale("100k small", 100_000, "small", 1),
    ]


def describe(scale: Scale) -> str:
    if scale.kind == "mixed":
        return f"{scale.rows:,} JPEG URLs, 640x480..1920x1080, fit in {FIT}x{FIT}"
    width, height = SMALL_SIZE
    return f"{scale.rows:,} JPEG URLs, {width}x{height}, fit in {FIT}x{FIT}"


def per_core(run: Run) -> float:
    return run.rows / run.seconds / CORES


def measure(
    chosen: Sequence[Scale], sides: Sequence[str] = SIDES, runs_each: int | None = None
) -> dict[str, dict[str, list[Run]]]:
    """Each scale's runs of ``sides``, alternating run by run (``runs_each`` overrides
    the scale's own number of runs)."""
    WORK.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list[Run]]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-batch-", dir=WORK))
    counter = 0
    try:
        for scale in chosen:
            bodies = build_workload(scale.kind)
            runs[scale.label] = {side: [] for side in sides}
            for k in range(runs_each or scale.runs):
                order = list(sides[k % len(sides) :]) + list(sides[: k % len(sides)])
                for side in order:
                    counter += 1
                    server = Server(bodies)
                    try:
                        urls = server.urls(f"r{counter}", scale.rows)
                        result = run_side(side, urls, scratch)
                    finally:
                        server.close()
                    if result.rows != scale.rows:
                        raise RuntimeError(f"{side} handed back {result.rows} of {scale.rows} rows")
                    runs[scale.label][side].append(result)
                    print(
                        f"  {scale.label} {side}: {result.seconds:.1f} s, "
                        f"{per_core(result):.0f} rows/s/core, ok {result.ok}, "
                        f"peak {result.peak / 2**20:.0f} MiB (anon {result.anon / 2**20:.0f}), "
                        f"shape {result.shape}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runs


def _median(values: Sequence[float]) -> float:
    import statistics

    return statistics.median(values)


def results(runs: dict[str, dict[str, list[Run]]], skipped: dict[str, str]) -> list[Result]:
    """The rows: per scale mediagate against plain Ray and against Daft, the command line,
    and per side the peak memory from the smaller to the larger run of the small pictures."""
    out: list[Result] = []
    labels = list(runs)
    scale_of = {s.label: s for s in scales(quick=False) + scales(quick=True)}
    # The speed targets are judged on the largest run of the mixed pictures (the workload
    # the targets are about); the other scales are context for how throughput scales.
    judged_label = max(
        (label for label in labels if scale_of[label].kind == "mixed"),
        key=lambda label: scale_of[label].rows,
        default=None,
    )
    for label in labels:
        sides = runs[label]
        scale = scale_of[label]

        def note(names: Sequence[str], sides: dict[str, list[Run]] = sides) -> str:
            parts = []
            for name in names:
                if sides.get(name):
                    rate = _median([per_core(r) for r in sides[name]])
                    ok = min(r.ok for r in sides[name])
                    parts.append(f"{name} {rate:,.0f} rows/s/core ({ok:,} ok)")
            return "; ".join(parts)

        for other, target in (
            ("plain Ray", "plain Ray/mediagate >= 1.5x"),
            ("Daft", "Daft/mediagate >= 1x"),
        ):
            if not sides.get("mediagate") or not sides.get(other):
                continue
            pair = {
                other: [r.seconds for r in sides[other]],
                "mediagate": [r.seconds for r in sides["mediagate"]],
            }
            peaks = {n: max(r.peak for r in sides[n]) for n in pair}
            extra = " (stretched to 448x448)" if other == "Daft" else ""
            out.append(
                Result(
                    group="batch",
                    workload=f"{describe(scale)}: Ray adapter vs {other}{extra}",
                    times=pair,
                    peak_bytes=peaks,
                    target=target if label == judged_label else f"(context); {target}",
                    note=note(["mediagate", other]) + "; " + _private(sides, list(pair)),
                )
            )
        if sides.get("mediagate batch"):
            out.append(
                Result(
                    group="batch",
                    workload=f"{describe(scale)}: `mediagate batch` (command line, no Ray)",
                    times={"mediagate": [r.seconds for r in sides["mediagate batch"]]},
                    peak_bytes={"mediagate": max(r.peak for r in sides["mediagate batch"])},
                    target="(context)",
                    note=note(["mediagate batch"]) + "; " + _private(sides, ["mediagate batch"]),
                )
            )
    small = [label for label in labels if scale_of[label].kind == "small"]
    mixed = [label for label in labels if scale_of[label].kind == "mixed"]
    if len(small) >= 2:
        low, high = small[0], small[-1]
        for side in SIDES:
            if not runs[low].get(side) or not runs[high].get(side):
                continue

            def peak(label: str, side: str = side) -> int:
                return max(r.peak for r in runs[label][side])

            rates = [
                f"{label} {_median([per_core(r) for r in runs[label][side]]):,.0f}"
                for label in mixed + small
                if runs[label].get(side)
            ]
            also = [
                f"{label} {peak(label) / 2**20:,.0f}" for label in mixed if runs[label].get(side)
            ]
            judged = side in ("mediagate", "mediagate batch")
            low_rows, high_rows = scale_of[low].rows, scale_of[high].rows
            private = _private({k: runs[k][side] for k in (low, high)}, [low, high])
            out.append(
                Result(
                    group="batch",
                    workload=f"{side}: peak RSS per worker, {low_rows:,} vs {high_rows:,} rows "
                    f"({SMALL_SIZE[0]}x{SMALL_SIZE[1]})",
                    # MiB / 1000, so that the table's millisecond columns read as MiB.
                    times={
                        "more rows": [peak(high) / 2**20 / 1e3],
                        "fewer rows": [peak(low) / 2**20 / 1e3],
                    },
                    target="more rows/fewer rows <= 1.3x" if judged else "(context)",
                    note="the time columns hold MiB (VmHWM), not ms; "
                    + private
                    + (f"; mixed pictures, peak MiB: {', '.join(also)}" if also else "")
                    + "; rows/s/core: "
                    + ", ".join(rates),
                )
            )
    for side, why in skipped.items():
        out.append(
            Result(group="batch", workload=f"{side} (all)", times={}, note=f"not installed: {why}")
        )
    return out


def _private(runs: dict[str, list[Run]], names: Sequence[str]) -> str:
    """The largest private (``RssAnon``) size polled per worker, for each of ``names``."""
    parts = [f"{n} {max(r.anon for r in runs[n]) / 2**20:,.0f}" for n in names if runs.get(n)]
    return "private RssAnon peak MiB per worker: " + ", ".join(parts)


def run(quick: bool = False) -> list[Result]:
    """Every side that can run here, at every scale; ``quick``: 500 to 2,000 rows, one run."""
    skipped = {side: why for side in SIDES if (why := missing(side))}
    sides = [side for side in SIDES if side not in skipped]
    return results(measure(scales(quick), sides), skipped)


def _save(runs: dict[str, dict[str, list[Run]]], path: Path) -> None:
    saved = {
        k: {s: [dataclasses.asdict(r) for r in v] for s, v in d.items()} for k, d in runs.items()
    }
    path.write_text(json.dumps(saved, indent=1), encoding="utf-8")


def _load(path: Path) -> dict[str, dict[str, list[Run]]]:
    saved = json.loads(path.read_text(encoding="utf-8"))
    return {k: {s: [Run(**r) for r in v] for s, v in d.items()} for k, d in saved.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the group (or a part of it) and print its rows."""
    every = {s.label: s for s in scales(False) + scales(True)}
    parser = argparse.ArgumentParser(description="batch loading benchmark")
    parser.add_argument("--quick", action="store_true", help="500 to 2,000 rows, one run")
    parser.add_argument("--scales", nargs="+", choices=list(every), help="only these scales")
    parser.add_argument("--sides", nargs="+", choices=SIDES, help="only these sides")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per side and scale")
    parser.add_argument("--save", type=Path, help="also write the raw runs to this JSON file")
    parser.add_argument(
        "--load", type=Path, nargs="+", help="print the rows of saved raw runs (no timing)"
    )
    parser.add_argument(
        "--side", nargs=3, metavar=("SIDE", "URLS", "ANSWER"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.side:
        return _child(args.side[0], Path(args.side[1]), Path(args.side[2]))
    skipped: dict[str, str] = {}
    if args.load:
        runs: dict[str, dict[str, list[Run]]] = {}
        for path in args.load:
            for label, by_side in _load(path).items():
                runs.setdefault(label, {}).update(by_side)
    else:
        wanted = args.sides or SIDES
        skipped = {side: why for side in wanted if (why := missing(side))}
        chosen = [every[label] for label in args.scales] if args.scales else scales(args.quick)
        sides = [side for side in wanted if side not in skipped]
        runs = measure(chosen, sides, args.runs)
        if args.save:
            _save(runs, args.save)
    from _report import markdown_table

    print(markdown_table(results(runs, skipped)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
