"""Compare mediagate's model-specific video samplers with vLLM 0.33.0's, clip by clip.

Constant-frame-rate clips (and two variable-rate ones) are built in code, each frame
showing its own number; every case is fetched through each side's ``MediaConnector``
as a ``data:`` URL with ``fetch_video(url, video_processor=<processor class>)`` and the
server's ``media_io_kwargs["video"]`` options: vLLM's in ``benchmarks/.ref-venv``,
mediagate's in the project venv, each in its own subprocess. The frame indices, the
metadata and the numbers read back from the decoded frames are compared. Then each
sampling rule alone runs on both sides over streams drawn at random (no decoding).
The tables go to ``benchmarks/SAMPLERS.md``.

::

    .venv/bin/python benchmarks/compare_samplers.py           # build, run, write the table
    .venv/bin/python benchmarks/compare_samplers.py --quick   # the short clips only

The clips are cached in ``benchmarks/.work/samplers/``. The script exits 1 when a
constant-frame-rate case or a rule differs, other than where vLLM fails or returns more
frames than mediagate's ``max_video_frames``. This file imports only the standard library and
numpy at module level, so either virtual environment runs it.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "samplers"
REF_PYTHON = BENCH / ".ref-venv" / "bin" / "python"
PROJECT_PYTHON = BENCH.parent / ".venv" / "bin" / "python"
REPORT = BENCH / "SAMPLERS.md"

WIDTH, HEIGHT = 64, 48
# A frame shows its number (mod 2**16) as 16 black/white blocks of 8x12 in two rows.
_BITS = 16
_BLOCK_W, _BLOCK_H = 8, 12

QWEN3 = "Qwen3VLVideoProcessor"
COSMOS = "Cosmos3EdgeVideoProcessor"
QWEN2 = "Qwen2VLVideoProcessor"
GLM4V = "Glm4vVideoProcessor"
PROCESSORS = (QWEN3, COSMOS, QWEN2, GLM4V)
_EXTENSIONS = {"mp4": "mp4", "matroska": "mkv", "webm": "webm"}

# -- clips ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A clip to build: ``frames`` frames at ``rate`` (or at ``pts`` in 1/1000 s)."""

    name: str
    frames: int
    rate: Fraction
    container: str = "mp4"
    codec: str = "libx264"
    pts: tuple[int, ...] | None = None
    long: bool = False

    @property
    def cfr(self) -> bool:
        """Whether the clip has a constant frame rate."""
        return self.pts is None

    @property
    def path(self) -> Path:
        return WORK / f"{self.name}.{_EXTENSIONS[self.container]}"

    @property
    def describe(self) -> str:
        rate = f"{float(self.rate):g}" if self.rate.denominator == 1 else f"{self.rate}"
        kind = "6 s at 30 fps then 6 s at 10 fps" if self.pts else f"{rate} fps"
        return f"{self.frames} frames, {kind}, {self.codec}/{self.container}"


def _vfr_pts(fast: int, slow: int) -> tuple[int, ...]:
    # ``fast`` frames at 30 fps, then ``slow`` at 10 fps (in ms): FFmpeg's probe, which
    # reads the first seconds, sees 30 fps.
    head = [round(i * 1000 / 30) for i in range(fast)]
    start = head[-1] + 100 if head else 0
    return (*head, *(start + 100 * i for i in range(slow)))


def clips(quick: bool) -> list[Clip]:
    """The clips compared: short ones always, long ones unless ``quick``."""
    short = [
        Clip("short-24", 48, Fraction(24)),
        Clip("short-25", 50, Fraction(25)),
        Clip("short-30", 60, Fraction(30)),
        Clip("short-60", 120, Fraction(60)),
        Clip("short-29.97", 60, Fraction(30000, 1001)),
        Clip("odd-451-30", 451, Fraction(30)),
        Clip("tiny-7-30", 7, Fraction(30)),
        Clip("tiny-3-30", 3, Fraction(30)),
        Clip("short-30-mkv", 60, Fraction(30), container="matroska"),
        Clip("short-30-webm", 60, Fraction(30), container="webm", codec="libvpx-vp9"),
        Clip("vfr-mkv", 240, Fraction(30), container="matroska", pts=_vfr_pts(180, 60)),
        Clip("vfr-mp4", 240, Fraction(30), pts=_vfr_pts(180, 60)),
    ]
    if quick:
        return short
    minutes5 = [Clip(f"5min-{r}", 300 * r, Fraction(r), long=True) for r in (24, 25, 30, 60)]
    over = [Clip(f"330s-{r}", 330 * r, Fraction(r), long=True) for r in (24, 30)]
    return [*short, *minutes5, *over]


