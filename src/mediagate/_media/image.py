"""Images: sniff, check the header, decode one frame, orient, convert the mode.

Two decode paths give the same pixels (within ±1):

* JPEG to RGB or L goes straight to a ``numpy`` array through libjpeg-turbo
  (simplejpeg). The array is kept in the result, so ``np.asarray(result)`` neither
  decodes again nor copies; the PIL image is built from it only when asked for.
* Everything else goes through Pillow, restricted to the sniffed format.

A size hint (``max_image_size``) lets JPEGs decode at a reduced DCT scale, the
smallest one still at or above the hint, before the exact resize. A JPEG's EXIF
orientation is applied on the array (flips and transposes, copied channel by channel),
so rotated photos stay on the fast path, with the pixels ``ImageOps.exif_transpose``
gives.

Samples of more than 8 bits are scaled, not clipped, into an 8-bit ``image_mode``
(RGB, L, RGBA, LA, ...), where Pillow's ``convert`` would clip everything above 255:

* ``I;16``, ``I;16B``, ``I;16L`` (16-bit grayscale PNG and TIFF): ``v >> 8``, the rule
  Pillow itself applies to 16-bit RGB and RGBA PNGs, so a gray and a colour file of
  the same samples agree. A 16-bit tRNS key value stays transparent.
* ``I`` (32-bit int): ``v >> 8`` when every sample is within 0..65535 (16-bit data, as
  older Pillow opened 16-bit PNGs), else ``v >> 23`` from the int32 range; negative is 0.
* ``F`` (32-bit float): ``round(v * 255)`` when every finite sample is within 0..1 (the
  rule of transformers' image processors), else ``round(v)`` clipped to 0..255 (levels
  already, as Pillow's F->L); NaN is 0. Pillow and transformers truncate instead of
  rounding (one level lower at most); rounding gives ``k / 255`` back as ``k``.

AVIF (Pillow built with libavif) and HEIF/HEIC (pillow-heif, ``mediagate[heif]``) are
on the allowlist only where their decoder is installed; pillow-heif is imported at the
first HEIF decode, and nothing is registered with Pillow. Either is refused without its
decoder as a 415 naming what to install. Both pass the same pixel cap and decoded-output
budget, judged from the container's header before any pixel is decoded.

Hostile input is bounded before any pixel is decoded:

* The pixel cap and the decoded-output budget (``reserve_output``) are judged from the
  header: width x height x the bytes per pixel of the larger of the source and target
  modes (as Pillow stores them: 4 for RGB, RGBA, CMYK; 2 for I;16; 4 for I and F). An
  animation is charged its canvas.
* Work that grows with structure rather than pixels is refused by name: a JPEG with
  more than ``MAX_JPEG_SCANS`` scans, more than ``MAX_JPEG_HEADER_SEGMENTS`` marker
  segments or ``MAX_JPEG_STRAY_BYTES`` fill or junk bytes before its first scan; a
  TIFF whose first directory lists more strips or tiles than its geometry needs or
  than ``MAX_TIFF_BLOCKS``; an RLE-compressed BMP (decoded by pure Python in Pillow)
  larger than ``MAX_RLE_BMP_PIXELS``. ``check_deadline`` runs between the steps.
* EXIF orientation counts only when it is one whole number in 1..8 (an integral
  rational such as 6/1 counts); any other value (text, 1/0, infinity, out of range),
  and EXIF data that does not parse, mean orientation 1, as browsers do. Values are
  read as Pillow parses them (a multi-valued tag gives its first value, with Pillow's
  warning); a TIFF's own Orientation tag is applied by Pillow while loading.
* Images are opened through the format's Pillow plugin directly, so Pillow's own
  decompression-bomb check never runs before these; where a plugin still runs it
  (GIF frames, TIFF, MPO) it can only trip for a policy allowing more pixels than
  Pillow does, and is then a ``TooLargeError``.
* Whatever Pillow or simplejpeg raise on hostile bytes becomes a ``DecodeError`` (a
  ``MemoryError`` a ``TooLargeError``) in one place, ``_as_media_error``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import math
import numbers
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pybase64
from PIL import Image, ImageFile, ImageMode, UnidentifiedImageError, features

from .._errors import DecodeError, MediaError, OptionError, TooLargeError
from .._policy import MediaPolicy
from .base import (
    MediaIO,
    MediaWithBytes,
    OptionSpec,
    opt_int,
    opt_rgb,
    validate_options,
)
from .budget import DecodedBudget, check_deadline, reserve_output

try:  # libjpeg-turbo straight to numpy; Pillow serves when it is missing.
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a core dependency
    _simplejpeg = None

__all__ = ["IMAGE_OPTIONS", "ImageMediaIO", "sniff_image_format"]

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Modes of more than 8 bits per sample, scaled (not clipped) to an 8-bit target mode.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

#: Pillow's names for the formats mediagate decodes, by their leading bytes.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
# Structural brands: the codec is named among the compatible brands (HEIF when none is).
_GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
# The most of an ftyp box read for compatible brands (real boxes list a handful).
_FTYP_READ = 256


#: Most scans (SOS markers, counted anywhere in the file) a JPEG may hold. libjpeg's
#: progressive scripts write 10 or fewer; an EXIF thumbnail or an MPF image adds a few.
#: Every extra scan is another pass over the whole coefficient buffer.
MAX_JPEG_SCANS = 64
#: Most marker segments a JPEG may have before its first scan (APPn, COM, DQT, DHT...).
#: Real files have a few dozen; Pillow reads each one in Python.
MAX_JPEG_HEADER_SEGMENTS = 512
#: Most fill (0xFF) or junk bytes a JPEG may have between its header segments.
MAX_JPEG_STRAY_BYTES = 4096
#: Most strips or tiles a TIFF's first directory may list. Pillow builds one tile per
#: entry at open and decodes each in Python-driven steps.
MAX_TIFF_BLOCKS = 65536
#: Most chunks a PNG may hold. Encoders write IDAT in 8-64 KiB chunks (a few thousand at
#: most within the byte budget); Pillow reads every chunk in Python, about 3 us each.
MAX_PNG_CHUNKS = 65536
#: Largest canvas (pixels) of an RLE4/RLE8 BMP. Pillow's RLE decoder is pure Python and
#: spends up to one interpreter step per pixel: this keeps it well under a second.
MAX_RLE_BMP_PIXELS = 1 << 22

_FF_RUN = re.compile(rb"\xff+")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_LAST_HEADER_MARKERS = frozenset({0xDA, 0xD9})  # SOS, EOI
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_BMP_RLE = frozenset({1, 2})  # BI_RLE8, BI_RLE4
_EXIF_PREFIX = b"Exif\x00\x00"
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Pillow stores every 8-bit mode of 2 to 4 bands in 4 bytes per pixel.
_MIN_STORAGE_BANDS = 4
# Errors a plugin raises when the bytes are not its format (Image.open's own list).
_NOT_THIS_FORMAT = (SyntaxError, IndexError, TypeError, struct.error)


def _as_media_error(exc: Exception, max_pixels: int) -> MediaError:
    """The typed error for whatever a decoder raised on hostile bytes.

    ``MemoryError`` is a ``TooLargeError``; Pillow's decompression-bomb error (or its
    warning, raised when warnings are errors) a ``TooLargeError`` on ``max_pixels``; an
    unidentified image a 415 ``DecodeError``; anything else a 422 ``DecodeError``. The
    message never carries the original text, which may quote the payload.
    """
    if isinstance(exc, MediaError):
        return exc
    if isinstance(exc, MemoryError):
        return TooLargeError(
            "decoding the image ran out of memory (lower MediaPolicy.max_pixels or "
            "MediaPolicy.max_decoded_bytes)",
            limit="memory",
        )
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return TooLargeError(
            f"the image has more pixels than the decoder allows (max_pixels={max_pixels})",
            limit="max_pixels",
            maximum=max_pixels,
        )
    if isinstance(exc, UnidentifiedImageError):
        return DecodeError("the image data is not a readable image", http_status=415)
    return DecodeError("the image data is corrupt or truncated")


@contextlib.contextmanager
def _typed_errors(max_pixels: int) -> Iterator[None]:
    """Turn any exception raised inside into a ``MediaError``.

    ``ImportError`` (a missing optional plugin is the server's fault) passes through.

    Raises:
        MediaError: what ``_as_media_error`` makes of the exception, chained to it.
    """
    try:
        yield
    except (MediaError, ImportError):
        raise
    except Exception as exc:
        raise _as_media_error(exc, max_pixels) from exc


def _orientation_value(value: object) -> int:
    """An EXIF Orientation value as 1..8; anything but one whole number in range is 1."""
    number: int
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return 1
        number = int(value)
    elif isinstance(value, numbers.Rational):
        numerator, denominator = int(value.numerator), int(value.denominator)
        if denominator == 0 or numerator % denominator:
            return 1
        number = numerator // denominator
    else:
        return 1
    return number if 1 <= number <= 8 else 1


def _read_orientation(read_exif: Callable[[], Image.Exif]) -> int:
    """The orientation in the EXIF ``read_exif`` returns; 1 when it does not parse.

    Raises:
        MemoryError: parsing ran out of memory (the caller's mapping types it).
    """
    try:
        return _orientation_value(read_exif().get(_EXIF_ORIENTATION, 1))
    except MemoryError:
        raise
    except Exception:  # bad EXIF is ignored, as browsers do, never fatal
        return 1


def _exif_from_bytes(payload: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(payload)
    return exif


def _too_complex(what: str, limit_name: str, limit: int) -> DecodeError:
    return DecodeError(f"the {what} exceeds {limit_name}={limit}; it is refused before decoding")


@dataclass
class _JpegWalk:
    """What the walk over a JPEG's header segments found."""

    exif: bytes | None = None
    segments: int = 0
    stray: int = 0
    progressive: bool = False


def _jpeg_skip_to_marker(data: bytes, pos: int, walk: _JpegWalk) -> int:
    """The position of the next marker code at or after ``pos`` (``-1``: none).

    Fill bytes (a run of 0xFF), junk and escaped 0xFF 0x00 pairs between segments are
    counted into ``walk.stray``.

    Raises:
        DecodeError: more than ``MAX_JPEG_STRAY_BYTES`` stray bytes.
    """
    while True:
        ff = data.find(b"\xff", pos)
        if ff < 0:
            return -1
        run = _FF_RUN.match(data, ff)
        end = ff + 1 if run is None else run.end()
        walk.stray += (ff - pos) + (end - ff - 1)
        if walk.stray > MAX_JPEG_STRAY_BYTES:
            raise _too_complex("JPEG's padding", "MAX_JPEG_STRAY_BYTES", MAX_JPEG_STRAY_BYTES)
        if end >= len(data):
            return -1
        if data[end] != 0x00:
            return end
        walk.stray += 2
        pos = end + 1


def _walk_jpeg(data: bytes) -> _JpegWalk:
    """Count a JPEG's scans and header segments, keeping its first EXIF payload.

    A bounded walk over segment lengths from SOI to the first SOS; where the structure
    breaks off, it stops and leaves the verdict to the decoder.

    Raises:
        DecodeError: over ``MAX_JPEG_SCANS``, ``MAX_JPEG_HEADER_SEGMENTS`` or
            ``MAX_JPEG_STRAY_BYTES``.
    """
    walk = _walk_jpeg_header(data)
    # Only a progressive JPEG decodes scan after scan over the whole image; a sequential
    # one that names more scans than its components is refused by libjpeg at the next.
    if walk.progressive and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
        raise _too_complex("JPEG's number of scans", "MAX_JPEG_SCANS", MAX_JPEG_SCANS)
    return walk


def _walk_jpeg_header(data: bytes) -> _JpegWalk:
    walk = _JpegWalk()
    pos = 2
    while True:
        at = _jpeg_skip_to_marker(data, pos, walk)
        if at < 0:
            return walk
        marker = data[at]
        walk.segments += 1
        if walk.segments > MAX_JPEG_HEADER_SEGMENTS:
            raise _too_complex(
                "JPEG's number of header segments",
                "MAX_JPEG_HEADER_SEGMENTS",
                MAX_JPEG_HEADER_SEGMENTS,
            )
        pos = at + 1
        walk.progressive = walk.progressive or marker in _JPEG_PROGRESSIVE_SOF
        if marker in _JPEG_LAST_HEADER_MARKERS:
            return walk
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > len(data):
            return walk
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2:
            return walk
        if marker == 0xE1 and walk.exif is None and data.startswith(_EXIF_PREFIX, pos + 2):
            walk.exif = data[pos + 2 : pos + length]
        pos += length


@dataclass(frozen=True)
class _IfdEntry:
    type: int
    count: int
    value: int | None


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TIFF_TAGS_READ = frozenset({256, 257, 273, 277, 278, 279, 284, 322, 323, 324, 325})


def _tiff_first_ifd(data: bytes) -> dict[int, _IfdEntry]:
    """The entries of a classic TIFF's first directory that set its strip geometry.

    Only counts and inline SHORT/LONG values are read; nothing is unpacked per strip.
    An unreadable directory gives ``{}`` (the decoder then judges the file).
    """
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        table = data[offset + 2 : offset + 2 + 12 * count]
        rows = struct.iter_unpack(order + "HHI4s", table[: len(table) - len(table) % 12])
    except struct.error:
        return {}
    entries: dict[int, _IfdEntry] = {}
    for tag, kind, n, raw in rows:
        if tag not in _TIFF_TAGS_READ or tag in entries:
            continue
        value: int | None = None
        if n == 1 and kind == 3:
            value = struct.unpack(order + "H", raw[:2])[0]
        elif n == 1 and kind == 4:
            value = struct.unpack(order + "I", raw)[0]
        entries[tag] = _IfdEntry(kind, n, value)
    return entries


def _check_png_chunks(data: bytes) -> None:
    """Refuse a PNG of more than ``MAX_PNG_CHUNKS`` chunks (a bounded walk over lengths).

    Raises:
        DecodeError: too many chunks.
    """
    pos, end, chunks = 8, len(data), 0
    while pos + 8 <= end:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex("PNG's chunk count", "MAX_PNG_CHUNKS", MAX_PNG_CHUNKS)
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + length


def _tiff_blocks_needed(entries: Mapping[int, _IfdEntry], tiled: bool) -> int | None:
    """Strips or tiles the geometry needs (``None`` when the geometry is unreadable)."""

    def value(tag: int, default: int | None = None) -> int | None:
        entry = entries.get(tag)
        return default if entry is None else entry.value

    width, height = value(256), value(257)
    if not width or not height:
        return None
    planes = value(277, 1) if value(284, 1) == 2 else 1
    if tiled:
        tile_w, tile_h = value(322), value(323)
        if not tile_w or not tile_h:
            return None
        blocks = -(-width // tile_w) * -(-height // tile_h)
    else:
        rows = value(278, height) or height
        blocks = -(-height // min(rows, height))
    return blocks * max(1, planes or 1)


def _check_tiff_blocks(data: bytes) -> None:
    """Refuse a TIFF that lists more strips or tiles than allowed or than it needs.

    Read from the first directory before Pillow opens the file: Pillow builds one tile
    per listed strip at open, wrapping around the canvas when there are more than fit.

    Raises:
        DecodeError: over ``MAX_TIFF_BLOCKS``, or more blocks than the geometry needs.
    """
    entries = _tiff_first_ifd(data)
    for offsets, counts, tiled in ((324, 325, True), (273, 279, False)):
        listed = max(entries[tag].count if tag in entries else 0 for tag in (offsets, counts))
        if not listed:
            continue
        if listed > MAX_TIFF_BLOCKS:
            raise _too_complex(
                "TIFF's number of strips or tiles", "MAX_TIFF_BLOCKS", MAX_TIFF_BLOCKS
            )
        needed = _tiff_blocks_needed(entries, tiled)
        if needed is not None and listed > needed:
            raise DecodeError(
                "the TIFF lists more strips or tiles than its size needs; it is refused "
                "before decoding"
            )


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow allocates per pixel of ``mode`` (8-bit multi-band modes take 4).

    Raises:
        KeyError: not a Pillow mode.
    """
    info = ImageMode.getmode(mode)
    itemsize = int(info.typestr[-1]) if info.typestr[-1].isdigit() else 1
    bands = len(info.bands)
    if itemsize == 1 and 1 < bands <= _MIN_STORAGE_BANDS:
        bands = _MIN_STORAGE_BANDS
    return itemsize * bands


def _heif_available() -> bool:
    """Whether pillow-heif is installed (looked up, not imported)."""
    try:
        return all(importlib.util.find_spec(name) for name in ("pillow_heif", "_pillow_heif"))
    except (ImportError, ValueError):  # a module entry without a spec, a blocked import
        return False


def _avif_available() -> bool:
    """Whether this Pillow was built with AVIF support (libavif)."""
    return bool(features.check("avif"))


#: What each optional format needs, named when it is sent but cannot be decoded here.
_PLUGIN_HINTS = {
    "HEIF": "decoding HEIF/HEIC needs pillow-heif (pip install 'mediagate[heif]')",
    "AVIF": "decoding AVIF needs a Pillow built with AVIF support (the wheels of Pillow "
    "11.3 and later)",
}


def _plugin_factory(fmt: str) -> Callable[[io.BytesIO, str], ImageFile.ImageFile]:
    """The image-file class of ``fmt``'s Pillow plugin.

    HEIF uses pillow-heif's class directly: nothing is registered with Pillow, so
    ``Image.open`` elsewhere in the process is left as it was.

    Raises:
        ImportError: pillow-heif is missing (the format is then off the allowlist).
    """
    if fmt == "HEIF":
        factory: Callable[[io.BytesIO, str], ImageFile.ImageFile]
        factory = importlib.import_module("pillow_heif").HeifImageFile
        return factory
    if fmt not in Image.OPEN:
        Image.init()
    return Image.OPEN[fmt][0]


def _open_plugin(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Open ``data`` with the Pillow plugin for ``fmt`` (headers only, nothing decoded).

    Raises:
        UnidentifiedImageError: the plugin does not recognise the bytes.
    """
    factory = _plugin_factory(fmt)
    try:
        return factory(io.BytesIO(data), "")
    except _NOT_THIS_FORMAT as exc:
        raise UnidentifiedImageError("not a readable image") from exc


def _image_options() -> dict[str, OptionSpec]:
    def check_mode(modality: str, key: str, value: Any) -> Any:
        if value is None:
            return None  # keep each image's own mode
        try:
            ImageMode.getmode(value)
        except (KeyError, TypeError) as exc:
            raise OptionError(
                f"{modality} option {key!r} must be a Pillow mode such as 'RGB', 'RGBA' or 'L'",
                option=key,
            ) from exc
        return value

    def check_size(modality: str, key: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            w, h = (opt_int(1, 1 << 16)(modality, key, v) for v in value)
            return (w, h)
        side = opt_int(1, 1 << 16)(modality, key, value)
        return (side, side)

    return {
        "image_mode": OptionSpec(
            check_mode, "Pillow mode of the result (default 'RGB'; None keeps the image's own)"
        ),
        "rgba_background_color": OptionSpec(
            opt_rgb(), "colour transparent pixels are composited onto (default white)"
        ),
        "max_image_size": OptionSpec(
            check_size,
            "fit the result within this size (an int for both sides, or [width, height]); "
            "JPEGs decode at a reduced DCT scale first",
        ),
        "max_pixels": OptionSpec(
            opt_int(1), "lower the policy's pixel cap for this request (never raises it)"
        ),
    }


#: The options ``ImageMediaIO`` accepts (``media_io_kwargs["image"]``).
IMAGE_OPTIONS: Mapping[str, OptionSpec] = _image_options()


def _enabled_formats() -> frozenset[str]:
    """The allowlist: the core formats, and the optional ones whose plugin is here."""
    formats = {"JPEG", "PNG", "GIF", "BMP", "TIFF"}
    if features.check("webp"):
        formats.add("WEBP")
    if _avif_available():
        formats.add("AVIF")
    if _heif_available():
        formats.add("HEIF")
    return frozenset(formats)


def _ftyp_format(data: bytes) -> str | None:
    """AVIF or HEIF from an ISO BMFF ``ftyp`` box: its major brand, or for a structural
    major brand (``mif1``, ``msf1``) the first coding brand among the compatible ones."""
    major = data[8:12]
    if major in _AVIF_BRANDS:
        return "AVIF"
    if major in _HEIF_BRANDS:
        return "HEIF"
    if major not in _GENERIC_HEIF_BRANDS:
        return None
    size = int.from_bytes(data[:4], "big")
    end = min(size if size >= 16 else 16, len(data), _FTYP_READ)
    for pos in range(16, end - 3, 4):
        brand = data[pos : pos + 4]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
    return "HEIF"


def sniff_image_format(data: bytes) -> str | None:
    """Pillow's name for the format of ``data`` from its first bytes (whether or not
    this installation can decode it: see the allowlist)."""
    head = data[:32]
    for magic, offset, name in _SIGNATURES:
        if head.startswith(magic, offset):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _ftyp_format(data[:_FTYP_READ])
    return None


#: The view of an HxW[xC] array each EXIF orientation (2..8) gives, as exif_transpose.
_ORIENTATION_VIEWS: dict[int, Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]] = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, k=-1),  # rotated 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, k=1),  # rotated 90 counter-clockwise
}


@functools.cache
def _cv2_turns() -> dict[int, Callable[[Any, Any], Any]]:
    """The same turns by OpenCV's blocked copies (about 3x faster than numpy's) when the
    optional ``opencv`` extra is installed, each writing into the array it is given;
    empty otherwise."""
    if importlib.util.find_spec("cv2") is None:
        return {}
    try:
        import cv2
    except ImportError:  # installed but not loadable here
        return {}
    return {
        2: lambda a, out: cv2.flip(a, 1, dst=out),
        3: lambda a, out: cv2.rotate(a, cv2.ROTATE_180, dst=out),
        4: lambda a, out: cv2.flip(a, 0, dst=out),
        5: lambda a, out: cv2.transpose(a, dst=out),
        6: lambda a, out: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE, dst=out),
        7: lambda a, out: cv2.transpose(cv2.flip(a, -1), dst=out),
        8: lambda a, out: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE, dst=out),
    }


