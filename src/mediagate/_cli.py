"""The command line: ``mediagate fetch URL`` and ``mediagate demo``.

A thin face over ``MediaConnector``: it builds one from the options, loads, and prints
what was loaded, or one line of error and a non-zero exit code (never a traceback).

Exit codes: 0 success, 1 a media error (refused, too large, fetch failed, not
decodable), 2 bad command-line usage or options, 3 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ._connector import LoadReport, MediaConnector
from ._errors import MediaError, OptionError
from ._media.base import MediaIO
from ._policy import MediaPolicy

__all__ = ["describe", "main"]

MODALITIES = ("auto", "image", "audio", "video", "image-embedding", "audio-embedding")

_EXTENSIONS = {
    "image": {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"},
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac"},
    "video": {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"},
    "image-embedding": {".npy", ".safetensors", ".pt", ".pth"},
}


def guess_modality(url: str) -> str:
    """The modality a URL most likely holds, from a ``data:`` media type or an extension."""
    if url[:5].lower() == "data:":
        media_type = url[5:].split(",", 1)[0].split(";", 1)[0].lower()
        major = media_type.split("/", 1)[0]
        if major in ("image", "audio", "video"):
            return major
        return "image-embedding"
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    for modality, suffixes in _EXTENSIONS.items():
        if suffix in suffixes:
            return modality
    return "image"


def _media_io(connector: MediaConnector, modality: str) -> MediaIO[Any]:
    if modality == "image":
        return connector._image_io()
    if modality == "audio":
        return connector._audio_io()  # type: ignore[no-any-return]
    if modality == "video":
        return connector._video_io()  # type: ignore[no-any-return]
    return connector._embedding_io(modality.replace("-", "_"))  # type: ignore[no-any-return]


def describe(modality: str, result: Any) -> dict[str, Any]:
    """A JSON-ready summary of a loaded result (shapes and metadata, never pixel data)."""
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
            "timestamps": [round(i / fps, 3) for i in indices] if fps else None,
        }
    return {"shape": list(result.shape), "dtype": str(result.dtype).replace("torch.", "")}


def _text(record: dict[str, Any]) -> str:
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
    """Load ``url`` and return the record the CLI prints."""
    if modality == "auto":
        modality = guess_modality(url)
    media_io = _media_io(connector, modality)
    start = time.perf_counter()
    result, report = connector.load_with_report(url, media_io)
    total = time.perf_counter() - start
    return _record(url, modality, result, report, total)


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


def _error_record(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MediaError):
        return {
            "ok": False,
            "error": type(exc).__name__,
            "message": str(exc),
            "http_status": exc.http_status,
        }
    return {"ok": False, "error": "InternalError", "message": type(exc).__name__}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediagate", description="Load media references safely into model-ready arrays."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="load one URL and print what was loaded")
    fetch.add_argument("url", help="http(s)://, data: or file: URL")
    fetch.add_argument("--modality", choices=MODALITIES, default="auto")
    fetch.add_argument("--allowed-local-media-path", metavar="DIR", default="")
    fetch.add_argument("--allowed-media-domains", metavar="HOST", nargs="+", default=None)
    fetch.add_argument("--allow-private-networks", action="store_true")
    fetch.add_argument("--media-io-kwargs", metavar="JSON", default=None)
    fetch.add_argument("--timeout", type=float, default=None, help="total seconds per fetch")
    fetch.add_argument("--max-bytes", type=int, default=None, help="bytes per item")
    fetch.add_argument("--json", action="store_true", help="print one JSON object")
    demo = sub.add_parser("demo", help="run the pipeline on bundled sample media")
    demo.add_argument("--json", action="store_true", help="print one JSON object per line")
    return parser


def _connector_from_args(args: argparse.Namespace) -> MediaConnector:
    kwargs: Any = None
    if args.media_io_kwargs:
        try:
            kwargs = json.loads(args.media_io_kwargs)
        except json.JSONDecodeError as exc:
            raise OptionError(
                "--media-io-kwargs is not valid JSON", option="media_io_kwargs"
            ) from exc
    policy = MediaPolicy.from_env()
    changes: dict[str, Any] = {}
    if args.allow_private_networks:
        changes["allow_private_networks"] = True
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    if args.max_bytes is not None:
        changes["max_bytes"] = args.max_bytes
    try:
        policy = policy.replace(**changes)
    except ValueError as exc:
        raise OptionError(str(exc), option="policy") from exc
    return MediaConnector(
        kwargs,
        allowed_local_media_path=args.allowed_local_media_path,
        allowed_media_domains=args.allowed_media_domains,
        policy=policy,
    )


def _fetch_command(args: argparse.Namespace) -> int:
    try:
        with _connector_from_args(args) as connector:
            record = load(connector, args.url, args.modality)
    except MediaError as exc:
        return _fail(exc, args.json, 1)
    except ValueError as exc:  # a bad option outside the media error tree
        return _fail(exc, args.json, 2, message=str(exc))
    except Exception as exc:
        return _fail(exc, args.json, 3)
    print(json.dumps(record) if args.json else _text(record))
    return 0


def _fail(exc: BaseException, as_json: bool, code: int, message: str | None = None) -> int:
    record = _error_record(exc)
    if message is not None:
        record["message"] = message
    if isinstance(exc, OptionError):
        code = 2
    if as_json:
        print(json.dumps(record))
    else:
        print(f"mediagate: error: {record['error']}: {record['message']}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mediagate`` command."""
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        return _fetch_command(args)
    from ._demo import run_demo

    try:
        return run_demo(as_json=args.json)
    except Exception as exc:
        return _fail(exc, args.json, 3, message=f"the demo failed: {type(exc).__name__}: {exc}")
