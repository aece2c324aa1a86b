"""s3:// references against a moto S3 server on loopback that logs every request."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from builders import png_bytes
from mediagate import (
    FetchError,
    FetchTimeout,
    ImageMediaIO,
    MediaCache,
    MediaConnector,
    MediaPolicy,
    PolicyError,
    TooLargeError,
)

pytest.importorskip("s3fs", reason="the s3 extra is part of the test install")
pytest.importorskip("moto.moto_server", reason="moto[server] is part of the test install")

from s3_server import ACCESS_KEY, REGION, SECRET_KEY, RecordingS3Server

BUCKET = "media-in"
OTHER = "private-media"
DENIED = "locked-media"
SLOW = "slow-media"
BIG = 5 * 1024 * 1024


def wav_bytes(rate: int = 8000, seconds: float = 0.25) -> bytes:
    import soundfile

    samples = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(rate * seconds)))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingS3Server]:
    import boto3

    s3 = RecordingS3Server(denied={DENIED}, dripping={SLOW})
    s3.start()
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    for bucket in (BUCKET, OTHER, SLOW):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=BUCKET, Key="a.png", Body=png_bytes())
    client.put_object(Bucket=BUCKET, Key="sounds/tone.wav", Body=wav_bytes())
    client.put_object(Bucket=BUCKET, Key="big.bin", Body=b"\0" * BIG)
    client.put_object(Bucket=OTHER, Key="a.png", Body=png_bytes())
    client.put_object(Bucket=SLOW, Key="a.png", Body=png_bytes())
    yield s3
    s3.stop()


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, server: RecordingS3Server) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    server.clear()


def storage(server: RecordingS3Server, **extra: Any) -> dict[str, Any]:
    options = {
        "endpoint_url": server.endpoint_url,
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"region_name": REGION},
    }
    return {"s3": {**options, **extra}}


def policy(server: RecordingS3Server, *buckets: str, **fields: Any) -> MediaPolicy:
    return MediaPolicy(
        allowed_buckets=[f"s3://{b}" for b in buckets or (BUCKET, DENIED)],
        storage_options=storage(server),
        **fields,
    )


def test_importing_mediagate_imports_no_storage_client() -> None:
    code = (
        "import sys, mediagate\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('fsspec', 's3fs', 'gcsfs', 'botocore', 'aiobotocore')]\n"
        "assert not loaded, loaded\n"
        "assert {'s3', 'gs'} <= set(mediagate.SOURCE_REGISTRY.names())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_allowed_bucket_is_read_by_both_twins(server: RecordingS3Server) -> None:
    with MediaConnector(policy=policy(server)) as conn:
        assert conn.fetch_image(f"s3://{BUCKET}/a.png").size == (40, 30)
        image = asyncio.run(conn.fetch_image_async(f"s3://{BUCKET}/a.png"))
        assert np.asarray(image).shape == (30, 40, 3)
        samples, rate = conn.fetch_audio(f"s3://{BUCKET}/sounds/tone.wav")
        samples_async, rate_async = asyncio.run(
            conn.fetch_audio_async(f"s3://{BUCKET}/sounds/tone.wav")
        )
        _, report = conn.load_with_report(f"s3://{BUCKET}/a.png", ImageMediaIO())
    assert rate == rate_async == 8000 and samples.shape == samples_async.shape == (2000,)
    assert report.source == "s3" and report.num_bytes == len(png_bytes())


def test_a_bucket_not_allowed_is_refused_without_a_request(server: RecordingS3Server) -> None:
    with MediaConnector(policy=policy(server)) as conn:
        with pytest.raises(PolicyError) as refused:
            conn.fetch_image(f"s3://{OTHER}/a.png")
        assert refused.value.http_status == 403
        with pytest.raises(PolicyError):
            asyncio.run(conn.fetch_image_async(f"s3://{OTHER}/a.png"))
        with pytest.raises(PolicyError):
            conn.fetch_image(f"gs://{BUCKET}/a.png")
    assert server.requests == []


def test_the_default_policy_allows_no_bucket(server: RecordingS3Server) -> None:
    default = MediaPolicy(storage_options=storage(server))
    with (
        MediaConnector(policy=default) as conn,
        pytest.raises(PolicyError, match="allowed_buckets"),
    ):
        conn.fetch_image(f"s3://{BUCKET}/a.png")
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        f"s3://{BUCKET}/",
        f"s3://{BUCKET}",
        f"s3://{BUCKET}/../{OTHER}/a.png",
        f"s3://{BUCKET}/x/%2e%2e/a.png",
        f"s3://{BUCKET}/a.png%3FversionId=1",
        f"s3://key:secret@{BUCKET}/a.png",
        f"s3://{BUCKET}/a.png?versionId=1",
    ],
)
def test_malformed_keys_are_refused_before_any_request(server: RecordingS3Server, url: str) -> None:
    with MediaConnector(policy=policy(server)) as conn, pytest.raises(PolicyError):
        conn.fetch_image(url)
    assert server.requests == []


def test_an_object_over_max_bytes_is_refused_before_its_body(server: RecordingS3Server) -> None:
    with MediaConnector(policy=policy(server, max_bytes=1000)) as conn:
        with pytest.raises(TooLargeError) as too_large:
            conn.fetch_image(f"s3://{BUCKET}/big.bin")
        with pytest.raises(TooLargeError):
            asyncio.run(conn.fetch_image_async(f"s3://{BUCKET}/big.bin"))
    assert too_large.value.value == BIG and too_large.value.maximum == 1000
    assert {r.method for r in server.requests} == {"HEAD"}
    assert sum(r.body_bytes for r in server.requests) < 10_000


def test_a_missing_object_is_an_upstream_404(server: RecordingS3Server) -> None:
    with MediaConnector(policy=policy(server, BUCKET, "no-such-bucket")) as conn:
        for url in (f"s3://{BUCKET}/missing.png", "s3://no-such-bucket/a.png"):
            with pytest.raises(FetchError) as missing:
                conn.fetch_image(url)
            assert missing.value.upstream_status == 404 and missing.value.http_status == 422
        with pytest.raises(FetchError) as missing_async:
            asyncio.run(conn.fetch_image_async(f"s3://{BUCKET}/missing.png"))
    assert missing_async.value.upstream_status == 404


def test_access_denied_is_an_upstream_403(server: RecordingS3Server) -> None:
    with MediaConnector(policy=policy(server)) as conn, pytest.raises(FetchError) as denied:
        conn.fetch_image(f"s3://{DENIED}/a.png")
    assert denied.value.upstream_status == 403 and denied.value.http_status == 422
    assert server.requests_to(DENIED)


def test_an_unreachable_endpoint_is_a_502_without_details(server: RecordingS3Server) -> None:
    options = storage(server, endpoint_url="http://127.0.0.1:9")
    unreachable = MediaPolicy(allowed_buckets=[f"s3://{BUCKET}"], storage_options=options)
    with MediaConnector(policy=unreachable) as conn, pytest.raises(FetchError) as failed:
        conn.fetch_image(
            f"s3://{BUCKET}/a.png",
        )
    assert failed.value.http_status == 502
    assert "127.0.0.1" not in str(failed.value)


def test_credentials_never_show(server: RecordingS3Server) -> None:
    chosen = policy(server)
    messages = [repr(chosen), str(chosen)]
    with MediaConnector(policy=chosen) as conn:
        for url in (
            f"s3://{OTHER}/a.png",
            f"s3://{BUCKET}/missing.png",
            f"s3://{DENIED}/a.png",
            f"s3://{BUCKET}/../a.png",
        ):
            with pytest.raises((PolicyError, FetchError)) as failed:
                conn.fetch_image(url)
            messages.append(str(failed.value))
    for text in messages:
        for secret in (SECRET_KEY, ACCESS_KEY, server.endpoint_url):
            assert secret not in text


def test_filesystems_are_not_shared_across_storage_options(server: RecordingS3Server) -> None:
    good = policy(server)
    wrong = MediaPolicy(
        allowed_buckets=[f"s3://{BUCKET}"],
        storage_options=storage(server, endpoint_url="http://127.0.0.1:9"),
    )
    with MediaConnector(policy=good) as conn:
        conn.fetch_image(f"s3://{BUCKET}/a.png")
        source = conn._source("s3")
    with pytest.raises(FetchError):
        source.fetch(conn._parse(f"s3://{BUCKET}/a.png"), policy=wrong, limit=10_000, timeout=5)
    assert len({id(fs) for fs in source._filesystems.values()}) == 2


def test_a_cached_object_is_served_without_a_request(
    server: RecordingS3Server, tmp_path: Path
) -> None:
    with MediaCache(tmp_path / "cache") as cache:
        with MediaConnector(policy=policy(server), cache=cache) as conn:
            conn.fetch_image(f"s3://{BUCKET}/a.png")
            first = len(server.requests)
            assert first > 0
            conn.fetch_image(f"s3://{BUCKET}/a.png")
            asyncio.run(conn.fetch_image_async(f"s3://{BUCKET}/a.png"))
            _, report = conn.load_with_report(f"s3://{BUCKET}/a.png", ImageMediaIO())
    assert report.cached and len(server.requests) == first


def test_from_env_reads_the_bucket_settings(server: RecordingS3Server) -> None:
    environ = {
        "MEDIAGATE_ALLOWED_BUCKETS": f"s3://{BUCKET}, s3://{DENIED}",
        "MEDIAGATE_S3_ENDPOINT_URL": server.endpoint_url,
        "MEDIAGATE_S3_KEY": ACCESS_KEY,
        "MEDIAGATE_S3_SECRET": SECRET_KEY,
        "MEDIAGATE_S3_REGION": REGION,
    }
    with MediaConnector.from_env(environ) as conn:
        assert conn.fetch_image(f"s3://{BUCKET}/a.png").size == (40, 30)
        with pytest.raises(PolicyError):
            conn.fetch_image(f"s3://{OTHER}/a.png")
    assert SECRET_KEY not in repr(conn.policy)
    assert not server.requests_to(OTHER)


def test_a_store_sending_slowly_is_cut_off_at_the_total_deadline(
    server: RecordingS3Server,
) -> None:
    # Every byte arrives well within the client's read timeout; the whole body would take
    # minutes. The one total deadline ends the fetch.
    slow = policy(server, SLOW, timeout=1.0)
    with MediaConnector(policy=slow) as conn:
        for fetch in (
            lambda: conn.fetch_image(f"s3://{SLOW}/a.png"),
            lambda: asyncio.run(conn.fetch_image_async(f"s3://{SLOW}/a.png")),
        ):
            start = time.monotonic()
            with pytest.raises(FetchTimeout) as timed_out:
                fetch()
            assert time.monotonic() - start < 3.0
            assert timed_out.value.http_status == 504
            assert "127.0.0.1" not in str(timed_out.value)
