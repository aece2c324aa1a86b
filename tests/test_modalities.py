"""Modality names, guessing a modality from content, and loading whatever a reference holds."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from builders import jpeg_bytes, png_bytes
from mediagate import (
    DecodeError,
    MediaConnector,
    MediaPolicy,
    OptionError,
    TooLargeError,
    guess_modality,
    sniff_modality,
)

SAMPLES = resources.files("mediagate") / "_samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def wav_bytes(seconds: float = 0.1, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    tone = np.sin(np.arange(int(16000 * seconds)) / 10).astype(np.float32)
    sf.write(buffer, tone, 16000, format=fmt)
    return buffer.getvalue()


def image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "modality"),
    [
        (png_bytes(), "image"),
        (jpeg_bytes(), "image"),
        (image("GIF"), "image"),
        (image("WEBP"), "image"),
        (image("BMP"), "image"),
        (image("TIFF"), "image"),
        (wav_bytes(), "audio"),
        (wav_bytes(fmt="FLAC"), "audio"),
        (wav_bytes(fmt="OGG"), "audio"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8, "audio"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio"),
        (sample("counter.mp4"), "video"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video"),
        (sample("embedding.safetensors"), "image_embedding"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", "image_embedding"),
        (b"PK\x03\x04archive/data.pkl", "image_embedding"),
    ],
)
def test_content_decides_the_modality(payload: bytes, modality: str) -> None:
    assert sniff_modality(payload) == modality
    assert sniff_modality(payload[:64]) == modality
    # The content wins over a name that says otherwise.
    assert guess_modality("https://media.test/misnamed.txt", payload[:64]) == modality


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"hello world, not media", b"<html><body>", b"\x00" * 64, b"{}" * 40],
)
def test_unrecognised_content_is_none_and_the_name_decides(payload: bytes) -> None:
    assert sniff_modality(payload) is None
    assert guess_modality("https://x/a.MP4?x=1", payload) == "video"


def test_the_reference_text_decides_without_content() -> None:
    assert guess_modality("https://x/a.MP4?x=1") == "video"
    assert guess_modality("file:///a/b.flac") == "audio"
    assert guess_modality("data:audio/wav;base64,AAAA") == "audio"
    assert guess_modality("data:application/octet-stream;base64,AAAA") == "image"
    assert guess_modality("s3://bucket/clip.webm") == "video"
    assert guess_modality("https://x/picture") == "image"
    assert guess_modality("https://[bad/a.wav") == "image"  # unparseable: no guess, no error


def test_only_the_first_bytes_are_looked_at() -> None:
    # A huge payload is judged from its head: no copy of the whole thing.
    payload = memoryview(png_bytes() + b"\x00" * (8 << 20))
    assert sniff_modality(payload) == "image"


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    (tmp_path / "clip").write_bytes(sample("counter.mp4"))
    (tmp_path / "sound.png").write_bytes(wav_bytes())
    (tmp_path / "tensor").write_bytes(sample("embedding.safetensors"))
    (tmp_path / "noise").write_bytes(b"\x01\x02" * 200)
    return tmp_path


def test_load_media_decodes_what_the_content_is(media_root: Path) -> None:
    with MediaConnector(allowed_local_media_path=media_root) as conn:
        video = conn.load_media((media_root / "clip").as_uri())
        frames, metadata = video.media
        assert video.modality == "video" == video.report.modality
        assert frames.ndim == 4 and metadata["total_num_frames"] > 0
        audio = conn.load_media((media_root / "sound.png").as_uri())
        assert audio.modality == "audio" and audio.media[1] == 16000
        tensor = conn.load_media((media_root / "tensor").as_uri())
        assert tensor.modality == "image_embedding"
        assert tuple(tensor.media.shape) == tuple(
            conn.load_media(
                "data:application/octet-stream;base64,"
                + base64.b64encode(sample("embedding.safetensors")).decode()
            ).media.shape
        )
        inline = conn.load_media(
            "data:application/octet-stream;base64," + base64.b64encode(wav_bytes()).decode()
        )
        assert inline.modality == "audio" and inline.report.source == "data"
        with pytest.raises(DecodeError):
            conn.load_media((media_root / "noise").as_uri())  # nothing recognised: an image


def test_load_media_async_is_the_same(media_root: Path) -> None:
    async def main() -> list[str]:
        async with MediaConnector(allowed_local_media_path=media_root) as conn:
            names = ["clip", "sound.png", "tensor"]
            loaded = await asyncio.gather(
                *(conn.load_media_async((media_root / n).as_uri()) for n in names)
            )
        return [item.modality for item in loaded]

    assert asyncio.run(main()) == ["video", "audio", "image_embedding"]


def test_the_chosen_modality_s_byte_budget_holds(tmp_path: Path) -> None:
    # Fetched under the largest budget (the name tells nothing), then held to the budget
    # of what the bytes are: an image over the image budget is refused, not decoded.
    image_limit = MediaPolicy().max_bytes_for("image")
    assert MediaPolicy().max_bytes_for("video") > image_limit + 1
    with (tmp_path / "blob").open("wb") as out:
        out.write(png_bytes())
        out.truncate(image_limit + 1)
    with MediaConnector(allowed_local_media_path=tmp_path) as conn:
        with pytest.raises(TooLargeError, match="max_bytes"):
            conn.load_media((tmp_path / "blob").as_uri())
        with pytest.raises(TooLargeError, match="max_bytes"):
            asyncio.run(conn.load_media_async((tmp_path / "blob").as_uri()))


def test_a_named_modality_is_decoded_as_that(media_root: Path) -> None:
    with MediaConnector(allowed_local_media_path=media_root) as conn:
        with pytest.raises(DecodeError):
            conn.load_media((media_root / "sound.png").as_uri(), "image")
        loaded = conn.load_media(
            (media_root / "clip").as_uri(), "video", media_io_kwargs={"video": {"num_frames": 3}}
        )
        assert loaded.media[0].shape[0] == 3
        auto = conn.load_media(
            (media_root / "clip").as_uri(), media_io_kwargs={"video": {"num_frames": 2}}
        )
        assert auto.media[0].shape[0] == 2


@pytest.mark.parametrize(
    ("modality", "options"),
    [
        ("pictures", None),
        ("auto", {"pictures": {}}),
        ("auto", {"video": {"num_frames": "many"}}),
        ("video", {"video": {"no_such_option": 1}}),
    ],
)
def test_bad_modalities_and_options_are_refused(
    media_root: Path, modality: str, options: dict[str, dict[str, object]] | None
) -> None:
    with MediaConnector(allowed_local_media_path=media_root) as conn:
        with pytest.raises(OptionError):
            conn.load_media((media_root / "clip").as_uri(), modality, media_io_kwargs=options)


def test_safetensors_shaped_lies_are_not_taken_for_tensors() -> None:
    # An 8-byte length far too large for a header, then "{": not a safetensors file.
    assert sniff_modality(struct.pack("<Q", 1 << 40) + b'{"x"') is None


@pytest.mark.parametrize("options", [["video"], "video", 3])
def test_load_media_options_must_be_a_mapping(media_root: Path, options: object) -> None:
    with MediaConnector(allowed_local_media_path=media_root) as conn:
        with pytest.raises(OptionError, match="media_io_kwargs"):
            conn.load_media((media_root / "clip").as_uri(), media_io_kwargs=options)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), True, "5"])
def test_load_media_refuses_a_bad_fetch_timeout(media_root: Path, timeout: object) -> None:
    with MediaConnector(allowed_local_media_path=media_root) as conn:
        with pytest.raises(OptionError, match="fetch_timeout"):
            conn.load_media((media_root / "clip").as_uri(), fetch_timeout=timeout)  # type: ignore[arg-type]
        with pytest.raises(OptionError, match="fetch_timeout"):
            asyncio.run(
                conn.load_media_async((media_root / "clip").as_uri(), fetch_timeout=timeout)  # type: ignore[arg-type]
            )
