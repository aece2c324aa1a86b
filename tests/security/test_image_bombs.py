"""B1-B3 for images: hostile EXIF, output budgets, work bombs, every error typed.

Inputs are built in ``security.image_bombs``; the work bombs are measured in a child
process under an address-space limit (``security.childproc``).
"""

from __future__ import annotations

import io
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageFile

import security.image_bombs as bombs
from builders import gradient, image_bytes
from mediagate import DecodeError, ImageMediaIO, MediaError, MediaPolicy, TooLargeError
from mediagate._media import image as image_module
from mediagate._media.budget import DecodeLimits, decoding
from security.childproc import run_limited
from security.conftest import assert_clean_error

MiB = 1 << 20
CORRUPT = "the image data is corrupt or truncated"


def refused(data: bytes, cls: type[MediaError], mode: str = "RGB", **policy: Any) -> MediaError:
    """The error loading ``data`` raises: exactly ``cls``, clean, no payload in it."""
    with pytest.raises(MediaError) as info:
        ImageMediaIO(mode, policy=MediaPolicy(**policy)).load_bytes(data)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert_clean_error(err, data[:24], data[-24:])
    return err


def assert_good_image_decodes() -> None:
    out = np.asarray(ImageMediaIO().load_bytes(bombs.good_png()))
    assert np.array_equal(out, gradient(12, 8))


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every pixel decode (simplejpeg and Pillow's ``load``), passing through."""
    calls: list[str] = []
    real_jpeg = simplejpeg.decode_jpeg
    real_load = ImageFile.ImageFile.load

    def jpeg(*args: Any, **kwargs: Any) -> Any:
        calls.append("simplejpeg")
        return real_jpeg(*args, **kwargs)

    def load(self: ImageFile.ImageFile) -> Any:
        calls.append("pillow")
        return real_load(self)

    monkeypatch.setattr(simplejpeg, "decode_jpeg", jpeg)
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


# ---------------------------------------------------------------------------
# 1-2: EXIF orientation of the wrong type, and EXIF that is not TIFF data

SOURCE = gradient(12, 8)


def with_exif(fmt: str, exif: bytes, mode: str = "RGB") -> bytes:
    image = Image.fromarray(SOURCE).convert(mode)
    if fmt == "JPEG":
        return image_bytes(image, "JPEG", quality=100, exif=b"Exif\x00\x00" + exif)
    if fmt == "PNG":
        return bombs.png_with_exif_chunk(np.asarray(image), exif)
    if fmt == "WEBP":
        return image_bytes(image, "WEBP", lossless=True, exif=b"Exif\x00\x00" + exif)
    return bombs.tiff_with_orientation(12, 8, exif)


def unrotated(data: bytes) -> np.ndarray:
    """The pixels as stored, orientation not applied.

    Pillow applies no orientation, except a TIFF's own tag at load: a TIFF's reference
    is the same TIFF without it.
    """
    if data.startswith(b"MM"):
        data = bombs.tiff_gray(12, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# Pillow warns about the metadata it skips while opening a TIFF or JPEG (with the
# application's warning filters, printed by default); mediagate leaves the filters alone.
PILLOW_METADATA_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


# (format, image_mode): the JPEG fast path (RGB, L) and Pillow path (RGBA forces it).
PATHS = [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "RGBA"), ("PNG", "RGB"), ("WEBP", "RGB")]
PATHS += [("TIFF", "RGB")]


@PILLOW_METADATA_WARNINGS
@pytest.mark.parametrize("kind", sorted(bombs.BAD_ORIENTATIONS))
@pytest.mark.parametrize(("fmt", "mode"), PATHS)
def test_orientation_of_the_wrong_type_or_range_means_upright(
    kind: str, fmt: str, mode: str
) -> None:
    data = with_exif(fmt, bombs.BAD_ORIENTATIONS[kind])
    result = ImageMediaIO(mode).load_bytes(data)
    assert result.size == (12, 8)
    expected = np.asarray(Image.fromarray(unrotated(data)).convert(mode))
    diff = np.abs(np.asarray(result).astype(int) - expected.astype(int))
    assert diff.max() <= (2 if fmt == "JPEG" else 0)


@PILLOW_METADATA_WARNINGS
@pytest.mark.parametrize("kind", sorted(bombs.GOOD_ORIENTATIONS))
@pytest.mark.parametrize(("fmt", "mode"), PATHS)
def test_orientation_six_as_a_whole_number_rotates(kind: str, fmt: str, mode: str) -> None:
    data = with_exif(fmt, bombs.GOOD_ORIENTATIONS[kind])
    result = ImageMediaIO(mode).load_bytes(data)
    assert result.size == (8, 12)
    expected = np.asarray(Image.fromarray(np.rot90(unrotated(data), k=-1)).convert(mode))
    diff = np.abs(np.asarray(result).astype(int) - expected.astype(int))
    assert diff.max() <= (2 if fmt == "JPEG" else 0)


@PILLOW_METADATA_WARNINGS
@pytest.mark.parametrize("kind", sorted(bombs.BAD_EXIF_PAYLOADS))
@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("JPEG", "RGB"), ("JPEG", "RGBA")])
def test_exif_that_is_not_tiff_data_is_ignored(kind: str, fmt: str, mode: str) -> None:
    data = with_exif(fmt, bombs.BAD_EXIF_PAYLOADS[kind])
    result = ImageMediaIO(mode).load_bytes(data)
    assert result.size == (12, 8)


