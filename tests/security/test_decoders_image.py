"""D1-D5 for images: header pixel cap, first frame only, allowlisted formats, tiny
images, truncation. Every input is built here with Pillow or by hand."""

from __future__ import annotations

import base64
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from builders import image_bytes
from mediagate import (
    DecodeError,
    ImageMediaIO,
    MediaConnector,
    MediaPolicy,
    TooLargeError,
)

MiB = 1 << 20
LOSSLESS = ["PNG", "GIF", "BMP", "TIFF", "WEBP"]


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """``image`` in ``fmt``; WebP stills are lossless unless ``params`` say otherwise."""
    if fmt == "WEBP" and "lossless" not in params and "save_all" not in params:
        params["lossless"] = True
    return image_bytes(image, fmt, **params)


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but whose data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (2, 2)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    # The image descriptor too, so the first frame claims the same size.
    at = data.index(b"\x2c")
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (2, 2)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("RGB", (8, 8), (200, 10, 10)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def tiff_claiming(width: int, height: int) -> bytes:
    data = encode(Image.new("L", (2, 2)), "TIFF")
    # Rewrite the ImageWidth (256) and ImageLength (257) entries of the first IFD.
    out = bytearray(data)
    offset = struct.unpack("<I", out[4:8])[0]
    count = struct.unpack("<H", out[offset : offset + 2])[0]
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag, _ = struct.unpack("<HH", out[entry : entry + 4])
        if tag in (256, 257):
            value = width if tag == 256 else height
            out[entry + 2 : entry + 8] = struct.pack("<HI", 4, 1)
            out[entry + 8 : entry + 12] = struct.pack("<I", value)
    return bytes(out)


def decoded(data: bytes, mode: str = "RGB", **options: Any) -> np.ndarray:
    return np.asarray(ImageMediaIO(mode, **options).load_bytes(data))


def refused(
    data: bytes,
    kind: type[Exception],
    clean_error: Callable[..., None],
    mode: str = "RGB",
    policy: MediaPolicy | None = None,
) -> Exception:
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(kind) as info:
            ImageMediaIO(mode, policy=policy).load_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 2
    assert peak < 32 * MiB
    clean_error(info.value, data[:16], base64.b64encode(data[:12]).decode())
    return info.value


# ---------------------------------------------------------------------------
# D1: pixel bombs are judged from the header


@pytest.mark.parametrize(
    "build",
    [png_claiming, gif_claiming, bmp_claiming, jpeg_claiming, tiff_claiming],
    ids=["png", "gif", "bmp", "jpeg", "tiff"],
)
def test_d1_header_claiming_too_many_pixels_is_refused_before_decoding(
    build: Callable[[int, int], bytes], clean_error: Any
) -> None:
    width, height = (30000, 30000) if build is not gif_claiming else (65535, 65535)
    if build is bmp_claiming:
        width = height = 30000
    data = build(width, height)
    assert len(data) < 4096
    err = refused(data, TooLargeError, clean_error)
    assert isinstance(err, TooLargeError)
    assert err.limit == "max_pixels"
    assert err.http_status == 413


def test_d1_jpeg_bomb_is_refused_on_both_decode_paths(clean_error: Any) -> None:
    data = jpeg_claiming(30000, 30000)
    refused(data, TooLargeError, clean_error, mode="RGB")
    refused(data, TooLargeError, clean_error, mode="RGBA")


def test_d1_policy_and_request_caps_apply_and_the_cap_itself_is_allowed(
    clean_error: Any,
) -> None:
    image = Image.fromarray(noise(40, 25))
    for fmt in ["PNG", "JPEG", "GIF", "WEBP"]:
        data = encode(image, fmt)
        refused(data, TooLargeError, clean_error, policy=MediaPolicy(max_pixels=999))
        assert decoded(data, policy=MediaPolicy(max_pixels=1000)).shape == (25, 40, 3)
        with pytest.raises(TooLargeError):
            decoded(data, max_pixels=999)
        # A request can lower the cap, never raise it.
        with pytest.raises(TooLargeError):
            ImageMediaIO(policy=MediaPolicy(max_pixels=999), max_pixels=10**9).load_bytes(data)


def test_d1_pixel_bomb_through_the_connector(
    make_connector: Callable[..., MediaConnector], clean_error: Any
) -> None:
    conn = make_connector(MediaPolicy())
    url = "data:image/png;base64," + base64.b64encode(png_claiming(30000, 30000)).decode()
    with pytest.raises(TooLargeError) as info:
        conn.fetch_image(url)
    clean_error(info.value, url[22:60])


# ---------------------------------------------------------------------------
# D2: animations yield their first frame, in bounded time


def _frames(count: int, mode: str = "RGB") -> list[Image.Image]:
    return [Image.new(mode, (16, 12), (i % 250, 255 - i % 250, 7)) for i in range(count)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_d2_thousands_of_frames_decode_the_first_only(fmt: str) -> None:
    # Multi-page TIFFs are slow to build, not to read: fewer pages make the same point.
    frames = _frames(1000 if fmt == "TIFF" else 3000)
    params: dict[str, Any] = {"save_all": True, "append_images": frames[1:]}
    if fmt != "TIFF":
        params["duration"] = 10
    if fmt == "WEBP":
        params["lossless"] = True
    data = encode(frames[0], fmt, **params)
    start = time.monotonic()
    pixels = decoded(data)
    assert time.monotonic() - start < 1.0
    assert pixels.shape == (12, 16, 3)
    expected = np.asarray(frames[0])
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 2


def test_d2_animated_gif_with_a_transparent_first_frame() -> None:
    first = Image.new("P", (4, 4), 0)
    first.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    second = Image.new("P", (4, 4), 1)
    second.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(first, "GIF", save_all=True, append_images=[second], transparency=0)
    pixels = decoded(data)
    assert pixels.shape == (4, 4, 3)
    assert (pixels == 255).all()  # transparent first frame over the white background


# ---------------------------------------------------------------------------
# D3: only allowlisted formats are decoded


def psd_bytes() -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 4, 4, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)
    return header + sections + struct.pack(">H", 0) + b"\x80" * 48


def fits_bytes() -> bytes:
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    2",
        "NAXIS1  =                    4",
        "NAXIS2  =                    4",
        "END",
    ]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    return header + b"\x80" * 2880


