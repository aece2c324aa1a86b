"""ImageMediaIO: formats, modes, transparency, orientation, limits, both decode paths."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from builders import gradient, image_bytes, jpeg_bytes, png_bytes
from mediagate import (
    DecodeError,
    ImageMediaIO,
    MediaPolicy,
    MediaWithBytes,
    OptionError,
    TooLargeError,
)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_common_formats_decode(fmt: str, params: dict[str, object]) -> None:
    source = Image.fromarray(gradient(33, 21))
    result = ImageMediaIO().load_bytes(image_bytes(source, fmt, **params))
    assert isinstance(result, MediaWithBytes)
    assert result.size == (33, 21) and result.mode == "RGB"
    pixels = np.asarray(result)
    assert pixels.shape == (21, 33, 3) and pixels.dtype == np.uint8
    if fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        assert np.array_equal(pixels, np.asarray(source))


def test_result_keeps_original_bytes() -> None:
    data = png_bytes()
    assert ImageMediaIO().load_bytes(data).original_bytes == data


def test_jpeg_array_path_matches_pillow_and_does_not_copy() -> None:
    data = jpeg_bytes(97, 61)
    result = ImageMediaIO().load_bytes(data)
    first = np.asarray(result)
    assert np.asarray(result) is first  # kept, not decoded again
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert np.abs(first.astype(int) - reference).max() <= 1
    assert np.array_equal(np.asarray(result.media), first)


def test_grayscale_mode_on_the_jpeg_path() -> None:
    result = ImageMediaIO("L").load_bytes(jpeg_bytes(20, 10))
    assert result.mode == "L" and np.asarray(result).shape == (10, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    source = Image.fromarray(gradient(40, 24))
    exif = Image.Exif()
    exif[0x0112] = orientation
    params = {"quality": 95} if fmt == "JPEG" else {}
    data = image_bytes(source, fmt, exif=exif.tobytes(), **params)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    result = ImageMediaIO().load_bytes(data)
    assert result.size == expected.size
    if orientation in (5, 6, 7, 8):
        assert result.size == (24, 40)
    diff = np.abs(np.asarray(result).astype(int) - np.asarray(expected).astype(int))
    assert diff.max() <= 1


def _rgba_half_transparent() -> Image.Image:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left half opaque red, right half fully transparent
    return Image.fromarray(rgba, "RGBA")


def test_rgba_is_composited_onto_the_background_colour() -> None:
    data = png_bytes(_rgba_half_transparent())
    white = np.asarray(ImageMediaIO().load_bytes(data))
    assert white[0, 0].tolist() == [200, 0, 0] and white[0, 3].tolist() == [255, 255, 255]
    blue = np.asarray(ImageMediaIO(rgba_background_color=[0, 0, 255]).load_bytes(data))
    assert blue[0, 3].tolist() == [0, 0, 255]


def test_la_and_palette_transparency_are_composited() -> None:
    la = Image.new("LA", (2, 1), (10, 0))
    out = np.asarray(ImageMediaIO(rgba_background_color=(1, 2, 3)).load_bytes(png_bytes(la)))
    assert out[0, 0].tolist() == [1, 2, 3]

    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    data = image_bytes(palette, "PNG", transparency=0)
    out = np.asarray(ImageMediaIO(rgba_background_color=(9, 9, 9)).load_bytes(data))
    assert out[0, 0].tolist() == [9, 9, 9] and out[0, 1].tolist() == [0, 255, 0]


def test_rgb_with_a_trns_key_colour_is_composited() -> None:
    rgb = Image.new("RGB", (2, 1), (5, 5, 5))
    rgb.putpixel((1, 0), (50, 60, 70))
    data = image_bytes(rgb, "PNG", transparency=(5, 5, 5))
    out = np.asarray(ImageMediaIO(rgba_background_color=(0, 0, 0)).load_bytes(data))
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [50, 60, 70]


def test_rgba_mode_keeps_alpha() -> None:
    result = ImageMediaIO("RGBA").load_bytes(png_bytes(_rgba_half_transparent()))
    assert result.mode == "RGBA" and np.asarray(result)[0, 3, 3] == 0


def test_other_modes_convert_with_pillow() -> None:
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))
    result = ImageMediaIO().load_bytes(image_bytes(cmyk, "JPEG", quality=100))
    assert result.mode == "RGB"
    r, g, b = np.asarray(result)[0, 0].tolist()
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize(
    "colour", [(1, 2), (1, 2, 3, 4), (0, 0, 256), (-1, 0, 0), "white", (1.5, 2, 3), None]
)
def test_bad_background_colour_is_an_option_error(colour: object) -> None:
    with pytest.raises(OptionError, match="rgba_background_color") as info:
        ImageMediaIO(rgba_background_color=colour)
    assert isinstance(info.value, ValueError)


def test_unknown_option_and_bad_mode_name_the_key() -> None:
    with pytest.raises(OptionError, match="'colour'"):
        ImageMediaIO(colour=1)
    with pytest.raises(OptionError, match="image_mode"):
        ImageMediaIO("NOPE")


def test_pixel_cap_is_judged_from_the_header() -> None:
    data = png_bytes(Image.new("RGB", (200, 100)))
    with pytest.raises(TooLargeError, match="max_pixels") as info:
        ImageMediaIO(policy=MediaPolicy(max_pixels=19_999)).load_bytes(data)
    assert info.value.limit == "max_pixels" and info.value.http_status == 413
    with pytest.raises(TooLargeError):
        ImageMediaIO(policy=MediaPolicy(max_pixels=19_999)).load_bytes(jpeg_bytes(200, 100))
    assert ImageMediaIO(policy=MediaPolicy(max_pixels=20_000)).load_bytes(data).size == (200, 100)


def test_request_can_lower_but_not_raise_the_pixel_cap() -> None:
    data = png_bytes(Image.new("RGB", (100, 100)))
    with pytest.raises(TooLargeError):
        ImageMediaIO(max_pixels=9_999).load_bytes(data)
    raised = ImageMediaIO(max_pixels=10**9, policy=MediaPolicy(max_pixels=9_999))
    with pytest.raises(TooLargeError):
        raised.load_bytes(data)


def test_byte_budget_applies_to_load_bytes() -> None:
    data = png_bytes()
    with pytest.raises(TooLargeError, match="max_bytes"):
        ImageMediaIO(policy=MediaPolicy(max_bytes=len(data) - 1)).load_bytes(data)


def test_animated_gif_yields_its_first_frame_quickly() -> None:
    frames = [Image.new("RGB", (8, 8), (i % 256, 0, 0)) for i in range(300)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    start = time.perf_counter()
    result = ImageMediaIO().load_bytes(buffer.getvalue())
    assert time.perf_counter() - start < 2
    assert np.asarray(result)[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM"])
def test_formats_off_the_allowlist_are_refused(fmt: str) -> None:
    data = image_bytes(Image.new("RGB", (16, 16)), fmt)
    with pytest.raises(DecodeError, match="unsupported") as info:
        ImageMediaIO().load_bytes(data)
    assert info.value.http_status == 415


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_decode_errors(fmt: str) -> None:
    data = image_bytes(Image.fromarray(gradient(64, 64)), fmt)
    with pytest.raises(DecodeError):
        ImageMediaIO().load_bytes(data[: len(data) // 2])


def test_tiny_images_decode() -> None:
    for size in [(1, 1), (1, 57), (57, 1)]:
        source = Image.fromarray(gradient(*size))
        assert ImageMediaIO().load_bytes(png_bytes(source)).size == size
        assert ImageMediaIO().load_bytes(image_bytes(source, "JPEG")).size == size


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_max_image_size_fits_the_result(fmt: str) -> None:
    data = image_bytes(Image.fromarray(gradient(400, 200)), fmt)
    result = ImageMediaIO(max_image_size=100).load_bytes(data)
    assert result.size == (100, 50)
    box = ImageMediaIO(max_image_size=[80, 80]).load_bytes(data)
    assert box.size == (80, 40)
    small = ImageMediaIO(max_image_size=1000).load_bytes(data)
    assert small.size == (400, 200)


def test_base64_and_file_loading(tmp_path: pytest.TempPathFactory) -> None:
    data = png_bytes()
    io_ = ImageMediaIO()
    assert io_.load_base64("image/png", base64.b64encode(data).decode()).size == (40, 30)
    with pytest.raises(DecodeError, match="base64"):
        io_.load_base64("image/png", "not*base64!")
    path = tmp_path / "image.png"  # type: ignore[operator]
    path.write_bytes(data)
    assert io_.load_file(path).size == (40, 30)


def test_encode_base64_round_trips() -> None:
    io_ = ImageMediaIO()
    image = Image.fromarray(gradient(12, 7))
    for fmt in ("PNG", "JPEG"):
        text = io_.encode_base64(image, image_format=fmt)
        back = io_.load_base64(f"image/{fmt.lower()}", text)
        assert back.size == (12, 7)
    assert np.array_equal(
        np.asarray(io_.load_base64("image/png", io_.encode_base64(image))), np.asarray(image)
    )
