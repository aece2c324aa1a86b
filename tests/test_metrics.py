"""Load reports (on_load), the Prometheus metrics fed from them, and /metrics on the proxy."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import mediagate
from builders import LoopbackServer, Route, png_bytes, soundfile_bytes, tone
from mediagate import (
    FetchError,
    LoadReport,
    MediaCache,
    MediaConnector,
    MediaError,
    MediaPolicy,
    PolicyError,
    TooLargeError,
    resolve_chat_request,
)
from mediagate._observe import failure_reason
from mediagate._proxy import ProxyConfig, ProxyServer
from recording_upstream import RecordingUpstream

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PNG = png_bytes()
WAV = soundfile_bytes(tone(0.25, 16000), 16000)
BIG = b"\x89PNG" + bytes(200_000)
MAX_BYTES = 64 * 1024


def scrape(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def reports() -> Iterator[list[LoadReport]]:
    seen: list[LoadReport] = []
    stop = mediagate.on_load(seen.append)
    yield seen
    stop()


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = mediagate.enable_metrics(registry)
    yield registry
    metrics.close()


@pytest.fixture
def media(server: LoopbackServer) -> LoopbackServer:
    server.routes.update(
        {
            "/good.png": Route(PNG, headers={"Content-Type": "image/png"}),
            "/tone.wav": Route(WAV, headers={"Content-Type": "audio/wav"}),
            "/big.png": Route(BIG, headers={"Content-Type": "image/png"}),
            "/private.png": Route(PNG),
            "/slow.png": Route(PNG, delay=0.6),
        }
    )
    return server


@pytest.fixture
def cached_connector(tmp_path: Path) -> Iterator[MediaConnector]:
    policy = MediaPolicy(allowed_networks=["127.0.0.1/32"], max_bytes=MAX_BYTES)
    with MediaCache(tmp_path / "cache") as cache, MediaConnector(policy=policy, cache=cache) as c:
        yield c


def test_a_mixed_load_is_counted_exactly(
    media: LoopbackServer, cached_connector: MediaConnector, registry: CollectorRegistry
) -> None:
    connector = cached_connector
    connector.fetch_image(media.url("/good.png"))
    connector.fetch_audio(media.url("/tone.wav"))
    with pytest.raises(FetchError):
        connector.fetch_image(media.url("/missing.png"))
    private = media.url("/private.png").replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(PolicyError):
        connector.fetch_image(private)
    with pytest.raises(TooLargeError):
        connector.fetch_image(media.url("/big.png"))
    connector.fetch_image(media.url("/good.png"))  # from the cache

    assert media.count("/good.png") == 1
    assert media.count("/private.png") == 0
    samples = scrape(mediagate.metrics_text(registry))
    image, audio = {"modality": "image", "source": "http"}, {"modality": "audio", "source": "http"}
    assert value(samples, "mediagate_loads_total", **image, outcome="ok") == 2
    assert value(samples, "mediagate_loads_total", **audio, outcome="ok") == 1
    assert value(samples, "mediagate_loads_total", **image, outcome="error") == 3
    for stage in ("fetch", "decode"):
        assert value(samples, f"mediagate_{stage}_seconds_count", **image) == 2
        assert value(samples, f"mediagate_{stage}_seconds_count", **audio) == 1
        assert value(samples, f"mediagate_{stage}_seconds_bucket", **image, le="+Inf") == 2
    assert value(samples, "mediagate_media_bytes_sum", **image) == 2 * len(PNG)
    assert value(samples, "mediagate_media_bytes_sum", **audio) == len(WAV)
    assert value(samples, "mediagate_media_bytes_count", **image) == 2
    # Each bucket holds the loads at most its size: both images are under 1 KiB.
    assert len(PNG) <= 1024 < len(WAV) <= 16384
    assert value(samples, "mediagate_media_bytes_bucket", **image, le="1024.0") == 2
    assert value(samples, "mediagate_media_bytes_bucket", **audio, le="1024.0") == 0
    assert value(samples, "mediagate_media_bytes_bucket", **audio, le="16384.0") == 1
    assert value(samples, "mediagate_cache_hits_total", modality="image") == 1
    assert value(samples, "mediagate_cache_misses_total", modality="image") == 1
    assert value(samples, "mediagate_cache_misses_total", modality="audio") == 1
    errors = {
        (dict(labels)["error_type"], dict(labels)["reason"]): count
        for (name, labels), count in samples.items()
        if name == "mediagate_load_errors_total"
    }
    assert errors == {
        ("FetchError", "upstream_4xx"): 1,
        ("PolicyError", "address"): 1,
        ("TooLargeError", "max_bytes"): 1,
    }
    assert value(samples, "mediagate_downloads_in_flight") == 0
    assert value(samples, "mediagate_cache_evictions_total") == 0


def test_no_label_carries_text_of_the_reference(
    connector: MediaConnector, registry: CollectorRegistry
) -> None:
    for url in ("gopher://secret-host/x", "http://user:hunter2@example.test/x", "nonsense"):
        with pytest.raises(MediaError):
            connector.fetch_image(url)
    text = mediagate.metrics_text(registry)
    for secret in ("secret-host", "hunter2", "example.test", "nonsense", "gopher"):
        assert secret not in text
    samples = scrape(text)
    assert (
        value(samples, "mediagate_loads_total", modality="image", source="other", outcome="error")
        == 2
    )
    assert (
        value(samples, "mediagate_load_errors_total", error_type="PolicyError", reason="scheme")
        == 2
    )
    assert (
        value(
            samples, "mediagate_load_errors_total", error_type="PolicyError", reason="credentials"
        )
        == 1
    )


def test_evictions_are_counted(
    server: LoopbackServer, tmp_path: Path, registry: CollectorRegistry
) -> None:
    # Room for two entries (each billed one 4 KiB block): the third write evicts one.
    for n in range(3):
        server.routes[f"/{n}.png"] = Route(png_bytes(np.full((4, 4, 3), n * 40, np.uint8)))
    policy = MediaPolicy(allowed_networks=["127.0.0.1/32"])
    with (
        MediaCache(tmp_path, max_bytes=8192) as cache,
        MediaConnector(policy=policy, cache=cache) as c,
    ):
        for n in range(3):
            c.fetch_image(server.url(f"/{n}.png"))
        assert cache.stats().evictions == 1
    samples = scrape(mediagate.metrics_text(registry))
    assert value(samples, "mediagate_cache_evictions_total") == 1
    assert value(samples, "mediagate_cache_misses_total", modality="image") == 3


def test_downloads_in_flight_rise_while_a_download_runs(
    media: LoopbackServer, connector: MediaConnector, registry: CollectorRegistry
) -> None:
    done = threading.Event()

    def load() -> None:
        try:
            connector.fetch_image(media.url("/slow.png"))
        finally:
            done.set()

    thread = threading.Thread(target=load)
    thread.start()
    seen = []
    for _ in range(100):  # at most 5 s
        seen.append(
            value(scrape(mediagate.metrics_text(registry)), "mediagate_downloads_in_flight")
        )
        if seen[-1] == 1 or done.is_set():
            break
        time.sleep(0.05)
    thread.join(10)
    assert 1 in seen
    assert value(scrape(mediagate.metrics_text(registry)), "mediagate_downloads_in_flight") == 0


# -- on_load --------------------------------------------------------------------------------


def test_each_sync_load_reports_once(
    media: LoopbackServer, connector: MediaConnector, reports: list[LoadReport]
) -> None:
    # fetch_image calls load_from_url, which calls load_with_report: still one report.
    image = connector.fetch_image(media.url("/good.png"))
    assert len(reports) == 1
    report = reports[0]
    assert (report.ok, report.modality, report.source, report.num_bytes) == (
        True,
        "image",
        "http",
        len(PNG),
    )
    assert (report.error_type, report.reason, report.cached, report.cacheable) == (
        None,
        None,
        False,
        False,
    )
    assert set(report.stages) == {"fetch", "decode"}
    assert image.size == (40, 30)  # the load itself is untouched

    loaded = connector.load_media(media.url("/tone.wav"))
    _, own = connector.load_with_report(media.url("/good.png"), connector.media_io("image"))
    assert len(reports) == 3
    assert reports[1] is loaded.report and reports[2] is own
    assert reports[1].modality == "audio"


def test_each_async_load_reports_once(
    media: LoopbackServer, connector: MediaConnector, reports: list[LoadReport]
) -> None:
    async def main() -> None:
        await connector.fetch_image_async(media.url("/good.png"))
        await connector.load_media_async(media.url("/tone.wav"), "audio")
        with pytest.raises(FetchError):
            await connector.fetch_audio_async(media.url("/missing.wav"))

    asyncio.run(main())
    assert [(r.modality, r.error_type, r.reason) for r in reports] == [
        ("image", None, None),
        ("audio", None, None),
        ("audio", "FetchError", "upstream_4xx"),
    ]


def test_failures_report_the_error_class_and_reason(
    media: LoopbackServer, connector: MediaConnector, reports: list[LoadReport]
) -> None:
    with pytest.raises(PolicyError):
        connector.fetch_image("ftp://example.test/x.png")
    with pytest.raises(MediaError):
        connector.fetch_image(media.url("/good.png"), media_io_kwargs={"no_such_option": 1})
    with pytest.raises(MediaError):
        connector.fetch_audio("data:audio/wav;base64,AAAA")
    assert [(r.source, r.modality, r.error_type, r.reason, r.ok) for r in reports] == [
        ("other", "image", "PolicyError", "scheme", False),
        ("http", "image", "OptionError", "option", False),
        ("data", "audio", "DecodeError", "undecodable", False),
    ]
    assert media.count() == 0


def test_inline_embeddings_report_too(connector: MediaConnector, reports: list[LoadReport]) -> None:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(torch.zeros(4, 8), buffer)
    data = base64.b64encode(buffer.getvalue()).decode()
    connector.fetch_image_embedding(data)
    asyncio.run(connector.fetch_audio_embedding_async(data))
    assert [(r.source, r.modality, r.num_bytes) for r in reports] == [
        ("inline", "image_embedding", len(buffer.getvalue())),
        ("inline", "audio_embedding", len(buffer.getvalue())),
    ]
    assert all("decode" in r.stages for r in reports)


def test_a_raising_hook_never_breaks_a_load(
    media: LoopbackServer,
    connector: MediaConnector,
    reports: list[LoadReport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(report: LoadReport) -> None:
        raise RuntimeError("hook bug")

    stop = mediagate.on_load(broken)
    try:
        with caplog.at_level("WARNING", logger="mediagate.load"):
            for _ in range(3):
                assert connector.fetch_image(media.url("/good.png")).size
            with pytest.raises(FetchError):  # the load's own error, not the hook's
                connector.fetch_image(media.url("/missing.png"))
    finally:
        stop()
    raised = [r for r in caplog.records if "load hook" in r.getMessage()]
    assert len(raised) == 1  # once, not once per load
    assert len(reports) == 4  # the other hook still sees every load


def test_unregistering_stops_the_calls(media: LoopbackServer, connector: MediaConnector) -> None:
    seen: list[LoadReport] = []
    stop = mediagate.on_load(seen.append)
    connector.fetch_image(media.url("/good.png"))
    stop()
    stop()  # a second call does nothing
    connector.fetch_image(media.url("/good.png"))
    assert len(seen) == 1
    with pytest.raises(TypeError):
        mediagate.on_load("not callable")  # type: ignore[arg-type]


def test_a_request_reports_each_load_and_each_failed_part(
    media: LoopbackServer, connector: MediaConnector, reports: list[LoadReport]
) -> None:
    good = media.url("/good.png")
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": good}},
                    {"type": "image_url", "image_url": {"url": good}},  # shares the load
                    {"type": "image_url", "image_url": {"url": media.url("/missing.png")}},
                    {"type": "image_url", "image_url": {"url": "ftp://example.test/x"}},
                ],
            }
        ]
    }
    resolved = resolve_chat_request(request, connector, errors="collect")
    assert [item.ok for item in resolved.items] == [True, True, False, False]
    assert sorted((r.modality, r.source, str(r.error_type), str(r.reason)) for r in reports) == [
        ("image", "http", "FetchError", "upstream_4xx"),
        ("image", "http", "None", "None"),
        ("image", "other", "PolicyError", "scheme"),
    ]
    # Raising at the first error: that part is reported, with its modality and source.
    reports.clear()
    content = request["messages"][0]["content"]
    with pytest.raises(FetchError):
        resolve_chat_request({"messages": [{"role": "user", "content": content[2:3]}]}, connector)
    assert [(r.modality, r.source, r.error_type) for r in reports] == [
        ("image", "http", "FetchError")
    ]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TooLargeError("x", limit="max_pixels"), "max_pixels"),
        (TooLargeError("x", limit="Not A Word!"), "limit"),
        (PolicyError("the URL's host is not in allowed_media_domains"), "domain"),
        (PolicyError("the URL is malformed", http_status=400), "malformed"),
        (mediagate.LocalMediaDisabledError("x"), "local_media_disabled"),
        (mediagate.FetchTimeout("x"), "timeout"),
        (FetchError("x", upstream_status=503), "upstream_5xx"),
        (FetchError("the URL's host name could not be resolved"), "dns"),
        (FetchError("connection reset"), "network"),
        (mediagate.DecodeError("x", http_status=415), "unsupported"),
        (ImportError("no torch"), "missing_extra"),
        (asyncio.CancelledError(), "cancelled"),
        (RuntimeError("http://secret/"), "internal"),
    ],
)
def test_reasons_are_a_fixed_vocabulary(error: BaseException, reason: str) -> None:
    assert failure_reason(error) == (type(error).__name__, reason)


# -- exposition -------------------------------------------------------------------------


def test_enabling_twice_gives_the_same_metrics_and_close_removes_them() -> None:
    registry = CollectorRegistry()
    first = mediagate.enable_metrics(registry)
    assert mediagate.enable_metrics(registry) is first
    assert "mediagate_loads_total" in mediagate.metrics_text(registry)
    first.close()
    assert "mediagate_" not in mediagate.metrics_text(registry)
    again = mediagate.enable_metrics(registry)
    assert again is not first
    again.close()


def test_import_mediagate_does_not_import_prometheus_and_a_missing_extra_is_named() -> None:
    code = (
        "import sys\n"
        "import mediagate\n"
        "assert 'prometheus_client' not in sys.modules\n"
        "sys.modules['prometheus_client'] = None\n"
        "try:\n"
        "    mediagate.enable_metrics()\n"
        "except ImportError as exc:\n"
        "    from mediagate._extras import missing_extra\n"
        '    assert "mediagate[metrics]" in str(exc), exc\n'
        "    assert missing_extra(exc).extra == 'metrics'\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_proxy_serves_metrics_on_its_own_port(media: LoopbackServer) -> None:
    registry = CollectorRegistry()
    connector = MediaConnector(
        policy=MediaPolicy(allowed_networks=["127.0.0.1/32"]),
        allowed_media_domains=["127.0.0.1"],
    )
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": media.url("/good.png")}}],
            }
        ],
    }
    try:
        with RecordingUpstream() as upstream:
            config = ProxyConfig(upstream.url, metrics=True, metrics_registry=registry)
            with ProxyServer(config, connector) as proxy:
                post = urllib.request.Request(
                    f"{proxy.url}/v1/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(post, timeout=30) as answer:
                    assert answer.status == 200
                with urllib.request.urlopen(f"{proxy.url}/metrics", timeout=30) as answer:
                    assert answer.headers["Content-Type"] == mediagate.METRICS_CONTENT_TYPE
                    text = answer.read().decode()
            assert all(r.path != "/metrics" for r in upstream.received)
    finally:
        connector.close()
        mediagate.enable_metrics(registry).close()
    samples = scrape(text)
    assert (
        value(samples, "mediagate_loads_total", modality="image", source="http", outcome="ok") == 1
    )
    assert value(samples, "mediagate_media_bytes_sum", modality="image", source="http") == len(PNG)


def test_without_metrics_the_proxy_forwards_the_metrics_path(media: LoopbackServer) -> None:
    with RecordingUpstream() as upstream:
        with ProxyServer(ProxyConfig(upstream.url), MediaConnector()) as proxy:
            urllib.request.urlopen(f"{proxy.url}/metrics", timeout=30).close()
        assert [r.path for r in upstream.received] == ["/metrics"]


def test_the_proxy_command_serves_metrics(media: LoopbackServer) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MEDIAGATE_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with RecordingUpstream() as upstream:
        command = [sys.executable, "-m", "mediagate", "proxy", "--upstream", upstream.url]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--metrics"], env=env, stderr=subprocess.PIPE
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):  # at most 30 s
                try:
                    urllib.request.urlopen(f"{base}/metrics", timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.1)
            body = {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": media.url("/good.png")}},
                            {"type": "image_url", "image_url": {"url": media.url("/nope.png")}},
                        ],
                    }
                ],
            }
            post = urllib.request.Request(
                f"{base}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=30)
            assert refused.value.code == 422
            refused.value.close()
            with urllib.request.urlopen(f"{base}/metrics", timeout=30) as answer:
                samples = scrape(answer.read().decode())
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
        assert all(r.path != "/metrics" for r in upstream.received)
    assert (
        value(
            samples, "mediagate_load_errors_total", error_type="FetchError", reason="upstream_4xx"
        )
        == 1
    )
    assert value(samples, "mediagate_downloads_in_flight") == 0


def test_the_proxy_command_names_the_missing_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "from mediagate._cli import main\n"
        "sys.exit(main(['proxy', '--upstream', 'http://127.0.0.1:9', '--metrics']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "mediagate[metrics]" in done.stderr
    assert "Traceback" not in done.stderr