def _pillow(fmt: str, mode: str = "RGB", **params: Any) -> Callable[[], bytes]:
    return lambda: encode(Image.new(mode, (8, 8), (1, 2, 3) if mode == "RGB" else 1), fmt, **params)


RARE_FORMATS: dict[str, Callable[[], bytes]] = {
    "PSD": psd_bytes,
    "FITS": fits_bytes,
    "ICO": _pillow("ICO"),
    "TGA": _pillow("TGA"),
    "PCX": _pillow("PCX"),
    "PPM": _pillow("PPM"),
    "SGI": _pillow("SGI"),
    "DDS": _pillow("DDS"),
    "XBM": _pillow("XBM", "1"),
    "QOI": _pillow("QOI"),
    "EPS": _pillow("EPS"),
    "PDF": _pillow("PDF"),
    "JPEG2000": _pillow("JPEG2000"),
    "ICNS": _pillow("ICNS"),
    "SVG": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
}


@pytest.mark.parametrize("fmt", sorted(RARE_FORMATS))
def test_d3_rare_format_is_a_decode_error(fmt: str, clean_error: Any) -> None:
    try:
        data = RARE_FORMATS[fmt]()
    except (KeyError, OSError) as exc:  # a Pillow build without that writer
        pytest.skip(f"cannot build {fmt} here: {type(exc).__name__}")
    err = refused(data, DecodeError, clean_error)
    assert err.http_status == 415  # type: ignore[attr-defined]


def test_d3_a_lying_media_type_does_not_pick_the_decoder(
    make_connector: Callable[..., MediaConnector], clean_error: Any
) -> None:
    conn = make_connector(MediaPolicy())
    url = "data:image/png;base64," + base64.b64encode(psd_bytes()).decode()
    with pytest.raises(DecodeError) as info:
        conn.fetch_image(url)
    clean_error(info.value, url[22:50])


@pytest.mark.parametrize("junk", [b"", b"\0", b"BM", b"GIF89a", b"\x89PNG\r\n\x1a\n", b"II*\0"])
def test_d3_bare_signatures_are_decode_errors(junk: bytes, clean_error: Any) -> None:
    refused(junk, DecodeError, clean_error)


# ---------------------------------------------------------------------------
# D4: tiny images


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (37, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("fmt", LOSSLESS)
def test_d4_tiny_lossless_images_decode_exactly(size: tuple[int, int], fmt: str) -> None:
    pixels = noise(*size, seed=size[0] * 100 + size[1])
    if fmt == "GIF":
        pixels = np.asarray(Image.fromarray(pixels).quantize(256).convert("RGB"))
    data = encode(Image.fromarray(pixels), fmt)
    out = decoded(data)
    assert out.shape == (size[1], size[0], 3)
    assert out.dtype == np.uint8
    assert np.array_equal(out, pixels)


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (37, 1)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_d4_tiny_jpegs_decode_on_every_path(size: tuple[int, int], mode: str) -> None:
    color = (200, 40, 90)
    data = encode(Image.new("RGB", size, color), "JPEG", quality=100)
    out = decoded(data, mode)
    expected = np.asarray(Image.new("RGB", size, color).convert(mode))
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 4


# ---------------------------------------------------------------------------
# D5: truncated files are errors, never padded images


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_d5_truncated_image_is_a_decode_error(
    fmt: str, keep: float, mode: str, clean_error: Any
) -> None:
    data = encode(Image.fromarray(noise(64, 48)), fmt)
    cut = data[: int(len(data) * keep)]
    err = refused(cut, DecodeError, clean_error, mode=mode)
    assert err.http_status in (415, 422)  # type: ignore[attr-defined]


@pytest.mark.parametrize("progressive", [False, True])
def test_d5_jpeg_without_its_last_scan_is_not_padded(progressive: bool, clean_error: Any) -> None:
    data = encode(Image.fromarray(noise(64, 48)), "JPEG", progressive=progressive)
    refused(data[:-2], DecodeError, clean_error)  # no EOI marker
    refused(data[: len(data) * 3 // 4], DecodeError, clean_error)


def test_d5_next_image_after_a_truncated_one_is_fine() -> None:
    data = encode(Image.fromarray(noise(10, 10)), "PNG")
    with pytest.raises(DecodeError):
        decoded(data[:-30])
    assert decoded(data).shape == (10, 10, 3)
