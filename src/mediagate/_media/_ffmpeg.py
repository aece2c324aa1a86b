"""The one way untrusted audio and video bytes are opened with FFmpeg (through PyAV).

The rules, in the order they apply:

1. The caller names the demuxer, chosen from the payload's leading bytes; FFmpeg never
   probes the bytes for one, so it cannot pick a playlist (HLS), a concat list, an
   image sequence or a device.
2. The bytes are opened **from memory** with a nested-open hook that refuses every
   request, and an empty ``protocol_whitelist`` for the nested contexts that do not
   call the hook (the concat demuxer's), so no demuxer can read another file or URL,
   whatever the bytes say. FFmpeg's ``format_whitelist`` is the modality's demuxers,
   so no other demuxer runs, and its ``codec_whitelist`` the decoders allowed to run
   while the streams are probed (for video none: the headers and FFmpeg's bitstream
   parsers give the codec and frame size).
3. The demuxer FFmpeg ended up with must be one of the modality's, and the first
   stream of the modality must have a codec on the modality's allowlist, all before a
   frame is decoded.

What PyAV, FFmpeg or numpy raise on hostile bytes becomes a ``MediaError`` in one
place, ``ffmpeg_errors``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import av
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.stream import VideoStream

from .._errors import DecodeError, MediaError, TooLargeError
from .seekable import RandomAccess, RangeFile

__all__ = [
    "LIBRARY_ERRORS",
    "StreamRules",
    "ffmpeg_errors",
    "open_stream",
    "refuse_nested_open",
]

S = TypeVar("S", VideoStream, AudioStream)

#: What PyAV, FFmpeg and numpy raise on hostile bytes: each becomes a ``DecodeError``
#: (``MemoryError`` a ``TooLargeError``), never escapes.
LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    av.FFmpegError,
    EOFError,
    OSError,
    RuntimeError,  # NotImplementedError too
    ValueError,  # UnicodeDecodeError too
    TypeError,
    ArithmeticError,  # OverflowError, ZeroDivisionError
    LookupError,  # IndexError, KeyError
    AttributeError,
    AssertionError,
)


@contextmanager
def ffmpeg_errors(
    failed: str, out_of_memory: str, *, more: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Turn library failures inside the block into ``MediaError``; ``MediaError`` passes.

    Args:
        failed: the message of the ``DecodeError`` a library failure becomes.
        out_of_memory: the message of the ``TooLargeError`` a ``MemoryError`` becomes.
        more: exception types to translate besides ``LIBRARY_ERRORS``.

    Raises:
        DecodeError: a library failed (the original error is chained, never shown).
        TooLargeError: memory ran out (``limit="memory"``).
    """
    try:
        yield
    except MediaError:
        raise
    except MemoryError as exc:
        raise TooLargeError(out_of_memory, limit="memory") from exc
    except (*LIBRARY_ERRORS, *more) as exc:
        raise DecodeError(failed) from exc


def refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> NoReturn:
    """FFmpeg's nested-open hook: every file or URL a demuxer asks for is refused.

    Raises:
        PermissionError: always.
    """
    raise PermissionError("nested input is not allowed")


def _no_translation(step: str) -> AbstractContextManager[None]:
    return nullcontext()


@dataclass(frozen=True)
class StreamRules(Generic[S]):
    """What one modality lets FFmpeg open, and how a refusal is worded.

    Attributes:
        media: ``"audio"`` or ``"video"``, as error messages name it.
        stream_type: the PyAV stream class of the modality.
        demuxers: FFmpeg demuxers allowed (its ``format_whitelist``).
        codecs: codecs whose streams are decoded.
        match_decoder: ``codecs`` names FFmpeg decoders (``"libopus"``) rather than
            codecs (``"opus"``).
        probe_decoders: decoders FFmpeg may run while it probes the streams (empty:
            none).
        no_stream: the message when the payload has no stream of the modality.
        unknown_codec: the message when FFmpeg has no decoder for the stream.
        bad_codec: the message when the codec is off the allowlist; ``{codec}`` and
            ``{supported}`` are filled in.
    """

    media: str
    stream_type: type[S]
    demuxers: frozenset[str]
    codecs: frozenset[str]
    no_stream: str
    unknown_codec: str
    bad_codec: str
    match_decoder: bool = False
    probe_decoders: frozenset[str] = field(default_factory=frozenset)

    def accepts_format(self, name: str) -> bool:
        """Whether FFmpeg's demuxer ``name`` (a comma-separated list) is one of ours."""
        return not self.demuxers.isdisjoint(name.split(","))

    def check_codec(self, stream: S) -> None:
        """Refuse ``stream`` unless its codec is on the allowlist.

        Raises:
            DecodeError: no decoder, or one off the allowlist (HTTP 415).
        """
        ctx = stream.codec_context
        if ctx is None:
            raise DecodeError(self.unknown_codec, http_status=415)
        codec = ctx.name if self.match_decoder else ctx.codec.canonical_name
        if codec not in self.codecs:
            supported = ", ".join(sorted(self.codecs))
            raise DecodeError(
                self.bad_codec.format(codec=codec, supported=supported), http_status=415
            )


def open_stream(
    data: bytes | RandomAccess,
    demuxer: str,
    rules: StreamRules[S],
    *,
    options: Mapping[str, str] | None = None,
    errors: Callable[[str], AbstractContextManager[None]] = _no_translation,
) -> tuple[InputContainer, S]:
    """Open ``data`` with ``demuxer`` under the rules in the module docstring.

    The caller closes the returned container; it is closed here when a check fails.

    Args:
        data: the payload, in memory or read by position (each open gets its own
            cursor, a ``RangeFile``; one made from a ``RangeFile`` shares its hollow
            spans).
        demuxer: the FFmpeg demuxer, chosen from the payload's leading bytes.
        rules: the modality's demuxers, codecs and messages.
        options: more FFmpeg options for the container and its streams.
        errors: wraps each step, given what the step does (``"opening the
            container"``, ``"probing the video stream"``); ``ffmpeg_errors`` there
            translates library failures. By default they reach the caller.

    Returns:
        The open container and its first stream of the modality.

    Raises:
        DecodeError: a demuxer or codec the rules do not allow, or no stream of the
            modality.
        PermissionError: a demuxer asked to open another resource (unless ``errors``
            translates it), and the other ``LIBRARY_ERRORS`` of a damaged payload.
    """
    settings = {
        **(options or {}),
        "format_whitelist": ",".join(sorted(rules.demuxers)),
        "codec_whitelist": ",".join(sorted(rules.probe_decoders)) or "none",
        "protocol_whitelist": "none",
    }
    source: io.RawIOBase | io.BytesIO
    if isinstance(data, bytes):
        source = io.BytesIO(data)
    else:
        source = data.cursor() if isinstance(data, RangeFile) else RangeFile(data)
    with errors("opening the container"):
        container = av.open(
            source,
            mode="r",
            format=demuxer,
            options=settings,
            metadata_errors="replace",
            io_open=refuse_nested_open,
        )
    try:
        with errors(f"probing the {rules.media} stream"):
            stream = _checked_stream(container, rules)
    except BaseException:
        container.close()
        raise
    return container, stream


def _checked_stream(container: InputContainer, rules: StreamRules[S]) -> S:
    if not rules.accepts_format(container.format.name):
        raise DecodeError(f"the {rules.media} container format is not supported", http_status=415)
    streams = [s for s in container.streams if isinstance(s, rules.stream_type)]
    if not streams:
        raise DecodeError(rules.no_stream)
    rules.check_codec(streams[0])
    return streams[0]