@PILLOW_METADATA_WARNINGS
@pytest.mark.parametrize(("fmt", "mode"), PATHS)
def test_a_multi_valued_orientation_is_read_as_pillow_reads_it(fmt: str, mode: str) -> None:
    data = with_exif(fmt, bombs.TUPLE_ORIENTATION)
    result = ImageMediaIO(mode).load_bytes(data)
    assert result.size == (8, 12)  # its first value, 6


def test_pillows_metadata_warning_as_an_error_is_typed() -> None:
    # Only where the application turns warnings into errors (as pytest does here).
    data = with_exif("TIFF", bombs.TUPLE_ORIENTATION)
    err = refused(data, DecodeError)
    assert isinstance(err.__cause__, UserWarning)
    assert err.http_status == 422


def test_orientation_value_rule() -> None:
    from PIL.TiffImagePlugin import IFDRational

    value = image_module._orientation_value
    for good in (1, 6, 8, 6.0, IFDRational(12, 2)):
        assert value(good) == int(good)
    for bad in (0, 9, -1, 2**70, True, 6.5, float("inf"), float("nan"), "6", b"\x06", (6,)):
        assert value(bad) == 1
    assert value(IFDRational(1, 0)) == 1


# ---------------------------------------------------------------------------
# 3: decoded-output budget, judged from the header before decoding


def jpeg(width: int, height: int, mode: str = "RGB") -> bytes:
    return image_bytes(Image.new(mode, (width, height), 90), "JPEG")


def png(width: int, height: int, mode: str) -> bytes:
    return image_bytes(Image.new(mode, (width, height)), "PNG")


