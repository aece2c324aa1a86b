"""MediaConnector: schemes, local files, domains, limits, twins, the worker pool."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from builders import LoopbackServer, Route, data_url, jpeg_bytes, png_bytes
from mediagate import (
    DecodeError,
    FetchError,
    FetchTimeout,
    LocalMediaDisabledError,
    MediaConnector,
    MediaIO,
    MediaPolicy,
    OptionError,
    PolicyError,
    TooLargeError,
)


def test_http_fetch_sync_and_async(server: LoopbackServer, connector: MediaConnector) -> None:
    for i in range(9):
        server.routes[f"/{i}.jpg"] = Route(jpeg_bytes(64, 48))
    image = connector.fetch_image(server.url("/0.jpg"))
    assert image.size == (64, 48) and np.asarray(image).shape == (48, 64, 3)

    async def many() -> list[Any]:
        return await asyncio.gather(
            *(connector.fetch_image_async(server.url(f"/{i}.jpg")) for i in range(1, 9))
        )

    assert [r.size for r in asyncio.run(many())] == [(64, 48)] * 8
    assert server.count() == 9


def test_default_policy_refuses_loopback_without_a_request(server: LoopbackServer) -> None:
    server.routes["/a.jpg"] = Route(jpeg_bytes())
    with MediaConnector() as conn:
        with pytest.raises(PolicyError, match="non-public"):
            conn.fetch_image(server.url("/a.jpg"))
        with pytest.raises(PolicyError):
            asyncio.run(conn.fetch_image_async(server.url("/a.jpg")))
    assert server.count() == 0


def test_data_urls_base64_and_percent_encoded(connector: MediaConnector) -> None:
    data = png_bytes()
    assert connector.fetch_image(data_url(data)).size == (40, 30)
    percent = "data:image/png," + urllib.parse.quote_from_bytes(data)
    assert connector.fetch_image(percent).size == (40, 30)
    with_params = f"data:image/png;charset=utf-8;name=x.png;base64,{data_url(data).split(',')[1]}"
    assert connector.fetch_image(with_params).size == (40, 30)
    assert asyncio.run(connector.fetch_image_async(data_url(data))).size == (40, 30)


def test_data_url_size_is_checked_before_decoding() -> None:
    data = png_bytes()
    with MediaConnector(policy=MediaPolicy(max_bytes=len(data) // 2)) as conn:
        with pytest.raises(TooLargeError, match="max_bytes"):
            conn.fetch_image(data_url(data))
        huge = "data:image/png;base64," + "A" * 4_000_000
        start = time.perf_counter()
        with pytest.raises(TooLargeError):
            conn.fetch_image(huge)
        assert time.perf_counter() - start < 0.5


def test_malformed_data_urls(connector: MediaConnector) -> None:
    with pytest.raises(DecodeError):
        connector.fetch_image("data:image/png;base64")  # no comma
    with pytest.raises(DecodeError, match="base64"):
        connector.fetch_image("data:image/png;base64,@@@@")


def test_file_urls_under_the_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "a b.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes())
    with MediaConnector(allowed_local_media_path=str(root)) as conn:
        assert conn.fetch_image((root / "a b.png").as_uri()).size == (40, 30)
        assert conn.fetch_image(f"file://{root}/a%20b.png").size == (40, 30)
        assert asyncio.run(conn.fetch_image_async((root / "a b.png").as_uri())).size == (40, 30)
        for url in (
            (tmp_path / "secret.png").as_uri(),
            f"file://{root}/../secret.png",
            f"file://{root}/%2e%2e/secret.png",
        ):
            with pytest.raises(PolicyError):
                conn.fetch_image(url)
        with pytest.raises(PolicyError, match="remote host"):
            conn.fetch_image(f"file://otherhost{root}/a%20b.png")


def test_file_urls_without_a_root_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes())
    with MediaConnector() as conn, pytest.raises(LocalMediaDisabledError) as info:
        conn.fetch_image((tmp_path / "a.png").as_uri())
    assert isinstance(info.value, PolicyError) and isinstance(info.value, RuntimeError)


def test_allowed_local_media_path_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        MediaConnector(allowed_local_media_path=str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        MediaConnector(allowed_local_media_path=str(tmp_path / "file"))


@pytest.mark.parametrize("url", ["ftp://x/a.png", "gopher://x/", "javascript:alert(1)", "x.png"])
def test_other_schemes_are_refused(connector: MediaConnector, url: str) -> None:
    with pytest.raises(PolicyError):
        connector.fetch_image(url)


def test_domain_allowlist_is_exact(server: LoopbackServer, loopback_policy: MediaPolicy) -> None:
    server.routes["/a.png"] = Route(png_bytes())
    with MediaConnector(allowed_media_domains=["127.0.0.1"], policy=loopback_policy) as conn:
        assert conn.fetch_image(server.url("/a.png")).size == (40, 30)
    with MediaConnector(allowed_media_domains=["media.example"], policy=loopback_policy) as conn:
        with pytest.raises(PolicyError, match="allowed_media_domains"):
            conn.fetch_image(server.url("/a.png"))
    assert server.count() == 1


def test_content_length_over_budget_is_refused(
    server: LoopbackServer, loopback_policy: MediaPolicy
) -> None:
    server.routes["/big.png"] = Route(png_bytes())
    with MediaConnector(policy=loopback_policy.replace(max_bytes=100)) as conn:
        with pytest.raises(TooLargeError, match="max_bytes"):
            conn.fetch_image(server.url("/big.png"))


@pytest.mark.parametrize(
    ("status", "mapped"), [(404, 422), (403, 422), (408, 502), (429, 502), (500, 502), (503, 502)]
)
def test_upstream_errors(
    server: LoopbackServer, connector: MediaConnector, status: int, mapped: int
) -> None:
    server.routes["/x"] = Route(b"no", status)
    with pytest.raises(FetchError) as info:
        connector.fetch_image(server.url("/x"))
    assert info.value.http_status == mapped and info.value.upstream_status == status


def test_redirects_are_followed_and_capped(
    server: LoopbackServer, loopback_policy: MediaPolicy
) -> None:
    server.routes["/img.png"] = Route(png_bytes())
    server.routes["/r1"] = Route(status=302, headers={"Location": "/img.png"})
    server.routes["/loop"] = Route(status=301, headers={"Location": "/loop"})
    with MediaConnector(policy=loopback_policy) as conn:
        assert conn.fetch_image(server.url("/r1")).size == (40, 30)
        with pytest.raises(FetchError, match="max_redirects=5"):
            conn.fetch_image(server.url("/loop"))
    assert server.count("/loop") == 6
    with MediaConnector(policy=loopback_policy.replace(max_redirects=0)) as conn:
        with pytest.raises(FetchError, match="disabled"):
            conn.fetch_image(server.url("/r1"))


def test_redirect_to_a_refused_domain_or_scheme(
    server: LoopbackServer, loopback_policy: MediaPolicy
) -> None:
    server.routes["/away"] = Route(status=302, headers={"Location": "http://evil.example/x"})
    server.routes["/file"] = Route(status=302, headers={"Location": "file:///etc/passwd"})
    with MediaConnector(allowed_media_domains=["127.0.0.1"], policy=loopback_policy) as conn:
        with pytest.raises(PolicyError, match="allowed_media_domains"):
            conn.fetch_image(server.url("/away"))
        with pytest.raises(PolicyError, match="http or https"):
            conn.fetch_image(server.url("/file"))


def test_total_deadline(server: LoopbackServer, loopback_policy: MediaPolicy) -> None:
    server.routes["/slow"] = Route(png_bytes(), delay=3)
    with MediaConnector(policy=loopback_policy.replace(timeout=0.5)) as conn:
        start = time.perf_counter()
        with pytest.raises(FetchTimeout) as info:
            conn.fetch_image(server.url("/slow"))
        assert time.perf_counter() - start < 1.5
        assert info.value.http_status == 504


class RecordingConnection:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.calls: list[tuple[str, float, bool]] = []

    def get_bytes(self, url: str, *, timeout: float, allow_redirects: bool) -> bytes:
        self.calls.append((url, timeout, allow_redirects))
        return self.body

    async def async_get_bytes(self, url: str, *, timeout: float, allow_redirects: bool) -> bytes:
        self.calls.append((url, timeout, allow_redirects))
        return self.body


@pytest.fixture
def resolves(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Names answered by a fake ``getaddrinfo`` (offline); others fail to resolve."""
    answers: dict[str, str] = {"media.example": "93.184.215.14"}

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror("unknown name")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers


