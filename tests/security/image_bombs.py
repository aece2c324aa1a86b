"""Hostile images built in code, and the functions a limited child process runs on them.

Builders return bytes; ``expect_refusals`` is the child's entry point (see
``security.childproc.run_limited``): it decodes each case, checks the error class, then
decodes a good image, and re-raises the last refusal so the parent sees its class.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from builders import gradient, image_bytes
from mediagate import ImageMediaIO, MediaError, MediaPolicy

MiB = 1 << 20

# ---------------------------------------------------------------------------
# Good images


def good_png() -> bytes:
    return image_bytes(Image.fromarray(gradient(12, 8)), "PNG")


# ---------------------------------------------------------------------------
# EXIF (TIFF structures)


def ifd_entry(tag: int, kind: int, count: int, value: bytes, order: str = ">") -> bytes:
    """One 12-byte IFD entry; ``value`` is the 4-byte inline value or offset."""
    return struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")


def exif_tiff(entries: Sequence[bytes], extra: bytes = b"") -> bytes:
    """A big-endian TIFF holding one IFD of ``entries``; ``extra`` follows it."""
    body = struct.pack(">H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    return b"MM\x00\x2a" + struct.pack(">I", 8) + body + extra


def _extra_offset(entries: int) -> bytes:
    return struct.pack(">I", 8 + 2 + 12 * entries + 4)


#: EXIF Orientation values of the wrong type or range, each an IFD0 with one entry.
BAD_ORIENTATIONS: dict[str, bytes] = {
    "ascii": exif_tiff([ifd_entry(0x0112, 2, 4, b"six\0")]),
    "ascii_digit": exif_tiff([ifd_entry(0x0112, 2, 2, b"6\0")]),
    "rational_1_over_0": exif_tiff(
        [ifd_entry(0x0112, 5, 1, _extra_offset(1))], struct.pack(">II", 1, 0)
    ),
    "rational_13_over_2": exif_tiff(
        [ifd_entry(0x0112, 5, 1, _extra_offset(1))], struct.pack(">II", 13, 2)
    ),
    "float_inf": exif_tiff([ifd_entry(0x0112, 11, 1, struct.pack(">f", float("inf")))]),
    "double_nan": exif_tiff(
        [ifd_entry(0x0112, 12, 1, _extra_offset(1))], struct.pack(">d", float("nan"))
    ),
    "negative": exif_tiff([ifd_entry(0x0112, 8, 1, struct.pack(">h", -2))]),
    "huge": exif_tiff([ifd_entry(0x0112, 4, 1, struct.pack(">I", 0xFFFFFFFF))]),
    "zero": exif_tiff([ifd_entry(0x0112, 3, 1, struct.pack(">H", 0))]),
    "nine": exif_tiff([ifd_entry(0x0112, 3, 1, struct.pack(">H", 9))]),
    "undefined_bytes": exif_tiff([ifd_entry(0x0112, 7, 2, b"\x00\x06")]),
    "huge_count": exif_tiff([ifd_entry(0x0112, 3, 0x40000000, struct.pack(">I", 999_999))]),
}

#: Two SHORTs where one is expected: Pillow keeps the first (6) and warns.
TUPLE_ORIENTATION = exif_tiff([ifd_entry(0x0112, 3, 2, struct.pack(">HH", 6, 6))])

#: Orientation 6 spelled as a SHORT and as the integral RATIONAL 6/1: both count.
GOOD_ORIENTATIONS: dict[str, bytes] = {
    "short_6": exif_tiff([ifd_entry(0x0112, 3, 1, struct.pack(">H", 6))]),
    "rational_6_over_1": exif_tiff(
        [ifd_entry(0x0112, 5, 1, _extra_offset(1))], struct.pack(">II", 6, 1)
    ),
}

#: ``eXIf`` payloads that are not TIFF data at all, or break off.
BAD_EXIF_PAYLOADS: dict[str, bytes] = {
    "garbage": b"\x00\x11garbage that is not tiff\xff\xfe",
    "empty": b"",
    "header_only": b"MM\x00\x2a",
    "ifd_offset_past_end": b"MM\x00\x2a" + struct.pack(">I", 0x7FFFFFFF),
    "huge_entry_count": b"MM\x00\x2a" + struct.pack(">IH", 8, 0xFFFF) + b"\x01\x12" * 5,
    "truncated_entry": exif_tiff([ifd_entry(0x0112, 3, 1, struct.pack(">H", 6))])[:17],
    "entry_past_end": exif_tiff([ifd_entry(0x0112, 4, 1000, struct.pack(">I", 0x7FFFFFF0))]),
    "bad_byte_order": b"XX\x00\x2a" + struct.pack(">I", 8) + b"\0" * 8,
    "exif_ifd_loop": exif_tiff([ifd_entry(0x8769, 4, 1, struct.pack(">I", 8))]),
}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_exif_chunk(pixels: np.ndarray, payload: bytes) -> bytes:
    """A PNG of ``pixels`` with an ``eXIf`` chunk of ``payload`` before its IDAT."""
    data = image_bytes(Image.fromarray(pixels), "PNG")
    at = data.index(b"IDAT") - 4
    return data[:at] + png_chunk(b"eXIf", payload) + data[at:]


def tiff_gray(
    width: int,
    height: int,
    *,
    pixels: bytes | None = None,
    extra_entries: Sequence[bytes] = (),
    extra: bytes = b"",
) -> bytes:
    """A big-endian, uncompressed 8-bit grey TIFF with one strip and extra IFD entries.

    ``extra`` is appended after the IFD; entries that point into it must use
    ``tiff_extra_offset``.
    """
    pixels = bytes(range(256)) * (width * height // 256 + 1) if pixels is None else pixels
    pixels = pixels[: width * height]
    entries = [
        ifd_entry(256, 3, 1, struct.pack(">H", width)),
        ifd_entry(257, 3, 1, struct.pack(">H", height)),
        ifd_entry(258, 3, 1, struct.pack(">H", 8)),
        ifd_entry(259, 3, 1, struct.pack(">H", 1)),
        ifd_entry(262, 3, 1, struct.pack(">H", 1)),
        ifd_entry(273, 4, 1, struct.pack(">I", 8)),
        ifd_entry(277, 3, 1, struct.pack(">H", 1)),
        ifd_entry(278, 4, 1, struct.pack(">I", height)),
        ifd_entry(279, 4, 1, struct.pack(">I", len(pixels))),
        *extra_entries,
    ]
    entries.sort(key=lambda e: struct.unpack(">H", e[:2])[0])
    ifd_at = 8 + len(pixels)
    ifd = struct.pack(">H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    return b"MM\x00\x2a" + struct.pack(">I", ifd_at) + pixels + ifd + extra


def tiff_extra_offset(width: int, height: int, entries: int) -> bytes:
    """Where ``extra`` starts in ``tiff_gray(width, height)`` with ``entries`` extra tags."""
    return struct.pack(">I", 8 + width * height + 2 + 12 * (9 + entries) + 4)


def tiff_with_orientation(width: int, height: int, exif: bytes) -> bytes:
    """``tiff_gray`` carrying the (only) IFD entry of ``exif``, data and all."""
    entry = bytearray(exif[10:22])
    kind, count = struct.unpack(">HI", entry[2:8])
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
    extra = b""
    if sizes.get(kind, 1) * count > 4 and count < 1000:
        extra = exif[26:]
        entry[8:12] = tiff_extra_offset(width, height, 1)
    return tiff_gray(width, height, extra_entries=[bytes(entry)], extra=extra)


# ---------------------------------------------------------------------------
# Work bombs


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


class _BitWriter:
    """Entropy-coded bits, most significant first, 0xFF bytes stuffed."""

    def __init__(self) -> None:
        self.bits = ""

    def write(self, value: int, length: int) -> None:
        if length:
            self.bits += format(value, f"0{length}b")

    def flush(self) -> bytes:
        padded = self.bits + "1" * (-len(self.bits) % 8)
        out = bytearray()
        for i in range(0, len(padded), 8):
            byte = int(padded[i : i + 8], 2)
            out += b"\xff\x00" if byte == 0xFF else bytes((byte,))
        return bytes(out)


def _eob_runs(blocks: int) -> bytes:
    """An AC scan (first or refinement) in which every block of the band stays zero."""
    writer = _BitWriter()
    while blocks:
        run = min(blocks, 0x7FFF)
        r = run.bit_length() - 1
        writer.write(r, 4)  # the AC table gives symbol EOBr (r << 4) the 4-bit code r
        writer.write(run - (1 << r), r)
        blocks -= run
    return writer.flush()


def progressive_scan_bomb(size: int = 2040) -> bytes:
    """A valid progressive grey JPEG of successive-approximation scans: about 900.

    One DC scan, then for each of the 63 AC coefficients a first scan at Al=13 and 13
    refinement scans down to Al=0 (883 scans). Every coefficient is zero, so each scan
    is a few bytes of end-of-band runs, yet a decoder passes over every block in each.
    """
    blocks = (size // 8) ** 2
    dqt = _segment(0xDB, b"\x00" + b"\x01" * 64)
    sof2 = _segment(0xC2, struct.pack(">BHHB", 8, size, size, 1) + b"\x01\x11\x00")
    dc_table = _segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")
    ac_symbols = bytes(r << 4 for r in range(15))
    ac_table = _segment(0xC4, b"\x10" + b"\x00\x00\x00\x0f" + b"\x00" * 12 + ac_symbols)

    def sos(ss: int, se: int, ah: int, al: int) -> bytes:
        return _segment(0xDA, bytes((1, 1, 0x00, ss, se, (ah << 4) | al)))

    dc_bits = _BitWriter()
    dc_bits.write(0, blocks)  # every DC difference is category 0: code "0"
    out = [b"\xff\xd8", dqt, sof2, dc_table, ac_table, sos(0, 0, 0, 0), dc_bits.flush()]
    band = _eob_runs(blocks)
    for k in range(1, 64):
        out += [sos(k, k, 0, 13), band]
        out += [sos(k, k, al + 1, al) + band for al in range(12, -1, -1)]
    out.append(b"\xff\xd9")
    return b"".join(out)


def jpeg_marker_bomb(markers: int = 1_000_000) -> bytes:
    """A real JPEG with ``markers`` empty COM segments between SOI and its header."""
    data = image_bytes(Image.fromarray(gradient(16, 16)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * markers + data[2:]


def jpeg_app_marker_bomb(markers: int = 300_000) -> bytes:
    """A real JPEG with ``markers`` empty APP15 segments before its SOF."""
    data = image_bytes(Image.fromarray(gradient(16, 16)), "JPEG")
    sof = data.index(b"\xff\xc0")
    return data[:sof] + b"\xff\xef\x00\x02" * markers + data[sof:]


def jpeg_fill_bomb(fill: int = 8_000_000) -> bytes:
    """A real JPEG with ``fill`` 0xFF fill bytes before one of its markers."""
    data = image_bytes(Image.fromarray(gradient(16, 16)), "JPEG")
    dqt = data.index(b"\xff\xdb")
    return data[:dqt] + b"\xff" * fill + data[dqt:]


def tiff_strip_bomb(strips: int = 1_000_000, width: int = 64, height: int = 64) -> bytes:
    """A little-endian TIFF listing ``strips`` one-row strips that all point at one row."""
    row = b"\x80" * width
    ifd_at = 8 + len(row)
    entries = 8
    arrays_at = ifd_at + 2 + 12 * entries + 4
    offsets = struct.pack(f"<{strips}I", *([8] * strips))
    counts = struct.pack(f"<{strips}I", *([width] * strips))

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return ifd_entry(tag, kind, count, value, order="<")

    ifd = [
        entry(256, 4, 1, struct.pack("<I", width)),
        entry(257, 4, 1, struct.pack("<I", height)),
        entry(258, 3, 1, struct.pack("<H", 8)),
        entry(259, 3, 1, struct.pack("<H", 1)),
        entry(262, 3, 1, struct.pack("<H", 1)),
        entry(273, 4, strips, struct.pack("<I", arrays_at)),
        entry(278, 4, 1, struct.pack("<I", 1)),
        entry(279, 4, strips, struct.pack("<I", arrays_at + len(offsets))),
    ]
    head = b"II\x2a\x00" + struct.pack("<I", ifd_at) + row
    return head + struct.pack("<H", entries) + b"".join(ifd) + b"\0\0\0\0" + offsets + counts


def png_chunk_bomb(chunks: int = 1_000_000, *, kind: bytes = b"zzZz") -> bytes:
    """A 16x16 grey PNG behind ``chunks`` empty ancillary chunks (or empty IDAT chunks)."""
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * 16 for _ in range(16)))
    flood = png_chunk(kind, b"") * chunks
    body = (
        flood + png_chunk(b"IDAT", pixels)
        if kind != b"IDAT"
        else png_chunk(b"IDAT", pixels) + flood
    )
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + body + png_chunk(b"IEND", b"")


def bmp_rle(width: int, height: int, body: bytes, *, rle4: bool = False) -> bytes:
    """A bottom-up BMP with RLE8 (or RLE4) ``body`` and a grey palette."""
    colours = 16 if rle4 else 256
    step = 255 // (colours - 1)
    palette = b"".join(bytes((i * step, i * step, i * step, 0)) for i in range(colours))
    offset = 14 + 40 + len(palette)
    dib = struct.pack(
        "<IiiHHIIiiII",
        40,
        width,
        height,
        1,
        4 if rle4 else 8,
        2 if rle4 else 1,
        len(body),
        2835,
        2835,
        colours,
        0,
    )
    header = b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
    return header + dib + palette + body


def bmp_rle_padding_bomb(width: int = 65535, height: int = 900, *, rle4: bool = False) -> bytes:
    """About 1 KB of RLE: each row one pixel, then end-of-line to pad it to ``width``."""
    rows = min(height, 250)
    return bmp_rle(width, height, b"\x01\x01\x00\x00" * rows + b"\x00\x01", rle4=rle4)


def bmp_rle8_of(indices: np.ndarray) -> bytes:
    """An honest RLE8 BMP of a 2-D array of palette indices (runs, end of line, end)."""
    height, width = indices.shape
    body = bytearray()
    for row in indices[::-1]:
        x = 0
        while x < width:
            run = 1
            while x + run < width and run < 255 and row[x + run] == row[x]:
                run += 1
            body += bytes((run, int(row[x])))
            x += run
        body += b"\x00\x00"
    body += b"\x00\x01"
    return bmp_rle(width, height, bytes(body))


# ---------------------------------------------------------------------------
# Child entry point


def expect_refusals(cases: Sequence[tuple[str, bytes, str, str]], policy: dict[str, Any]) -> None:
    """Decode each ``(name, data, expected error class, text the message names)``.

    Then a good image.

    Raises:
        AssertionError: a case decoded, or failed with another class (named).
        MediaError: the last case's refusal, when every case was refused as expected.
    """
    io_ = ImageMediaIO(policy=MediaPolicy(**policy))
    last: MediaError | None = None
    for name, data, expected, text in cases:
        try:
            io_.load_bytes(data)
        except MediaError as exc:
            if type(exc).__name__ != expected or text not in str(exc):
                raise AssertionError(f"{name}: {type(exc).__name__}: {exc}") from None
            last = exc
        else:
            raise AssertionError(f"{name} decoded")
    if np.asarray(io_.load_bytes(good_png())).shape != (8, 12, 3):
        raise AssertionError("the good image after the bombs decoded wrongly")
    if last is not None:
        raise last
