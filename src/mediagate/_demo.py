"""``mediagate demo``: the whole pipeline on bundled samples, over every source kind.

A loopback HTTP server (127.0.0.1 only) serves the samples; the same media are then
loaded from ``data:`` and ``file:`` URLs, the embedding from base64, and three hostile
references show what the default rules refuse.
"""

from __future__ import annotations

import base64
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from ._build import data_url
from ._connector import MediaConnector
from ._errors import MediaError
from ._extras import missing_extra
from ._loopback import LoopbackServer, folder_routes
from ._policy import MediaPolicy
from ._present import (
    describe,
    ellipsis_for,
    error_record,
    load,
    missing_record,
    shown_url,
    text,
)

__all__ = ["run_demo"]

_MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
}


def _data_url(path: Path) -> str:
    media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return data_url(path.read_bytes(), media_type)


def run_demo(*, as_json: bool = False) -> int:
    """Run the demo; 0 when every sample loaded (or needs an optional dependency this
    install lacks: such parts are skipped, naming the extra) and every hostile reference
    was refused."""
    with resources.as_file(resources.files("mediagate") / "_samples") as samples:
        return _run(Path(samples), as_json)


def _emit(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record))
    elif record["ok"]:
        print(text(record, ellipsis=ellipsis_for(sys.stdout)))
    elif record.get("skipped"):
        print(f"{record['modality']:<16} {'-':<5} {record['url_shown']}")
        print(f"    skipped: needs the {record['extra']} extra ({record['install']})")
    else:
        print(f"{record['modality']:<16} {'-':<5} {record['url_shown']}")
        print(f"    refused: {record['error']} (HTTP {record['http_status']}): {record['message']}")


def _skipped(exc: ImportError, modality: str, shown: str) -> dict[str, Any]:
    """The record of a part this install cannot run, naming the extra it needs.

    Raises:
        ImportError: ``exc``, when it is not a missing extra (a broken install).
    """
    missing = missing_extra(exc)
    if missing is None:
        raise exc
    return {**missing_record(missing), "skipped": True, "modality": modality, "url_shown": shown}


def _run(samples: Path, as_json: bool) -> int:
    # The demo's own server is on loopback, so exactly that address is allowed.
    policy = MediaPolicy(allowed_networks=["127.0.0.1/32"])
    failures = 0
    skipped: dict[str, str] = {}
    with (
        LoopbackServer(folder_routes(samples)) as server,
        MediaConnector(
            {"video": {"num_frames": 8}},
            allowed_local_media_path=samples,
            policy=policy,
        ) as connector,
    ):
        base = server.base
        if not as_json:
            print(f"mediagate demo: samples served at {base} (loopback only)\n")
        loads = [
            ("image", f"{base}/gradient.jpg"),
            ("image", f"{base}/square.png"),
            ("image", _data_url(samples / "square.png")),
            ("image", (samples / "gradient.jpg").as_uri()),
            ("audio", f"{base}/tone.wav"),
            ("audio", _data_url(samples / "tone.wav")),
            ("video", f"{base}/counter.mp4"),
            ("video", (samples / "counter.mp4").as_uri()),
            ("image-embedding", (samples / "embedding.safetensors").as_uri()),
        ]
        for modality, url in loads:
            try:
                record = load(connector, url, modality)
            except MediaError as exc:
                record = {**error_record(exc), "modality": modality, "url_shown": shown_url(url)}
                failures += 1
            except ImportError as exc:
                record = _skipped(exc, modality, shown_url(url))
                skipped[record["extra"]] = record["install"]
            _emit(record, as_json)
        b64 = base64.b64encode((samples / "embedding.safetensors").read_bytes()).decode()
        shown = f"<base64, {len(b64)} chars>"
        try:
            tensor = connector.fetch_image_embedding(b64)
        except ImportError as exc:
            record = _skipped(exc, "image-embedding", shown)
            skipped[record["extra"]] = record["install"]
        else:
            record = {
                "ok": True,
                "url_shown": shown,
                "modality": "image-embedding",
                "source": "b64",
                "bytes": len(b64) * 3 // 4,
                "cached": False,
                "result": describe("image-embedding", tensor),
                "stages": {},
            }
        _emit(record, as_json)
        hostile = [
            ("image", "http://169.254.169.254/latest/meta-data/"),
            ("image", "file:///etc/passwd"),
            ("image", f"{base.replace('http://', 'http://admin:secret@')}/gradient.jpg"),
        ]
        for modality, url in hostile:
            try:
                load(connector, url, modality)
            except MediaError as exc:
                record = {**error_record(exc), "modality": modality, "url_shown": shown_url(url)}
                _emit(record, as_json)
            else:  # pragma: no cover - a refusal that did not happen is a failure
                failures += 1
                print(f"NOT REFUSED: {url}")
    if not as_json:
        print()
        print("policy defaults:", _policy_line(MediaPolicy()))
        for extra, install in skipped.items():
            print(f"skipped the parts that need the {extra} extra: {install} adds them")
        print("demo " + ("passed" if failures == 0 else f"FAILED ({failures})"))
    return 0 if failures == 0 else 1


def _policy_line(policy: MediaPolicy) -> str:
    return (
        f"allow_private_networks={policy.allow_private_networks} "
        f"max_redirects={policy.max_redirects} max_pixels={policy.max_pixels} "
        f"max_video_frames={policy.max_video_frames} "
        f"max_audio_seconds={policy.max_audio_seconds:g} "
        f"max_tensor_bytes={policy.max_tensor_bytes}"
    )