def test_connection_hook_is_used_and_budgeted(resolves: dict[str, str]) -> None:
    hook = RecordingConnection(png_bytes())
    with MediaConnector(connection=hook, policy=MediaPolicy(timeout=7)) as conn:
        assert conn.fetch_image("https://media.example/a.png").size == (40, 30)
        assert asyncio.run(conn.fetch_image_async("https://media.example/b.png")).size == (40, 30)
    assert hook.calls == [
        ("https://media.example/a.png", 7.0, True),
        ("https://media.example/b.png", 7.0, True),
    ]
    with MediaConnector(connection=hook, policy=MediaPolicy(max_bytes=10)) as conn:
        with pytest.raises(TooLargeError):
            conn.fetch_image("https://media.example/a.png")
    with MediaConnector(connection=hook, allowed_media_domains=["other.example"]) as conn:
        with pytest.raises(PolicyError):
            conn.fetch_image("https://media.example/a.png")
    assert len(hook.calls) == 3


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1/a.png",
        "http://[::ffff:10.0.0.1]/a.png",
        "http://internal.example/a.png",
    ],
)
def test_connection_hook_gets_the_same_address_judgement(
    resolves: dict[str, str], url: str
) -> None:
    resolves["internal.example"] = "10.1.2.3"
    hook = RecordingConnection(png_bytes())
    with MediaConnector(connection=hook) as conn:
        with pytest.raises(PolicyError) as caught:
            conn.fetch_image(url)
        with pytest.raises(PolicyError):
            asyncio.run(conn.fetch_image_async(url))
    assert hook.calls == []
    assert "10.1.2.3" not in str(caught.value) and "169.254" not in str(caught.value)
    with MediaConnector(connection=hook, policy=MediaPolicy(allow_private_networks=True)) as conn:
        assert conn.fetch_image(url).size == (40, 30)
    assert len(hook.calls) == 1


