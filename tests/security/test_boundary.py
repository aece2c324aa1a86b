"""One error boundary, request budgets and cache judgement at the connector (B1, B2, B5, B8)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from builders import LoopbackServer, Route, data_url, jpeg_bytes, png_bytes
from mediagate import (
    DecodedBudget,
    DecodeError,
    ImageMediaIO,
    MediaCache,
    MediaConnector,
    MediaError,
    MediaIO,
    MediaPolicy,
    OptionError,
    PolicyError,
    TooLargeError,
)


class Exploding(MediaIO[bytes]):
    """A MediaIO whose decoder raises whatever it is given."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def load_bytes(self, data: bytes) -> bytes:
        raise self.exc


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("secret-value"),
        OverflowError("secret-overflow"),
        SyntaxError("secret-syntax"),
        UnicodeEncodeError("ascii", "\ud800", 0, 1, "secret-surrogate"),
        TypeError("secret-type"),
        AttributeError("secret-attr"),
        AssertionError("secret-assert"),
        NotImplementedError("secret-ni"),
        RuntimeError("secret-runtime"),
        KeyError("secret-key"),
        IndexError("secret-index"),
        ZeroDivisionError("secret-zero"),
        RecursionError("secret-recursion"),
        OSError("secret-os"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_anything_a_decoder_raises_becomes_a_decode_error(
    exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    io = Exploding(exc)
    with caplog.at_level(logging.DEBUG, logger="mediagate"):
        for load in (
            lambda: io.load_bytes(b"x"),
            lambda: io.load_base64("image/png", "eA=="),
        ):
            with pytest.raises(DecodeError) as caught:
                load()
            assert caught.value.http_status == 422
            assert caught.value.__cause__ is exc
            assert "secret" not in str(caught.value)
    assert any(type(exc).__name__ in record.getMessage() for record in caplog.records)


def test_memory_errors_become_too_large_and_interrupts_pass_through() -> None:
    with pytest.raises(TooLargeError) as caught:
        Exploding(MemoryError()).load_bytes(b"x")
    assert caught.value.limit == "memory" and caught.value.http_status == 413
    with pytest.raises(KeyboardInterrupt):
        Exploding(KeyboardInterrupt()).load_bytes(b"x")
    with pytest.raises(asyncio.CancelledError):
        Exploding(asyncio.CancelledError()).load_bytes(b"x")


def test_the_connector_maps_errors_of_a_custom_media_io(connector: MediaConnector) -> None:
    url = data_url(b"abc", "application/octet-stream")
    with pytest.raises(DecodeError):
        connector.load_from_url(url, Exploding(struct_error()))
    with pytest.raises(DecodeError):
        asyncio.run(connector.load_from_url_async(url, Exploding(ValueError("x"))))


def struct_error() -> BaseException:
    import struct

    try:
        struct.unpack("<I", b"")
    except struct.error as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("value", [None, 3.5, [], {}, object(), b"\xff\xfe"])
def test_wrong_argument_types_are_typed_errors(connector: MediaConnector, value: Any) -> None:
    with pytest.raises(MediaError):
        connector.fetch_image(value)
    with pytest.raises(MediaError):
        asyncio.run(connector.fetch_image_async(value))
    with pytest.raises(MediaError):
        ImageMediaIO().load_base64("image/png", value)
    with pytest.raises(MediaError):
        ImageMediaIO().load_bytes(value)


@pytest.mark.parametrize("value", [None, 3.5, [], object(), "\ud800", "%%%"])
def test_wrong_embedding_payloads_are_typed_errors(connector: MediaConnector, value: Any) -> None:
    with pytest.raises(MediaError):
        connector.fetch_image_embedding(value)
    with pytest.raises(MediaError):
        asyncio.run(connector.fetch_audio_embedding_async(value))


def test_a_lone_surrogate_in_a_data_url_is_a_typed_error(connector: MediaConnector) -> None:
    for url in ("data:image/png,\ud800abc", "data:image/png;base64,\ud800AAAA"):
        with pytest.raises(MediaError) as caught:
            connector.fetch_image(url)
        assert "\ud800" not in str(caught.value)


@pytest.mark.parametrize("key", ["policy", "image_io", "decoded_budget", "self"])
@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_request_options_that_collide_with_constructor_keywords(
    connector: MediaConnector, key: str, modality: str
) -> None:
    fetch = {
        "image": connector.fetch_image,
        "video": connector.fetch_video,
        "audio": connector.fetch_audio,
    }[modality]
    with pytest.raises(OptionError) as caught:
        fetch(data_url(png_bytes()), media_io_kwargs={key: 1})
    assert caught.value.option == key
    with pytest.raises(OptionError):
        MediaConnector({modality: {key: 1}})
    with pytest.raises(OptionError):
        fetch(data_url(png_bytes()), media_io_kwargs={1: 2})  # type: ignore[dict-item]


def test_fetch_timeout_must_be_a_positive_number(connector: MediaConnector) -> None:
    for bad in (0, -1, float("nan"), float("inf"), "3", True):
        with pytest.raises(OptionError):
            connector.load_from_url("http://127.0.0.1:9/x.png", ImageMediaIO(), fetch_timeout=bad)


# -- decoded-output budgets ------------------------------------------------------------


def test_an_image_over_the_item_budget_is_refused_before_decoding() -> None:
    image = png_bytes(Image.new("RGB", (400, 300)))
    policy = MediaPolicy(max_decoded_bytes=400 * 300 * 3 - 1)
    with pytest.raises(TooLargeError) as caught:
        ImageMediaIO(policy=policy).load_bytes(image)
    assert caught.value.limit == "max_decoded_bytes" and caught.value.http_status == 413
    assert np.asarray(
        ImageMediaIO(policy=policy.replace(max_decoded_bytes=None)).load_bytes(image)
    ).shape == (300, 400, 3)


def test_a_request_budget_is_shared_by_its_items() -> None:
    image = data_url(png_bytes(Image.new("RGB", (100, 100))))  # 30,000 bytes decoded
    budget = DecodedBudget(70_000)
    with MediaConnector(decoded_budget=budget) as conn:
        conn.fetch_image(image)
        conn.fetch_image(image)
        assert budget.used == 60_000
        with pytest.raises(TooLargeError) as caught:
            conn.fetch_image(image)
    assert caught.value.limit in ("request_decoded_bytes", "max_decoded_bytes")
    assert budget.used == 60_000 and budget.available == 10_000


def test_failed_items_give_their_reservation_back() -> None:
    budget = DecodedBudget(50_000)
    with MediaConnector(decoded_budget=budget) as conn:
        with pytest.raises(DecodeError):
            conn.fetch_image(data_url(b"not an image"))
        assert budget.available == 50_000
        conn.fetch_image(data_url(png_bytes(Image.new("RGB", (100, 100)))))
    assert budget.used == 30_000


def test_concurrent_items_wait_for_reservations_instead_of_failing() -> None:
    image = data_url(jpeg_bytes(200, 100))  # 60,000 bytes decoded each
    budget = DecodedBudget(8 * 60_000)
    with MediaConnector(decoded_budget=budget, policy=MediaPolicy(max_decoded_bytes=10**6)) as c:

        async def many() -> list[Any]:
            return await asyncio.gather(*(c.fetch_image_async(image) for _ in range(8)))

        assert len(asyncio.run(many())) == 8
    assert budget.used == 8 * 60_000


def test_decoded_budget_arithmetic() -> None:
    budget = DecodedBudget(100)
    first = budget.reserve(60)
    second = budget.reserve(60, timeout=0.01)  # only 40 left, and it does not wait long
    assert (first, second) == (60, 40)
    budget.settle(first, 50)
    budget.release(second)
    assert (budget.used, budget.available) == (50, 50)
    with pytest.raises(TooLargeError):
        budget.charge(51)
    budget.charge(50)
    with pytest.raises(TooLargeError):
        budget.reserve(1)
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError):
            DecodedBudget(bad)  # type: ignore[arg-type]


def test_a_waiting_reservation_is_woken_by_a_settle() -> None:
    budget = DecodedBudget(100)
    held = budget.reserve(100)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(budget.reserve(80, timeout=5)))
    waiter.start()
    budget.settle(held, 10)
    waiter.join(5)
    assert got == [80]


