"""The public surface: names, the error tree, MediaWithBytes and merge rules."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

import mediagate
from mediagate import (
    DecodeError,
    FetchError,
    FetchTimeout,
    LocalMediaDisabledError,
    MediaError,
    MediaIO,
    MediaWithBytes,
    OptionError,
    PolicyError,
    TooLargeError,
)

EXPECTED = {
    "AudioEmbeddingMediaIO",
    "AudioMediaIO",
    "DecodeError",
    "DecodedBudget",
    "FetchError",
    "FetchTimeout",
    "ImageEmbeddingMediaIO",
    "ImageMediaIO",
    "LoadReport",
    "LoadedMedia",
    "LocalMediaDisabledError",
    "MEDIA_CONNECTOR_REGISTRY",
    "METRICS_CONTENT_TYPE",
    "MediaCache",
    "MediaConnector",
    "MediaError",
    "MediaIO",
    "MediaPart",
    "MediaPolicy",
    "MediaWithBytes",
    "OptionError",
    "OptionSpec",
    "PolicyError",
    "RequestLimits",
    "ResolvedItem",
    "ResolvedRequest",
    "SOURCE_REGISTRY",
    "SampledVideoLoader",
    "Source",
    "SourceResult",
    "TooLargeError",
    "VIDEO_LOADER_REGISTRY",
    "VideoEmbeddingMediaIO",
    "VideoMediaIO",
    "content_hash",
    "enable_metrics",
    "find_media_parts",
    "guess_modality",
    "metrics_text",
    "on_load",
    "openai_error_body",
    "resolve_chat_request",
    "resolve_chat_request_async",
    "sniff_modality",
}


def test_all_is_sorted_and_exact() -> None:
    # Constants first, then classes, each group alphabetical (ruff's RUF022 order).
    assert mediagate.__all__ == sorted(mediagate.__all__, key=lambda n: (not n.isupper(), n))
    assert set(mediagate.__all__) == EXPECTED
    for name in mediagate.__all__:
        assert getattr(mediagate, name) is not None


@pytest.mark.parametrize(
    ("cls", "parents", "status"),
    [
        (PolicyError, (MediaError, ValueError), 403),
        (LocalMediaDisabledError, (PolicyError, RuntimeError), 403),
        (OptionError, (MediaError, ValueError), 400),
        (TooLargeError, (MediaError, ValueError), 413),
        (FetchError, (MediaError, ConnectionError), 502),
        (FetchTimeout, (FetchError, TimeoutError), 504),
        (DecodeError, (MediaError, ValueError), 422),
    ],
)
def test_error_tree(cls: type[MediaError], parents: tuple[type, ...], status: int) -> None:
    assert issubclass(cls, parents)
    kwargs = {"limit": "max_bytes"} if cls is TooLargeError else {}
    if cls is OptionError:
        kwargs = {"option": "x"}
    err = cls("message", **kwargs)  # type: ignore[arg-type]
    assert err.http_status == status
    assert str(err) == "message"
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is cls and str(clone) == "message" and clone.http_status == status


def test_upstream_client_errors_map_to_422() -> None:
    assert FetchError("x", upstream_status=404).http_status == 422
    assert FetchError("x", upstream_status=503).http_status == 502


def test_media_with_bytes_delegates_and_hides_bytes() -> None:
    image = Image.new("RGB", (5, 3), (1, 2, 3))
    wrapped = MediaWithBytes(image, b"secret-bytes")
    assert wrapped.size == (5, 3) and wrapped.mode == "RGB"
    assert np.array_equal(np.array(wrapped), np.array(image))
    assert "secret-bytes" not in repr(wrapped)
    clone = pickle.loads(pickle.dumps(wrapped))
    assert clone.original_bytes == b"secret-bytes"
    assert np.array_equal(np.array(clone), np.array(image))


def test_media_with_bytes_from_array_builds_media_once_and_pickles() -> None:
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    calls: list[int] = []

    def to_image(a: np.ndarray) -> Image.Image:
        calls.append(1)
        return Image.fromarray(a)

    wrapped = MediaWithBytes.from_array(array, b"raw", to_image, known={"size": (3, 2)})
    assert np.asarray(wrapped) is array  # no copy, no decode
    assert wrapped.size == (3, 2)  # answered without building the media
    assert calls == []
    assert wrapped.mode == "RGB" and wrapped.media is wrapped.media
    assert calls == [1]
    clone = pickle.loads(pickle.dumps(wrapped))
    assert np.array_equal(np.asarray(clone), array)
    copied = np.array(wrapped)
    assert copied is not array and np.array_equal(copied, array)


def test_merge_kwargs_request_wins_and_nothing_mutates() -> None:
    defaults = {"a": 1, "b": {"x": 1}}
    request = {"b": 2}
    merged = MediaIO.merge_kwargs(defaults, request)
    assert merged == {"a": 1, "b": 2}
    assert defaults == {"a": 1, "b": {"x": 1}} and request == {"b": 2}
    assert MediaIO.merge_kwargs(None, None) == {}
    assert MediaIO.merge_kwargs(None, {"a": 1}) == {"a": 1}
    assert MediaIO.merge_kwargs({"a": 1}, None) == {"a": 1}
    merged["a"] = 5
    assert defaults["a"] == 1


def test_merge_kwargs_refuses_non_mappings() -> None:
    with pytest.raises(OptionError, match="runtime_kwargs"):
        MediaIO.merge_kwargs({}, ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_a_subclass_that_skips_the_base_init_still_has_the_default_limits() -> None:
    class Upper(MediaIO[bytes]):
        def __init__(self) -> None:  # no super().__init__(): the familiar older shape
            self.calls = 0

        def load_bytes(self, data: bytes) -> bytes:
            self.calls += 1
            return data.upper()

    media_io = Upper()
    assert media_io.load_base64("text/plain", "YWJj") == b"ABC"
    assert media_io.max_bytes == mediagate.MediaPolicy().max_bytes_for("image")