def test_connection_hook_faults_are_fetch_errors(resolves: dict[str, str]) -> None:
    class Broken(RecordingConnection):
        def get_bytes(self, url: str, *, timeout: float, allow_redirects: bool) -> bytes:
            raise KeyError("secret internal detail")

    with MediaConnector(connection=Broken(b"")) as conn:
        with pytest.raises(FetchError) as caught:
            conn.fetch_image("https://media.example/a.png")
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, KeyError)


def test_media_io_kwargs_are_validated_and_merged(connector: MediaConnector) -> None:
    with pytest.raises(OptionError, match="'pictures'"):
        MediaConnector({"pictures": {}})
    with pytest.raises(OptionError, match="'colour'"):
        MediaConnector({"image": {"colour": 1}})
    with pytest.raises(OptionError, match="rgba_background_color"):
        MediaConnector({"image": {"rgba_background_color": [1, 2]}})
    image = png_bytes()
    with MediaConnector({"image": {"max_image_size": 20}}) as conn:
        assert conn.fetch_image(data_url(image)).size == (20, 15)
        request = {"max_image_size": 10}
        assert conn.fetch_image(data_url(image), media_io_kwargs=request).size == (10, 8)
        with pytest.raises(OptionError, match="max_image_size"):
            conn.fetch_image(data_url(image), media_io_kwargs={"max_image_size": "big"})


class ThreadRecordingIO(MediaIO[str]):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def load_bytes(self, data: bytes) -> str:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.append(threading.current_thread().name)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return data.decode()


def test_async_decoding_runs_in_the_bounded_pool() -> None:
    media_io = ThreadRecordingIO()

    async def main() -> tuple[list[str], str]:
        with MediaConnector(max_workers=2) as conn:
            urls = [f"data:text/plain,item{i}" for i in range(8)]
            results = await asyncio.gather(*(conn.load_from_url_async(u, media_io) for u in urls))
        return results, threading.current_thread().name

    results, loop_thread = asyncio.run(main())
    assert results == [f"item{i}" for i in range(8)]
    assert loop_thread not in media_io.threads
    assert all(name.startswith("mediagate-decode") for name in media_io.threads)
    assert media_io.peak == 2


def test_from_env_builds_policy_and_options(tmp_path: Path) -> None:
    env = {
        "MEDIAGATE_ALLOW_PRIVATE_NETWORKS": "true",
        "MEDIAGATE_MAX_BYTES": "1234",
        "MEDIAGATE_ALLOWED_MEDIA_DOMAINS": "A.example., b.example",
        "MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH": str(tmp_path),
        "MEDIAGATE_DECODE_WORKERS": "3",
        "MEDIAGATE_MEDIA_CACHE": str(tmp_path / "cache"),
        "MEDIAGATE_MEDIA_CACHE_MAX_SIZE_MB": "2",
        "MEDIAGATE_MAX_IN_FLIGHT": "3",
    }
    with MediaConnector.from_env(env) as conn:
        assert conn.policy.allow_private_networks and conn.policy.max_bytes == 1234
        assert conn.allowed_media_domains == {"a.example", "b.example"}
        assert conn.allowed_local_media_path == tmp_path.resolve()
        assert conn.max_workers == 3
        assert conn.cache is not None and conn.cache.max_bytes == 2 * 2**20
        assert conn.policy.max_in_flight == 3


def test_fetch_timeout_overrides_the_policy_deadline(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    server.routes["/slow"] = Route(png_bytes(), delay=2)
    image_io = connector._image_io()
    start = time.perf_counter()
    with pytest.raises(FetchTimeout, match=r"timeout=0\.3 s"):
        connector.load_from_url(server.url("/slow"), image_io, fetch_timeout=0.3)
    assert time.perf_counter() - start < 1.3
    with pytest.raises(FetchTimeout):
        asyncio.run(connector.load_from_url_async(server.url("/slow"), image_io, fetch_timeout=0.3))
    with pytest.raises(ValueError, match="fetch_timeout"):
        connector.load_from_url(server.url("/slow"), image_io, fetch_timeout=0)


@pytest.mark.parametrize("cores,workers", [(1, 1), (3, 3), (64, 8)])
def test_the_default_decode_pool_follows_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    from mediagate import _connector

    monkeypatch.setattr(_connector, "cpu_count", lambda: cores)
    with MediaConnector() as conn:
        assert conn.max_workers == workers
