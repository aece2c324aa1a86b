"""Modality names, one spelling everywhere, and guessing a modality from a reference.

The names are those of ``MediaPolicy`` and ``media_io_kwargs`` (``image``, ``audio``,
``video``, ``image_embedding``, ``audio_embedding``); the command line's hyphenated
spellings (``image-embedding``) are accepted wherever a name is read.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from ._errors import OptionError
from ._policy import MODALITIES, Modality

__all__ = ["MODALITIES", "Modality", "guess_modality", "modality_name"]


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
    "image": {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"},
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac"},
    "video": {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"},
    "image_embedding": {".npy", ".safetensors", ".pt", ".pth"},
}


def guess_modality(url: str) -> Modality:
    """The modality a URL most likely holds, from a ``data:`` media type or an extension."""
    if url[:5].lower() == "data:":
        media_type = url[5:].split(",", 1)[0].split(";", 1)[0].lower()
        major = media_type.split("/", 1)[0]
        return modality_name(major) if major in ("image", "audio", "video") else "image_embedding"
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    for modality, suffixes in _EXTENSIONS.items():
        if suffix in suffixes:
            return modality
    return "image"
