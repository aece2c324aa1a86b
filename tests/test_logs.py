"""One structured record per load on ``mediagate.load``: DEBUG when loaded, WARNING when
refused or failed, the reference shown without payload, credentials or query."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys

import pytest

from builders import LoopbackServer, Route, data_url, png_bytes
from mediagate import (
    FetchError,
    MediaConnector,
    MediaError,
    PolicyError,
    TooLargeError,
    resolve_chat_request,
)
from mediagate._observe import shown_reference

FIELDS = (
    "reference",
    "modality",
    "source",
    "num_bytes",
    "fetch_ms",
    "decode_ms",
    "cached",
    "error_type",
    "reason",
)
PNG = png_bytes()


@pytest.fixture
def media(server: LoopbackServer) -> LoopbackServer:
    server.routes.update(
        {
            "/good.png": Route(PNG),
            "/good.png?token=secret-token": Route(PNG),
            "/big.png": Route(bytes(64 * 1024)),
        }
    )
    return server


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of the ``mediagate`` loggers, DEBUG included."""
    caplog.set_level(logging.DEBUG, logger="mediagate")
    return caplog


def loads(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "mediagate.load"]


def fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FIELDS}


def test_a_load_is_one_debug_record_with_its_fields(
    media: LoopbackServer, connector: MediaConnector, log: pytest.LogCaptureFixture
) -> None:
    connector.fetch_image(media.url("/good.png"))
    (record,) = loads(log.records)
    assert record.levelno == logging.DEBUG
    got = fields(record)
    assert isinstance(got["fetch_ms"], float) and isinstance(got["decode_ms"], float)
    assert {k: v for k, v in got.items() if not k.endswith("_ms")} == {
        "reference": media.url("/good.png"),
        "modality": "image",
        "source": "http",
        "num_bytes": len(PNG),
        "cached": False,
        "error_type": None,
        "reason": None,
    }
    message = record.getMessage()
    assert message.startswith(f"loaded image from {media.url('/good.png')} (http): 177 bytes")
    assert "fetch " in message and " ms, decode " in message


def test_each_refusal_is_one_warning(
    media: LoopbackServer, connector: MediaConnector, log: pytest.LogCaptureFixture
) -> None:
    private = media.url("/good.png").replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(PolicyError):
        connector.fetch_image(private)
    with pytest.raises(FetchError):
        connector.fetch_audio(media.url("/missing.wav"))
    small = MediaConnector(policy=connector.policy.replace(max_bytes=1024))
    with small, pytest.raises(TooLargeError):
        small.fetch_image(media.url("/big.png"))
    got = [(r.levelname, r.error_type, r.reason, r.modality) for r in loads(log.records)]  # type: ignore[attr-defined]
    assert got == [
        ("WARNING", "PolicyError", "address", "image"),
        ("WARNING", "FetchError", "upstream_4xx", "audio"),
        ("WARNING", "TooLargeError", "max_bytes", "image"),
    ]
    assert (
        loads(log.records)[0]
        .getMessage()
        .startswith(
            f"refused image from {private} (http): PolicyError (address): the URL's host resolves"
        )
    )
    assert "failed to load audio" in loads(log.records)[1].getMessage()
    assert media.count("/good.png") == 0


def test_async_loads_and_request_parts_log_once_each(
    media: LoopbackServer, connector: MediaConnector, log: pytest.LogCaptureFixture
) -> None:
    asyncio.run(connector.fetch_image_async(media.url("/good.png")))
    request = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": media.url("/good.png")}},
                    {"type": "image_url", "image_url": {"url": "ftp://example.test/x"}},
                ],
            }
        ]
    }
    resolve_chat_request(request, connector, errors="collect")
    assert [(r.levelname, r.source) for r in loads(log.records)] == [  # type: ignore[attr-defined]
        ("DEBUG", "http"),
        ("DEBUG", "http"),
        ("WARNING", "other"),
    ]


def test_no_payload_credential_or_query_reaches_any_record(
    media: LoopbackServer, connector: MediaConnector, log: pytest.LogCaptureFixture
) -> None:
    payload = base64.b64encode(PNG).decode()
    broken = base64.b64encode(b"not an image, secret-bytes").decode()
    connector.fetch_image(data_url(PNG))
    with pytest.raises(MediaError):
        connector.fetch_image(f"data:image/png;base64,{broken}")
    connector.fetch_image(media.url("/good.png?token=secret-token"))
    with pytest.raises(PolicyError):
        connector.fetch_image("http://user:hunter2@example.test/a.png?token=secret-token")
    with pytest.raises(PolicyError):
        connector.fetch_image("gopher://user:hunter2@example.test/?token=secret-token")
    with pytest.raises(PolicyError):
        connector.fetch_image("http://example.test/a\nforged WARNING line")
    assert len(loads(log.records)) == 6
    for record in log.records:
        shown = record.getMessage() + repr({k: getattr(record, k, None) for k in FIELDS})
        for secret in (
            payload,
            broken,
            payload[:24],
            broken[:24],
            "hunter2",
            "secret-token",
            "user:",
        ):
            assert secret not in shown, (secret, shown)
        assert "\n" not in record.getMessage()
    references = [r.reference for r in loads(log.records)]  # type: ignore[attr-defined]
    assert references[:4] == [
        f"data:image/png;base64,<{len(payload)} chars>",
        f"data:image/png;base64,<{len(broken)} chars>",
        media.url("/good.png") + "?...",
        "http://example.test/a.png?...",
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@h.test:8443/a/b.png?sig=1#x", "https://h.test:8443/a/b.png?..."),
        ("http:u:p@h.test/a", "http:h.test/a"),
        ("HTTP://H.TEST/x y", "HTTP://H.TEST/x%20y"),
        ("file:///srv/media/a.png", "file:///srv/media/a.png"),
        ("data:,hello", "data:,<5 chars>"),
        ("QUJDRA==", "<8 chars>"),
        ("s3://bucket/key?versionId=7", "s3://bucket/key?..."),
        ("https://h.test/" + "a" * 200, "https://h.test/" + "a" * 82 + "..."),
    ],
)
def test_references_are_shown_safely(url: str, shown: str) -> None:
    assert shown_reference(url) == shown
    assert len(shown_reference(url)) <= 100


def test_successes_cost_no_formatting_when_debug_is_off(
    media: LoopbackServer,
    connector: MediaConnector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(url: object) -> str:
        raise AssertionError("formatted a record nobody reads")

    monkeypatch.setattr("mediagate._observe.shown_reference", never)
    caplog.set_level(logging.WARNING, logger="mediagate")
    for _ in range(3):
        connector.fetch_image(media.url("/good.png"))
    assert loads(caplog.records) == []


def test_the_library_never_prints(server: LoopbackServer) -> None:
    # No logging configured: a refusal's WARNING must not reach stderr through logging's
    # last-resort handler.
    code = (
        "import mediagate\n"
        "c = mediagate.MediaConnector()\n"
        "for url in ('http://127.0.0.1:1/x.png', 'ftp://x/y'):\n"
        "    try:\n"
        "        c.fetch_image(url)\n"
        "    except mediagate.MediaError:\n"
        "        pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert (done.stdout, done.stderr) == ("", "")
