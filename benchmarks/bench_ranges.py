"""Range reads of a remote video: a few frames of an hour-long clip without downloading it.

For an http(s) video whose server answers byte ranges, mediagate's pyav loader can read
only the container index and the packets the sampled frames need (the keyframe before
each frame, up to the frame) through a block-cached view of the remote file. This group
times that (the ``mediagate`` side, ``range_reads`` allowed) against the same connector
downloading the whole file first (``full download``: ``range_reads=False``), both
through ``MediaConnector.load_with_report`` with the default policy plus
``allowed_networks=["127.0.0.1/32"]`` and ``max_bytes=1 << 30``.

The clip is 60 minutes of 1280x720 H.264 at 30 fps with a closed GOP every 2 s (x264
``keyint=60:min-keyint=60:scenecut=0``, preset veryfast, 1.1 Mbit/s, 509 MB): one
60 s segment of ``bench_video.scene`` (a grainy textured pan and zoom with a moving
object) is encoded once, then its packets are remuxed 60 times with shifted timestamps
into one MP4 with the index at the front (``movflags=+faststart``); a moov-at-the-end
variant is the same remux without faststart. Both are cached under ``benchmarks/.work``
(first build: about a minute for the segment on 2 cores, 3 s per remux) and checked on
every run (frame and keyframe count from the index and a demux of every packet, one
decoded frame at the start, the middle and the end with PyAV; the order of the top-level
boxes for where the index is). ``--quick`` uses 5 minutes of the
same segment (the row notes say so).

The clip is served from memory by ``mediagate._loopback.LoopbackServer`` with
``Route(data, ranges=True)``, paced at 50 MB/s (a typical cloud-to-cloud rate) and
unpaced. After one warm-up load per side (which also starts the isolated video
worker), the sides alternate, 5 timed runs each (3 with ``--quick``); the rows show
medians. Before timing, each workload's frames and metadata are compared between the
two sides (``np.array_equal``). Until the connector has range reads (the ``range_reads``
option and ``LoadReport.read_mode``), the group runs the full-download side alone.

Run: ``python benchmarks/bench_ranges.py [--quick]``.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from _common import Result

WORK = Path(__file__).resolve().parent / ".work"
#: Part of the cached clips' names: change it when the scene or the encoding changes.
CLIP_VERSION = "ranges1"
WIDTH, HEIGHT, FPS = 1280, 720, 30
GOP_SECONDS = 2
SEGMENT_SECONDS = 60
BIT_RATE = 1_100_000
HOUR, QUICK_SECONDS = 3600, 300
#: The paced server's rate, bytes per second.
RATE = 50e6
#: The policy both sides load under.
POLICY_FIELDS: dict[str, Any] = {"allowed_networks": ["127.0.0.1/32"], "max_bytes": 1 << 30}


class ClipError(RuntimeError):
    """A built clip is not what the benchmark needs."""


# -- the clip ----------------------------------------------------------------------------


def encode_segment(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint8]],
    *,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    fps: int = FPS,
    gop: int = FPS * GOP_SECONDS,
    bit_rate: int = BIT_RATE,
) -> None:
    """``frames`` as an H.264 MP4 at ``path``: closed GOPs of exactly ``gop`` frames."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
        }
        stream.codec_context.bit_rate = bit_rate
        stream.codec_context.thread_type = "FRAME"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def repeat_segment(segment: Path, repeats: int, path: Path, *, faststart: bool = True) -> None:
    """``segment``'s packets ``repeats`` times over, timestamps shifted, as one MP4 at
    ``path`` (no re-encode); ``faststart`` puts the index before the media data."""
    with av.open(str(segment)) as source:
        video = source.streams.video[0]
        packets = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe) for p in source.demux(video)]
        packets = [p for p in packets if p[0]]  # the demuxer's empty end-of-stream packet
        span = sum(p[3] or 0 for p in packets)
        options = {"movflags": "+faststart"} if faststart else {}
        with av.open(str(path), "w", format="mp4", container_options=options) as out:
            stream = out.add_stream_from_template(video)
            for k in range(repeats):
                for payload, pts, dts, duration, key in packets:
                    packet = av.Packet(payload)
                    packet.pts, packet.dts = pts + k * span, dts + k * span
                    packet.duration, packet.is_keyframe = duration, key
                    packet.time_base, packet.stream = video.time_base, stream
                    out.mux(packet)


