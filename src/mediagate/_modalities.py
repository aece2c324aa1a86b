"""Modality names, one spelling everywhere, and guessing a modality from a reference.

The names are those of ``MediaPolicy`` and ``media_io_kwargs`` (``image``, ``audio``,
``video``, ``image_embedding``, ``audio_embedding``, ``video_embedding``); the command
line's hyphenated spellings (``image-embedding``) are accepted wherever a name is read.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from ._errors import DecodeError, OptionError
from ._media.audio.sniff import sniff_audio
from ._media.image import sniff_image_format
from ._policy import MODALITIES, Modality

__all__ = [
    "MODALITIES",
    "SNIFF_BYTES",
    "Modality",
    "guess_modality",
    "modality_name",
    "sniff_modality",
]


def modality_name(name: object) -> Modality:
    """``name`` in the one spelling used everywhere (``image-embedding`` -> ``image_embedding``).

    Raises:
        OptionError: not a modality.
    """
    spelled = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    for modality in MODALITIES:
        if spelled == modality:
            return modality
    raise OptionError(
        f"unknown modality {name!r} (known: {', '.join(MODALITIES)})", option="modality"
    )


_EXTENSIONS: dict[Modality, set[str]] = {
    "image": {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
    },
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac"},
    "video": {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"},
    "image_embedding": {".npy", ".safetensors", ".pt", ".pth"},
}


#: Leading bytes ``sniff_modality`` looks at.
SNIFF_BYTES = 64

#: ISO-BMFF brands of audio-only files; any other brand is a video (image brands such as
#: ``avif``/``heic`` are recognised as images first).
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"})


def _is_mpegts(head: bytes) -> bool:
    return len(head) > 188 and head[0] == 0x47 and head[188] == 0x47


def sniff_modality(head: bytes) -> Modality | None:
    """The modality a payload holds, from its first bytes (``SNIFF_BYTES`` are enough);
    ``None`` when they match no format mediagate decodes.

    Tensors (``.npy``, safetensors, ``torch.save`` archives) are ``image_embedding``: the
    bytes cannot tell an image embedding from an audio one. A Matroska/WebM file is a
    video (the audio-only kind is told apart by its ``.mka``/``.weba`` name, if at all).
    """
    head = bytes(head[:200])
    if sniff_image_format(head) is not None:
        return "image"
    if head.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        return "image_embedding"
    if len(head) >= 10 and head[8:10] in (b'{"', b"{'"):
        header = int.from_bytes(head[:8], "little")
        if 2 <= header < 100 * 1024 * 1024:
            return "image_embedding"  # safetensors: an 8-byte length, then its JSON header
    if head[4:8] == b"ftyp":
        return "audio" if head[8:12] in _AUDIO_BRANDS else "video"
    if (
        head[4:8] in _BMFF_BOXES
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV\x01", b"\x00\x00\x01\xba"))
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or (head.startswith(b"OggS") and b"\x80theora" in head)
        or _is_mpegts(head)
    ):
        return "video"
    try:
        sniff_audio(head)
    except DecodeError:
        return None
    return "audio"


def reference_modality(url: str) -> Modality | None:
    """The modality a reference's own text names (a ``data:`` media type, a file
    extension); ``None`` when it names none."""
    if url[:5].lower() == "data:":
        media_type = url[5 : 5 + 256].split(",", 1)[0].split(";", 1)[0].strip().lower()
        major = media_type.split("/", 1)[0]
        if major in ("image", "audio", "video"):
            return modality_name(major)
        if media_type in ("application/x-npy", "application/octet-stream+npy"):
            return "image_embedding"
        return None
    try:
        path = urlsplit(url[: 16 * 1024]).path
    except ValueError:
        return None
    suffix = PurePosixPath(path).suffix.lower()
    for modality, suffixes in _EXTENSIONS.items():
        if suffix in suffixes:
            return modality
    return None


def guess_modality(url: str, head: bytes | None = None) -> Modality:
    """The modality a reference most likely holds.

    The content decides when its first bytes are given (``head``) and recognised
    (``sniff_modality``); then a ``data:`` media type or the file extension; ``image``
    when nothing tells.
    """
    if head is not None:
        sniffed = sniff_modality(head)
        if sniffed is not None:
            return sniffed
    return reference_modality(url) or "image"