def paint(number: int) -> npt.NDArray[np.uint8]:
    """An RGB frame showing ``number`` (mod 2**16) in binary."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    for bit in range(_BITS):
        row, col = divmod(bit, WIDTH // _BLOCK_W)
        y, x = row * _BLOCK_H, col * _BLOCK_W
        image[y : y + _BLOCK_H, x : x + _BLOCK_W] = 255 if (number >> bit) & 1 else 0
    return image


def read_number(frame: npt.NDArray[np.uint8]) -> int:
    """The number ``paint`` drew into ``frame``."""
    number = 0
    for bit in range(_BITS):
        row, col = divmod(bit, WIDTH // _BLOCK_W)
        y, x = row * _BLOCK_H, col * _BLOCK_W
        if frame[y + 3 : y + _BLOCK_H - 3, x + 2 : x + _BLOCK_W - 2].mean() > 128:
            number |= 1 << bit
    return number


def build(clip: Clip) -> bytes:
    """Encode ``clip`` (cached in ``WORK``)."""
    if clip.path.exists():
        return clip.path.read_bytes()
    import av

    WORK.mkdir(parents=True, exist_ok=True)
    partial = clip.path.with_suffix(".part")
    with av.open(str(partial), "w", format=clip.container) as out:
        stream = out.add_stream(clip.codec, rate=clip.rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 30
        if clip.codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "12"}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
        if clip.pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(clip.frames):
            frame = av.VideoFrame.from_ndarray(paint(i), format="rgb24")
            if clip.pts is not None:
                frame.pts = clip.pts[i]
                frame.time_base = Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    partial.rename(clip.path)
    return clip.path.read_bytes()


# -- cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fetch: a clip, the model's processor and the server's video options."""

    clip: Clip
    processor: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.processor}" + (f" ({opts})" if opts else "")


# Option sets tried besides the defaults, on a few clips.
_VARIANTS: dict[str, list[dict[str, Any]]] = {
    QWEN3: [{"fps": 1}, {"fps": 4, "max_frames": 64}, {"min_frames": 16}, {"fps": 60}],
    QWEN2: [{"fps": 1}, {"fps": 4, "max_frames": 64}, {"temporal_patch_size": 4}],
    GLM4V: [{"fps": 1}, {"max_duration": 60}, {"fps": 30}],
}
_VARIANT_CLIPS = ("short-30", "odd-451-30", "short-29.97", "5min-30", "330s-24")


def cases(all_clips: list[Clip]) -> list[Case]:
    """Every processor with its defaults on every clip, the option variants on some."""
    out: list[Case] = []
    for clip in all_clips:
        for processor in PROCESSORS:
            if processor == COSMOS and clip.long:
                continue  # the same backend as Qwen3-VL; the short clips check the mapping
            out.append(Case(clip, processor))
            if clip.name in _VARIANT_CLIPS:
                out.extend(Case(clip, processor, v) for v in _VARIANTS.get(processor, []))
    return out


# Source frame rates the rule sweep draws from (NTSC rates included).
_SWEEP_RATES = (1.0, 7.5, 12.0, 15.0, 24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0)
_SWEEP_RATES += (60000 / 1001, 60.0, 90.0, 120.0, 240.0)


