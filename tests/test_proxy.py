"""The proxy, driven by the official ``openai`` client, in front of a recording upstream."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile
from PIL import Image

from builders import (
    LoopbackServer,
    Route,
    data_url,
    encode_clip,
    jpeg_bytes,
    png_bytes,
    soundfile_bytes,
    tone,
)
from mediagate import MediaConnector, MediaPolicy, RequestLimits
from mediagate._proxy import ProxyConfig, ProxyServer, folder_lookup
from recording_upstream import STREAM_PIECES, RecordingUpstream, sse_body


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as up:
        yield up


@pytest.fixture
def media(server: LoopbackServer) -> LoopbackServer:
    server.routes.update(
        {
            "/big.jpg": Route(jpeg_bytes(1600, 1200), headers={"Content-Type": "image/jpeg"}),
            "/small.png": Route(png_bytes(), headers={"Content-Type": "image/png"}),
            "/tone.wav": Route(soundfile_bytes(tone(1.0, 16000), 16000)),
            "/clip.mp4": Route(encode_clip(), headers={"Content-Type": "video/mp4"}),
            "/garbage.jpg": Route(b"\x00not an image" * 10),
            "/truncated.jpg": Route(jpeg_bytes(640, 480)[:300]),
        }
    )
    return server


def _proxy(upstream: RecordingUpstream, tmp_path: Path | None = None, **config: Any) -> ProxyServer:
    # Only the test server's host name is allowed: "localhost" names the same server
    # and is refused, so a refused reference that reached it would show in its count.
    connector = MediaConnector(
        policy=MediaPolicy(allowed_networks=["127.0.0.1/32"]),
        allowed_media_domains=["127.0.0.1"],
        allowed_local_media_path=tmp_path or "",
    )
    return ProxyServer(ProxyConfig(upstream.url, **config), connector)


def _client(proxy: ProxyServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-test", max_retries=0, timeout=30)


def _image_of(url: str) -> Image.Image:
    assert url.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_chat_images_by_url_data_url_and_file_id_are_inlined_in_order(
    upstream: RecordingUpstream, media: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "file-cat").write_bytes(jpeg_bytes(320, 240))
    proxy = _proxy(
        upstream, tmp_path, max_image_pixels=640 * 480, file_lookup=folder_lookup(tmp_path)
    )
    with proxy:
        reply = _client(proxy).chat.completions.create(
            model="tiny",
            messages=[
                {"role": "system", "content": "You describe images."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "first"},
                        {
                            "type": "image_url",
                            "image_url": {"url": media.url("/big.jpg"), "detail": "low"},
                        },
                        {"type": "text", "text": "second"},
                        {"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
                        {"type": "file", "file": {"file_id": "file-cat"}},
                    ],
                },
            ],
        )
    assert reply.choices[0].message.content == "Hello there!"
    sent = upstream.last()
    assert sent["model"] == "tiny"
    assert sent["messages"][0] == {"role": "system", "content": "You describe images."}
    content = sent["messages"][1]["content"]
    assert [part["type"] for part in content] == [
        "text",
        "image_url",
        "text",
        "image_url",
        "image_url",
    ]
    assert content[0]["text"] == "first" and content[2]["text"] == "second"
    big = _image_of(content[1]["image_url"]["url"])
    assert big.size == (640, 480)  # fitted to max_image_pixels, aspect kept
    assert content[1]["image_url"]["detail"] == "low"
    assert (
        _image_of(content[3]["image_url"]["url"]).size == Image.open(io.BytesIO(png_bytes())).size
    )
    assert _image_of(content[4]["image_url"]["url"]).size == (320, 240)
    assert media.count("/big.jpg") == 1


def test_audio_and_video_are_inlined_and_video_becomes_frames_when_asked(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    messages: Any = [
        {
            "role": "user",
            "content": [
                {"type": "audio_url", "audio_url": {"url": media.url("/tone.wav")}},
                {"type": "video_url", "video_url": {"url": media.url("/clip.mp4")}},
                {"type": "text", "text": "what happens?"},
            ],
        }
    ]
    with _proxy(upstream, video_as_frames=4) as proxy:
        _client(proxy).chat.completions.create(model="m", messages=messages)
    content = upstream.last()["messages"][0]["content"]
    assert [part["type"] for part in content] == ["input_audio", *["image_url"] * 4, "text"]
    audio = content[0]["input_audio"]
    assert audio["format"] == "wav"
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(audio["data"])))
    assert rate == 16000 and len(samples) == 16000
    for part in content[1:5]:
        assert _image_of(part["image_url"]["url"]).mode == "RGB"

    with _proxy(upstream) as proxy:
        _client(proxy).chat.completions.create(model="m", messages=messages)
    video = upstream.last()["messages"][0]["content"][1]
    assert video["type"] == "video_url"
    assert base64.b64decode(video["video_url"]["url"].split(",", 1)[1]) == encode_clip()


def test_embeddings_are_checked_and_passed_on_and_client_uuids_dropped(
    upstream: RecordingUpstream,
) -> None:
    torch = pytest.importorskip("torch")
    from mediagate import ImageEmbeddingMediaIO

    payload = ImageEmbeddingMediaIO().encode_base64(torch.ones(4, 8))
    with _proxy(upstream) as proxy:
        _client(proxy).chat.completions.create(
            model="m",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_embeds", "image_embeds": payload, "uuid": "shared"}
                    ],
                }
            ],  # type: ignore[list-item]
        )
    assert upstream.last()["messages"][0]["content"] == [
        {"type": "image_embeds", "image_embeds": payload}
    ]


def test_a_refused_part_answers_an_openai_error_and_nothing_is_forwarded_or_fetched(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    refused = media.url("/big.jpg").replace("127.0.0.1", "localhost")
    with _proxy(upstream) as proxy:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            _client(proxy).chat.completions.create(
                model="m",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url(png_bytes())}},
                            {"type": "image_url", "image_url": {"url": refused}},
                        ],
                    }
                ],
            )
    error = caught.value
    assert error.status_code == 403
    body: Any = error.body
    assert body["param"] == "messages[0].content[1].image_url.url"
    assert body["type"] == "invalid_request_error" and body["code"] == "media_refused"
    assert "messages[0].content[1].image_url.url" in body["message"]
    assert upstream.received == []
    assert media.count() == 0


@pytest.mark.parametrize(
    ("path", "error_class", "status", "code"),
    [
        ("/missing.jpg", openai.UnprocessableEntityError, 422, "media_fetch_failed"),
        ("/garbage.jpg", openai.APIStatusError, 415, "unsupported_media_type"),
        ("/truncated.jpg", openai.UnprocessableEntityError, 422, "invalid_media"),
    ],
)
def test_bad_media_maps_to_status_and_code(
    upstream: RecordingUpstream,
    media: LoopbackServer,
    path: str,
    error_class: type[openai.APIStatusError],
    status: int,
    code: str,
) -> None:
    with _proxy(upstream) as proxy:
        with pytest.raises(error_class) as caught:
            _client(proxy).chat.completions.create(
                model="m",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "image_url", "image_url": {"url": media.url(path)}},
                        ],
                    }
                ],
            )
    assert caught.value.status_code == status
    body: Any = caught.value.body
    assert body["code"] == code and body["param"] == "messages[0].content[1].image_url.url"
    assert upstream.received == []


def test_the_request_budget_refuses_before_any_fetch(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    parts: Any = [
        {"type": "image_url", "image_url": {"url": media.url(f"/big.jpg?{i}")}} for i in range(3)
    ]
    with _proxy(upstream, limits=RequestLimits(max_items=2)) as proxy:
        with pytest.raises(openai.APIStatusError) as caught:
            _client(proxy).chat.completions.create(
                model="m", messages=[{"role": "user", "content": parts}]
            )
    assert caught.value.status_code == 413
    body: Any = caught.value.body
    assert body["code"] == "max_items" and body["param"] == "messages[0].content[2].image_url.url"
    assert media.count() == 0 and upstream.received == []


def test_streamed_answers_come_back_unchanged(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": media.url("/big.jpg")}}],
        }
    ]
    with _proxy(upstream) as proxy:
        stream = _client(proxy).chat.completions.create(model="m", messages=messages, stream=True)
        pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
        assert pieces == [*STREAM_PIECES, None]
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions",
            data=json.dumps({"model": "m", "messages": messages, "stream": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as raw:
            assert raw.headers["Content-Type"] == "text/event-stream"
            assert raw.read() == sse_body("m")
    assert upstream.last()["stream"] is True


def test_streamed_chunks_are_passed_on_as_they_arrive(media: LoopbackServer) -> None:
    with RecordingUpstream(chunk_delay=0.3) as slow, _proxy(slow) as proxy:
        started = time.monotonic()
        stream = _client(proxy).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first = next(iter(stream))
        waited = time.monotonic() - started
        assert first.choices[0].delta.content == STREAM_PIECES[0]
        assert waited < 1.0  # the whole answer takes 5 x 0.3 s
        stream.close()


def test_responses_requests_are_resolved_too(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    with _proxy(upstream) as proxy:
        reply = _client(proxy).responses.create(
            model="m",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {
                            "type": "input_image",
                            "image_url": media.url("/big.jpg"),
                            "detail": "high",
                        },
                    ],
                }
            ],
        )
    assert reply.output_text == "Hello there!"
    content = upstream.last()["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "what is this?"}
    assert content[1]["type"] == "input_image" and content[1]["detail"] == "high"
    assert _image_of(content[1]["image_url"]).size == (1600, 1200)


def test_requests_without_media_and_other_paths_are_forwarded_as_they_are(
    upstream: RecordingUpstream,
) -> None:
    with _proxy(upstream) as proxy:
        client = _client(proxy)
        assert [model.id for model in client.models.list()] == ["m"]
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert upstream.received[0].method == "GET" and upstream.received[0].path == "/v1/models"
    assert upstream.received[1].json()["messages"] == [{"role": "user", "content": "hi"}]
    assert upstream.received[1].headers["Authorization"] == "Bearer sk-test"


def test_a_body_that_is_not_json_is_a_400_error_body(upstream: RecordingUpstream) -> None:
    with _proxy(upstream) as proxy:
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions", data=b"{not json", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
    with caught.value as error:
        assert error.code == 400
        assert json.loads(error.read())["error"]["type"] == "invalid_request_error"
    assert upstream.received == []


def test_an_unreachable_upstream_is_a_502_error_body(media: LoopbackServer) -> None:
    with RecordingUpstream() as gone:
        url = gone.url
    connector = MediaConnector(policy=MediaPolicy(allowed_networks=["127.0.0.1/32"]))
    with ProxyServer(ProxyConfig(url), connector) as proxy:
        with pytest.raises(openai.InternalServerError) as caught:
            _client(proxy).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 502


def test_the_command_serves_and_logs_one_line_per_request(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MEDIAGATE_ALLOWED_NETWORKS": "127.0.0.1/32"}
    command = [sys.executable, "-m", "mediagate", "proxy", "--upstream", upstream.url]
    command += ["--port", str(port), "--max-image-pixels", "10000"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=30
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "the proxy did not start"
                time.sleep(0.1)
        client.chat.completions.create(
            model="m",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": media.url("/big.jpg")}}],
                }
            ],
        )
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0
    image = _image_of(upstream.last()["messages"][0]["content"][0]["image_url"]["url"])
    assert image.size[0] * image.size[1] <= 10000
    lines = [line for line in log.splitlines() if "/v1/chat/completions" in line]
    assert len(lines) == 1
    assert "1 image" in lines[0] and "-> 200" in lines[0]
    assert "big.jpg" not in log  # no references in the log


def test_the_command_refuses_a_bad_upstream_as_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mediagate", "proxy", "--upstream", "ftp://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "upstream" in done.stderr


def test_re_encoding_fits_max_image_bytes(upstream: RecordingUpstream) -> None:
    noisy = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    with _proxy(upstream, max_image_bytes=60_000) as proxy:
        _client(proxy).chat.completions.create(
            model="m",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": data_url(buffer.getvalue())},
                        }
                    ],
                }
            ],
        )
    url = upstream.last()["messages"][0]["content"][0]["image_url"]["url"]
    assert len(base64.b64decode(url.split(",", 1)[1])) <= 60_000
    assert _image_of(url).size[0] / _image_of(url).size[1] == pytest.approx(800 / 600, rel=0.01)


def test_json_nested_past_the_parser_is_a_400_error_body(upstream: RecordingUpstream) -> None:
    with _proxy(upstream) as proxy:
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions", data=b"[" * 200_000, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
    with caught.value as error:
        assert error.code == 400
    assert upstream.received == []


def test_a_compressed_request_reaches_the_upstream_as_plain_json(
    upstream: RecordingUpstream, media: LoopbackServer
) -> None:
    import gzip

    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": media.url("/big.jpg")}}],
            }
        ],
    }
    with _proxy(upstream) as proxy:
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions",
            data=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert json.loads(reply.read())["object"] == "chat.completion"
    received = upstream.received[-1]
    assert "Content-Encoding" not in received.headers
    assert received.json()["messages"][0]["content"][0]["image_url"]["url"].startswith("data:")


def test_a_body_over_the_size_limit_is_a_413_error_body(upstream: RecordingUpstream) -> None:
    with _proxy(upstream, max_request_bytes=1000) as proxy:
        request = urllib.request.Request(
            f"{proxy.url}/v1/chat/completions",
            data=json.dumps({"messages": [], "pad": "x" * 5000}).encode(),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
    with caught.value as error:
        assert error.code == 413
        assert json.loads(error.read())["error"]["code"] == "max_request_bytes"
    assert upstream.received == []


@pytest.mark.parametrize(
    "config",
    [
        {"max_image_pixels": 0},
        {"max_image_pixels": -5},
        {"max_image_bytes": True},
        {"video_as_frames": 0},
        {"image_quality": 0},
        {"image_quality": 101},
        {"image_format": "gif"},
        {"upstream": "file:///etc/passwd"},
    ],
)
def test_bad_proxy_settings_are_refused(config: dict[str, Any]) -> None:
    settings = {"upstream": "http://127.0.0.1:1", **config}
    with pytest.raises(ValueError):
        ProxyConfig(**settings)


@pytest.mark.parametrize("flags", [["--max-image-pixels", "-1"], ["--video-as-frames", "0"]])
def test_the_command_refuses_bad_settings_as_usage_errors(flags: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mediagate", "proxy", "--upstream", "http://127.0.0.1:1", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
