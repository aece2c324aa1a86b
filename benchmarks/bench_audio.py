"""Audio decoding: mediagate against the raw decoders, the cost of resampling, and librosa.

Workloads are 60 s of 44.1 kHz stereo (48 kHz for Opus) in six formats, generated on
the first run and cached under ``benchmarks/.work``. All sides decode the same bytes
held in memory, except librosa, which is given the cached file's path (how it is
used); mediagate's side then reads the file too (``load_file``).

Targets:
- decode to mono float32 within 1.2x of the fastest raw decoder for the format
  (soundfile or PyAV, each giving all channels, no downmix);
- resampling to 16 kHz adds at most 20% to mediagate's own decode;
- against ``librosa.load(path, sr=16000)``: at least 1.3x faster on MP3 and 2x on
  Opus (that column is skipped when librosa is not importable).

Run ``python benchmarks/bench_audio.py`` (``--quick`` for one timed run per side).
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Result, alternate, peak_memory, ratio
from mediagate._media.audio import AudioMediaIO

WORK = Path(__file__).resolve().parent / ".work"
SECONDS, RATE = 60, 44100

DECODE_TARGET = 1.2
RESAMPLE_TARGET = 1.2
LIBROSA_TARGETS = {"mp3": 1.3, "opus": 2.0}


def _signal(rate: int) -> np.ndarray:
    """Two tones plus a little noise per channel, so encoders do real work."""
    rng = np.random.default_rng(0)
    t = np.arange(SECONDS * rate) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([left, right], axis=1).astype(np.float32)


def _soundfile_encode(fmt: str, subtype: str) -> Callable[[], bytes]:
    def encode() -> bytes:
        audio, buffer = _signal(RATE), io.BytesIO()
        with sf.SoundFile(buffer, "w", RATE, 2, format=fmt, subtype=subtype) as snd:
            for start in range(0, len(audio), 8192):
                snd.write(audio[start : start + 8192])
        return buffer.getvalue()

    return encode


def _pyav_encode(container: str, codec: str, rate: int) -> Callable[[], bytes]:
    def encode() -> bytes:
        planar, buffer = np.ascontiguousarray(_signal(rate).T), io.BytesIO()
        with av.open(buffer, "w", format=container) as out:
            stream = out.add_stream(codec, rate=rate, layout="stereo")
            for start in range(0, planar.shape[1], 1024):
                block = np.ascontiguousarray(planar[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = rate, start
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buffer.getvalue()

    return encode


#: format -> (file name, encoder)
FORMATS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "wav": ("stereo_60s.wav", _soundfile_encode("WAV", "PCM_16")),
    "flac": ("stereo_60s.flac", _soundfile_encode("FLAC", "PCM_16")),
    "mp3": ("stereo_60s.mp3", _soundfile_encode("MP3", "MPEG_LAYER_III")),
    "vorbis": ("stereo_60s.ogg", _soundfile_encode("OGG", "VORBIS")),
    "opus": ("stereo_60s.opus", _pyav_encode("ogg", "libopus", 48000)),
    "aac": ("stereo_60s.m4a", _pyav_encode("ipod", "aac", RATE)),
}


def workload(name: str) -> Path:
    """The cached file for ``name``, encoded on first use."""
    file_name, encode = FORMATS[name]
    path = WORK / file_name
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode())
        tmp.replace(path)
    return path


def raw_soundfile(data: bytes) -> Any:
    return sf.read(io.BytesIO(data), dtype="float32")[0]


def raw_pyav(data: bytes) -> Any:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray() for frame in container.decode(audio=0)]


def _soundfile_reads(data: bytes) -> bool:
    try:
        sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError):
        return False
    return True


def _librosa() -> Any:
    try:
        import librosa
    except ImportError:
        return None
    return librosa


def _measure(name: str, runs: int, warmup: int, librosa: Any) -> list[Result]:
    native, at_16k = AudioMediaIO(), AudioMediaIO(sample_rate=16000)
    path = workload(name)
    data = path.read_bytes()
    label = f"{name} {SECONDS}s stereo"
    results: list[Result] = []

    sides: dict[str, Callable[[], Any]] = {"mediagate": lambda: native.load_bytes(data)}
    if _soundfile_reads(data):
        sides["soundfile"] = lambda: raw_soundfile(data)
    sides["pyav"] = lambda: raw_pyav(data)
    decode = Result(
        "decode",
        label,
        alternate(sides, runs=runs, warmup=warmup),
        target=f"mediagate <= {DECODE_TARGET}x fastest raw decoder",
    )
    decode.peak_bytes["mediagate"] = peak_memory(lambda: native.load_bytes(data))
    results.append(decode)

    resample_sides: dict[str, Callable[[], Any]] = {
        "mediagate": lambda: native.load_bytes(data),
        "mediagate@16k": lambda: at_16k.load_bytes(data),
    }
    results.append(
        Result(
            "resample",
            label,
            alternate(resample_sides, runs=runs, warmup=warmup),
            target=f"mediagate@16k <= {RESAMPLE_TARGET}x mediagate",
        )
    )

    if librosa is not None and _librosa_reads(librosa, path):
        goal = LIBROSA_TARGETS.get(name)
        librosa_sides: dict[str, Callable[[], Any]] = {
            "mediagate@16k": lambda: at_16k.load_file(path),
            "librosa@16k": lambda: librosa.load(str(path), sr=16000),
        }
        results.append(
            Result(
                "librosa",
                label,
                alternate(librosa_sides, runs=runs, warmup=warmup),
                target=f"librosa >= {goal}x mediagate@16k" if goal else "(no target)",
            )
        )
    return results


def _librosa_reads(librosa: Any, path: Path) -> bool:
    """Whether librosa can load ``path`` here (it cannot read MP4/AAC without audioread)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            librosa.load(str(path), sr=16000, duration=0.1)
    except Exception:
        return False
    return True


def run(quick: bool = False) -> list[Result]:
    """Time every workload: decode, resample and (when importable) librosa results."""
    runs, warmup = (1, 1) if quick else (7, 1)
    librosa = _librosa()
    results: list[Result] = []
    for name in FORMATS:
        results.extend(_measure(name, runs, warmup, librosa))
    return results


def verdict(result: Result) -> tuple[float, str]:
    """The ratio each target is about and whether it is met."""
    if result.group == "decode":
        fastest = min(result.median(s) for s in result.times if s != "mediagate")
        value = result.median("mediagate") / fastest
        return value, "yes" if value <= DECODE_TARGET else "no"
    if result.group == "resample":
        value = ratio(result, "mediagate@16k", "mediagate")
        return value, "yes" if value <= RESAMPLE_TARGET else "no"
    value = ratio(result, "librosa@16k", "mediagate@16k")
    goal = LIBROSA_TARGETS.get(result.workload.split()[0])
    if goal is None:
        return value, "-"
    return value, "yes" if value >= goal else "no"


def table(results: list[Result]) -> str:
    lines = [
        "| group | workload | medians (ms) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        medians = ", ".join(f"{s} {result.median(s) * 1000:.1f}" for s in result.times)
        value, met = verdict(result)
        lines.append(
            f"| {result.group} | {result.workload} | {medians} | {value:.2f} "
            f"| {result.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    results = run(quick="--quick" in argv)
    print(table(results))
    if _librosa() is None:
        print("\n(librosa is not importable here: the librosa comparison was skipped)")


if __name__ == "__main__":
    main(sys.argv[1:])
