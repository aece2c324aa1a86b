"""Which audio container and codec a payload holds, judged from its first bytes.

The answer picks the decoder (soundfile or PyAV) and the FFmpeg demuxer PyAV is told
to use, so FFmpeg never probes the bytes itself and can never pick a playlist, concat
or other demuxer that reads more than the payload; ``AV_FORMATS`` are the only
demuxers FFmpeg may run on audio. Anything not recognised here is a
``DecodeError``: only the containers below are decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..._errors import DecodeError

__all__ = ["AV_FORMATS", "AudioKind", "sniff_audio"]

Decoder = Literal["soundfile", "pyav"]


@dataclass(frozen=True)
class AudioKind:
    """A recognised container/codec and how to decode it.

    Attributes:
        name: a short human-readable name, safe to put in error messages.
        decoder: the decoder tried first (the faster one for this format).
        av_format: the FFmpeg demuxer PyAV opens the bytes with.
        soundfile_can_read: whether libsndfile is a possible fallback decoder.
        exact_length: whether the container states its length (rather than the
            demuxer guessing it from a bitrate), so a length over the cap can be
            refused before decoding.
    """

    name: str
    decoder: Decoder
    av_format: str
    soundfile_can_read: bool
    exact_length: bool = True


# Routing measured on 60 s stereo 44.1/48 kHz files (benchmarks/bench_audio.py):
# libsndfile is the fastest for PCM WAV, FLAC and MP3; FFmpeg decodes Vorbis about
# 1.6x and Opus about 2.5x faster than libsndfile, and is the only option for
# AAC, MP4 and Matroska/WebM.
WAV = AudioKind("WAV", "soundfile", "wav", True)
AIFF = AudioKind("AIFF", "soundfile", "aiff", True)
FLAC = AudioKind("FLAC", "soundfile", "flac", True)
MP3 = AudioKind("MP3", "soundfile", "mp3", True, exact_length=False)
OGG_VORBIS = AudioKind("Ogg/Vorbis", "pyav", "ogg", True)
OGG_OPUS = AudioKind("Ogg/Opus", "pyav", "ogg", True)
OGG_FLAC = AudioKind("Ogg/FLAC", "pyav", "ogg", True)
ADTS_AAC = AudioKind("AAC", "pyav", "aac", False, exact_length=False)
MP4 = AudioKind("MP4/M4A", "pyav", "mp4", False)
MATROSKA = AudioKind("Matroska/WebM", "pyav", "matroska", False)

#: Every FFmpeg demuxer an audio payload may be opened with.
AV_FORMATS: frozenset[str] = frozenset(
    kind.av_format
    for kind in (WAV, AIFF, FLAC, MP3, OGG_VORBIS, OGG_OPUS, OGG_FLAC, ADTS_AAC, MP4, MATROSKA)
)

SUPPORTED = "WAV, AIFF, FLAC, MP3, Ogg (Vorbis, Opus, FLAC), AAC, MP4/M4A, Matroska/WebM"

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def _is_mpeg_sync(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _mpeg_kind(head: bytes) -> AudioKind:
    # Both MPEG audio and ADTS start with an 11/12-bit sync; ADTS has layer bits 00.
    if head[1] & 0xF6 == 0xF0:
        return ADTS_AAC
    return MP3


def _skip_id3(data: bytes) -> int:
    """Offset of the first byte after a leading ID3v2 tag."""
    if len(data) < 10:
        return len(data)
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def _ogg_kind(data: bytes) -> AudioKind:
    # The first page holds exactly the first packet of the first logical stream,
    # whose opening bytes name the codec.
    if len(data) < 28:
        raise DecodeError("Ogg payload is truncated before its first packet")
    segments = data[26]
    body = data[27 + segments : 27 + segments + 8]
    if body.startswith(b"OpusHead"):
        return OGG_OPUS
    if body.startswith(b"\x01vorbis"):
        return OGG_VORBIS
    if body.startswith(b"\x7fFLAC"):
        return OGG_FLAC
    raise DecodeError(f"unsupported codec in an Ogg container (supported: {SUPPORTED})")


def sniff_audio(data: bytes) -> AudioKind:
    """The container and codec of ``data``, from magic bytes only.

    Raises:
        DecodeError: the bytes are not one of the supported audio formats.
    """
    head = data[:16]
    if len(head) < 4:
        raise DecodeError("audio payload is too short to be audio")
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return WAV
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return AIFF
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"OggS"):
        return _ogg_kind(data)
    if head[4:8] == b"ftyp":
        return MP4
    if head.startswith(_EBML_MAGIC):
        return MATROSKA
    if head.startswith(b"ID3"):
        after = data[_skip_id3(data) :][:4]
        if after.startswith(b"fLaC"):
            return FLAC
        if _is_mpeg_sync(after):
            return _mpeg_kind(after)
        return MP3
    if _is_mpeg_sync(head):
        return _mpeg_kind(head)
    raise DecodeError(f"not a supported audio format (supported: {SUPPORTED})")
