"""Open untrusted video bytes safely with PyAV and index the video stream.

The rules, in the order they apply:

1. **Sniff** the leading bytes; only the containers in ``CONTAINER_SIGNATURES`` are
   opened, and FFmpeg is told which demuxer to use, so it never probes its way into a
   playlist (HLS), a concat list, an image sequence or a device. Text playlists get a
   message of their own.
2. **Open from memory** with a nested-open hook that refuses every request, so no
   demuxer can read another file or URL, whatever the bytes say. FFmpeg's own
   ``format_whitelist`` says the same, so no other demuxer runs, and its
   ``codec_whitelist`` is empty: no decoder at all runs while the stream is probed
   (the headers and FFmpeg's bitstream parsers give the codec and frame size).
3. Check the demuxer FFmpeg ended up with against ``ALLOWED_FORMATS``, the codec
   against ``ALLOWED_CODECS`` and the declared dimensions against ``max_pixels``, all
   before a frame is decoded. The decoder gets ``max_pixels`` too, so a stream that
   grows mid-way is refused by FFmpeg itself.
4. **Index** the stream by demuxing packets (no decoding): one presentation timestamp
   per frame, which frames are keyframes, and the real frame count.

What PyAV, FFmpeg or numpy raise on hostile bytes becomes a ``MediaError`` in one
place, ``av_errors``, which the loaders wrap around every call into them.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from ..._errors import DecodeError, MediaError, TooLargeError
from ..budget import check_deadline

__all__ = [
    "ALLOWED_CODECS",
    "ALLOWED_FORMATS",
    "LIBRARY_ERRORS",
    "MAX_STREAM_PACKETS",
    "StreamIndex",
    "av_errors",
    "index_stream",
    "open_video",
    "sniff_container",
]

#: Demuxer FFmpeg is told to use, by the container's leading bytes.
CONTAINER_SIGNATURES: Mapping[str, str] = {
    "iso-bmff": "mov",  # mp4, mov, m4v, 3gp
    "ebml": "matroska",  # mkv, webm
    "riff-avi": "avi",
    "ogg": "ogg",
    "flv": "flv",
    "mpegts": "mpegts",
    "mpeg-ps": "mpeg",
    "gif": "gif",
}

#: ``container.format.name`` values accepted after opening (short or FFmpeg's full name).
ALLOWED_FORMATS: frozenset[str] = frozenset(
    {*CONTAINER_SIGNATURES.values(), "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
)

#: Video codecs decoded (FFmpeg's canonical names). JPEG 2000 and rarer codecs are not.
ALLOWED_CODECS: frozenset[str] = frozenset(
    {
        "h264",
        "hevc",
        "vp8",
        "vp9",
        "av1",
        "mpeg4",
        "mpeg1video",
        "mpeg2video",
        "mjpeg",
        "theora",
        "gif",
    }
)

#: Packets indexed at most: far beyond a day of 30 fps video, well below a denial of service.
MAX_STREAM_PACKETS = 3_000_000

# Packets demuxed between two looks at the decode deadline (demuxing one costs ~1 us).
_DEADLINE_PACKETS = 64

# Containers whose declared frame count is the number of packets they hold.
_COUNTING_FORMATS = frozenset({"mov", "mov,mp4,m4a,3gp,3g2,mj2", "avi"})

_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
_PLAYLIST_MARKERS = (b"#EXTM3U", b"ffconcat", b"#EXT-X-", b"<?xml", b"<MPD", b"[playlist]")


def _is_mpegts(head: bytes) -> bool:
    for packet_size, offset in ((188, 0), (192, 4)):
        if len(head) >= offset + 2 * packet_size + 1 and all(
            head[offset + i * packet_size] == 0x47 for i in range(3)
        ):
            return True
    return False


def sniff_container(data: bytes) -> str:
    """The FFmpeg demuxer for ``data``, chosen from its leading bytes.

    Raises:
        DecodeError: a playlist, a concat list, or a container not on the allowlist.
    """
    head = data[:1024]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(_PLAYLIST_MARKERS):
        raise DecodeError(
            "playlists, concat lists and manifests are not accepted as video; "
            "send the media itself",
            http_status=415,
        )
    kind = None
    if head[4:8] in _ISO_BMFF_BOXES:
        kind = "iso-bmff"
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        kind = "ebml"
    elif head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        kind = "riff-avi"
    elif head.startswith(b"OggS"):
        kind = "ogg"
    elif head.startswith(b"FLV\x01"):
        kind = "flv"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        kind = "gif"
    elif head.startswith(b"\x00\x00\x01\xba"):
        kind = "mpeg-ps"
    elif _is_mpegts(head):
        kind = "mpegts"
    if kind is None:
        raise DecodeError(
            "not a supported video container (mp4/mov, mkv/webm, avi, ogg, flv, "
            "mpeg-ts, mpeg-ps, gif)",
            http_status=415,
        )
    return CONTAINER_SIGNATURES[kind]


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> Any:
    raise PermissionError("nested input is not allowed")


#: What PyAV, FFmpeg, OpenCV's bindings and numpy raise on hostile bytes: each
#: becomes a ``DecodeError`` (``MemoryError`` a ``TooLargeError``), never escapes.
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
def av_errors(what: str) -> Iterator[None]:
    """Turn library failures inside the block into ``MediaError``; ``MediaError`` passes.

    Raises:
        DecodeError: PyAV, FFmpeg or numpy failed (the message says ``what`` was
            happening, nothing of the original error, which is chained).
        TooLargeError: memory ran out (``limit="memory"``).
    """
    try:
        yield
    except MediaError:
        raise
    except MemoryError as exc:
        raise TooLargeError(
            f"the video needed more memory than this server allows ({what}); lower "
            "num_frames or MediaPolicy.max_pixels",
            limit="memory",
        ) from exc
    except LIBRARY_ERRORS as exc:
        raise DecodeError(f"the video could not be decoded ({what} failed)") from exc


def _open(data: bytes, demuxer: str, max_pixels: int) -> InputContainer:
    with av_errors("opening the container"):
        return av.open(
            io.BytesIO(data),
            mode="r",
            format=demuxer,
            options={
                "max_pixels": str(max_pixels),
                "codec_whitelist": "none",
                "format_whitelist": ",".join(sorted(set(CONTAINER_SIGNATURES.values()))),
            },
            metadata_errors="replace",
            io_open=_refuse_nested_open,
        )


def open_video(data: bytes, *, max_pixels: int) -> tuple[InputContainer, VideoStream]:
    """Open ``data`` as a video container with the rules in the module docstring.

    No decoder runs while the container is opened: the stream's codec and frame size
    are what the container headers (and FFmpeg's bitstream parsers) declare, so the
    checks below happen before any decoder sees the bytes. The caller closes the
    returned container.

    Raises:
        DecodeError: not an allowlisted container or codec, no video stream, or damaged.
        TooLargeError: the stream's dimensions exceed ``max_pixels``.
    """
    container = _open(data, sniff_container(data), max_pixels)
    try:
        with av_errors("probing the video stream"):
            stream = _checked_stream(container)
            _check_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
            # Decoder-side guard for streams whose frame size changes after the header.
            stream.codec_context.options = {"max_pixels": str(max_pixels)}
    except BaseException:
        container.close()
        raise
    return container, stream


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLargeError(
            f"video frames of {width}x{height} pixels exceed max_pixels={max_pixels} "
            f"(raise MediaPolicy.max_pixels to allow them)",
            limit="max_pixels",
            value=width * height,
            maximum=max_pixels,
        )
    if width <= 0 or height <= 0:
        raise DecodeError("the video stream's frame size cannot be read (damaged file)")


def _checked_stream(container: InputContainer) -> VideoStream:
    if container.format.name not in ALLOWED_FORMATS:
        raise DecodeError("the video container format is not supported", http_status=415)
    if not container.streams.video:
        raise DecodeError("the media has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:
        raise DecodeError("the video codec is not supported", http_status=415)
    codec = ctx.codec.canonical_name
    if codec not in ALLOWED_CODECS:
        raise DecodeError(
            f"video codec {codec!r} is not supported "
            f"(supported: {', '.join(sorted(ALLOWED_CODECS))})",
            http_status=415,
        )
    return stream


@dataclass(frozen=True)
class StreamIndex:
    """What demuxing (not decoding) a video stream tells about its frames.

    Attributes:
        pts: presentation timestamp of each frame, ascending; frame ``i`` has ``pts[i]``.
        keyframes: frame numbers of the keyframes, ascending.
        exact: ``False`` when timestamps are missing or repeated, so frames can only be
            numbered by counting decoder output from the start.
        fps: the stream's frame rate (frames per second, > 0).
        time_base: the unit of ``pts``.
    """

    pts: list[int]
    keyframes: list[int]
    exact: bool
    fps: float
    time_base: Fraction

    @property
    def total(self) -> int:
        """Frames in the stream."""
        return len(self.pts)

    @property
    def duration(self) -> float:
        """Seconds of video: frames divided by the frame rate."""
        return self.total / self.fps


def index_stream(container: InputContainer, stream: VideoStream) -> StreamIndex:
    """Demux every packet of ``stream`` (without decoding) and index its frames.

    Raises:
        DecodeError: no frames, fewer frames than the container declares (a truncated
            file), or a damaged container.
        TooLargeError: more than ``MAX_STREAM_PACKETS`` packets, or the decode
            deadline passed (``limit="decode_timeout"``).
    """
    with av_errors("reading the video packets"):
        stamps, packets, missing, last_corrupt = _demux_stamps(container, stream)
        if not stamps:
            raise DecodeError("the video stream has no frames (empty or truncated file)")
        declared = int(stream.frames or 0)
        if last_corrupt or (container.format.name in _COUNTING_FORMATS and declared > packets):
            raise DecodeError(
                "the video data ends before the last frame its header declares (truncated file)"
            )
        order = sorted(range(len(stamps)), key=lambda i: stamps[i][0])
        pts = [stamps[i][0] for i in order]
        keyframes = [rank for rank, i in enumerate(order) if stamps[i][1]]
        exact = not missing and all(a < b for a, b in itertools.pairwise(pts))
        time_base = stream.time_base or Fraction(1, 1)
        return StreamIndex(
            pts=pts,
            keyframes=keyframes or [0],
            exact=exact and bool(keyframes),
            fps=_frame_rate(stream, pts, time_base),
            time_base=time_base,
        )


def _demux_stamps(
    container: InputContainer, stream: VideoStream
) -> tuple[list[tuple[int, bool]], int, bool, bool]:
    """``(timestamp, keyframe)`` of each kept packet, the packets read, whether any
    lacked a presentation timestamp, and whether the last one was corrupt. The decode
    deadline is checked between packets.

    Raises:
        TooLargeError: over ``MAX_STREAM_PACKETS`` packets, or past the deadline.
    """
    stamps: list[tuple[int, bool]] = []
    packets = 0
    missing = False
    last_corrupt = False
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None and packet.dts is None:
            continue  # the demuxer's end-of-stream marker
        packets += 1
        if not packets % _DEADLINE_PACKETS:
            check_deadline()
        if packets > MAX_STREAM_PACKETS:
            raise TooLargeError(
                f"the video stream has more than {MAX_STREAM_PACKETS} frames",
                limit="max_video_frames",
                value=packets,
                maximum=MAX_STREAM_PACKETS,
            )
        last_corrupt = packet.is_corrupt
        if packet.size == 0 or packet.is_discard:
            continue  # a dropped frame (AVI) or one an edit list hides (MP4)
        ts = packet.pts if packet.pts is not None else packet.dts
        if packet.pts is None:
            missing = True
        stamps.append((len(stamps) if ts is None else ts, packet.is_keyframe))
    return stamps, packets, missing, last_corrupt


def _frame_rate(stream: VideoStream, pts: list[int], time_base: Fraction) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < float(rate) < 10_000:
            return float(rate)
    span = float((pts[-1] - pts[0]) * time_base) if len(pts) > 1 else 0.0
    if span > 0:
        return (len(pts) - 1) / span
    return 1.0
