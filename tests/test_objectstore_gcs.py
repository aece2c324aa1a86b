"""gs:// through the same object-storage code as s3://, against the JSON API of Google
Cloud Storage answered on loopback by the shared test server (no emulator needed: an
object read is two GETs, its metadata and its bytes)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest

from builders import LoopbackServer, Route, png_bytes
from mediagate import (
    FetchError,
    MediaConnector,
    MediaPolicy,
    PolicyError,
    TooLargeError,
)

pytest.importorskip("gcsfs", reason="the gcs extra is part of the test install")

BUCKET = "frames"


def put(server: LoopbackServer, key: str, body: bytes) -> None:
    """Answer the metadata and the download requests of ``gs://frames/key``."""
    name = quote(key, safe="")
    meta = {"kind": "storage#object", "name": key, "bucket": BUCKET, "size": str(len(body))}
    server.routes[f"/storage/v1/b/{BUCKET}/o/{name}"] = Route(
        json.dumps(meta).encode(), headers={"Content-Type": "application/json"}
    )
    server.routes[f"/download/storage/v1/b/{BUCKET}/o/{name}?alt=media"] = Route(body)


def gs_policy(server: LoopbackServer, **fields: object) -> MediaPolicy:
    return MediaPolicy(
        allowed_buckets=[f"gs://{BUCKET}"],
        storage_options={"gs": {"endpoint_url": server.base, "token": "anon"}},
        **fields,  # type: ignore[arg-type]
    )


def downloads(server: LoopbackServer) -> list[str]:
    return [path for path, _ in server.requests if path.startswith("/download/")]


def test_an_allowed_gs_bucket_is_read_by_both_twins(server: LoopbackServer) -> None:
    put(server, "cats/a.png", png_bytes())
    with MediaConnector(policy=gs_policy(server)) as conn:
        assert conn.fetch_image(f"gs://{BUCKET}/cats/a.png").size == (40, 30)
        image = asyncio.run(conn.fetch_image_async(f"gs://{BUCKET}/cats/a.png"))
        assert image.size == (40, 30)
    assert len(downloads(server)) == 2


def test_a_gs_bucket_not_allowed_is_refused_without_a_request(server: LoopbackServer) -> None:
    put(server, "a.png", png_bytes())
    with MediaConnector(policy=gs_policy(server)) as conn:
        for url in ("gs://private-frames/a.png", f"s3://{BUCKET}/a.png", f"gs://{BUCKET}/../x"):
            with pytest.raises(PolicyError):
                conn.fetch_image(url)
    assert server.requests == []


def test_a_missing_gs_object_is_an_upstream_404(server: LoopbackServer) -> None:
    with MediaConnector(policy=gs_policy(server)) as conn, pytest.raises(FetchError) as missing:
        conn.fetch_image(f"gs://{BUCKET}/missing.png")
    assert missing.value.upstream_status == 404
    assert downloads(server) == []


def test_an_oversized_gs_object_is_refused_before_its_body(server: LoopbackServer) -> None:
    put(server, "big.bin", b"\0" * 5000)
    with MediaConnector(policy=gs_policy(server, max_bytes=1000)) as conn:
        with pytest.raises(TooLargeError) as too_large:
            conn.fetch_image(f"gs://{BUCKET}/big.bin")
    assert too_large.value.value == 5000
    assert downloads(server) == []
