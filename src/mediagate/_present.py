"""What the command line and the demo print: records of loads and refusals, as text or JSON."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._connector import LoadReport, MediaConnector
from ._errors import MediaError
from ._modalities import modality_name

__all__ = ["describe", "error_record", "load", "shown_url", "text"]


def describe(modality: str, result: Any) -> dict[str, Any]:
    """A JSON-ready summary of a loaded result (shapes and metadata, never pixel data)."""
    modality = modality_name(modality)
    if modality == "image":
        array = np.asarray(result)
        return {
            "mode": result.mode,
            "size": list(result.size),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
        }
    if modality == "audio":
        audio, rate = result
        return {
            "shape": list(audio.shape),
            "dtype": str(audio.dtype),
            "sample_rate": rate,
            "seconds": round(len(audio) / rate, 3) if rate else None,
        }
    if modality == "video":
        frames, metadata = result
        fps = metadata.get("fps") or 0
        indices = [int(i) for i in metadata.get("frames_indices", [])]
        return {
            "shape": list(frames.shape),
            "dtype": str(frames.dtype),
            "total_num_frames": metadata.get("total_num_frames"),
            "source_fps": fps,
            "duration": metadata.get("duration"),
            "video_backend": metadata.get("video_backend"),
            "frames_indices": indices,
            "timestamps": _timestamps(metadata, indices, fps),
        }
    return {"shape": list(result.shape), "dtype": str(result.dtype).replace("torch.", "")}


def _timestamps(metadata: dict[str, Any], indices: list[int], fps: float) -> list[float] | None:
    """Each sampled frame's presentation time: the loader's own, else index / fps."""
    times = metadata.get("timestamps")
    if isinstance(times, (list, tuple)) and len(times) == len(indices):
        return [round(float(t), 3) for t in times]
    return [round(i / fps, 3) for i in indices] if fps else None


def text(record: dict[str, Any]) -> str:
    info = record["result"]
    head = f"{record['modality']:<16} {record['source']:<5} {record['url_shown']}"
    parts = []
    for key, value in info.items():
        if value is None:
            continue
        if isinstance(value, list) and len(value) > 12:
            value = [*value[:6], "...", *value[-3:]]
        parts.append(f"{key}={value}")
    stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in record["stages"].items())
    line2 = "    " + " ".join(str(p).replace(" ", "") for p in parts)
    line3 = f"    bytes={record['bytes']}" + (f" {stages}" if stages else "")
    return "\n".join([head, line2, line3])


def shown_url(url: str) -> str:
    """A URL short enough for a terminal (``data:`` payloads are elided)."""
    if url[:5].lower() == "data:":
        head = url.split(",", 1)[0]
        return f"{head},<{max(0, len(url) - len(head) - 1)} chars>"
    return url if len(url) <= 100 else url[:97] + "..."


def load(connector: MediaConnector, url: str, modality: str) -> dict[str, Any]:
    """Load ``url`` as ``modality`` (``auto``: as what its content is) and return the
    record the CLI prints."""
    start = time.perf_counter()
    loaded = connector.load_media(url, modality)
    total = time.perf_counter() - start
    shown = loaded.modality.replace("_", "-")
    return _record(url, shown, loaded.media, loaded.report, total)


def _record(
    url: str, modality: str, result: Any, report: LoadReport, total: float
) -> dict[str, Any]:
    return {
        "ok": True,
        "url_shown": shown_url(url),
        "modality": modality,
        "source": report.source,
        "bytes": report.num_bytes,
        "cached": report.cached,
        "result": describe(modality, result),
        "stages": {**report.stages, "total": total},
    }


def error_record(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MediaError):
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "http_status": exc.http_status,
        }
    return {"ok": False, "error": "InternalError", "message": type(exc).__name__}
