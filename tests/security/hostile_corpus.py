"""Valid seeds built in code and the mutations that turn them hostile.

Every seed is small and decodes cleanly before it is mutated, so a fuzz target's inputs
reach deep into a decoder rather than failing at the magic bytes.
``mutants(seeds)`` is a hypothesis strategy: pick a seed, then apply a few byte flips,
truncations, repeated chunks, extreme header values or random insertions. Seeds are
built once per process (``functools.cache``); nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from builders import encode_clip, gradient, image_bytes, soundfile_bytes, tone

#: Values written over header fields: sizes, counts and lengths at their edges.
EXTREMES: tuple[int, ...] = (0, 1, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1)

#: Where a mutation may write a field: (byte width, struct format for that width).
_FIELD_FORMATS: Mapping[int, str] = {1: "B", 2: "H", 4: "I", 8: "Q"}


# ---------------------------------------------------------------------------
# Images


def _small_image(width: int = 24, height: int = 16) -> Image.Image:
    return Image.fromarray(gradient(width, height))


def _animated_gif() -> bytes:
    frames = [Image.fromarray(np.roll(gradient(20, 14), i * 3, axis=1)) for i in range(4)]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    exif[0x010F] = "fuzz"
    return image_bytes(_small_image(), "JPEG", quality=90, exif=exif.tobytes())


@cache
def image_seeds() -> dict[str, bytes]:
    """One small valid image per allowlisted format (and JPEG flavours)."""
    img = _small_image()
    rgba = img.convert("RGBA")
    palette = img.quantize(16)
    palette.info["transparency"] = 0
    return {
        "png": image_bytes(img, "PNG"),
        "png-rgba": image_bytes(rgba, "PNG"),
        "png-interlaced": image_bytes(img, "PNG", interlace=1),
        "png-palette-trns": image_bytes(palette, "PNG", transparency=0),
        "png-16bit-gray": image_bytes(
            Image.fromarray(gradient(24, 16)[..., 0].astype(np.uint16) * 257), "PNG"
        ),
        "jpeg-baseline": image_bytes(img, "JPEG", quality=90),
        "jpeg-progressive": image_bytes(img, "JPEG", quality=90, progressive=True),
        "jpeg-exif": _exif_jpeg(),
        "jpeg-cmyk": image_bytes(img.convert("CMYK"), "JPEG", quality=90),
        "jpeg-gray": image_bytes(img.convert("L"), "JPEG", quality=90),
        "gif-animated": _animated_gif(),
        "webp": image_bytes(img, "WEBP", quality=80),
        "webp-lossless-alpha": image_bytes(rgba, "WEBP", lossless=True),
        "bmp": image_bytes(img, "BMP"),
        "bmp-palette": image_bytes(palette.convert("P"), "BMP"),
        "tiff": image_bytes(img, "TIFF", compression="tiff_lzw"),
        "tiff-strips": image_bytes(img, "TIFF", compression="raw", strip_size=64),
        "tiff-deflate-rgba": image_bytes(rgba, "TIFF", compression="tiff_adobe_deflate"),
    }


def jpeg_frames(count: int = 3) -> list[bytes]:
    """Small JPEG frames for ``video/jpeg`` sequences."""
    return [
        image_bytes(Image.fromarray(np.roll(gradient(16, 12), i, axis=0)), "JPEG", quality=85)
        for i in range(count)
    ]


# ---------------------------------------------------------------------------
# Audio


def _soundfile(rate: int, fmt: str, subtype: str) -> bytes:
    return soundfile_bytes(tone(0.2, rate, channels=1), rate, fmt, subtype)


@cache
def audio_seeds() -> dict[str, bytes]:
    """A fifth of a second of tone in WAV, AIFF, FLAC, Ogg/Vorbis and MP3."""
    return {
        "wav": _soundfile(8000, "WAV", "PCM_16"),
        "wav-float": _soundfile(8000, "WAV", "FLOAT"),
        "wav-u8": _soundfile(8000, "WAV", "PCM_U8"),
        "aiff": _soundfile(8000, "AIFF", "PCM_16"),
        "flac": _soundfile(8000, "FLAC", "PCM_16"),
        "ogg-vorbis": _soundfile(22050, "OGG", "VORBIS"),
        "mp3": _soundfile(22050, "MP3", "MPEG_LAYER_III"),
    }


# ---------------------------------------------------------------------------
# Video


def _gif_video() -> bytes:
    frames = [Image.fromarray(np.roll(gradient(32, 24), i * 4, axis=1)) for i in range(6)]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


@cache
def video_seeds() -> dict[str, bytes]:
    """Eight-frame clips: H.264 (MP4, MKV), VP9 (WebM), MPEG-4 (AVI), MPEG-2 (TS), GIF."""
    return {
        "mp4-h264": encode_clip("libx264", "mp4", 8, gop=4, width=32, height=32),
        "webm-vp9": encode_clip("libvpx-vp9", "webm", 8, gop=4, width=32, height=32),
        "mkv-h264": encode_clip("libx264", "matroska", 8, gop=3, width=32, height=32),
        "avi-mpeg4": encode_clip("mpeg4", "avi", 8, gop=4, width=32, height=32),
        "ts-mpeg2": encode_clip("mpeg2video", "mpegts", 8, gop=4, width=32, height=32),
        "gif": _gif_video(),
    }


# ---------------------------------------------------------------------------
# Tensors


@cache
def tensor_seeds() -> dict[str, bytes]:
    """Small tensors as ``.npy``, safetensors and ``torch.save`` (zip, legacy, sparse)."""
    import torch
    from safetensors.torch import save as save_safetensors

    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    npy = io.BytesIO()
    np.save(npy, array, allow_pickle=False)
    fortran = io.BytesIO()
    np.save(fortran, np.asfortranarray(array.astype(np.float16)), allow_pickle=False)
    tensor = torch.from_numpy(array.copy())
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[0, 1, 3], [2, 0, 5]]),
        torch.tensor([1.0, 2.0, 3.0]),
        (4, 6),
        check_invariants=True,
    )
    return {
        "npy": npy.getvalue(),
        "npy-fortran-f16": fortran.getvalue(),
        "safetensors": save_safetensors({"embedding": tensor}),
        "safetensors-two": save_safetensors({"a": tensor, "b": tensor[:2].clone()}),
        "torch-zip": _torch_saved(tensor),
        "torch-zip-sparse": _torch_saved(sparse),
        "torch-legacy": _torch_saved(tensor, legacy=True),
    }


def _torch_saved(obj: object, *, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Mutations


@dataclass(frozen=True)
class Flip:
    """XOR one byte at ``offset`` (modulo the length) with ``mask``."""

    offset: int
    mask: int

    def apply(self, data: bytearray) -> bytearray:
        if data:
            data[self.offset % len(data)] ^= self.mask or 0xFF
        return data


@dataclass(frozen=True)
class Truncate:
    """Keep only the first ``fraction`` of the bytes."""

    fraction: float

    def apply(self, data: bytearray) -> bytearray:
        return data[: math.floor(len(data) * self.fraction)]


@dataclass(frozen=True)
class Repeat:
    """Splice ``count`` extra copies of a chunk right after it."""

    offset: int
    length: int
    count: int

    def apply(self, data: bytearray) -> bytearray:
        if not data:
            return data
        start = self.offset % len(data)
        chunk = data[start : start + self.length]
        return data[: start + len(chunk)] + chunk * self.count + data[start + len(chunk) :]


@dataclass(frozen=True)
class Overwrite:
    """Write ``value`` as a ``width``-byte integer at ``offset`` (a header field)."""

    offset: int
    width: int
    value: int
    big_endian: bool

    def apply(self, data: bytearray) -> bytearray:
        if len(data) < self.width:
            return data
        start = self.offset % (len(data) - self.width + 1)
        fmt = (">" if self.big_endian else "<") + _FIELD_FORMATS[self.width]
        packed = struct.pack(fmt, self.value % (1 << (8 * self.width)))
        data[start : start + self.width] = packed
        return data


@dataclass(frozen=True)
class Insert:
    """Insert ``blob`` at ``offset``."""

    offset: int
    blob: bytes

    def apply(self, data: bytearray) -> bytearray:
        start = self.offset % (len(data) + 1)
        return data[:start] + bytearray(self.blob) + data[start:]


Mutation = Flip | Truncate | Repeat | Overwrite | Insert

# Header fields sit near the start: bias offsets there, but reach the whole file too.
_offsets = st.one_of(st.integers(0, 64), st.integers(0, 1 << 20))

mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(Flip, _offsets, st.integers(1, 255)),
    st.builds(Truncate, st.floats(0.0, 1.0)),
    st.builds(Repeat, _offsets, st.integers(1, 64), st.integers(1, 64)),
    st.builds(
        Overwrite,
        _offsets,
        st.sampled_from(sorted(_FIELD_FORMATS)),
        st.sampled_from(EXTREMES),
        st.booleans(),
    ),
    st.builds(Insert, _offsets, st.binary(min_size=1, max_size=32)),
)


def mutate(seed: bytes, steps: list[Mutation]) -> bytes:
    """``seed`` with each of ``steps`` applied in turn."""
    data = bytearray(seed)
    for step in steps:
        data = step.apply(data)
    return bytes(data)


def mutants(seeds: Callable[[], Mapping[str, bytes]]) -> st.SearchStrategy[bytes]:
    """Mutated seeds (mostly), the seeds themselves, and pure random bytes."""
    names = st.sampled_from(sorted(seeds()))
    mutated = st.builds(
        lambda name, steps: mutate(seeds()[name], steps),
        names,
        st.lists(mutations, min_size=1, max_size=4),
    )
    return st.one_of(
        mutated,
        mutated,
        mutated,
        names.map(lambda name: seeds()[name]),
        st.binary(max_size=512),
    )


def b64(data: bytes) -> str:
    """Standard base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------