def check_clip(
    data: bytes,
    *,
    frames: int,
    fps: int = FPS,
    gop: int = FPS * GOP_SECONDS,
    index_first: bool | None = None,
) -> str:
    """Check that ``data`` has ``frames`` frames at ``fps``, a keyframe every ``gop``
    frames, decodes at its start, middle and end, and (unless ``index_first`` is None)
    has its index before or after the media data; return a description of it.

    Raises:
        ClipError: it does not.
    """
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        time_base = video.time_base or Fraction(1, fps)
        duration = float((video.duration or 0) * time_base)
        keys, count = [], 0
        for packet in container.demux(video):
            if packet.size:
                if packet.is_keyframe:
                    keys.append(count)
                count += 1
        gaps = {b - a for a, b in itertools.pairwise(keys)}
        problems = []
        if video.frames != frames or count != frames:
            problems.append(f"{video.frames} frames in the index, {count} packets, not {frames}")
        if abs(duration - frames / fps) > 1 / fps:
            problems.append(f"{duration:.2f} s long, not {frames / fps:.2f} s")
        if keys[:1] != [0] or gaps - {gop}:
            problems.append(f"keyframes {sorted(gaps)} frames apart, not every {gop}")
        for at in (0.0, duration / 2, duration - 1 / fps):
            container.seek(int(at / time_base), stream=video)
            frame = next((f for f in container.decode(video) if f.time >= at - 1 / fps), None)
            if frame is None:
                problems.append(f"no frame decodes at {at:.1f} s")
    boxes = _top_level_boxes(data)
    front = boxes.index("moov") < boxes.index("mdat")
    index = "at the front" if front else "at the end"
    if index_first is not None and front != index_first:
        problems.append(f"the index is {index}")
    if problems:
        raise ClipError("; ".join(problems))
    return f"{frames} frames, {duration:.0f} s, a keyframe every {gop} frames, index {index}"


def _top_level_boxes(data: bytes) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    names, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        if size == 1:  # a 64-bit size follows the type
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        names.append(kind.decode("latin-1"))
        if size < 8:  # 0: to the end of the file
            break
        offset += size
    return names


def make_clip(seconds: int, *, faststart: bool = True) -> tuple[bytes, float]:
    """The cached clip of ``seconds`` (a multiple of the segment) and the seconds spent
    building it now (0 when it was cached)."""
    from bench_video import scene

    start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    segment = WORK / f"{CLIP_VERSION}_720p_segment{SEGMENT_SECONDS}s.mp4"
    layout = "faststart" if faststart else "moovend"
    path = WORK / f"{CLIP_VERSION}_720p_{seconds}s_{layout}.mp4"
    built = False
    if not segment.exists():
        _atomically(segment, lambda tmp: encode_segment(tmp, scene(FPS * SEGMENT_SECONDS)))
        built = True
    if not path.exists():
        repeats = seconds // SEGMENT_SECONDS
        _atomically(path, lambda tmp: repeat_segment(segment, repeats, tmp, faststart=faststart))
        built = True
    return path.read_bytes(), (time.perf_counter() - start) if built else 0.0


def _atomically(path: Path, build: Callable[[Path], None]) -> None:
    """``build`` a file beside ``path``, then move it there (no half-built cache)."""
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        tmp = Path(folder) / path.name
        build(tmp)
        tmp.replace(path)