def sweep(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` stream descriptions and options for each rule, drawn with ``seed``."""
    import random

    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        backend = ("qwen3_vl", "qwen2_vl", "opencv_dynamic")[i % 3]
        rate = rng.choice(_SWEEP_RATES)
        # Durations from a fraction of a second to an hour, denser at the short end.
        total = max(1, round(rate * math.exp(rng.uniform(math.log(0.05), math.log(3600)))))
        options: dict[str, Any] = {}
        if rng.random() < 0.5:
            options["fps"] = rng.choice((0.5, 1, 1.5, 2, 3, 4, 8, 24, 30, 60))
        if backend != "opencv_dynamic":
            if rng.random() < 0.3:
                options["max_frames"] = rng.choice((8, 16, 64, 128, 256, 1000))
            if rng.random() < 0.3:
                options["min_frames"] = rng.choice((1, 2, 8, 32))
            if backend == "qwen2_vl" and rng.random() < 0.3:
                options["temporal_patch_size"] = rng.choice((1, 2, 3, 4))
        elif rng.random() < 0.4:
            options["max_duration"] = rng.choice((10, 60, 120, 300, 600, 1800))
        out.append({"backend": backend, "total": total, "rate": rate, "options": options})
    return out


def _rule_reference(job: dict[str, Any]) -> list[int]:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY  # type: ignore[import-not-found]
    from vllm.multimodal.video_decoders import (  # type: ignore[import-not-found]
        VideoSourceMetadata,
        VideoTargetMetadata,
    )

    cls = VIDEO_LOADER_REGISTRY.name2class[job["backend"]]
    options = dict(job["options"])
    target = VideoTargetMetadata(
        num_frames=32, fps=options.pop("fps", 2), max_duration=options.pop("max_duration", 300)
    )
    total, rate = job["total"], job["rate"]
    source = cls._prepare_source(VideoSourceMetadata(total, rate, total / rate))
    # The frame reader keeps the distinct indices, ascending.
    return sorted(set(cls.compute_frames_index_to_sample(source, target, **options)))


def _rule_mediagate(job: dict[str, Any]) -> list[int]:
    from mediagate._media.video import samplers

    total, rate, options = job["total"], job["rate"], job["options"]
    if job["backend"] == "qwen3_vl":
        return samplers.qwen3_vl_indices(total, rate, **options)
    if job["backend"] == "qwen2_vl":
        return samplers.qwen2_vl_indices(total, rate, **options)
    return samplers.dynamic_indices(total, rate, total / rate, **options)


def run_rules(side: str, jobs: list[dict[str, Any]]) -> list[Any]:
    """Each job's indices on ``side``, or its error's type name."""
    rule = _rule_reference if side == "reference" else _rule_mediagate
    out: list[Any] = []
    for job in jobs:
        try:
            out.append(rule(job))
        except Exception as exc:
            out.append(type(exc).__name__)
    return out


# -- the two sides (run in their own interpreters) ------------------------------------


def _fetch_reference(url: str, processor: str, options: dict[str, Any]) -> Any:
    from vllm.multimodal.media import MediaConnector  # type: ignore[import-not-found]

    connector = MediaConnector(media_io_kwargs={"video": options})
    return connector.fetch_video(url, video_processor=processor)


def _fetch_mediagate(url: str, processor: str, options: dict[str, Any]) -> Any:
    from mediagate import MediaConnector

    connector = MediaConnector(media_io_kwargs={"video": options})
    return connector.fetch_video(url, video_processor=processor)


def run_side(side: str, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fetch every job on ``side`` and describe what came back."""
    fetch = _fetch_reference if side == "reference" else _fetch_mediagate
    urls: dict[str, str] = {}
    results = []
    for job in jobs:
        path = job["clip"]
        if path not in urls:
            payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            urls[path] = f"data:video/{job['mime']};base64,{payload}"
        start = time.perf_counter()
        try:
            frames, meta = fetch(urls[path], job["processor"], job["options"])
            frames = np.asarray(frames)
            results.append(
                {
                    "ok": True,
                    "seconds": time.perf_counter() - start,
                    "meta": {
                        k: v for k, v in meta.items() if isinstance(v, (int, float, str, list))
                    },
                    "numbers": [read_number(f) for f in frames],
                    "shape": list(frames.shape),
                }
            )
        except Exception as exc:
            results.append(
                {
                    "ok": False,
                    "seconds": time.perf_counter() - start,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "trace": traceback.format_exc(limit=3)[-800:],
                }
            )
    return results


def _side_versions(side: str) -> dict[str, str]:
    import cv2

    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "cv2": cv2.__version__}
    if side == "reference":
        import vllm  # type: ignore[import-not-found]

        versions["vllm"] = vllm.__version__
    else:
        import av

        import mediagate

        versions["mediagate"] = getattr(mediagate, "__version__", "?")
        versions["av"] = av.__version__
    return versions


def side_main(side: str, jobs_path: Path, out_path: Path) -> int:
    """The ``--side`` entry point: jobs from a JSON file, results to another."""
    jobs = json.loads(jobs_path.read_text())
    results = run_side(side, jobs["fetch"])
    start = time.perf_counter()
    rules = run_rules(side, jobs["rules"])
    answer = {
        "versions": _side_versions(side),
        "results": results,
        "rules": rules,
        "rules_seconds": time.perf_counter() - start,
    }
    out_path.write_text(json.dumps(answer))
    return 0


# -- the driver -----------------------------------------------------------------------


_MIME = {"mp4": "mp4", "matroska": "x-matroska", "webm": "webm"}
_SWEEP_FULL, _SWEEP_QUICK = 30_000, 3_000
# mediagate's default MediaPolicy.max_video_frames, which bounds every sampler.
_POLICY_CAP = 1024


def _run(python: Path, side: str, jobs: dict[str, Any]) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    jobs_path, out_path = WORK / f"jobs-{side}.json", WORK / f"results-{side}.json"
    jobs_path.write_text(json.dumps(jobs))
    out_path.unlink(missing_ok=True)
    done = subprocess.run(
        [str(python), __file__, "--side", side, "--jobs", str(jobs_path), "--out", str(out_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not out_path.exists():
        raise SystemExit(f"the {side} side failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def _compare(ref: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What differs between the two sides' answers to one case."""
    if not ref["ok"] or not ours["ok"]:
        if not ref["ok"] and not ours["ok"]:
            return []
        return ["outcome"]
    diffs = []
    a, b = ref["meta"], ours["meta"]
    for key in ("frames_indices", "total_num_frames", "video_backend", "do_sample_frames"):
        if a.get(key) != b.get(key):
            diffs.append(key)
    for key in ("fps", "duration"):
        x, y = a.get(key), b.get(key)
        if not (isinstance(x, float | int) and isinstance(y, float | int)) or not math.isclose(
            x, y, rel_tol=1e-9, abs_tol=1e-12
        ):
            diffs.append(key)
    if ref["numbers"] != ours["numbers"]:
        diffs.append("frames")
    return diffs


def _expected_numbers(result: dict[str, Any]) -> bool:
    """Whether the frames a side returned show the numbers its ``frames_indices`` name."""
    if not result["ok"]:
        return True
    indices = result["meta"].get("frames_indices", [])
    return bool(result["numbers"] == [i % (1 << _BITS) for i in indices])


def _vllm_fails(reference: Any, ours: Any) -> bool:
    """Whether vLLM's rule failed (an error, or no frame: its reader then fails) where
    mediagate answers with the first frame or an error of its own."""
    failed = reference == [] or isinstance(reference, str)
    return failed and (ours == [0] or isinstance(ours, str))


def _short(value: Any) -> str:
    return _short_list(value) if isinstance(value, list) else str(value)


def _short_list(values: list[int]) -> str:
    if len(values) <= 12:
        return str(values)
    head = ", ".join(map(str, values[:5]))
    tail = ", ".join(map(str, values[-3:]))
    return f"[{head}, ... {tail}] ({len(values)})"


def _capped(ref: dict[str, Any], ours: dict[str, Any]) -> bool:
    """Whether vLLM returned more frames than mediagate's policy allows, and mediagate
    returned that many, spread over the same span."""
    if not ref["ok"] or not ours["ok"]:
        return False
    a, b = ref["meta"]["frames_indices"], ours["meta"]["frames_indices"]
    return len(a) > _POLICY_CAP and len(b) == _POLICY_CAP and (a[0], a[-1]) == (b[0], b[-1])


def _row(case: Case, ref: dict[str, Any], ours: dict[str, Any], diffs: list[str]) -> str:
    if ref["ok"]:
        meta = ref["meta"]
        summary = (
            f"{len(meta['frames_indices'])} of {meta['total_num_frames']}: "
            f"{_short_list(meta['frames_indices'])}"
        )
    else:
        summary = f"vLLM: {ref['error'][:80]}"
    if not ours["ok"]:
        summary += f"; mediagate: {ours['error'][:80]}"
    elif not ref["ok"]:
        summary += f"; mediagate: {len(ours['meta']['frames_indices'])} frames"
    if not ref["ok"] and not ours["ok"]:
        verdict = "both refuse"
    elif not ref["ok"]:
        verdict = "vLLM fails (below)"
    elif _capped(ref, ours):
        verdict = f"max_video_frames: mediagate thins to {_POLICY_CAP} (below)"
    elif not diffs:
        verdict = "same"
    else:
        verdict = "differs: " + ", ".join(diffs)
    return (
        f"| {case.clip.name} | {case.label} | {summary.replace('|', '/')} | {verdict} "
        f"| {ref['seconds']:.2f} / {ours['seconds']:.2f} |"
    )


def _vfr_notes(pairs: list[tuple[Case, dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = []
    for case, ref, ours in pairs:
        if case.clip.cfr or not ref["ok"] or not ours["ok"]:
            continue
        a, b = ref["meta"], ours["meta"]
        lines.append(
            f"- `{case.clip.name}` {case.label}: vLLM total {a['total_num_frames']} "
            f"at {a['fps']:.4g} fps "
            f"({a['duration']:.4g} s), {len(a['frames_indices'])} frames "
            f"{_short_list(a['frames_indices'])}; mediagate total {b['total_num_frames']} at "
            f"{b['fps']:.4g} fps ({b['duration']:.4g} s), {len(b['frames_indices'])} frames "
            f"{_short_list(b['frames_indices'])}"
        )
    return lines


def driver(quick: bool, write: bool) -> int:
    """Build the clips, run both sides, print and (``write``) record the table."""
    all_clips = clips(quick)
    start = time.perf_counter()
    cached = all(clip.path.exists() for clip in all_clips)
    for clip in all_clips:
        build(clip)
    built = (
        "they were cached" if cached else f"building them took {time.perf_counter() - start:.1f} s"
    )
    todo = cases(all_clips)
    jobs = [
        {
            "clip": str(c.clip.path),
            "mime": _MIME[c.clip.container],
            "processor": c.processor,
            "options": c.options,
        }
        for c in todo
    ]
    rule_jobs = sweep(_SWEEP_QUICK if quick else _SWEEP_FULL)
    ref = _run(REF_PYTHON, "reference", {"fetch": jobs, "rules": rule_jobs})
    ours = _run(PROJECT_PYTHON, "mediagate", {"fetch": jobs, "rules": rule_jobs})
    pairs = list(zip(todo, ref["results"], ours["results"], strict=True))
    rows, failures, content = [], 0, []
    for case, a, b in pairs:
        diffs = _compare(a, b)
        if diffs and case.clip.cfr and a["ok"] and not _capped(a, b):
            failures += 1
        for side, result in (("vLLM", a), ("mediagate", b)):
            if not _expected_numbers(result):
                content.append(f"{side} {case.clip.name} {case.label}")
        rows.append(_row(case, a, b, diffs))
    capped = [p for p in pairs if _capped(p[1], p[2])]
    cfr = [p for p in pairs if p[0].clip.cfr and p[1]["ok"] and not _capped(p[1], p[2])]
    same = sum(1 for c, a, b in cfr if not _compare(a, b))
    vllm_fails = [p for p in pairs if p[0].clip.cfr and not p[1]["ok"]]
    rule_pairs = list(zip(rule_jobs, ref["rules"], ours["rules"], strict=True))
    rule_same = sum(1 for _, x, y in rule_pairs if x == y)
    rule_vllm_fails = [(j, x, y) for j, x, y in rule_pairs if x != y and _vllm_fails(x, y)]
    rule_diffs = [(j, x, y) for j, x, y in rule_pairs if x != y and not _vllm_fails(x, y)]
    if rule_diffs:
        failures += 1
    lines = [
        "# Model-specific video samplers: mediagate against vLLM 0.33.0",
        "",
        "Written by `benchmarks/compare_samplers.py`"
        + (" (`--quick`: short clips only)" if quick else "")
        + ". Each case is fetched through each side's `MediaConnector` as a `data:` URL "
        "with `fetch_video(url, video_processor=...)` and the server's "
        '`media_io_kwargs["video"]` options shown; the processor picks the backend '
        "(`qwen3_vl`, `qwen2_vl`, `opencv_dynamic`). Compared: `frames_indices`, "
        "`total_num_frames`, `fps`, `duration`, `video_backend`, `do_sample_frames`, and "
        "the frame numbers read back from the decoded pixels (`frames`). Clips are "
        f"{WIDTH}x{HEIGHT}, each frame showing its own number.",
        "",
        f"vLLM side: {json.dumps(ref['versions'])}; mediagate side: "
        f"{json.dumps(ours['versions'])}.",
        "",
        f"**Constant frame rate: {same} of the {len(cfr)} cases vLLM answers within "
        f"mediagate's frame cap are identical**; vLLM returns more than "
        f"`max_video_frames` ({_POLICY_CAP}) in {len(capped)} more and fails on "
        f"{len(vllm_fails)} (below). "
        + (
            "Every returned frame shows the number its index names, on both sides."
            if not content
            else "Frames not showing their index: " + "; ".join(content)
        ),
        "",
        "| clip | processor (options) | vLLM's frames: count of total: indices "
        "| mediagate | seconds (vLLM / mediagate) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Clips: "
        + "; ".join(f"`{c.name}`: {c.describe}" for c in all_clips)
        + f" ({built}; they are kept in `benchmarks/.work/samplers/`).",
        "",
        "## The rules alone",
        "",
        f"{len(rule_jobs)} streams drawn at random (seed 0; every third rule each; source "
        "rates from 1 to 240 fps, NTSC rates included; 0.05 s to an hour; random `fps`, "
        "`min_frames`, `max_frames`, `temporal_patch_size`, `max_duration`), each rule "
        "run on both sides without decoding (vLLM's `compute_frames_index_to_sample` on "
        "`VideoSourceMetadata(total, rate, total / rate)`, its distinct indices; "
        "mediagate's `samplers.*_indices`): "
        f"**{rule_same} of {len(rule_jobs)} identical, {len(rule_diffs)} differ**; in the "
        f"other {len(rule_vllm_fails)} vLLM fails (an error, or no frame, on which its "
        "reader fails) and mediagate returns the first frame (`opencv_dynamic`) or "
        "raises (`qwen2_vl`: `DecodeError` for vLLM's `ZeroDivisionError`). "
        f"vLLM took {ref['rules_seconds']:.1f} s, mediagate {ours['rules_seconds']:.1f} s.",
        "",
        *(
            f"- {job['backend']} total {job['total']} at {job['rate']:.6g} fps "
            f"{job['options']}: vLLM {_short(x)}, mediagate {_short(y)}"
            for job, x, y in rule_diffs[:20]
        ),
        *(
            [
                "Where vLLM fails, by rule: "
                + ", ".join(
                    f"{name} {sum(1 for j, _, _ in rule_vllm_fails if j['backend'] == name)}"
                    for name in ("qwen3_vl", "qwen2_vl", "opencv_dynamic")
                )
                + "."
            ]
            if rule_vllm_fails
            else []
        ),
        "",
        "## Where mediagate caps the count",
        "",
        f"mediagate's `MediaPolicy.max_video_frames` (default {_POLICY_CAP}) bounds every "
        "sampler: the Qwen samplers fold it into `max_frames` (their own ceiling, 768, "
        "is lower), `opencv_dynamic` thins its frames evenly down to it "
        "(`linspace` over the positions). vLLM has no such bound:",
        "",
        *(
            f"- `{c.clip.name}` {c.label}: vLLM {len(a['meta']['frames_indices'])} frames, "
            f"mediagate {len(b['meta']['frames_indices'])} "
            f"{_short_list(b['meta']['frames_indices'])}"
            for c, a, b in capped
        ),
        "",
        "## Where vLLM fails",
        "",
        "`opencv_dynamic` samples `floor(duration * fps)` frames; a clip shorter than "
        "`1 / fps` gets none and vLLM's frame reader fails on the empty list "
        "(`max() arg is an empty sequence`). mediagate returns the first frame there. "
        "The cases:",
        "",
        *(
            f"- `{c.clip.name}` {c.label}: vLLM `{a['error'][:100]}`; mediagate "
            + (f"{b['meta']['frames_indices']}" if b["ok"] else f"`{b['error'][:100]}`")
            for c, a, b in vllm_fails
        ),
        "",
        "## Variable frame rate",
        "",
        "Both clips hold 240 frames: 6 s at 30 fps, then 6 s at 10 fps (the last one at "
        "11.97 s). vLLM takes the frame count and rate from OpenCV. A Matroska header "
        "has no frame count, so OpenCV reports the container's duration times the rate "
        "FFmpeg's probe measured over the first seconds (30 fps): 302 frames for "
        "`vfr-mkv`; vLLM then picks indices past the last frame and its reader drops "
        "them. For MP4, OpenCV's header count (240) is cut by vLLM to the position an "
        "end-of-stream seek reports (its guard against edit lists), which OpenCV "
        "computes as time times the average rate (20 fps): 211 for `vfr-mp4`, so vLLM "
        "never picks the last 29 frames. mediagate counts the stream's packets (240 "
        "for both) and takes FFmpeg's average rate (30 fps for the Matroska clip, from "
        "the probe; 20 fps for the MP4), so its indices span every frame its decoder "
        "returns; its `duration`, total / rate as in vLLM, is then 8 s for the "
        "Matroska clip and 12 s for the MP4. The difference is recorded, not copied; "
        "these cases do not count as failures:",
        "",
        *(_vfr_notes(pairs) or ["- (none run)"]),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if write:
        REPORT.write_text(text)
    return 1 if failures or content else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short clips only")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    parser.add_argument("--side", choices=("reference", "mediagate"), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return side_main(args.side, args.jobs, args.out)
    return driver(args.quick, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