def _oriented(array: npt.NDArray[np.uint8], orientation: int) -> npt.NDArray[np.uint8]:
    """Apply an EXIF orientation (2..8) to an HxW[xC] array, as Pillow's exif_transpose.

    A colour image is copied one channel at a time: numpy copies a reversed or
    transposed HxWx3 view with an inner loop of 3 bytes, two to four times slower (at
    800x600, 1.7-2.0 ms against 0.45-0.95 ms). A vertical flip keeps whole rows and is
    copied at once.
    """
    view = _ORIENTATION_VIEWS.get(orientation)
    if view is None:
        return array
    turn = _cv2_turns().get(orientation)
    if turn is not None and array.flags.c_contiguous and array.size:
        # Into an array numpy allocates: it reuses freed memory that OpenCV's allocator
        # would fault in afresh for every image (a third of the cost of the turn).
        height, width = array.shape[:2]
        size = (width, height) if orientation >= 5 else (height, width)
        out = np.empty((*size, *array.shape[2:]), array.dtype)
        turn(array, out)
        return out
    moved = view(array)
    if array.ndim == 2 or orientation == 4:
        return np.ascontiguousarray(moved)
    out = np.empty(moved.shape, array.dtype)
    for channel in range(moved.shape[2]):
        out[:, :, channel] = moved[:, :, channel]
    return out


