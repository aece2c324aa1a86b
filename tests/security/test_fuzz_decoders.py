"""B1 fuzz targets: every decoder entry point fails only with a ``MediaError``.

Each target feeds one public entry point mutants of valid seeds built in code
(``hostile_corpus``), pure random bytes, arbitrary JSON-like option dicts or objects of
the wrong type. What comes back is either a result of the documented type within the
policy's limits, or a ``MediaError`` whose text is short and shows no object address.
Anything else fails the target with the exception type and the last frame inside
``mediagate`` where it was raised.

The policy is small (4 MP, 64 MiB decoded, 2 s decode deadline, 16 video frames) so a
mutant cannot take long, and each target's example budget is modest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builders import data_url
from mediagate import (
    AudioEmbeddingMediaIO,
    AudioMediaIO,
    DecodeError,
    ImageEmbeddingMediaIO,
    ImageMediaIO,
    MediaConnector,
    MediaError,
    MediaPolicy,
    MediaWithBytes,
    VideoMediaIO,
)
from security.childproc import run_limited
from security.conftest import _ADDRESS_IN_TEXT
from security.hostile_corpus import (
    NOT_STRINGS,
    Flip,
    audio_seeds,
    b64,
    image_seeds,
    jpeg_frames,
    mutants,
    mutate,
    option_dicts,
    tensor_seeds,
    video_seeds,
)

torch = pytest.importorskip("torch")

MiB = 1024 * 1024
POLICY = MediaPolicy(
    max_pixels=4_000_000,
    max_decoded_bytes=64 * MiB,
    decode_timeout=2,
    max_video_frames=16,
    max_audio_seconds=60,
    max_tensor_bytes=16 * MiB,
    max_bytes=4 * MiB,
    timeout=5,
)
#: Longest one call may take: the decode deadline plus room for a loaded machine.
CALL_SECONDS = POLICY.decode_timeout_for("video") + 6
MAX_MESSAGE = 500
#: Multiplies every target's example budget; raise it locally for a longer fuzz.
EXAMPLE_SCALE = int(os.environ.get("MEDIAGATE_FUZZ_SCALE", "3"))
#: Also fail on errors only the catch-all boundary in ``MediaIO`` typed (a decoder
#: should name what it knows): off by default, since the boundary's answer is correct.
STRICT_BOUNDARY = os.environ.get("MEDIAGATE_FUZZ_STRICT_BOUNDARY") == "1"

T = TypeVar("T")


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples * EXAMPLE_SCALE,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


# ---------------------------------------------------------------------------
# The invariant


def _raised_at(exc: BaseException) -> str:
    """The last traceback frame inside mediagate (or the last frame at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/mediagate/" in f.filename.replace("\\", "/")]
    frame = (ours or frames)[-1] if frames else None
    if frame is None:
        return "?"
    short = frame.filename.replace("\\", "/").split("/src/", 1)[-1]
    return f"{short}:{frame.lineno} in {frame.name}"


def _typed_only_by_the_boundary(err: MediaError) -> bool:
    """Whether ``err`` is the catch-all translation of an exception nobody named."""
    frames = traceback.extract_tb(err.__traceback__)
    cause = err.__cause__
    return (
        bool(frames)
        and frames[-1].name == "error_boundary"
        and cause is not None
        and not isinstance(cause, MediaError)
    )


def _check_message(err: MediaError) -> None:
    text = str(err)
    assert text, f"{type(err).__name__} without a message"
    assert not _ADDRESS_IN_TEXT.search(text), f"an object address in {text!r}"
    assert len(text) < MAX_MESSAGE, f"a {len(text)}-character message: {text[:200]!r}..."


@contextlib.contextmanager
def _unraisable_caught() -> Iterator[list[Any]]:
    """Collect exceptions a C callback swallowed ("Exception ignored in ...")."""
    caught: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


def outcome(call: Callable[[], T]) -> T | MediaError:
    """Run ``call``: its result, or the ``MediaError`` it raised (checked).

    Raises:
        AssertionError: anything but a ``MediaError`` escaped (or was swallowed by a C
            callback on the way), or the call overran.
    """
    start = time.monotonic()
    with _unraisable_caught() as swallowed:
        try:
            result: T | MediaError = call()
        except MediaError as err:
            _check_message(err)
            if STRICT_BOUNDARY and _typed_only_by_the_boundary(err):
                cause = err.__cause__
                assert cause is not None
                raise AssertionError(
                    f"{type(cause).__name__} typed only by the error boundary, raised at "
                    f"{_raised_at(cause)}: {str(cause)[:200]}"
                ) from cause
            result = err
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__} escaped, raised at {_raised_at(exc)}: {str(exc)[:200]}"
            ) from exc
    elapsed = time.monotonic() - start
    assert elapsed < CALL_SECONDS, f"the call took {elapsed:.1f} s"
    for hook_args in swallowed:
        lost: BaseException = hook_args.exc_value
        raise AssertionError(
            f"{type(lost).__name__} swallowed by a callback, raised at {_raised_at(lost)}: {lost}"
        ) from lost
    return result


