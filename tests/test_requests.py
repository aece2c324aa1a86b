"""Whole requests: every media part of a Chat Completions or Responses request, resolved.

Each test sends a request body as a client would and checks what a server built on
``resolve_chat_request`` would see: the items in request order with their JSON locations,
what reached the media server, how long it took, and the error a client would get back.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
from mediagate import (
    DecodeError,
    FetchError,
    FetchTimeout,
    ImageEmbeddingMediaIO,
    MediaCache,
    MediaConnector,
    MediaError,
    MediaPolicy,
    OptionError,
    PolicyError,
    RequestLimits,
    ResolvedRequest,
    TooLargeError,
    content_hash,
    find_media_parts,
    openai_error_body,
    resolve_chat_request,
    resolve_chat_request_async,
)

# -- request builders -------------------------------------------------------------------


def chat(*parts: Any) -> dict[str, Any]:
    """A Chat Completions request with one user message holding ``parts``."""
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}


def image_part(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}, **extra}


def wav_base64(seconds: float = 0.25, rate: int = 8000) -> str:
    return base64.b64encode(soundfile_bytes(tone(seconds, rate), rate)).decode()


def at(index: int, tail: str = "image_url.url") -> str:
    """The location of part ``index`` of the first message of a ``chat`` request."""
    return f"messages[0].content[{index}].{tail}"


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server(shared_server: LoopbackServer) -> LoopbackServer:
    """The suite's loopback server, started once for this module (stopping one takes half a
    second): no routes, an empty request log and a fresh gauge for every test."""
    shared_server.routes.clear()
    shared_server.requests.clear()
    shared_server.gauge = type(shared_server.gauge)()
    return shared_server


@pytest.fixture
def images(server: LoopbackServer) -> Iterator[LoopbackServer]:
    """The server with a 64x48 JPEG at /a.jpg and a 32x16 one at /b.jpg."""
    server.routes["/a.jpg"] = Route(jpeg_bytes(64, 48), headers={"Content-Type": "image/jpeg"})
    server.routes["/b.jpg"] = Route(jpeg_bytes(32, 16), headers={"Content-Type": "image/jpeg"})
    yield server


# -- 1. every part type, in request order -----------------------------------------------


def test_chat_part_types_resolve_in_request_order(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    torch = pytest.importorskip("torch")
    rate = 16000
    images.routes["/tone.wav"] = Route(soundfile_bytes(tone(0.5, rate), rate))
    images.routes["/clip.mp4"] = Route(encode_clip(frames=12))
    embedding_io = ImageEmbeddingMediaIO()
    tensor = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    embeds = embedding_io.encode_base64(tensor)
    lookups: list[str] = []

    def lookup(file_id: str) -> str:
        lookups.append(file_id)
        return images.url("/b.jpg")

    request = chat(
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": images.url("/a.jpg")},
        {"type": "image_url", "image_url": {"url": images.url("/b.jpg"), "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": wav_base64(0.25, 8000), "format": "wav"}},
        {"type": "file", "file": {"file_data": data_url(png_bytes()), "filename": "p.png"}},
        {"type": "file", "file": {"file_id": "file-123"}},
        {"type": "audio_url", "audio_url": {"url": images.url("/tone.wav")}},
        {"type": "video_url", "video_url": {"url": images.url("/clip.mp4")}},
        {"type": "image_embeds", "image_embeds": embeds},
        {"type": "image_embeds", "image_embeds": {"image_embeds": embeds}},
        {"type": "image_url", "image_url": {"url": images.url("/a.jpg")}, "uuid": "pic-1"},
    )
    result = resolve_chat_request(
        request,
        connector,
        file_lookup=lookup,
        media_io_kwargs={"video": {"num_frames": 4}},
    )
    assert result.ok, result.errors
    assert [(item.location, item.modality) for item in result.items] == [
        ("messages[0].content[1].image_url", "image"),
        ("messages[0].content[2].image_url.url", "image"),
        ("messages[0].content[3].input_audio.data", "audio"),
        ("messages[0].content[4].file.file_data", "image"),
        ("messages[0].content[5].file.file_id", "image"),
        ("messages[0].content[6].audio_url.url", "audio"),
        ("messages[0].content[7].video_url.url", "video"),
        ("messages[0].content[8].image_embeds", "image_embedding"),
        ("messages[0].content[9].image_embeds", "image_embedding"),
        ("messages[0].content[10].image_url.url", "image"),
    ]
    media = [item.media for item in result.items]
    assert media[0].size == (64, 48) and media[1].size == (32, 16)
    assert media[3].size == (40, 30)  # the PNG inside the file part
    assert media[4].size == (32, 16)  # what the file lookup pointed at
    audio, audio_rate = media[2]
    assert audio_rate == 8000 and len(audio) == 2000
    audio, audio_rate = media[5]
    assert audio_rate == rate and len(audio) == rate // 2
    frames, metadata = media[6]
    assert frames.shape == (4, 48, 64, 3) and isinstance(metadata, dict)
    assert torch.equal(media[7], tensor)
    assert set(media[8]) == {"image_embeds"} and torch.equal(media[8]["image_embeds"], tensor)
    assert result.items[9].uuid == "pic-1" and result.items[0].uuid is None
    assert lookups == ["file-123"]
    assert len(result.media("image")) == 5 and len(result.media("audio")) == 2
    assert result.texts == ["describe"]
    # /a.jpg twice and /b.jpg twice (once through the lookup): one request each.
    assert sorted(r.path for r in images.requests) == ["/a.jpg", "/b.jpg", "/clip.mp4", "/tone.wav"]
    assert result.downloaded_bytes == sum(
        len(images.routes[path].body) for path in ("/a.jpg", "/b.jpg", "/clip.mp4", "/tone.wav")
    )
    assert result.decoded_bytes > 0


def test_find_media_parts_fetches_nothing(images: LoopbackServer) -> None:
    parts = find_media_parts(
        chat(
            {"type": "text", "text": "x"},
            image_part(images.url("/a.jpg"), uuid="u"),
            {"type": "file", "file": {"file_id": "f-1"}},
        )
    )
    assert [(p.index, p.content, p.part_type, p.modality) for p in parts] == [
        (0, 1, "image_url", "image"),
        (1, 2, "file", "auto"),
    ]
    assert parts[0].reference == images.url("/a.jpg") and parts[0].uuid == "u"
    assert parts[1].file_id == "f-1" and parts[1].reference is None
    assert images.count() == 0


def test_file_id_through_an_async_lookup_returning_bytes(connector: MediaConnector) -> None:
    async def lookup(file_id: str) -> bytes | None:
        await asyncio.sleep(0)
        return png_bytes() if file_id == "file-png" else None

    result = resolve_chat_request(
        chat({"type": "file", "file": {"file_id": "file-png"}}), connector, file_lookup=lookup
    )
    (item,) = result.items
    assert item.ok and item.modality == "image" and item.media.size == (40, 30)
    assert item.location == "messages[0].content[0].file.file_id"
    assert result.downloaded_bytes == 0


def test_responses_input_items(images: LoopbackServer, connector: MediaConnector) -> None:
    rate = 8000
    images.routes["/tone.wav"] = Route(soundfile_bytes(tone(0.5, rate), rate))
    request = {
        "model": "m",
        "input": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "compare"},
                    {"type": "input_image", "image_url": images.url("/a.jpg"), "detail": "auto"},
                    {"type": "input_image", "file_id": "file-b"},
                    {"type": "input_file", "file_data": data_url(png_bytes())},
                    {"type": "input_file", "file_url": images.url("/tone.wav")},
                    {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}},
                ],
            },
        ],
    }
    result = resolve_chat_request(
        request, connector, file_lookup=lambda file_id: images.url("/b.jpg")
    )
    assert result.ok, result.errors
    assert [(item.location, item.modality) for item in result.items] == [
        ("input[1].content[1].image_url", "image"),
        ("input[1].content[2].file_id", "image"),
        ("input[1].content[3].file_data", "image"),
        ("input[1].content[4].file_url", "audio"),
        ("input[1].content[5].input_audio.data", "audio"),
    ]
    sizes = [item.media.size for item in result.items[:3]]
    assert sizes == [(64, 48), (32, 16), (40, 30)]
    assert result.items[3].media[1] == rate
    assert result.texts == ["be brief", "compare"]


def test_responses_plain_string_input(connector: MediaConnector) -> None:
    result = resolve_chat_request({"model": "m", "input": "just words"}, connector)
    assert result.items == [] and result.texts == ["just words"] and result.ok


def test_shorthand_part_without_a_type(images: LoopbackServer, connector: MediaConnector) -> None:
    result = resolve_chat_request(chat({"image_url": {"url": images.url("/a.jpg")}}), connector)
    (item,) = result.items
    assert item.ok and item.modality == "image" and item.media.size == (64, 48)
    assert item.location == at(0)


# -- 2. texts with placeholders ---------------------------------------------------------


def test_texts_put_placeholders_in_place(images: LoopbackServer, connector: MediaConnector) -> None:
    request = {
        "messages": [
            {"role": "system", "content": "you see"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "first"},
                    image_part(images.url("/a.jpg")),
                    {"type": "text", "text": "then"},
                    {"type": "input_audio", "input_audio": {"data": wav_base64()}},
                    image_part(images.url("/b.jpg")),
                    {"type": "text", "text": "end"},
                ],
            },
            {"role": "assistant", "content": None},
        ]
    }
    result = resolve_chat_request(request, connector, placeholders={"image": "<image>"})
    assert result.ok
    # The audio part has no placeholder: it is left out, not shown as an empty line.
    assert result.texts == ["you see", "first\n<image>\nthen\n<image>\nend", ""]
    both = resolve_chat_request(
        request, connector, placeholders={"image": "<image>", "audio": "<audio>"}
    )
    assert both.texts[1] == "first\n<image>\nthen\n<audio>\n<image>\nend"


# -- 3. the same reference is fetched once ----------------------------------------------


def test_same_url_twice_is_requested_once(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    url = images.url("/a.jpg")
    result = resolve_chat_request(
        chat(image_part(url), {"type": "text", "text": "again"}, image_part(url)), connector
    )
    assert result.ok and images.count("/a.jpg") == 1
    first, second = result.items
    assert first.content_hash == second.content_hash is not None
    assert (first.location, second.location) == (at(0), at(2))
    assert second.media.size == (64, 48)


def test_same_url_as_image_and_as_file_is_requested_once(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    url = images.url("/a.jpg")
    result = resolve_chat_request(
        chat(image_part(url), {"type": "file", "file": {"file_id": "f"}}),
        connector,
        file_lookup=lambda file_id: url,
    )
    assert result.ok, result.errors
    assert images.count("/a.jpg") == 1
    assert [item.modality for item in result.items] == ["image", "image"]
    assert result.items[0].content_hash == result.items[1].content_hash


# -- 4. concurrency ---------------------------------------------------------------------


def test_parts_are_fetched_concurrently(server: LoopbackServer, connector: MediaConnector) -> None:
    for i in range(8):
        server.routes[f"/{i}.jpg"] = Route(jpeg_bytes(32, 24), delay=0.3)
    start = time.perf_counter()
    result = resolve_chat_request(
        chat(*(image_part(server.url(f"/{i}.jpg")) for i in range(8))), connector
    )
    elapsed = time.perf_counter() - start
    assert result.ok and len(result.media("image")) == 8
    assert elapsed < 1.6  # one after another would take 2.4 s
    assert server.gauge.peak >= 2


# -- 5. the request deadline ------------------------------------------------------------


def test_request_deadline_fail_fast(images: LoopbackServer, connector: MediaConnector) -> None:
    images.routes["/slow.jpg"] = Route(jpeg_bytes(), delay=2.0)
    request = chat(image_part(images.url("/a.jpg")), image_part(images.url("/slow.jpg")))
    start = time.perf_counter()
    with pytest.raises(FetchTimeout) as caught:
        resolve_chat_request(request, connector, limits=RequestLimits(timeout=0.3))
    assert time.perf_counter() - start < 1.5
    assert caught.value.http_status == 504 and caught.value.param == at(1)
    assert str(caught.value).startswith(at(1))


def test_request_deadline_collect(images: LoopbackServer, connector: MediaConnector) -> None:
    images.routes["/slow.jpg"] = Route(jpeg_bytes(), delay=2.0)
    request = chat(
        image_part(images.url("/a.jpg")),
        image_part(images.url("/slow.jpg")),
        image_part(images.url("/b.jpg")),
    )
    start = time.perf_counter()
    result = resolve_chat_request(
        request, connector, limits=RequestLimits(timeout=0.3), errors="collect"
    )
    assert time.perf_counter() - start < 1.5
    fast, slow, other = result.items
    assert fast.ok and fast.media.size == (64, 48)
    assert other.ok and other.media.size == (32, 16)
    assert isinstance(slow.error, FetchTimeout) and slow.media is None
    assert slow.error.param == at(1) and slow.error.http_status == 504
    assert result.errors == [slow.error] and not result.ok


# -- 6. item counts, before any I/O -----------------------------------------------------


def test_max_items_refuses_before_any_request(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    request = chat(*(image_part(images.url(p)) for p in ("/a.jpg", "/b.jpg", "/a.jpg?3")))
    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(request, connector, limits=RequestLimits(max_items=2))
    assert caught.value.limit == "max_items" and caught.value.param == at(2)
    assert caught.value.http_status == 413
    assert images.count() == 0

    result = resolve_chat_request(
        request, connector, limits=RequestLimits(max_items=2), errors="collect"
    )
    assert [item.ok for item in result.items] == [True, True, False]
    error = result.items[2].error
    assert isinstance(error, TooLargeError) and error.limit == "max_items"
    assert images.count("/a.jpg?3") == 0


def test_max_items_per_modality(images: LoopbackServer, connector: MediaConnector) -> None:
    request = chat(
        {"type": "input_audio", "input_audio": {"data": wav_base64()}},
        image_part(images.url("/a.jpg")),
        image_part(images.url("/b.jpg")),
    )
    limits = RequestLimits(max_items_per_modality={"image": 1})
    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(request, connector, limits=limits)
    assert caught.value.limit == "max_items_per_modality" and caught.value.param == at(2)
    assert images.count() == 0

    result = resolve_chat_request(request, connector, limits=limits, errors="collect")
    assert [item.ok for item in result.items] == [True, True, False]
    assert result.items[1].media.size == (64, 48)
    assert images.count("/b.jpg") == 0


# -- 7. a request can only lower the server's limits ------------------------------------


def test_request_limits_only_lower(images: LoopbackServer, connector: MediaConnector) -> None:
    request = chat(*(image_part(images.url(p)) for p in ("/a.jpg", "/b.jpg", "/a.jpg?3")))
    server_limits = RequestLimits(max_items=2)
    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(
            request, connector, limits=server_limits, request_limits={"max_items": 10}
        )
    assert caught.value.limit == "max_items" and caught.value.param == at(2)

    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(
            request, connector, limits=server_limits, request_limits={"max_items": 1}
        )
    assert caught.value.param == at(1)
    assert images.count() == 0

    with pytest.raises(OptionError) as option:
        resolve_chat_request(request, connector, request_limits={"max_itemz": 1})
    assert option.value.http_status == 400 and "max_itemz" in str(option.value)


# -- 8. the download and decoded budgets ------------------------------------------------


def test_download_budget_is_shared_by_the_requests_downloads(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    body = jpeg_bytes(320, 240)
    server.routes["/1.jpg"] = Route(body)
    server.routes["/2.jpg"] = Route(body)
    limits = RequestLimits(max_download_bytes=len(body) * 3 // 2)
    request = chat(image_part(server.url("/1.jpg")), image_part(server.url("/2.jpg")))
    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(request, connector, limits=limits)
    assert caught.value.limit == "max_download_bytes"
    assert caught.value.param in (at(0), at(1))
    assert caught.value.http_status == 413


def test_data_urls_are_not_counted_as_downloads(connector: MediaConnector) -> None:
    body = jpeg_bytes(320, 240)
    inline = chat(
        image_part(data_url(body, "image/jpeg")), image_part(data_url(body, "image/jpeg"))
    )
    result = resolve_chat_request(inline, connector, limits=RequestLimits(max_download_bytes=10))
    assert result.ok and result.downloaded_bytes == 0
    assert [item.media.size for item in result.items] == [(320, 240)] * 2


def test_decoded_budget(server: LoopbackServer, connector: MediaConnector) -> None:
    server.routes["/big.jpg"] = Route(jpeg_bytes(640, 480))
    request = chat(image_part(server.url("/big.jpg")))
    with pytest.raises(TooLargeError) as caught:
        resolve_chat_request(
            request, connector, limits=RequestLimits(max_decoded_bytes=640 * 480 * 3 // 2)
        )
    assert caught.value.param == at(0) and caught.value.http_status == 413

    fits = resolve_chat_request(
        request, connector, limits=RequestLimits(max_decoded_bytes=640 * 480 * 3 * 4)
    )
    assert fits.ok and fits.decoded_bytes >= 640 * 480 * 3


# -- 9. fail-fast and collect -----------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(320, 240)
    return data[: len(data) // 3]


def mixed_request(server: LoopbackServer) -> dict[str, Any]:
    server.routes["/good.jpg"] = Route(jpeg_bytes(64, 48))
    server.routes["/broken.jpg"] = Route(truncated_jpeg())
    return chat(
        image_part(server.url("/good.jpg")),
        image_part(server.url("/missing.jpg")),
        image_part("http://10.1.2.3/x.jpg"),
        image_part(server.url("/broken.jpg")),
    )


def test_fail_fast_raises_one_located_error(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    request = mixed_request(server)
    with pytest.raises(MediaError) as caught:
        resolve_chat_request(request, connector)
    expected = {at(1): (FetchError, 422), at(2): (PolicyError, 403), at(3): (DecodeError, 422)}
    assert caught.value.param in expected
    cls, status = expected[caught.value.param]
    assert isinstance(caught.value, cls) and caught.value.http_status == status
    assert server.count("/x.jpg") == 0


def test_collect_gives_each_part_its_own_error(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    result = resolve_chat_request(mixed_request(server), connector, errors="collect")
    good, missing, private, broken = result.items
    assert good.ok and good.media.size == (64, 48) and good.content_hash
    assert isinstance(missing.error, FetchError) and missing.error.http_status == 422
    assert isinstance(private.error, PolicyError) and private.error.http_status == 403
    assert isinstance(broken.error, DecodeError) and broken.error.http_status == 422
    assert [item.error.param for item in (missing, private, broken) if item.error] == [
        at(1),
        at(2),
        at(3),
    ]
    assert all(item.media is None for item in (missing, private, broken))
    assert result.errors == [missing.error, private.error, broken.error]
    assert result.media("image") == [good.media]


def test_unrecognised_bytes_are_a_decode_error(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    server.routes["/junk.jpg"] = Route(b"\x00 not an image " * 64)
    with pytest.raises(DecodeError) as caught:
        resolve_chat_request(chat(image_part(server.url("/junk.jpg"))), connector)
    assert caught.value.param == at(0) and caught.value.http_status in (415, 422)


@pytest.mark.parametrize("reference", ["ftp://127.0.0.1/a.jpg", "javascript:alert(1)"])
def test_refused_reference_stops_the_request_before_any_fetch(
    images: LoopbackServer, connector: MediaConnector, reference: str
) -> None:
    request = chat(
        image_part(images.url("/a.jpg")),
        {"type": "image_url", "image_url": reference},
        image_part(images.url("/b.jpg")),
    )
    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(request, connector)
    assert caught.value.http_status == 400 and caught.value.param == at(1, "image_url")
    assert images.count() == 0


# -- 10. OpenAI error bodies ------------------------------------------------------------


def test_openai_error_body_shapes(images: LoopbackServer, connector: MediaConnector) -> None:
    request = chat(image_part(images.url("/a.jpg")), image_part(images.url("/b.jpg")))
    with pytest.raises(TooLargeError) as too_many:
        resolve_chat_request(request, connector, limits=RequestLimits(max_items=1))
    body = openai_error_body(too_many.value)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == at(1) and body["error"]["code"] == "max_items"
    assert body["error"]["message"].startswith(at(1))

    images.routes["/down.jpg"] = Route(b"unavailable", 503)
    with pytest.raises(FetchError) as upstream:
        resolve_chat_request(chat(image_part(images.url("/down.jpg"))), connector)
    assert upstream.value.http_status >= 500
    body = openai_error_body(upstream.value)
    assert body["error"]["type"] == "upstream_error" and body["error"]["param"] == at(0)

    secret = RuntimeError("password=hunter2 at /srv/secret")
    body = openai_error_body(secret)
    assert body["error"]["code"] == "internal_error" and body["error"]["param"] is None
    assert "hunter2" not in str(body) and "secret" not in str(body)


# -- 11. hostile request shapes ---------------------------------------------------------


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"nested": [value]}
    return value


HOSTILE: list[tuple[str, Any, str]] = [
    ("messages a number", {"messages": 42}, "messages"),
    ("messages a string", {"messages": "hello"}, "messages"),
    ("messages an object", {"messages": {"role": "user", "content": "x"}}, "messages"),
    ("message not an object", {"messages": ["hello"]}, "messages[0]"),
    ("content a number", {"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ("part not an object", chat(3.5), "messages[0].content[0]"),
    ("url an int", chat({"type": "image_url", "image_url": {"url": 12}}), at(0)),
    ("url a list", chat({"type": "image_url", "image_url": {"url": ["a"]}}), at(0)),
    ("url a dict", chat({"type": "image_url", "image_url": {"url": {"u": 1}}}), at(0)),
    ("image_url a list", chat({"type": "image_url", "image_url": [1]}), at(0, "image_url")),
    ("uuid too long", chat(image_part("data:,x", uuid="u" * 5000)), at(0, "uuid")),
    ("uuid a number", chat(image_part("data:,x", uuid=17)), at(0, "uuid")),
    (
        "format with a slash",
        chat({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav/../x"}}),
        at(0, "input_audio.format"),
    ),
    (
        "format of junk",
        chat({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "WAV;x=<y>"}}),
        at(0, "input_audio.format"),
    ),
    (
        "format too long",
        chat({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "w" * 40}}),
        at(0, "input_audio.format"),
    ),
    (
        "audio data not a string",
        chat({"type": "input_audio", "input_audio": {"data": [1, 2], "format": "wav"}}),
        at(0, "input_audio.data"),
    ),
    (
        "file without data or id",
        chat({"type": "file", "file": {"filename": "a.pdf"}}),
        at(0, "file"),
    ),
    ("file not an object", chat({"type": "file", "file": "abc"}), at(0, "file")),
    (
        "empty embeds mapping",
        chat({"type": "image_embeds", "image_embeds": {}}),
        at(0, "image_embeds"),
    ),
    ("type not a string", chat({"type": ["image_url"]}), at(0, "type")),
    ("neither messages nor input", {"model": "m", "prompt": "x"}, ""),
]


@pytest.mark.parametrize(
    ("request_body", "location"),
    [pytest.param(body, where, id=name) for name, body, where in HOSTILE],
)
def test_hostile_request_shapes_are_refused_with_their_location(
    connector: MediaConnector, request_body: Any, location: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(request_body, connector, errors="collect")
    assert caught.value.http_status == 400
    assert caught.value.param == location
    assert openai_error_body(caught.value)["error"]["type"] == "invalid_request_error"


def test_unknown_parts_ignored_or_refused(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    request = chat(
        {"type": "bogus", "bogus": _deep(10_000)},
        image_part(images.url("/a.jpg")),
        {"type": "tool_call", "anything": [None, {"x": [1, 2, {"y": "z"}]}]},
    )
    result = resolve_chat_request(request, connector)
    assert [item.location for item in result.items] == [at(1)] and result.ok

    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(request, connector, unknown_parts="refuse")
    assert caught.value.http_status == 400 and caught.value.param == "messages[0].content[0]"
    assert images.count() == 1  # only the first, accepted, resolution fetched


def test_twenty_thousand_text_parts_resolve_quickly(connector: MediaConnector) -> None:
    parts = [{"type": "text", "text": f"t{i}"} for i in range(20_000)]
    start = time.perf_counter()
    result = resolve_chat_request(chat(*parts), connector)
    assert time.perf_counter() - start < 2.0
    assert result.items == [] and result.texts[0].count("\n") == 19_999


# -- 12. file ids -----------------------------------------------------------------------


def file_request() -> dict[str, Any]:
    return chat({"type": "file", "file": {"file_id": "file-9"}})


FILE_AT = "messages[0].content[0].file.file_id"


def test_file_id_without_a_lookup_is_refused(connector: MediaConnector) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(file_request(), connector)
    assert caught.value.http_status == 400 and caught.value.param == FILE_AT


def test_file_id_unknown_to_the_lookup_is_404(connector: MediaConnector) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(file_request(), connector, file_lookup=lambda file_id: None)
    assert caught.value.http_status == 404 and caught.value.param == FILE_AT


def test_failing_lookup_does_not_leak_its_message(connector: MediaConnector) -> None:
    def lookup(file_id: str) -> str:
        raise RuntimeError("db password=hunter2")

    with pytest.raises(FetchError) as caught:
        resolve_chat_request(file_request(), connector, file_lookup=lookup)
    assert caught.value.param == FILE_AT
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in str(openai_error_body(caught.value))


def test_lookup_pointing_at_a_private_address_is_refused(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    server.routes["/a.jpg"] = Route(jpeg_bytes())
    with MediaConnector(policy=MediaPolicy()) as strict:
        with pytest.raises(PolicyError) as caught:
            resolve_chat_request(
                file_request(), strict, file_lookup=lambda file_id: server.url("/a.jpg")
            )
    assert caught.value.http_status == 403 and caught.value.param == FILE_AT
    assert server.count() == 0
    with pytest.raises(PolicyError):
        resolve_chat_request(
            file_request(), connector, file_lookup=lambda file_id: "http://10.1.2.3/a.jpg"
        )


def test_lookup_returning_something_else_is_a_fetch_error(connector: MediaConnector) -> None:
    with pytest.raises(FetchError) as caught:
        resolve_chat_request(file_request(), connector, file_lookup=lambda file_id: 12345)
    assert caught.value.param == FILE_AT


# -- 13. uuids --------------------------------------------------------------------------


def test_uuid_is_identity_only_within_a_namespace(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    request = chat(
        image_part(images.url("/a.jpg"), uuid="same"),
        image_part(images.url("/b.jpg"), uuid="same"),
    )
    plain = resolve_chat_request(request, connector)
    assert plain.items[0].content_hash != plain.items[1].content_hash

    tenant_a = resolve_chat_request(request, connector, uuid_namespace="tenant-a")
    assert tenant_a.ok
    assert tenant_a.items[0].content_hash == tenant_a.items[1].content_hash
    assert tenant_a.items[0].media.size == (64, 48) and tenant_a.items[1].media.size == (32, 16)
    tenant_b = resolve_chat_request(request, connector, uuid_namespace="tenant-b")
    assert tenant_b.items[0].content_hash != tenant_a.items[0].content_hash


def test_uuid_only_part(connector: MediaConnector) -> None:
    request = chat({"type": "image_url", "image_url": None, "uuid": "seen-before"})
    with pytest.raises(PolicyError) as caught:
        resolve_chat_request(request, connector)
    assert caught.value.http_status == 400 and caught.value.param == "messages[0].content[0]"

    result = resolve_chat_request(request, connector, uuid_namespace="tenant-a")
    (item,) = result.items
    assert item.ok and item.media is None and item.content_hash
    again = resolve_chat_request(request, connector, uuid_namespace="tenant-a")
    assert again.items[0].content_hash == item.content_hash


# -- 14. content identity ---------------------------------------------------------------


def test_content_hash_follows_bytes_and_options(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    body = images.routes["/a.jpg"].body
    request = chat(image_part(images.url("/a.jpg")), image_part(data_url(body, "image/jpeg")))
    result = resolve_chat_request(request, connector)
    over_http, inline = result.items
    assert over_http.content_hash == inline.content_hash is not None

    gray = resolve_chat_request(request, connector, media_io_kwargs={"image": {"image_mode": "L"}})
    assert gray.items[0].media.mode == "L"
    assert gray.items[0].content_hash != over_http.content_hash
    assert gray.items[0].content_hash == gray.items[1].content_hash
    assert content_hash("image", body) != content_hash("image", body, {"image_mode": "L"})
    assert content_hash("image", body) == content_hash("image", bytes(body))


# -- 15. the twins ----------------------------------------------------------------------


def test_sync_twin_inside_a_running_event_loop(
    images: LoopbackServer, connector: MediaConnector
) -> None:
    request = chat(image_part(images.url("/a.jpg")), image_part(images.url("/b.jpg")))

    async def handler() -> ResolvedRequest:
        # A blocking call from async code: asyncio.run would refuse to start here.
        return resolve_chat_request(request, connector)

    result = asyncio.run(handler())
    assert result.ok and [item.media.size for item in result.items] == [(64, 48), (32, 16)]


def test_async_twin(images: LoopbackServer, connector: MediaConnector) -> None:
    request = chat(image_part(images.url("/a.jpg")), image_part(images.url("/b.jpg")))

    async def both() -> list[ResolvedRequest]:
        return list(
            await asyncio.gather(
                resolve_chat_request_async(request, connector),
                resolve_chat_request_async(request, connector, errors="collect"),
            )
        )

    results = asyncio.run(both())
    assert all(r.ok and len(r.items) == 2 for r in results)
    assert results[0].items[1].media.size == (32, 16)


# -- 16. the cache ----------------------------------------------------------------------


def test_cached_request_makes_no_new_request(
    images: LoopbackServer, loopback_policy: MediaPolicy, tmp_path: Path
) -> None:
    request = chat(image_part(images.url("/a.jpg")), image_part(images.url("/b.jpg")))
    with MediaConnector(policy=loopback_policy, cache=MediaCache(tmp_path / "cache")) as conn:
        first = resolve_chat_request(request, conn)
        assert first.ok and images.count() == 2
        second = resolve_chat_request(request, conn)
    assert second.ok and images.count() == 2
    assert [item.content_hash for item in second.items] == [
        item.content_hash for item in first.items
    ]
    assert all(item.report is not None and item.report.cached for item in second.items)
    assert second.downloaded_bytes == 0
    assert np.array_equal(np.asarray(second.items[0].media), np.asarray(first.items[0].media))


def test_the_first_error_cancels_the_rest_and_nothing_outlives_the_request(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    server.routes["/slow.jpg"] = Route(jpeg_bytes(), delay=3.0)
    request = chat(image_part(server.url("/slow.jpg")), image_part(server.url("/missing.jpg")))

    async def run() -> tuple[float, set[asyncio.Task[Any]]]:
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            await resolve_chat_request_async(request, connector)
        assert caught.value.param == at(1)
        left = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
        return time.monotonic() - started, left

    elapsed, left = asyncio.run(run())
    assert elapsed < 2.0  # the slow part was not waited for
    assert left == set()


def test_counting_a_decoded_image_against_the_request_budget_builds_no_pil_copy(
    server: LoopbackServer, connector: MediaConnector
) -> None:
    # The array a JPEG decodes into is what the model needs; the PIL image is built only
    # when asked for, and measuring the item for the budget must not ask.
    server.routes["/a.jpg"] = Route(jpeg_bytes(640, 480))
    resolved = resolve_chat_request(chat(image_part(server.url("/a.jpg"))), connector)
    result = resolved.items[0].media
    assert "media" not in result.__dict__
    assert resolved.decoded_bytes == 640 * 480 * 3
