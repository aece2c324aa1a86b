"""What the model sees is what the file shows: high bit depths scaled, not clipped;
EXIF-rotated JPEGs on the array path; HEIF/HEIC and AVIF behind the same limits."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps, features

import mediagate._media.image as image_module
from builders import gradient, image_bytes, png_bytes
from mediagate import DecodeError, ImageMediaIO, MediaPolicy, TooLargeError

# Every 16-bit value once, 0..65535 row by row: the 8-bit result must be v >> 8.
RAMP16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)


def _opened_mode(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as image:
        return image.mode


def _levels(result: object) -> npt.NDArray[np.int64]:
    """The result as ints, one channel (all colour channels must agree; alpha aside)."""
    pixels = np.asarray(result).astype(np.int64)
    if pixels.ndim == 3:
        for channel in range(1, 3 if pixels.shape[2] >= 3 else 1):
            assert np.array_equal(pixels[..., channel], pixels[..., 0])
        return pixels[..., 0]
    return pixels


def _assert_full_ramp(levels: npt.NDArray[np.int64]) -> None:
    """Monotonic over the row-major order and covering every level 0..255."""
    flat = levels.ravel()
    assert flat[0] == 0 and flat[-1] == 255
    assert np.all(np.diff(flat) >= 0)
    assert len(np.unique(flat)) == 256


def _png16_rgb(samples: npt.NDArray[np.uint16]) -> bytes:
    """A 48-bit RGB PNG whose three channels all hold ``samples`` (Pillow cannot write one)."""
    height, width = samples.shape
    rgb = np.repeat(samples[..., None], 3, axis=2).astype(">u2")
    rows = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- more than 8 bits per sample ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "stored", "opens_as"),
    [("PNG", "I;16", "I;16"), ("TIFF", "I;16", "I;16"), ("TIFF", "I;16B", "I;16B")],
)
@pytest.mark.parametrize("image_mode", ["RGB", "L", "RGBA", "LA"])
def test_16_bit_grayscale_is_scaled_to_8_bits(
    fmt: str, stored: str, opens_as: str, image_mode: str
) -> None:
    source = Image.frombytes(
        stored, (256, 256), RAMP16.astype(">u2" if stored[-1] == "B" else "<u2").tobytes()
    )
    data = image_bytes(source, fmt)
    assert _opened_mode(data) == opens_as
    result = ImageMediaIO(image_mode).load_bytes(data)
    assert result.mode == image_mode and result.size == (256, 256)
    levels = _levels(result)
    assert np.array_equal(levels, RAMP16 >> 8)
    _assert_full_ramp(levels)
    if image_mode in ("RGBA", "LA"):
        assert np.all(np.asarray(result)[..., -1] == 255)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_mode_converts_by_the_same_rule(mode: str) -> None:
    order = ">u2" if mode == "I;16B" else "=u2" if mode == "I;16N" else "<u2"
    image = Image.frombytes(mode, (256, 256), RAMP16.astype(order).tobytes())
    converted = ImageMediaIO("L").convert_mode(image)
    assert converted.mode == "L"
    assert np.array_equal(np.asarray(converted), (RAMP16 >> 8).astype(np.uint8))


def test_16_bit_gray_agrees_with_pillows_own_16_bit_colour() -> None:
    # Pillow reads a 48-bit RGB PNG by keeping each sample's high byte; the gray file of
    # the same samples must give the same pixels.
    colour = _png16_rgb(RAMP16)
    assert _opened_mode(colour) == "RGB"
    gray = image_bytes(Image.fromarray(RAMP16), "PNG")
    from_colour = np.asarray(ImageMediaIO().load_bytes(colour))
    assert np.array_equal(from_colour, np.asarray(ImageMediaIO().load_bytes(gray)))
    assert np.array_equal(from_colour[..., 0], RAMP16 >> 8)


def test_32_bit_int_takes_16_bit_data_as_16_bit_and_wider_data_from_the_int32_range() -> None:
    narrow = image_bytes(Image.fromarray(RAMP16.astype(np.int32)), "TIFF")
    assert _opened_mode(narrow) == "I"
    assert np.array_equal(_levels(ImageMediaIO().load_bytes(narrow)), RAMP16 >> 8)

    wide_values = (RAMP16.astype(np.int64) << 15).astype(np.int32)  # 0 .. 2**31 - 2**15
    wide_values[0, :4] = [-1, -(2**31), 0, 2**31 - 1]
    wide = image_bytes(Image.fromarray(wide_values), "TIFF")
    levels = _levels(ImageMediaIO("L").load_bytes(wide))
    assert levels[0, :4].tolist() == [0, 0, 0, 255]
    assert np.array_equal(levels[1:], (RAMP16[1:] >> 8))


def test_float_in_0_to_1_is_scaled_and_k_over_255_comes_back_as_k() -> None:
    k = np.arange(256, dtype=np.float32).reshape(16, 16)
    data = image_bytes(Image.fromarray(k / np.float32(255)), "TIFF")
    assert _opened_mode(data) == "F"
    levels = _levels(ImageMediaIO().load_bytes(data))
    assert np.array_equal(levels, k.astype(np.int64))
    _assert_full_ramp(levels)


def test_float_levels_are_rounded_and_clipped_and_nan_is_black() -> None:
    values = np.linspace(0.0, 255.0, 256, dtype=np.float32).reshape(16, 16)
    values[0, :6] = [np.nan, -5.0, 1.4, 1.6, np.inf, 300.0]
    data = image_bytes(Image.fromarray(values), "TIFF")
    levels = _levels(ImageMediaIO("L").load_bytes(data))
    assert levels[0, :6].tolist() == [0, 0, 1, 2, 255, 255]
    assert np.array_equal(levels.ravel()[6:], np.floor(values.ravel()[6:] + 0.5).astype(np.int64))
    # Mostly 0..1 with a stray infinity is still a 0..1 image.
    unit = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    unit[0, 0] = np.inf
    levels = _levels(ImageMediaIO("L").load_bytes(image_bytes(Image.fromarray(unit), "TIFF")))
    assert levels[0, 0] == 255 and levels[-1, -1] == 255 and levels[0, 1] == 1


def test_a_transparent_16_bit_key_is_composited_onto_the_background() -> None:
    data = image_bytes(Image.fromarray(RAMP16), "PNG", transparency=65535)
    result = np.asarray(ImageMediaIO(rgba_background_color=(1, 2, 3)).load_bytes(data))
    assert result[-1, -1].tolist() == [1, 2, 3]
    assert result[-1, -2].tolist() == [255, 255, 255]  # 65534 >> 8, opaque
    assert np.array_equal(result[:128, :, 0], RAMP16[:128] >> 8)
    rgba = np.asarray(ImageMediaIO("RGBA").load_bytes(data))
    assert rgba[-1, -1, 3] == 0 and rgba[0, 0, 3] == 255


def test_a_resized_16_bit_image_is_scaled_too() -> None:
    data = image_bytes(Image.fromarray(RAMP16), "PNG")
    result = ImageMediaIO(max_image_size=64).load_bytes(data)
    assert result.size == (64, 64)
    levels = _levels(result)
    assert levels[0, 0] <= 2 and levels[-1, -1] >= 253
    assert 100 < levels.mean() < 155  # not almost all white


def test_image_mode_none_keeps_the_16_bit_samples() -> None:
    result = ImageMediaIO(None).load_bytes(image_bytes(Image.fromarray(RAMP16), "PNG"))
    assert result.mode == "I;16"
    assert np.array_equal(np.asarray(result), RAMP16)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
def test_8_bit_images_are_unchanged_byte_for_byte(mode: str) -> None:
    pixels = gradient(37, 23)
    source = Image.fromarray(pixels)
    if mode == "L":
        source = Image.fromarray(pixels[..., 0])
    elif mode == "RGBA":
        source = Image.fromarray(np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)]))
    elif mode == "P":
        source = source.quantize(64)
    data = image_bytes(source, "PNG")
    for image_mode in ("RGB", "L"):
        with Image.open(io.BytesIO(data)) as opened:
            expected = np.asarray(opened.convert(image_mode))
        result = np.asarray(ImageMediaIO(image_mode).load_bytes(data))
        assert result.tobytes() == expected.tobytes()
    if mode == "L":
        assert np.asarray(ImageMediaIO("L").load_bytes(data)).tobytes() == source.tobytes()


@pytest.mark.parametrize(
    ("image_mode", "bytes_per_pixel"), [("RGB", 4), ("L", 2), ("I;16", 2), ("RGBA", 4)]
)
def test_the_decoded_budget_counts_the_larger_of_source_and_output(
    image_mode: str, bytes_per_pixel: int
) -> None:
    data = image_bytes(Image.fromarray(RAMP16), "PNG")
    needed = 256 * 256 * bytes_per_pixel
    refused = ImageMediaIO(image_mode, policy=MediaPolicy(max_decoded_bytes=needed - 1))
    with pytest.raises(TooLargeError) as info:
        refused.load_bytes(data)
    assert info.value.limit == "max_decoded_bytes" and info.value.http_status == 413
    allowed = ImageMediaIO(image_mode, policy=MediaPolicy(max_decoded_bytes=needed))
    assert allowed.load_bytes(data).size == (256, 256)


def test_float_images_are_budgeted_at_four_bytes_a_pixel() -> None:
    data = image_bytes(Image.fromarray(np.zeros((64, 64), np.float32)), "TIFF")
    with pytest.raises(TooLargeError, match="max_decoded_bytes"):
        ImageMediaIO("L", policy=MediaPolicy(max_decoded_bytes=64 * 64 * 4 - 1)).load_bytes(data)


# -- EXIF-oriented JPEGs on the array path -----------------------------------------------


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture
def array_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any decode that leaves the JPEG array path for Pillow."""

    def refuse(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a JPEG went through Pillow")

    monkeypatch.setattr(ImageMediaIO, "_load_pillow", refuse)


@pytest.fixture(params=["opencv", "numpy"])
def turner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Turn with OpenCV (the opencv extra) and with numpy alone (a plain install)."""
    if request.param == "numpy":
        monkeypatch.setattr("mediagate._media.image._cv2_turns", lambda: {})
    else:
        from mediagate._media.image import _cv2_turns

        assert _cv2_turns(), "opencv is installed by make install"
    return str(request.param)


@pytest.mark.usefixtures("array_path_only", "turner")
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("image_mode", ["RGB", "L"])
def test_every_orientation_decodes_on_the_array_path(orientation: int, image_mode: str) -> None:
    pixels = gradient(97, 61)  # odd, non-square, no symmetry: a wrong turn shows
    source = Image.fromarray(pixels if image_mode == "RGB" else pixels[..., 0])
    data = image_bytes(source, "JPEG", quality=95, exif=_exif(orientation))
    with Image.open(io.BytesIO(data)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert(image_mode)).astype(int)
    result = ImageMediaIO(image_mode).load_bytes(data)
    pixels_out = np.asarray(result)
    assert result.size == (expected.shape[1], expected.shape[0])
    assert result.size == ((61, 97) if orientation >= 5 else (97, 61))
    assert np.abs(pixels_out.astype(int) - expected).max() <= 1
    # Model code writes into it and hands it to torch.from_numpy: contiguous, writable.
    assert pixels_out.flags.c_contiguous and pixels_out.flags.writeable
    assert np.asarray(result) is pixels_out
    assert np.array_equal(np.asarray(result.media), pixels_out)


@pytest.mark.usefixtures("array_path_only")
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_oriented_jpeg_fits_the_size_hint_in_its_upright_frame(orientation: int) -> None:
    data = image_bytes(gradient(400, 200), "JPEG", quality=95, exif=_exif(orientation))
    result = ImageMediaIO(max_image_size=[100, 100]).load_bytes(data)
    upright = (200, 400) if orientation in (6, 8) else (400, 200)
    assert result.size == ((50, 100) if upright == (200, 400) else (100, 50))
    with Image.open(io.BytesIO(data)) as opened:
        expected = ImageOps.exif_transpose(opened).convert("RGB").resize(result.size)
    diff = np.abs(np.asarray(result).astype(int) - np.asarray(expected).astype(int))
    assert diff.mean() < 4


# -- HEIF/HEIC and AVIF --------------------------------------------------------------------


def _smooth(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Red across, green down: survives lossy codecs, and every flip or turn shows."""
    y, x = np.mgrid[0:height, 0:width]
    pixels: npt.NDArray[np.uint8] = np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 96)], axis=-1
    ).astype(np.uint8)
    return pixels