# -- the cache serves only what the requesting policy would fetch ---------------------


def test_a_cached_entry_is_not_served_to_a_stricter_policy(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.routes["/secret.png"] = Route(png_bytes())
    url = server.url("/secret.png")
    with MediaCache(tmp_path / "cache") as cache:
        loose = MediaConnector(cache=cache, policy=MediaPolicy(allow_private_networks=True))
        with loose:
            loose.fetch_image(url)
            loose.fetch_image(url)
        assert server.count() == 1  # the second was a hit
        with MediaConnector(cache=cache) as strict:
            with pytest.raises(PolicyError):
                strict.fetch_image(url)
            with pytest.raises(PolicyError):
                asyncio.run(strict.fetch_image_async(url))
        with MediaConnector(cache=cache, allowed_media_domains=["media.example"]) as listed:
            with pytest.raises(PolicyError):
                listed.fetch_image(url)
    assert server.count() == 1


def test_an_entry_reached_through_a_redirect_is_not_served_to_other_rules(
    server: LoopbackServer, tmp_path: Path
) -> None:
    server.routes["/hop"] = Route(status=302, headers={"Location": server.url("/img.png")})
    server.routes["/img.png"] = Route(png_bytes())
    with MediaCache(tmp_path / "cache") as cache:
        allowed = MediaPolicy(allow_private_networks=True)
        with MediaConnector(cache=cache, policy=allowed) as loose:
            loose.fetch_image(server.url("/hop"))
        no_redirects = allowed.replace(max_redirects=0)
        with MediaConnector(cache=cache, policy=no_redirects) as strict:
            with pytest.raises(MediaError):
                strict.fetch_image(server.url("/hop"))
        with MediaConnector(cache=cache, policy=allowed) as same:
            same.fetch_image(server.url("/hop"))
    assert server.count("/hop") == 2 and server.count("/img.png") == 1