def gif_with_canvas(width: int, height: int) -> bytes:
    """A GIF whose logical screen is ``width x height``; its one frame is 2x2."""
    data = bytearray(image_bytes(Image.new("P", (2, 2)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


# (data, image_mode, bytes it needs): JPEG fast path by output bands; Pillow path by
# the larger of the source and target modes as Pillow stores them.
BUDGET_CASES = {
    "jpeg_rgb": (lambda: jpeg(1000, 500), "RGB", 1000 * 500 * 3),
    "jpeg_l": (lambda: jpeg(1000, 500, "L"), "L", 1000 * 500),
    "png_rgba_to_rgb": (lambda: png(1000, 500, "RGBA"), "RGB", 1000 * 500 * 4),
    "png_i16": (lambda: png(1000, 500, "I;16"), "I;16", 1000 * 500 * 2),
    "png_l_to_rgb": (lambda: png(1000, 500, "L"), "RGB", 1000 * 500 * 4),
    "gif_canvas": (lambda: gif_with_canvas(2000, 1000), "RGB", 2000 * 1000 * 4),
}


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
def test_decoded_bytes_budget_refuses_before_decoding(case: str, decode_calls: list[str]) -> None:
    build, mode, needed = BUDGET_CASES[case]
    data = build()
    err = refused(data, TooLargeError, mode, max_decoded_bytes=needed - 1)
    assert isinstance(err, TooLargeError) and err.limit == "max_decoded_bytes"
    assert err.http_status == 413
    assert decode_calls == []
    out = ImageMediaIO(mode, policy=MediaPolicy(max_decoded_bytes=needed)).load_bytes(data)
    assert out.size == Image.open(io.BytesIO(data)).size
    assert decode_calls


def test_the_current_decode_budget_applies_over_the_policy(decode_calls: list[str]) -> None:
    limits = DecodeLimits.starting_now("image", 1000 * 500 * 3 - 1, 10.0)
    with decoding(limits), pytest.raises(TooLargeError) as info:
        ImageMediaIO().load_bytes(jpeg(1000, 500))
    assert info.value.limit == "max_decoded_bytes"
    assert decode_calls == []


def test_pillows_bomb_check_is_not_what_refuses(decode_calls: list[str]) -> None:
    # 10000 x 10000 is over Pillow's own MAX_IMAGE_PIXELS (a warning, an error under
    # pytest): with a policy that allows the pixels, the budget names its own limit.
    ihdr = bombs.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + bombs.png_chunk(b"IEND", b"")
    err = refused(data, TooLargeError, max_pixels=200_000_000, max_decoded_bytes=64 * MiB)
    assert err.limit == "max_decoded_bytes"  # type: ignore[attr-defined]
    err = refused(data, TooLargeError)
    assert err.limit == "max_pixels"  # type: ignore[attr-defined]
    assert decode_calls == []


# ---------------------------------------------------------------------------
# 4: decode work bounded: refused by structure, before decoding

SCAN_BOMB = bombs.progressive_scan_bomb(8000)  # 64 MP, 883 scans, ~70 KB


WORK_BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "progressive_scans": (lambda: SCAN_BOMB, "MAX_JPEG_SCANS"),
    "jpeg_com_markers": (bombs.jpeg_marker_bomb, "MAX_JPEG_HEADER_SEGMENTS"),
    "jpeg_app_markers": (bombs.jpeg_app_marker_bomb, "MAX_JPEG_HEADER_SEGMENTS"),
    "jpeg_fill_bytes": (bombs.jpeg_fill_bomb, "MAX_JPEG_STRAY_BYTES"),
    "tiff_million_strips": (bombs.tiff_strip_bomb, "MAX_TIFF_BLOCKS"),
    "tiff_strips_over_geometry": (lambda: bombs.tiff_strip_bomb(1000), "size needs"),
    "png_million_chunks": (bombs.png_chunk_bomb, "MAX_PNG_CHUNKS"),
    "png_million_idat_chunks": (
        lambda: bombs.png_chunk_bomb(kind=b"IDAT"),
        "MAX_PNG_CHUNKS",
    ),
    "bmp_rle8_padding": (bombs.bmp_rle_padding_bomb, "MAX_RLE_BMP_PIXELS"),
    "bmp_rle4_padding": (
        lambda: bombs.bmp_rle_padding_bomb(rle4=True),
        "MAX_RLE_BMP_PIXELS",
    ),
}


@pytest.fixture(scope="module")
def work_bombs() -> Iterator[dict[str, bytes]]:
    yield {name: build() for name, (build, _) in WORK_BOMBS.items()}


@pytest.mark.parametrize("name", sorted(WORK_BOMBS))
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_work_bomb_is_refused_by_name_before_decoding(
    name: str, mode: str, work_bombs: dict[str, bytes], decode_calls: list[str]
) -> None:
    data = work_bombs[name]
    start = time.monotonic()
    err = refused(data, DecodeError, mode)
    assert time.monotonic() - start < 1.0
    assert WORK_BOMBS[name][1] in str(err)
    assert err.http_status == 422
    assert decode_calls == []
    assert_good_image_decodes()


def test_honest_structures_under_the_limits_decode() -> None:
    progressive = image_bytes(
        Image.fromarray(gradient(64, 48)), "JPEG", progressive=True, quality=95
    )
    assert ImageMediaIO().load_bytes(progressive).size == (64, 48)
    one_row_strips = bombs.tiff_strip_bomb(64)  # exactly one strip per row
    assert np.asarray(ImageMediaIO("L").load_bytes(one_row_strips)).min() == 0x80
    indices = (gradient(300, 200)[..., 0] // 64).astype(np.uint8)
    out = np.asarray(ImageMediaIO("L").load_bytes(bombs.bmp_rle8_of(indices)))
    assert np.array_equal(out, indices)
    com = image_bytes(Image.fromarray(gradient(16, 16)), "JPEG")
    com = com[:2] + b"\xff\xfe\x00\x02" * 400 + com[2:]
    assert ImageMediaIO().load_bytes(com).size == (16, 16)
    chunky = bombs.png_chunk_bomb(image_module.MAX_PNG_CHUNKS - 4)  # just under the limit
    assert np.asarray(ImageMediaIO("L").load_bytes(chunky)).min() == 0x80


def test_strip_bomb_is_refused_before_pillow_builds_its_tiles(
    monkeypatch: pytest.MonkeyPatch, work_bombs: dict[str, bytes]
) -> None:
    opened: list[str] = []
    factory, accept = Image.OPEN["TIFF"]

    def spy(*args: Any) -> Any:
        opened.append("TIFF")
        return factory(*args)

    monkeypatch.setitem(Image.OPEN, "TIFF", (spy, accept))
    refused(work_bombs["tiff_million_strips"], DecodeError)
    assert opened == []


CHILD_POLICY = {"max_decoded_bytes": 32 * MiB, "decode_timeout": 2.0}


def _measured(cases: list[tuple[str, bytes, str, str]]) -> None:
    outcome = run_limited(
        "security.image_bombs:expect_refusals",
        cases,
        CHILD_POLICY,
        address_space=1024 * MiB,
        timeout=30,
    )
    assert not outcome.died and not outcome.timed_out
    assert outcome.media_error, f"{outcome.error}: {outcome.message}"
    assert outcome.error == cases[-1][2]
    assert outcome.peak_rss_growth < 10 * CHILD_POLICY["max_decoded_bytes"]
    assert outcome.cpu_seconds < CHILD_POLICY["decode_timeout"] + 1
    assert outcome.wall_seconds < CHILD_POLICY["decode_timeout"] + 1


def test_jpeg_work_bombs_end_quickly_in_bounded_memory(work_bombs: dict[str, bytes]) -> None:
    names = ["progressive_scans", "jpeg_com_markers", "jpeg_app_markers", "jpeg_fill_bytes"]
    _measured([(name, work_bombs[name], "DecodeError", WORK_BOMBS[name][1]) for name in names])


def test_tiff_and_bmp_work_bombs_end_quickly_in_bounded_memory(
    work_bombs: dict[str, bytes],
) -> None:
    names = ["tiff_million_strips", "tiff_strips_over_geometry"]
    cases = [(name, work_bombs[name], "DecodeError", WORK_BOMBS[name][1]) for name in names]
    # Within the child's budget (8192 x 600 x 4 bytes) but over MAX_RLE_BMP_PIXELS.
    for rle4 in (False, True):
        bomb = bombs.bmp_rle_padding_bomb(8192, 600, rle4=rle4)
        name = f"bmp_rle{4 if rle4 else 8}_in_budget"
        cases.append((name, bomb, "DecodeError", "MAX_RLE_BMP_PIXELS"))
    _measured(cases)


@pytest.mark.parametrize("data", [bombs.good_png(), jpeg(40, 30)], ids=["pillow", "jpeg"])
def test_a_passed_deadline_ends_the_decode(data: bytes) -> None:
    expired = DecodeLimits("image", 1 << 30, time.monotonic() - 1.0, 1.0)
    with decoding(expired), pytest.raises(TooLargeError) as info:
        ImageMediaIO().load_bytes(data)
    assert info.value.limit == "decode_timeout"
    assert_clean_error(info.value)


# ---------------------------------------------------------------------------
# 5: whatever the decoders raise is typed, in one place

RAISED: list[tuple[BaseException, type[MediaError]]] = [
    (OSError("x"), DecodeError),
    (ValueError("x"), DecodeError),
    (SyntaxError("x"), DecodeError),
    (EOFError("x"), DecodeError),
    (IndexError("x"), DecodeError),
    (struct.error("x"), DecodeError),
    (TypeError("x"), DecodeError),
    (ZeroDivisionError("x"), DecodeError),
    (OverflowError("x"), DecodeError),
    (KeyError("x"), DecodeError),
    (AttributeError("x"), DecodeError),
    (AssertionError("x"), DecodeError),
    (NotImplementedError("x"), DecodeError),
    (RuntimeError("x"), DecodeError),
    (MemoryError(), TooLargeError),
    (Image.DecompressionBombError("x"), TooLargeError),
    (Image.DecompressionBombWarning("x"), TooLargeError),
]
SECRET = "payload-\xff\xd8-at 0x7f0011223344"


@pytest.mark.parametrize(("raised", "expected"), RAISED, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("path", ["pillow", "jpeg"])
def test_any_decoder_exception_becomes_a_typed_error(
    raised: BaseException,
    expected: type[MediaError],
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raised.args = (SECRET,) if raised.args else ()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise raised

    if path == "jpeg":
        monkeypatch.setattr(simplejpeg, "decode_jpeg", boom)
        data = jpeg(40, 30)
    else:
        monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
        data = bombs.good_png()
    err = refused(data, expected)
    assert err.__cause__ is raised
    assert SECRET not in str(err) and "0x" not in str(err)
    if expected is DecodeError:
        assert str(err) in (CORRUPT, "the JPEG data is corrupt or truncated")
        assert err.http_status == 422
    else:
        assert err.http_status == 413
    monkeypatch.undo()
    assert_good_image_decodes()


def test_a_plugin_that_does_not_recognise_its_bytes_is_415() -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    err = refused(data, DecodeError)
    assert err.http_status == 415