# Options: known names per modality, names that collide with constructor arguments,
# and values of every JSON type plus numbers at the edges.

KNOWN_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "image": ("image_mode", "rgba_background_color", "max_image_size", "max_pixels"),
    "audio": ("sample_rate", "max_seconds"),
    "video": (
        "num_frames",
        "fps",
        "video_backend",
        "frames_indices",
        "total_num_frames",
        "duration",
    ),
    "image_embedding": ("tensor_name",),
    "audio_embedding": ("tensor_name",),
}

COLLIDING_OPTIONS: tuple[str, ...] = (
    "policy",
    "image_io",
    "self",
    "data",
    "decoded_budget",
    "media_type",
    "path",
    "options",
    "kwargs",
    "__class__",
    "",
)

EDGE_NUMBERS: tuple[Any, ...] = (
    2**200,
    -(2**200),
    -1,
    0,
    1,
    2**31 - 1,
    2**63,
    1e308,
    -1e308,
    1e-308,
    float("nan"),
    float("inf"),
    float("-inf"),
    0.5,
    True,
    False,
)

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["RGB", "RGBA", "L", "P", "CMYK", "I;16", "pyav", "opencv", "jpeg"]),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)


def option_dicts(modality: str) -> st.SearchStrategy[dict[str, Any]]:
    """Option dicts for ``modality``: its known names, colliding names, random keys."""
    keys = st.one_of(
        st.sampled_from(KNOWN_OPTIONS[modality]),
        st.sampled_from(KNOWN_OPTIONS[modality]),
        st.sampled_from(COLLIDING_OPTIONS),
        st.text(max_size=10),
    )
    return st.dictionaries(keys, json_values, max_size=4)


#: Objects passed where a URL, bytes, a media type or a path is expected.
NOT_STRINGS: tuple[Any, ...] = (None, 3.5, 7, [], {}, (), object(), b"\x00", bytearray(b"x"))