# -- the sides -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One row: which clip, the server's rate (None: unpaced), the frames sampled and
    the target (``"full download/mediagate >= Nx"``)."""

    clip: str
    rate: float | None
    num_frames: int
    target: str
    #: A second row judging range mode's bytes: at most this share of the file.
    max_share: float | None = None


@dataclass
class _Load:
    """What one timed load did."""

    seconds: float
    num_bytes: int
    read_mode: str
    range_requests: int
    fallback: str


def workloads(quick: bool) -> list[Workload]:
    """The rows a run times (the moov-at-the-end clip only in a full run)."""
    rows = [
        Workload("faststart", RATE, 8, "full download/mediagate >= 10x", max_share=0.05),
        Workload("faststart", RATE, 32, "full download/mediagate >= 4x"),
        Workload("faststart", None, 8, "full download/mediagate >= 0.83x"),
        Workload("faststart", None, 32, "full download/mediagate >= 0.83x"),
    ]
    if not quick:
        rows.append(Workload("moov at the end", RATE, 8, "(report)"))
    return rows


def _policy(fields: Mapping[str, Any]) -> Any:
    """The policy both sides use, with only the fields this version of it has."""
    from mediagate import MediaPolicy

    known = {f.name for f in dataclasses.fields(MediaPolicy)}
    return MediaPolicy(**{k: v for k, v in fields.items() if k in known})


def _load(connector: Any, url: str, media_io: Any) -> tuple[Any, _Load]:
    gc.collect()
    start = time.perf_counter()
    result, report = connector.load_with_report(url, media_io)
    seconds = time.perf_counter() - start
    return result, _Load(
        seconds,
        report.num_bytes,
        getattr(report, "read_mode", "full"),
        getattr(report, "range_requests", 0),
        getattr(report, "fallback", ""),
    )


def _ios(connector: Any, num_frames: int) -> tuple[Any, Any | None]:
    """(range mode, full download) ``MediaIO``s; range mode is None where the connector
    has no ``range_reads`` option yet."""
    from mediagate import OptionError

    try:
        full = connector.media_io("video", {"num_frames": num_frames, "range_reads": False})
    except OptionError:
        return None, connector.media_io("video", {"num_frames": num_frames})
    return connector.media_io("video", {"num_frames": num_frames}), full


def _same(a: Any, b: Any) -> str:
    """Whether two ``(frames, metadata)`` results agree, in words."""
    (frames_a, meta_a), (frames_b, meta_b) = a, b
    differ = sorted(k for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k))
    same_frames = np.array_equal(np.asarray(frames_a), np.asarray(frames_b))
    if same_frames and not differ:
        return "identical frames and metadata"
    return ("identical frames" if same_frames else "FRAMES DIFFER") + (
        f", METADATA DIFFERS ({', '.join(differ)})" if differ else ""
    )


def measure(
    clips: Mapping[str, bytes],
    rows: Sequence[Workload],
    *,
    runs: int,
    notes: Mapping[str, str] | None = None,
    policy_fields: Mapping[str, Any] | None = None,
) -> list[Result]:
    """Time both sides of every row on ``clips`` served from a loopback server.

    Args:
        clips: Clip name to its bytes (the rows name them).
        rows: The workloads, in order.
        runs: Timed runs per side and row (after one warm-up load per side).
        notes: Clip name to a description for the row notes.
        policy_fields: ``MediaPolicy`` fields over ``POLICY_FIELDS``.

    Returns:
        A time row per workload and a bytes row for each with a ``max_share``.
    """
    from mediagate import MediaConnector
    from mediagate._loopback import LoopbackServer, Route

    unsaid = dict(notes or {})  # each clip is described on its first row
    policy = _policy({**POLICY_FIELDS, **(policy_fields or {})})
    routes: dict[str, Route] = {}
    for index, (name, data) in enumerate(clips.items()):
        for rate in {None} | {row.rate for row in rows if row.clip == name}:
            headers = {"Content-Type": "video/mp4"}
            routes[_path(index, rate)] = Route(data, headers=headers, ranges=True, rate=rate)
    results: list[Result] = []
    with LoopbackServer(routes) as server, MediaConnector(policy=policy) as connector:
        names = list(clips)
        warmed: set[tuple[int, int]] = set()
        for row in rows:
            index = names.index(row.clip)
            url = server.url(_path(index, row.rate))
            plain = server.url(_path(index, None))
            range_io, full_io = _ios(connector, row.num_frames)
            sides: dict[str, Any] = {"full download": full_io}
            if range_io is not None:
                sides["mediagate"] = range_io
            agreement = ""
            if (index, row.num_frames) not in warmed:  # warm-up and agreement, unpaced
                warmed.add((index, row.num_frames))
                outcomes = {name: _load(connector, plain, io_)[0] for name, io_ in sides.items()}
                if len(outcomes) == 2:
                    agreement = _same(outcomes["full download"], outcomes["mediagate"])
                del outcomes
            loads: dict[str, list[_Load]] = {name: [] for name in sides}
            for _ in range(runs):
                for name, io_ in sides.items():
                    loads[name].append(_load(connector, url, io_)[1])
            results += _rows(row, loads, len(clips[row.clip]), agreement, unsaid.pop(row.clip, ""))
        if server.errors:
            raise RuntimeError(f"the loopback server failed: {server.errors[0]}")
    return results


def _path(index: int, rate: float | None) -> str:
    return f"/clip{index}-{'unpaced' if rate is None else f'{rate / 1e6:g}MBps'}.mp4"


def _rows(
    row: Workload, loads: Mapping[str, list[_Load]], size: int, agreement: str, clip_note: str
) -> list[Result]:
    """The time row of one workload (and its bytes row), from its timed loads."""
    pace = "unpaced" if row.rate is None else f"{row.rate / 1e6:g} MB/s"
    workload = f"{row.num_frames} frames, {pace}, {row.clip}"
    full = loads["full download"]
    parts = [f"full download fetched {_mb(statistics.median(x.num_bytes for x in full))}"]
    ranged = loads.get("mediagate")
    if ranged is None:
        parts.insert(0, "range side not run: the connector has no range_reads option yet")
    else:
        fetched = statistics.median(x.num_bytes for x in ranged)
        modes = sorted({x.read_mode for x in ranged})
        fallbacks = sorted({x.fallback for x in ranged if x.fallback})
        parts.insert(
            0,
            f"mediagate = range mode (read_mode {'/'.join(modes)}, "
            f"{statistics.median(x.range_requests for x in ranged):.0f} requests, "
            f"{_mb(fetched)} = {100 * fetched / size:.2f}% of the file)"
            + (f", fell back: {'; '.join(fallbacks)}" if fallbacks else ""),
        )
    parts += [p for p in (agreement, clip_note) if p]
    times = {name: [x.seconds for x in runs] for name, runs in loads.items()}
    results = [Result("ranges", workload, times, target=row.target, note="; ".join(parts))]
    if row.max_share is not None:
        byte_counts = {name: [x.num_bytes / 1e9 for x in runs] for name, runs in loads.items()}
        results.append(
            Result(
                "ranges",
                f"{workload}: MB fetched",
                byte_counts,
                target=f"full download/mediagate >= {1 / row.max_share:g}x",
                note=f"the time columns hold MB fetched here (1 ms = 1 MB): range mode "
                f"fetches at most {100 * row.max_share:g}% of the file",
            )
        )
    return results


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def run(quick: bool = False) -> list[Result]:
    """Both sides on the hour-long clip (5 minutes with ``quick``)."""
    seconds = QUICK_SECONDS if quick else HOUR
    rows = workloads(quick)
    clips: dict[str, bytes] = {}
    notes: dict[str, str] = {}
    for name, faststart in (("faststart", True), ("moov at the end", False)):
        if any(row.clip == name for row in rows):
            data, built = make_clip(seconds, faststart=faststart)
            described = check_clip(data, frames=FPS * seconds, index_first=faststart)
            clips[name] = data
            notes[name] = (
                f"clip: {described}, 1280x720 H.264, {len(data) / 1e6:.0f} MB"
                + (f", built in {built:.1f} s" if built else "")
                + (" (--quick: 5 minutes, not the hour)" if quick else "")
            )
    return measure(clips, rows, runs=3 if quick else 5, notes=notes)


def table(results: list[Result]) -> str:
    lines = ["| workload | full download | range mode | full / range | target | note |"]
    lines.append("|---|---|---|---|---|---|")
    for r in results:
        full = r.median("full download")
        ranged = r.median("mediagate") if "mediagate" in r.times else None
        ratio = f"{full / ranged:.2f}x" if ranged else "-"
        shown = f"{ranged:.3f}" if ranged is not None else "-"
        lines.append(f"| {r.workload} | {full:.3f} | {shown} | {ratio} | {r.target} | {r.note} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
