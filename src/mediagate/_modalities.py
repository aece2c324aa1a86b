"""Modality names, one spelling everywhere, and guessing a modality from a reference.

The names are those of ``MediaPolicy`` and ``media_io_kwargs`` (``image``, ``audio``,
``video``, ``image_embedding``, ``audio_embedding``, ``video_embedding``); the command
line's hyphenated spellings (``image-embedding``) are accepted wherever a name is read.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from av.audio.stream import AudioStream
from av.stream import Disposition
from av.video.stream import VideoStream

from ._errors import DecodeError, MediaError, OptionError
from ._media._ffmpeg import StreamRules, ffmpeg_errors, open_stream
from ._media.audio.decode import ALLOWED_AV_CODECS
from ._media.audio.sniff import sniff_audio
from ._media.image import sniff_image_format
from ._media.video.container import sniff_container
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
    "audio": {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".m4b",
        ".aac",
        ".mka",
        ".weba",
        ".aif",
        ".aiff",
    },
    "video": {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"},
    "image_embedding": {".npy", ".safetensors", ".pt", ".pth"},
}


#: Leading bytes ``sniff_modality`` looks at: 64 are enough for the magic numbers; the
#: rest lets the container probe read an MP4's or a WebM's track list when it comes first.
SNIFF_BYTES = 256 * 1024

#: ISO-BMFF brands of audio-only files; any other brand is a video (image brands such as
#: ``avif``/``heic`` are recognised as images first).
_AUDIO_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"})
_EBML = b"\x1a\x45\xdf\xa3"

#: How the container probe opens MP4 and Matroska/WebM heads: the hardened open, those
#: two demuxers only, and no decoder at all (the track list is in the headers).
_PROBE_RULES: StreamRules[AudioStream] = StreamRules(
    media="audio",
    stream_type=AudioStream,
    demuxers=frozenset({"mov", "matroska"}),
    codecs=ALLOWED_AV_CODECS,
    match_decoder=True,
    no_stream="the container has no audio track",
    unknown_codec="the audio codec is not supported",
    bad_codec="audio codec {codec!r} is not supported",
)


def _is_mpegts(head: bytes) -> bool:
    return len(head) > 188 and head[0] == 0x47 and head[188] == 0x47


def _holds_audio_or_video(head: bytes) -> bool:
    """Whether ``head`` starts a container that holds audio as often as video (MP4 with
    a brand that does not say, Matroska/WebM)."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in _AUDIO_BRANDS
    return head[4:8] in _BMFF_BOXES or head.startswith(_EBML)


def _probe_tracks(head: bytes) -> Modality | None:
    """``"audio"`` when the container's track list has audio and no video (cover art
    aside), ``"video"`` when it has video; ``None`` when the head does not tell (a track
    list after the media data, a damaged or truncated header)."""
    try:
        with ffmpeg_errors("the probe failed", "the probe ran out of memory"):
            container, _ = open_stream(head, sniff_container(head), _PROBE_RULES)
    except MediaError as exc:
        # The track list was read and holds no audio track: a video (or nothing to
        # decode, which the video decoder then says).
        return "video" if str(exc) == _PROBE_RULES.no_stream else None
    try:
        pictures = [
            stream
            for stream in container.streams
            if isinstance(stream, VideoStream) and not stream.disposition & Disposition.attached_pic
        ]
    finally:
        container.close()
    return "video" if pictures else "audio"


def _sniff(head: bytes) -> tuple[Modality | None, bool]:
    """What ``head`` holds, and whether that is a container whose track list could not
    tell audio from video (then it is ``"video"``)."""
    magic = bytes(head[:200])
    if sniff_image_format(magic) is not None:
        return "image", False
    if magic.startswith((b"\x93NUMPY", b"PK\x03\x04")):
        return "image_embedding", False
    if len(magic) >= 10 and magic[8:10] in (b'{"', b"{'"):
        header = int.from_bytes(magic[:8], "little")
        if 2 <= header < 100 * 1024 * 1024:
            return "image_embedding", False  # safetensors: an 8-byte length, its JSON header
    if _holds_audio_or_video(magic):
        probed = _probe_tracks(bytes(head[:SNIFF_BYTES]))
        return probed or "video", probed is None
    if magic[4:8] == b"ftyp":
        return "audio", False  # an audio brand
    if (
        magic.startswith((b"FLV\x01", b"\x00\x00\x01\xba"))
        or (magic.startswith(b"RIFF") and magic[8:12] == b"AVI ")
        or (magic.startswith(b"OggS") and b"\x80theora" in magic)
        or _is_mpegts(magic)
    ):
        return "video", False
    try:
        sniff_audio(magic)
    except DecodeError:
        return None, False
    return "audio", False


def sniff_modality(head: bytes) -> Modality | None:
    """The modality a payload holds, from its first bytes (``SNIFF_BYTES`` are enough);
    ``None`` when they match no format mediagate decodes.

    Magic numbers decide, and for MP4 and Matroska/WebM a container probe: the track
    list is read (the hardened FFmpeg open, no decoder) and a file with audio tracks
    and no video track is ``audio``. When the track list is not in ``head`` (an MP4
    whose index comes last) such a file is ``video``.

    Tensors (``.npy``, safetensors, ``torch.save`` archives) are ``image_embedding``: the
    bytes cannot tell an image embedding from an audio one.
    """
    return _sniff(head)[0]


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
    (``sniff_modality``); then a ``data:`` media type or the file extension (which also
    settles an MP4 or WebM whose first bytes do not show its tracks: ``song.m4a`` is
    audio); ``image`` when nothing tells.
    """
    if head is not None:
        sniffed, undecided = _sniff(head)
        if sniffed is not None:
            if undecided and reference_modality(url) == "audio":
                return "audio"
            return sniffed
    return reference_modality(url) or "image"