def check_image(result: object) -> None:
    if isinstance(result, MediaError):
        return
    assert isinstance(result, MediaWithBytes), type(result)
    width, height = result.size
    assert 0 < width * height <= POLICY.max_pixels
    pixels = np.asarray(result)
    assert pixels.dtype == np.uint8 and pixels.shape[:2] == (height, width)


def check_audio(result: object, sample_rate: int | None) -> None:
    if isinstance(result, MediaError):
        return
    assert isinstance(result, tuple) and len(result) == 2
    samples, rate = result
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
    assert rate > 0
    if sample_rate is not None:
        assert rate == sample_rate
    assert samples.size <= POLICY.max_audio_seconds * rate + rate


def check_video(result: object) -> None:
    if isinstance(result, MediaError):
        return
    assert isinstance(result, MediaWithBytes), type(result)
    assert isinstance(result.media, tuple) and len(result.media) == 2
    assert isinstance(result.original_bytes, bytes)
    frames, metadata = result
    assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8
    assert frames.ndim == 4 and frames.shape[3] == 3
    assert 1 <= len(frames) <= POLICY.max_video_frames
    assert frames[0].shape[0] * frames[0].shape[1] <= POLICY.max_pixels
    assert isinstance(metadata, dict)
    assert len(metadata["frames_indices"]) == len(frames)


def check_tensor(result: object) -> None:
    if isinstance(result, MediaError):
        return
    assert isinstance(result, torch.Tensor), type(result)
    assert result.layout == torch.strided and result.device.type == "cpu"
    assert result.numel() * result.element_size() <= POLICY.max_tensor_bytes


# ---------------------------------------------------------------------------
# Inputs

image_bytes = mutants(image_seeds)
audio_bytes = mutants(audio_seeds)
video_bytes = mutants(video_seeds)
tensor_bytes = mutants(tensor_seeds)

IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "", "text/plain"]
AUDIO_TYPES = ["audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "application/octet-stream"]
VIDEO_TYPES = ["video/mp4", "video/webm", "image/gif", "video/jpeg"]


def noisy_base64(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
    """Base64 of ``data``, sometimes with padding, whitespace or junk spliced in."""
    return st.one_of(
        data.map(b64),
        st.builds(
            lambda text, at, junk: text[:at] + junk + text[at:],
            data.map(b64),
            st.integers(0, 64),
            st.sampled_from(["=", "==", " ", "\n", "-_", "!", "\x00", "é", "A", "===="]),
        ),
        st.text(max_size=40),
    )


def _io_kwargs() -> dict[str, Any]:
    return {"policy": POLICY}


@pytest.fixture(scope="module")
def connector() -> Iterator[MediaConnector]:
    with MediaConnector(policy=POLICY, max_workers=2) as conn:
        yield conn


@pytest.fixture(scope="module")
def image_io() -> ImageMediaIO:
    return ImageMediaIO(**_io_kwargs())


# ---------------------------------------------------------------------------
# ImageMediaIO


@_fuzz(400)
@given(data=image_bytes)
def test_image_load_bytes(image_io: ImageMediaIO, data: bytes) -> None:
    check_image(outcome(lambda: image_io.load_bytes(data)))


@_fuzz(150)
@given(media_type=st.sampled_from(IMAGE_TYPES), text=noisy_base64(image_bytes))
def test_image_load_base64(image_io: ImageMediaIO, media_type: str, text: str) -> None:
    check_image(outcome(lambda: image_io.load_base64(media_type, text)))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


@_fuzz(80)
@given(data=image_bytes)
def test_image_load_file(image_io: ImageMediaIO, fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "input.bin"
    path.write_bytes(data)
    check_image(outcome(lambda: image_io.load_file(path)))


IMAGE_MODES = ["RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "YCbCr", "I", "I;16", "F", "HSV"]


@_fuzz(250)
@given(
    data=image_bytes,
    image_mode=st.sampled_from(IMAGE_MODES),
    max_image_size=st.sampled_from([None, 1, 7, (1, 1000), (65536, 3), 65536]),
    max_pixels=st.sampled_from([None, 1, 100, 10_000]),
)
def test_image_load_bytes_with_options(
    data: bytes, image_mode: str, max_image_size: Any, max_pixels: int | None
) -> None:
    options: dict[str, Any] = {"max_image_size": max_image_size}
    if max_pixels is not None:
        options["max_pixels"] = max_pixels
    result = outcome(lambda: ImageMediaIO(image_mode, **_io_kwargs(), **options).load_bytes(data))
    if isinstance(result, MediaError):
        return
    assert isinstance(result, MediaWithBytes)
    assert result.size[0] * result.size[1] <= (max_pixels or POLICY.max_pixels) or (
        max_image_size is not None
    )
    assert result.mode == image_mode


# ---------------------------------------------------------------------------
# AudioMediaIO


@_fuzz(250)
@given(data=audio_bytes, sample_rate=st.sampled_from([None, None, 8000, 16000, 44100]))
# An AIFF whose SSND chunk id is damaged: libsndfile seeks to -1 through soundfile.
@example(data=audio_seeds()["aiff"].replace(b"SSND", b"S\xaaND"), sample_rate=None)
def test_audio_load_bytes(data: bytes, sample_rate: int | None) -> None:
    audio_io = AudioMediaIO(sample_rate=sample_rate, **_io_kwargs())
    check_audio(outcome(lambda: audio_io.load_bytes(data)), sample_rate)


# ---------------------------------------------------------------------------
# VideoMediaIO


def _video_target(backend: str) -> Callable[[bytes, int], None]:
    def target(data: bytes, num_frames: int) -> None:
        image_io = ImageMediaIO(**_io_kwargs())
        video_io = VideoMediaIO(image_io, num_frames, video_backend=backend, **_io_kwargs())
        check_video(outcome(lambda: video_io.load_bytes(data)))

    return target


video_frames_asked = st.sampled_from([-1, 1, 4, 16, 1000])


@_fuzz(120)
@given(data=video_bytes, num_frames=video_frames_asked)
def test_video_load_bytes_pyav(data: bytes, num_frames: int) -> None:
    _video_target("pyav")(data, num_frames)


def fuzz_opencv_backend(examples: int) -> None:
    """The OpenCV fuzz target, run where a crash of the native decoder ends only a child."""
    run = settings(_fuzz(1), max_examples=examples)(
        given(data=video_bytes, num_frames=video_frames_asked)(_video_target("opencv"))
    )
    run()


def load_with_opencv(data: bytes) -> None:
    """One OpenCV-backend load, for a child process."""
    _video_target("opencv")(data, 16)


def _in_child(target: str, *args: Any, timeout: float) -> None:
    outcome = run_limited(
        f"security.test_fuzz_decoders:{target}", *args, address_space=4 << 30, timeout=timeout
    )
    assert not outcome.died, "the decoder crashed the process (a native fault, not an error)"
    assert not outcome.timed_out, "the child outlived its timeout"
    assert outcome.error is None, f"{outcome.error}: {outcome.message}"


def test_video_load_bytes_opencv() -> None:
    pytest.importorskip("cv2")
    _in_child("fuzz_opencv_backend", 120 * EXAMPLE_SCALE, timeout=40 * EXAMPLE_SCALE)


def _avi_with_lying_riff_size() -> bytes:
    data = bytearray(video_seeds()["avi-mpeg4"])
    data[7] = 0xFF  # RIFF size's top byte: the file now claims about 4 GiB
    data[3055:3055] = bytes.fromhex("e58bb25947fd2118f32a03b62741a9")
    return bytes(data)


def test_opencv_survives_an_avi_that_crashed_it() -> None:
    # Found by the OpenCV target: cv2.VideoCapture on this stream faulted (SIGSEGV).
    # Under the default policy video decodes in an isolated worker, so the fault costs
    # this request a DecodeError and this process carries on.
    pytest.importorskip("cv2")
    io = VideoMediaIO(ImageMediaIO(), 16, video_backend="opencv")
    with pytest.raises(DecodeError):
        io.load_bytes(_avi_with_lying_riff_size())
    assert io.load_bytes(video_seeds()["avi-mpeg4"])[0].shape[0] >= 1


jpeg_parts = st.one_of(
    mutants(lambda: {f"frame{i}": f for i, f in enumerate(jpeg_frames())}).map(b64),
    st.sampled_from(jpeg_frames()).map(b64),
    st.text(max_size=12),
)


@_fuzz(150)
@given(
    parts=st.lists(jpeg_parts, min_size=0, max_size=24),
    separator=st.sampled_from([",", ",", ", ", ",,", ";"]),
    num_frames=st.sampled_from([-1, 1, 3, 16]),
)
def test_video_jpeg_sequence(
    image_io: ImageMediaIO, parts: list[str], separator: str, num_frames: int
) -> None:
    video_io = VideoMediaIO(image_io, num_frames, **_io_kwargs())
    check_video(outcome(lambda: video_io.load_base64("video/jpeg", separator.join(parts))))


# ---------------------------------------------------------------------------
# Embeddings

EMBEDDING_CLASSES = [ImageEmbeddingMediaIO, AudioEmbeddingMediaIO]


@pytest.mark.parametrize("cls", EMBEDDING_CLASSES, ids=lambda c: c.__name__)
@_fuzz(250)
@given(data=tensor_bytes)
# A .npy header whose opening brace is now "z": numpy's header parser raises TokenError.
@example(data=mutate(tensor_seeds()["npy"], [Flip(10, 1)]))
def test_embedding_load_bytes(cls: type[ImageEmbeddingMediaIO], data: bytes) -> None:
    check_tensor(outcome(lambda: cls(**_io_kwargs()).load_bytes(data)))


@pytest.mark.parametrize("cls", EMBEDDING_CLASSES, ids=lambda c: c.__name__)
@_fuzz(100)
@given(text=noisy_base64(tensor_bytes))
def test_embedding_load_base64(cls: type[ImageEmbeddingMediaIO], text: str) -> None:
    check_tensor(outcome(lambda: cls(**_io_kwargs()).load_base64("", text)))


# ---------------------------------------------------------------------------
# MediaConnector with data: URLs


@_fuzz(80)
@given(media_type=st.sampled_from(IMAGE_TYPES), data=image_bytes)
def test_connector_load_from_url(connector: MediaConnector, media_type: str, data: bytes) -> None:
    image_io = ImageMediaIO(**_io_kwargs())
    check_image(outcome(lambda: connector.load_from_url(data_url(data, media_type), image_io)))


@_fuzz(80)
@given(media_type=st.sampled_from(IMAGE_TYPES), data=image_bytes)
def test_connector_fetch_image(connector: MediaConnector, media_type: str, data: bytes) -> None:
    check_image(outcome(lambda: connector.fetch_image(data_url(data, media_type))))


@_fuzz(80)
@given(media_type=st.sampled_from(AUDIO_TYPES), data=audio_bytes)
@example(media_type="audio/aiff", data=audio_seeds()["aiff"].replace(b"SSND", b"S\xaaND"))
def test_connector_fetch_audio(connector: MediaConnector, media_type: str, data: bytes) -> None:
    check_audio(outcome(lambda: connector.fetch_audio(data_url(data, media_type))), None)


@_fuzz(60)
@given(media_type=st.sampled_from(VIDEO_TYPES[:3]), data=video_bytes)
def test_connector_fetch_video(connector: MediaConnector, media_type: str, data: bytes) -> None:
    check_video(outcome(lambda: connector.fetch_video(data_url(data, media_type))))


@_fuzz(60)
@given(parts=st.lists(jpeg_parts, min_size=1, max_size=8))
def test_connector_fetch_video_jpeg_sequence(connector: MediaConnector, parts: list[str]) -> None:
    url = "data:video/jpeg;base64," + ",".join(parts)
    check_video(outcome(lambda: connector.fetch_video(url)))


@pytest.mark.parametrize("modality", ["image_embedding", "audio_embedding"])
@_fuzz(80)
@given(text=noisy_base64(tensor_bytes))
def test_connector_fetch_embedding(connector: MediaConnector, modality: str, text: str) -> None:
    fetch = getattr(connector, f"fetch_{modality}")
    check_tensor(outcome(lambda: fetch(text)))


@_fuzz(40)
@given(media_type=st.sampled_from(IMAGE_TYPES), data=image_bytes)
def test_connector_fetch_image_async(
    connector: MediaConnector, media_type: str, data: bytes
) -> None:
    url = data_url(data, media_type)
    check_image(outcome(lambda: asyncio.run(connector.fetch_image_async(url))))


@_fuzz(30)
@given(media_type=st.sampled_from(VIDEO_TYPES[:3]), data=video_bytes)
def test_connector_fetch_video_async(
    connector: MediaConnector, media_type: str, data: bytes
) -> None:
    url = data_url(data, media_type)
    check_video(outcome(lambda: asyncio.run(connector.fetch_video_async(url))))


@_fuzz(40)
@given(text=noisy_base64(tensor_bytes))
def test_connector_fetch_audio_embedding_async(connector: MediaConnector, text: str) -> None:
    check_tensor(outcome(lambda: asyncio.run(connector.fetch_audio_embedding_async(text))))


# ---------------------------------------------------------------------------
# The option surface


def _good_url(modality: str) -> str:
    if modality == "image":
        return data_url(image_seeds()["png"], "image/png")
    if modality == "audio":
        return data_url(audio_seeds()["wav"], "audio/wav")
    if modality == "video":
        return data_url(video_seeds()["mp4-h264"], "video/mp4")
    return b64(tensor_seeds()["npy"])


def _fetch(connector: MediaConnector, modality: str, options: Any | None) -> Any:
    url = _good_url(modality)
    if modality.endswith("_embedding"):
        return getattr(connector, f"fetch_{modality}")(url)
    fetch = getattr(connector, f"fetch_{modality}")
    if options is None:
        return fetch(url)
    return fetch(url, media_io_kwargs=options)


def _check_any(modality: str, result: object) -> None:
    if modality == "image":
        check_image(result)
    elif modality == "audio":
        check_audio(result, None if isinstance(result, MediaError) else result[1])  # type: ignore[index]
    elif modality == "video":
        check_video(result)
    else:
        check_tensor(result)


MODALITIES = ["image", "audio", "video", "image_embedding", "audio_embedding"]


def option_cases(modalities: list[str]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """``(modality, options)`` pairs over ``modalities``."""
    return st.sampled_from(modalities).flatmap(lambda m: st.tuples(st.just(m), option_dicts(m)))


@_fuzz(250)
@given(case=option_cases(MODALITIES))
def test_connector_server_options(case: tuple[str, dict[str, Any]]) -> None:
    modality, options = case

    def build_and_fetch() -> Any:
        with MediaConnector({modality: options}, policy=POLICY, max_workers=1) as conn:
            return _fetch(conn, modality, None)

    _check_any(modality, outcome(build_and_fetch))


@_fuzz(250)
@given(case=option_cases(["image", "audio", "video"]))
def test_connector_request_options(
    connector: MediaConnector, case: tuple[str, dict[str, Any]]
) -> None:
    modality, options = case
    _check_any(modality, outcome(lambda: _fetch(connector, modality, options)))


odd_shapes = st.one_of(
    st.sampled_from(NOT_STRINGS),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=12), st.sampled_from(NOT_STRINGS), max_size=3),
    st.dictionaries(
        st.sampled_from(MODALITIES), st.sampled_from([*NOT_STRINGS, "x", 1, [1, 2]]), max_size=2
    ),
)


@_fuzz(100)
@given(kwargs=odd_shapes)
def test_connector_media_io_kwargs_of_any_shape(kwargs: Any) -> None:
    def build() -> MediaConnector:
        conn = MediaConnector(kwargs, policy=POLICY, max_workers=1)
        conn.close()
        return conn

    outcome(build)


@pytest.mark.parametrize("modality", ["image", "audio", "video"])
@pytest.mark.parametrize(
    "options", [*NOT_STRINGS, "x", 1, [("a", 1)]], ids=lambda v: type(v).__name__
)
def test_connector_request_options_of_any_shape(
    connector: MediaConnector, modality: str, options: Any
) -> None:
    _check_any(modality, outcome(lambda: _fetch(connector, modality, options)))


@_fuzz(200)
@given(case=option_cases(["image", "audio", "video", "image_embedding"]))
@example(case=("image", {"self": None}))
@example(case=("audio", {"self": None}))
@example(case=("video", {"image_io": None}))
def test_mediaio_constructor_options(case: tuple[str, dict[str, Any]]) -> None:
    modality, options = case
    seed = {
        "image": image_seeds()["png"],
        "audio": audio_seeds()["wav"],
        "video": video_seeds()["mp4-h264"],
        "image_embedding": tensor_seeds()["npy"],
    }[modality]

    def build_and_load() -> Any:
        if modality == "image":
            return ImageMediaIO(**options).load_bytes(seed)
        if modality == "audio":
            return AudioMediaIO(**options).load_bytes(seed)
        if modality == "video":
            return VideoMediaIO(ImageMediaIO(), **options).load_bytes(seed)
        return ImageEmbeddingMediaIO(**options).load_bytes(seed)

    _check_any(modality, outcome(build_and_load))


# ---------------------------------------------------------------------------
# Objects of the wrong type where a URL, bytes or a string is expected

WRONG = [v for v in NOT_STRINGS if not isinstance(v, (bytes, bytearray))]


def _entry_points(conn: MediaConnector, image_io: ImageMediaIO) -> dict[str, Callable[..., Any]]:
    video_io = VideoMediaIO(image_io, 4, **_io_kwargs())
    audio_io = AudioMediaIO(**_io_kwargs())
    embed_io = ImageEmbeddingMediaIO(**_io_kwargs())
    return {
        "image.load_bytes": image_io.load_bytes,
        "image.load_base64(type)": lambda v: image_io.load_base64(v, b64(image_seeds()["png"])),
        "image.load_base64(data)": lambda v: image_io.load_base64("image/png", v),
        "image.load_file": image_io.load_file,
        "audio.load_bytes": audio_io.load_bytes,
        "audio.load_base64(data)": lambda v: audio_io.load_base64("audio/wav", v),
        "video.load_bytes": video_io.load_bytes,
        "video.load_base64(type)": lambda v: video_io.load_base64(v, b64(image_seeds()["png"])),
        "video.load_base64(data)": lambda v: video_io.load_base64("video/jpeg", v),
        "embedding.load_bytes": embed_io.load_bytes,
        "embedding.load_base64(data)": lambda v: embed_io.load_base64("", v),
        "connector.load_from_url": lambda v: conn.load_from_url(v, image_io),
        "connector.fetch_image": conn.fetch_image,
        "connector.fetch_image(image_mode)": lambda v: conn.fetch_image(
            _good_url("image"), image_mode=v
        ),
        "connector.fetch_audio": conn.fetch_audio,
        "connector.fetch_video": conn.fetch_video,
        "connector.fetch_image_embedding": conn.fetch_image_embedding,
        "connector.fetch_audio_embedding": conn.fetch_audio_embedding,
        "connector.fetch_image_async": lambda v: asyncio.run(conn.fetch_image_async(v)),
        "connector.fetch_audio_embedding_async": lambda v: asyncio.run(
            conn.fetch_audio_embedding_async(v)
        ),
    }


ENTRY_NAMES = [
    "image.load_bytes",
    "image.load_base64(type)",
    "image.load_base64(data)",
    "image.load_file",
    "audio.load_bytes",
    "audio.load_base64(data)",
    "video.load_bytes",
    "video.load_base64(type)",
    "video.load_base64(data)",
    "embedding.load_bytes",
    "embedding.load_base64(data)",
    "connector.load_from_url",
    "connector.fetch_image",
    "connector.fetch_image(image_mode)",
    "connector.fetch_audio",
    "connector.fetch_video",
    "connector.fetch_image_embedding",
    "connector.fetch_audio_embedding",
    "connector.fetch_image_async",
    "connector.fetch_audio_embedding_async",
]


@pytest.mark.parametrize("value", WRONG, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("entry", ENTRY_NAMES)
def test_wrong_types_are_media_errors(
    connector: MediaConnector, image_io: ImageMediaIO, entry: str, value: Any
) -> None:
    call = _entry_points(connector, image_io)[entry]
    outcome(lambda: call(value))


def test_the_targets_see_valid_results_too(
    connector: MediaConnector, image_io: ImageMediaIO
) -> None:
    # Anchors: the targets would pass vacuously if every seed were refused.
    for name, seed in image_seeds().items():
        result = image_io.load_bytes(seed)
        assert isinstance(result, MediaWithBytes), name
    for name, seed in audio_seeds().items():
        samples, _ = AudioMediaIO(**_io_kwargs()).load_bytes(seed)
        assert samples.size > 0, name
    for name, seed in video_seeds().items():
        frames, _ = VideoMediaIO(image_io, 4, **_io_kwargs()).load_bytes(seed)
        assert len(frames) == 4, name
    for name, seed in tensor_seeds().items():
        options = {"tensor_name": "a"} if name == "safetensors-two" else {}
        tensor = ImageEmbeddingMediaIO(**_io_kwargs(), **options).load_bytes(seed)
        assert tensor.shape == (4, 6), name
    frames, _ = connector.fetch_video("data:video/jpeg;base64," + ",".join(map(b64, jpeg_frames())))
    assert len(frames) == 3
