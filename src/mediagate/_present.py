"""What the command line and the demo print: records of loads and refusals, as text or JSON."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from ._connector import LoadReport, MediaConnector
from ._errors import MediaError
from ._extras import MissingExtra, missing_extra
from ._modalities import modality_name
from ._observe import shown_reference

__all__ = [
    "ELLIPSIS",
    "describe",
    "ellipsis_for",
    "error_record",
    "load",
    "missing_record",
    "shown_url",
    "text",
    "usage_record",
]


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


#: What stands for the middle of a long list in text output.
ELLIPSIS = "…"


def ellipsis_for(stream: IO[str]) -> str:
    """``ELLIPSIS``, or ``...`` where ``stream``'s encoding has no such character."""
    try:
        ELLIPSIS.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "..."
    return ELLIPSIS


#: Longest list printed whole; longer ones show their first and last items.
_LIST_ITEMS = 12


def _shown_value(value: Any, ellipsis: str) -> str:
    if isinstance(value, list):
        items = [_shown_value(item, ellipsis) for item in value]
        if len(items) > _LIST_ITEMS:
            items = [*items[:6], ellipsis, *items[-3:]]
        return "[" + ",".join(items) + "]"
    return str(value).replace(" ", "")


def text(record: dict[str, Any], *, ellipsis: str = ELLIPSIS) -> str:
    """A load record as three lines: what was loaded from where, the result's shape and
    metadata (a long list shows its ends around ``ellipsis``), bytes and stage times."""
    info = record["result"]
    head = f"{record['modality']:<16} {record['source']:<5} {record['url_shown']}"
    parts = [
        f"{key}={_shown_value(value, ellipsis)}" for key, value in info.items() if value is not None
    ]
    stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in record["stages"].items())
    line2 = "    " + " ".join(parts)
    line3 = f"    bytes={record['bytes']}" + (f" {stages}" if stages else "")
    return "\n".join([head, line2, line3])


def shown_url(url: str) -> str:
    """A URL short enough for a terminal, as logs show it (``shown_reference``): no
    ``data:`` payload, no credentials, the query trimmed to ``?...``."""
    return shown_reference(url)


def load(
    connector: MediaConnector,
    url: str,
    modality: str,
    *,
    media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    shown: str | None = None,
    then: Callable[[str, Any], object] | None = None,
) -> dict[str, Any]:
    """Load ``url`` as ``modality`` (``auto``: as what its content is) and return the
    record the CLI prints; ``shown`` names the reference instead of ``url``; ``then``
    is called with the modality and the media once loaded (``--preview``, ``--save``)."""
    start = time.perf_counter()
    loaded = connector.load_media(url, modality, media_io_kwargs=media_io_kwargs)
    total = time.perf_counter() - start
    if then is not None:
        then(loaded.modality, loaded.media)
    name = loaded.modality.replace("_", "-")
    record = _record(url, name, loaded.media, loaded.report, total)
    if shown is not None:
        record["url_shown"] = shown
    return record


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
    """What a failure prints: a ``MediaError`` as itself, a missing optional dependency
    as ``MissingDependency`` with the extra that installs it, anything else as
    ``InternalError`` (its type only: the message could hold anything)."""
    if isinstance(exc, MediaError):
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "http_status": exc.http_status,
        }
    missing = missing_extra(exc) if isinstance(exc, ImportError) else None
    if missing is not None:
        return missing_record(missing)
    return {
        "ok": False,
        "error": "InternalError",
        "message": type(exc).__name__,
        "http_status": None,
    }


def missing_record(missing: MissingExtra) -> dict[str, Any]:
    """The record of a feature this install lacks the optional dependency of."""
    return {
        "ok": False,
        "error": "MissingDependency",
        "message": missing.message,
        "extra": missing.extra,
        "install": missing.install,
        "http_status": None,
    }


def usage_record(message: str) -> dict[str, Any]:
    """The record of a mistake on the command line or in the environment."""
    return {"ok": False, "error": "UsageError", "message": message, "http_status": None}