def _is_8bit_mode(mode: str) -> bool:
    """Whether ``mode`` holds 8 bits (or 1) per band: RGB, RGBA, L, LA, P, CMYK, 1..."""
    return ImageMode.getmode(mode).typestr[-2:] in ("u1", "b1")


def _int_to_8bit(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """16-bit (or 32-bit int) samples as 0..255: the top 8 bits of their range.

    Samples within 0..65535 are 16-bit, ``v >> 8``; an ``I`` image with larger values is
    scaled from the int32 range, ``v >> 23``. Negative samples are 0.
    """
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        values = np.maximum(values, 0)
    top = int(values.max()) if values.size else 0
    out = np.empty(values.shape, np.uint8)
    np.right_shift(values, 8 if top <= 0xFFFF else 23, out=out, casting="unsafe")
    return out


def _float_to_8bit(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Float samples as 0..255, rounded to the nearest level.

    When every finite sample lies in 0..1 the image is taken as 0..1 and multiplied by
    255 (the rule of transformers' image processors); otherwise the samples are levels
    already and are clipped to 0..255, as Pillow's own F->L conversion does. NaN is 0,
    infinities clip to the ends.
    """
    finite = np.isfinite(values)
    low = float(np.min(values, where=finite, initial=np.inf))
    high = float(np.max(values, where=finite, initial=-np.inf))
    unit = not (low < 0.0 or high > 1.0)  # also true when no sample is finite
    scaled = values * np.float32(255.0) if unit else values.astype(np.float32)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    np.floor(scaled, out=scaled)
    levels: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return levels


def _to_8bit(image: Image.Image) -> Image.Image:
    """An ``I;16*``, ``I`` or ``F`` image scaled to 8-bit ``L`` (``LA`` when its ``info``
    names a transparent key value), where Pillow's own ``convert`` clips instead."""
    values = np.asarray(image)
    gray = _float_to_8bit(values) if image.mode == "F" else _int_to_8bit(values)
    scaled = Image.fromarray(gray)
    key = image.info.get("transparency")
    if image.mode != "F" and isinstance(key, int) and not isinstance(key, bool):
        alpha = np.where(values == key, np.uint8(0), np.uint8(255))
        return Image.merge("LA", (scaled, Image.fromarray(alpha)))
    return scaled


def _fit(width: int, height: int, box: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size that fits ``width x height`` within ``box`` keeping the aspect ratio."""
    if box is None or (width <= box[0] and height <= box[1]):
        return None
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _array_to_pil(array: npt.NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(array)


class ImageMediaIO(MediaIO[MediaWithBytes[Image.Image]]):
    """Decode images to PIL (and, for JPEG, straight to a ``numpy`` array).

    Example::

        io = ImageMediaIO("RGB", rgba_background_color=(0, 0, 0))
        result = io.load_bytes(png_bytes)          # MediaWithBytes[PIL.Image.Image]
        pixels = np.asarray(result)                # HxWx3 uint8, no second decode

    Raises:
        OptionError: an unknown option, a bad mode, or a bad background colour.
    """

    modality = "image"

    def __init__(
        self,
        /,
        image_mode: str | None = "RGB",
        *,
        policy: MediaPolicy | None = None,
        decoded_budget: DecodedBudget | None = None,
        **options: Any,
    ) -> None:
        super().__init__(policy=policy, decoded_budget=decoded_budget)
        checked = validate_options("image", {"image_mode": image_mode, **options}, IMAGE_OPTIONS)
        self.image_mode: str | None = checked["image_mode"]
        self.rgba_background_color: tuple[int, int, int] = checked.get(
            "rgba_background_color", (255, 255, 255)
        )
        self.max_image_size: tuple[int, int] | None = checked.get("max_image_size")
        self.max_pixels = min(
            checked.get("max_pixels", self.policy.max_pixels), self.policy.max_pixels
        )
        # A request may only lower the server's pixel cap.
        self._limits = (
            self.policy
            if self.max_pixels == self.policy.max_pixels
            else self.policy.replace(max_pixels=self.max_pixels)
        )
        self.kwargs = {k: v for k, v in checked.items() if k != "image_mode"}
        self._formats = _enabled_formats()

    # -- decoding ---------------------------------------------------------------------

    def _check_pixels(self, width: int, height: int) -> None:
        self._limits.check_pixels(width, height)

    def load_bytes(self, data: bytes) -> MediaWithBytes[Image.Image]:
        """Decode one image (the first frame of an animation).

        Raises:
            TooLargeError: more bytes than ``max_bytes``, more pixels than ``max_pixels``
                or more decoded bytes than ``max_decoded_bytes`` (judged from the header,
                before decoding), or past the decode deadline.
            DecodeError: not an allowlisted format (415), corrupt or truncated, or a
                structure over one of this module's ``MAX_*`` limits (422).
        """
        data = bytes(data) if not isinstance(data, bytes) else data
        self.policy.check_size(len(data), "image", what="image")
        fmt = sniff_image_format(data)
        if fmt is None or fmt not in self._formats:
            allowed = ", ".join(sorted(self._formats))
            hint = _PLUGIN_HINTS.get(fmt or "")
            if hint is not None:
                raise DecodeError(
                    f"unsupported image format {fmt} on this server: {hint} (allowed: {allowed})",
                    http_status=415,
                )
            raise DecodeError(
                f"unsupported or unrecognised image format (allowed: {allowed})",
                http_status=415,
            )
        with _typed_errors(self.max_pixels):
            return self._load_checked(data, fmt)

    def _load_checked(self, data: bytes, fmt: str) -> MediaWithBytes[Image.Image]:
        jpeg = _walk_jpeg(data) if fmt == "JPEG" else None
        if fmt == "TIFF":
            _check_tiff_blocks(data)
        elif fmt == "PNG":
            _check_png_chunks(data)
        if jpeg is not None and _simplejpeg is not None and self.image_mode in ("RGB", "L"):
            fast = self._load_jpeg_array(data, jpeg)
            if fast is not None:
                return fast
        image, converted = self._load_pillow(data, fmt)
        return MediaWithBytes(image, data, self._io_config() if converted else None)

    def _io_config(self) -> dict[str, Any]:
        """The settings that changed a converted image (see ``MediaWithBytes.io_config``)."""
        return {"image_mode": self.image_mode, "rgba_background_color": self.rgba_background_color}

    def _reserve(self, width: int, height: int, bytes_per_pixel: int) -> None:
        reserve_output(
            width * height * bytes_per_pixel,
            "the image",
            fallback=self.policy.max_decoded_bytes_for("image"),
        )

    def _jpeg_target(self, width: int, height: int, orientation: int) -> tuple[int, int] | None:
        """The decode size for the size hint, in the JPEG's own (unrotated) frame."""
        if orientation in (1, 2, 3, 4):
            return _fit(width, height, self.max_image_size)
        target = _fit(height, width, self.max_image_size)
        return None if target is None else (target[1], target[0])

    def _load_jpeg_array(self, data: bytes, jpeg: _JpegWalk) -> MediaWithBytes[Image.Image] | None:
        assert _simplejpeg is not None
        try:
            height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise DecodeError("the JPEG header is corrupt") from exc
        if colorspace not in ("YCbCr", "Gray"):
            return None  # CMYK/YCCK and friends: Pillow knows Adobe's conventions.
        self._check_pixels(width, height)
        self._reserve(width, height, 3 if self.image_mode == "RGB" else 1)
        exif = jpeg.exif
        orientation = 1 if exif is None else _read_orientation(lambda: _exif_from_bytes(exif))
        target = self._jpeg_target(width, height, orientation)
        check_deadline()
        try:
            array = _simplejpeg.decode_jpeg(
                data,
                colorspace="RGB" if self.image_mode == "RGB" else "GRAY",
                min_width=0 if target is None else target[0],
                min_height=0 if target is None else target[1],
            )
        except ValueError as exc:
            raise DecodeError("the JPEG data is corrupt or truncated") from exc
        check_deadline()
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if target is not None and (array.shape[1], array.shape[0]) != target:
            resized = Image.fromarray(array).resize(target, Image.Resampling.BICUBIC)
            array = np.asarray(resized)
        array = _oriented(array, orientation)
        check_deadline()
        height, width = array.shape[:2]
        known = {"size": (width, height), "width": width, "height": height}
        known["mode"] = self.image_mode
        result = MediaWithBytes.from_array(array, data, _array_to_pil, known=known)
        if (colorspace == "Gray") != (self.image_mode == "L"):
            result.io_config = self._io_config()  # decoded into another mode than stored
        return result

    def _check_structure(self, image: Image.Image, fmt: str) -> None:
        """Refuse structures whose decoding work does not follow from their pixels.

        Raises:
            DecodeError: an RLE BMP over ``MAX_RLE_BMP_PIXELS``.
        """
        rle = fmt == "BMP" and image.info.get("compression") in _BMP_RLE
        if rle and image.width * image.height > MAX_RLE_BMP_PIXELS:
            raise _too_complex(
                "RLE-compressed BMP's canvas", "MAX_RLE_BMP_PIXELS", MAX_RLE_BMP_PIXELS
            )

    def _load_pillow(self, data: bytes, fmt: str) -> tuple[Image.Image, bool]:
        """The decoded image, and whether converting it to ``image_mode`` changed it."""
        image: Image.Image = _open_plugin(data, fmt)
        check_deadline()
        self._check_pixels(*image.size)
        target_mode = self.image_mode or image.mode
        self._reserve(*image.size, max(_bytes_per_pixel(image.mode), _bytes_per_pixel(target_mode)))
        self._check_structure(image, fmt)
        target = _fit(*image.size, self.max_image_size)
        if target is not None and fmt == "JPEG":
            image.draft(image.mode, target)
        opened = image.size, image.mode
        image.load()
        check_deadline()
        if (image.size, image.mode) != opened:  # a plugin may learn the size only decoding
            self._check_pixels(*image.size)
            self._reserve(*image.size, max(map(_bytes_per_pixel, (image.mode, target_mode))))
        # After load(): Pillow applies a TIFF's own Orientation tag there and drops it.
        method = _TRANSPOSE.get(_read_orientation(image.getexif))
        if method is not None:
            image = image.transpose(method)
        if target is not None:
            target = _fit(*image.size, self.max_image_size)
            if target is not None:
                image = image.resize(target, Image.Resampling.BICUBIC)
        check_deadline()
        converted = self.convert_mode(image)
        check_deadline()
        return converted, converted is not image

    def convert_mode(self, image: Image.Image) -> Image.Image:
        """Convert to ``image_mode``, compositing transparency onto the background colour
        (``image_mode=None``: the image as it is)."""
        target = self.image_mode
        if target is None:
            return image
        if image.mode in _HIGH_DEPTH_MODES and image.mode != target and _is_8bit_mode(target):
            image = _to_8bit(image)  # L, or LA for a transparent key value
            if image.mode == target:
                return image
        transparent = image.mode in _ALPHA_MODES or "transparency" in image.info
        if image.mode == target and not (transparent and target not in _ALPHA_MODES):
            return image
        if transparent and target not in _ALPHA_MODES:
            # Pasting with the image as its own mask blends by alpha onto an opaque RGB
            # background: the same pixels as alpha_composite, about 6x faster at 1080p.
            rgba = image if image.mode == "RGBA" else image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, self.rgba_background_color)
            flat.paste(rgba, mask=rgba)
            return flat if target == "RGB" else flat.convert(target)
        return image.convert(target)

    # -- encoding ---------------------------------------------------------------------

    def encode_base64(
        self, image: Image.Image | MediaWithBytes[Image.Image], *, image_format: str = "PNG"
    ) -> str:
        """Base64 of ``image`` (converted to ``image_mode``) saved as ``image_format``.

        Raises:
            ValueError: Pillow cannot write ``image_format``.
        """
        media = image.media if isinstance(image, MediaWithBytes) else image
        media = self.convert_mode(media)
        buffer = io.BytesIO()
        try:
            media.save(buffer, format=image_format)
        except KeyError as exc:
            raise ValueError(f"unknown image_format {image_format!r}") from exc
        return pybase64.b64encode(buffer.getvalue()).decode("ascii")