def _heic(pixels: npt.NDArray[np.uint8], **params: Any) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    buffer = io.BytesIO()
    # Encoded without registering the plugin with Pillow, which would outlive the test.
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(buffer, quality=90, **params)
    return buffer.getvalue()


def _avif(pixels: npt.NDArray[np.uint8], **params: Any) -> bytes:
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    return image_bytes(Image.fromarray(pixels), "AVIF", quality=90, **params)


ENCODERS = {"HEIF": _heic, "AVIF": _avif}


def _image_file_class(fmt: str) -> type:
    if fmt == "HEIF":
        heif_class: type = pytest.importorskip("pillow_heif").HeifImageFile
        return heif_class
    avif_class: type = pytest.importorskip("PIL.AvifImagePlugin").AvifImageFile
    return avif_class


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every pixel decode of a HEIF or AVIF image."""
    decoded: list[str] = []
    for fmt in ENCODERS:
        try:
            cls = _image_file_class(fmt)
        except pytest.skip.Exception:
            continue

        def refuse(self: Any, fmt: str = fmt) -> Any:
            decoded.append(fmt)
            raise AssertionError(f"{fmt} pixels were decoded")

        monkeypatch.setattr(cls, "load", refuse)
    return decoded


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_decode_to_the_encoded_pixels(fmt: str) -> None:
    pixels = _smooth(64, 48)
    result = ImageMediaIO().load_bytes(ENCODERS[fmt](pixels))
    assert result.size == (64, 48) and result.mode == "RGB"
    diff = np.abs(np.asarray(result).astype(int) - pixels.astype(int))
    assert diff.mean() < 3 and diff.max() <= 16
    gray = ImageMediaIO("L").load_bytes(ENCODERS[fmt](pixels))
    assert gray.mode == "L" and gray.size == (64, 48)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", [2, 5, 6, 8])
def test_heif_and_avif_orientation_is_applied_once(fmt: str, orientation: int) -> None:
    # Both encoders store the EXIF orientation as the container's irot/imir boxes.
    pixels = _smooth(64, 48)
    data = ENCODERS[fmt](pixels, exif=_exif(orientation))
    upright = np.asarray(ImageOps.exif_transpose(_with_orientation(pixels, orientation)))
    result = ImageMediaIO().load_bytes(data)
    assert result.size == (upright.shape[1], upright.shape[0])
    diff = np.abs(np.asarray(result).astype(int) - upright.astype(int))
    assert diff.mean() < 3


def _with_orientation(pixels: npt.NDArray[np.uint8], orientation: int) -> Image.Image:
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    return image


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heif_and_avif_over_the_pixel_cap_are_refused_from_the_header(
    fmt: str, no_pixel_decoding: list[str]
) -> None:
    data = ENCODERS[fmt](_smooth(64, 48))
    with pytest.raises(TooLargeError) as info:
        ImageMediaIO(policy=MediaPolicy(max_pixels=64 * 48 - 1)).load_bytes(data)
    assert info.value.limit == "max_pixels" and info.value.http_status == 413
    with pytest.raises(TooLargeError, match="max_pixels"):
        ImageMediaIO(max_pixels=1000).load_bytes(data)
    with pytest.raises(TooLargeError) as budget:
        ImageMediaIO(policy=MediaPolicy(max_decoded_bytes=64 * 48 * 4 - 1)).load_bytes(data)
    assert budget.value.limit == "max_decoded_bytes"
    assert no_pixel_decoding == []


@pytest.mark.parametrize(("fmt", "hint"), [("HEIF", "mediagate[heif]"), ("AVIF", "AVIF support")])
def test_without_its_decoder_the_format_is_a_415_naming_what_to_install(
    fmt: str, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ENCODERS[fmt](_smooth(16, 16))
    available = "_heif_available" if fmt == "HEIF" else "_avif_available"
    monkeypatch.setattr(image_module, available, lambda: False)
    decoder = ImageMediaIO()
    with pytest.raises(DecodeError) as info:
        decoder.load_bytes(data)
    message = str(info.value)
    assert info.value.http_status == 415 and hint in message
    allowed = message.split("allowed: ", 1)[1]
    assert fmt not in allowed and "PNG" in allowed
    assert decoder.load_bytes(png_bytes()).size == (40, 30)  # the rest works on


def test_the_allowlist_names_the_optional_formats_only_where_they_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ico = image_bytes(Image.new("RGB", (16, 16)), "ICO")
    expected = {
        "HEIF": image_module._heif_available(),
        "AVIF": image_module._avif_available(),
    }
    with pytest.raises(DecodeError, match="unsupported") as info:
        ImageMediaIO().load_bytes(ico)
    allowed = str(info.value).split("allowed: ", 1)[1]
    for fmt, present in expected.items():
        assert (fmt in allowed) == present
    monkeypatch.setattr(image_module, "_heif_available", lambda: False)
    monkeypatch.setattr(image_module, "_avif_available", lambda: False)
    with pytest.raises(DecodeError) as info:
        ImageMediaIO().load_bytes(ico)
    assert "HEIF" not in str(info.value) and "AVIF" not in str(info.value)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_structural_major_brand_is_told_apart_by_its_compatible_brands(fmt: str) -> None:
    data = ENCODERS[fmt](_smooth(32, 32))
    assert data[4:8] == b"ftyp"
    generic = data[:8] + b"mif1" + data[12:]
    assert image_module.sniff_image_format(generic) == fmt
    assert ImageMediaIO().load_bytes(generic).size == (32, 32)


def test_pillow_heif_is_imported_only_to_decode_heif(tmp_path: Path) -> None:
    heic = tmp_path / "image.heic"
    heic.write_bytes(_heic(_smooth(16, 16)))
    code = f"""
import sys
import mediagate
from mediagate import DecodeError, ImageMediaIO
from mediagate._build import png_bytes
ImageMediaIO().load_bytes(png_bytes())
assert "pillow_heif" not in sys.modules, "imported without a HEIF image"
heic = open({str(heic)!r}, "rb").read()
assert ImageMediaIO().load_bytes(heic).size == (16, 16)
assert "pillow_heif" in sys.modules
from PIL import Image
assert "HEIF" not in Image.OPEN, "registered with Pillow"
sys.modules["pillow_heif"] = None  # as if it were not installed
try:
    ImageMediaIO().load_bytes(heic)
except DecodeError as exc:
    assert exc.http_status == 415 and "mediagate[heif]" in str(exc), exc
else:
    raise AssertionError("decoded without pillow-heif")
assert ImageMediaIO().load_bytes(png_bytes()).size == (40, 30)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
