"""Open untrusted video bytes safely with PyAV and index the video stream.

The rules, in the order they apply:

1. **Sniff** the leading bytes; only the containers in ``CONTAINER_SIGNATURES`` are
   opened, and FFmpeg is told which demuxer to use. Text playlists get a message of
   their own.
2. **Open** with the shared hardened open (``_ffmpeg.open_stream``): from memory, every
   nested open refused, only the demuxers in ``CONTAINER_SIGNATURES`` allowed, and no
   decoder at all running while the stream is probed (the headers and FFmpeg's
   bitstream parsers give the codec and frame size). The demuxer FFmpeg ended up with
   is checked against ``ALLOWED_FORMATS`` and the codec against ``ALLOWED_CODECS``.
3. Check the declared dimensions against ``max_pixels`` before a frame is decoded. The
   decoder gets ``max_pixels`` too, so a stream that grows mid-way is refused by
   FFmpeg itself.
4. **Index** the stream by demuxing packets (no decoding): one presentation timestamp
   per frame, which frames are keyframes, the real frame count (whatever the header
   declares), where the last frame ends, and the stream's legacy ``rotate`` tag.

What PyAV, FFmpeg or numpy raise on hostile bytes becomes a ``MediaError`` in one
place, ``av_errors``, which the loaders wrap around every call into them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from ..._errors import DecodeError, TooLargeError
from ..._policy import check_pixels
from .._ffmpeg import LIBRARY_ERRORS, StreamRules, ffmpeg_errors, open_stream, refuse_nested_open
from ..budget import check_deadline
from ..seekable import RandomAccess, RangeFile, RangeReadUnsupported, head_of, merged_spans
from .orientation import IDENTITY, FrameGeometry, Orientation, tag_orientation
from .sampling import regular_timestamps

__all__ = [
    "ALLOWED_CODECS",
    "ALLOWED_FORMATS",
    "LIBRARY_ERRORS",
    "MAX_STREAM_PACKETS",
    "VIDEO_RULES",
    "StreamIndex",
    "av_errors",
    "index_remote",
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

#: The default of ``MediaPolicy.max_stream_packets``: far beyond a day of 30 fps video,
#: well below a denial of service.
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


def sniff_container(data: bytes | RandomAccess) -> str:
    """The FFmpeg demuxer for ``data``, chosen from its leading bytes.

    Raises:
        DecodeError: a playlist, a concat list, or a container not on the allowlist.
    """
    head = head_of(data, 1024)
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


#: How video is opened: the demuxers above, the codecs above, no decoder while probing.
VIDEO_RULES: StreamRules[VideoStream] = StreamRules(
    media="video",
    stream_type=VideoStream,
    demuxers=frozenset(CONTAINER_SIGNATURES.values()),
    codecs=ALLOWED_CODECS,
    no_stream="the media has no video stream",
    unknown_codec="the video codec is not supported",
    bad_codec="video codec {codec!r} is not supported (supported: {supported})",
)


#: The nested-open hook every video open installs: it refuses every request.
_refuse_nested_open = refuse_nested_open


@contextmanager
def av_errors(what: str) -> Iterator[None]:
    """Turn library failures inside the block into ``MediaError``; ``MediaError`` passes.

    Raises:
        DecodeError: PyAV, FFmpeg or numpy failed (the message says ``what`` was
            happening, nothing of the original error, which is chained).
        TooLargeError: memory ran out (``limit="memory"``).
    """
    with ffmpeg_errors(
        f"the video could not be decoded ({what} failed)",
        f"the video needed more memory than this server allows ({what}); lower "
        "num_frames or MediaPolicy.max_pixels",
    ):
        yield


def open_video(
    data: bytes | RandomAccess, *, max_pixels: int
) -> tuple[InputContainer, VideoStream]:
    """Open ``data`` (in memory, or read by position) as a video container with the
    rules in the module docstring.

    No decoder runs while the container is opened: the stream's codec and frame size
    are what the container headers (and FFmpeg's bitstream parsers) declare, so the
    checks below happen before any decoder sees the bytes. The caller closes the
    returned container.

    Raises:
        DecodeError: not an allowlisted container or codec, no video stream, or damaged.
        TooLargeError: the stream's dimensions exceed ``max_pixels``.
    """
    demuxer = sniff_container(data)
    container, stream = _open(data, demuxer, VIDEO_RULES, max_pixels)
    try:
        with av_errors("probing the video stream"):
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
        if (width <= 0 or height <= 0) and codec in ALLOWED_CODECS:
            # Some containers leave the frame size to the codec's own header (MPEG-4
            # Part 2 in MP4 keeps it in the decoder configuration): probe again with
            # only that allowlisted decoder, which reads the size from it.
            container.close()
            rules = dataclasses.replace(VIDEO_RULES, probe_decoders=frozenset({codec}))
            container, stream = _open(data, demuxer, rules, max_pixels)
            ctx = stream.codec_context
            if ctx.width <= 0 or ctx.height <= 0:
                # The probing decoder holds max_pixels too: it refuses a larger frame.
                raise DecodeError(
                    "the video stream's frame size cannot be read from its codec header "
                    "(a damaged file, or frames over MediaPolicy.max_pixels)"
                )
        with av_errors("probing the video stream"):
            _check_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
            # Decoder-side guard for streams whose frame size changes after the header.
            stream.codec_context.options = {"max_pixels": str(max_pixels)}
    except BaseException:
        container.close()
        raise
    return container, stream


def _open(
    data: bytes | RandomAccess,
    demuxer: str,
    rules: StreamRules[VideoStream],
    max_pixels: int,
) -> tuple[InputContainer, VideoStream]:
    return open_stream(
        data, demuxer, rules, options={"max_pixels": str(max_pixels)}, errors=av_errors
    )


def _check_size(width: int, height: int, max_pixels: int) -> None:
    check_pixels(width, height, max_pixels, what="a video frame")
    if width <= 0 or height <= 0:
        raise DecodeError("the video stream's frame size cannot be read (damaged file)")


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
        end: where the last frame stops being shown, in ``time_base`` units (its
            timestamp plus its duration); ``None`` when unknown.
        rotate_tag: what the stream's legacy ``rotate`` tag asks for; frames without a
            display matrix are shown so.
        geometry: the size and orientation the returned frames came out with; set by
            the loader once they are decoded.
    """

    pts: list[int]
    keyframes: list[int]
    exact: bool
    fps: float
    time_base: Fraction
    end: Fraction | None = None
    rotate_tag: Orientation = IDENTITY
    geometry: FrameGeometry | None = None

    @property
    def total(self) -> int:
        """Frames in the stream."""
        return len(self.pts)

    @property
    def duration(self) -> float:
        """Seconds of video as frames divided by the frame rate (vLLM's reckoning, which
        the model samplers follow; ``seconds`` is the presented duration)."""
        return self.total / self.fps

    @property
    def seconds(self) -> float:
        """Seconds of video as presented: from the first frame's timestamp to the end of
        the last frame. ``duration`` when the timestamps cannot be trusted."""
        if not self.exact or self.end is None or self.end <= self.pts[0]:
            return self.duration
        return float((self.end - self.pts[0]) * self.time_base)

    @functools.cached_property
    def regular(self) -> bool:
        """Whether the frames are evenly spaced in time (a constant frame rate, up to
        timestamp rounding): ``sampling.regular_timestamps``."""
        return self.exact and regular_timestamps(np.asarray(self.pts, dtype=np.float64))

    def timestamps(self, frames: Sequence[int]) -> list[float]:
        """Seconds from the first frame to each of ``frames`` (frame numbers), from their
        presentation timestamps; frame number over frame rate when the timestamps
        cannot be trusted (``exact`` is false)."""
        if not self.exact:
            return [float(i) / self.fps for i in frames]
        first = self.pts[0]
        return [float((self.pts[i] - first) * self.time_base) for i in frames]


def index_stream(
    container: InputContainer, stream: VideoStream, *, max_packets: int = MAX_STREAM_PACKETS
) -> StreamIndex:
    """Demux every packet of ``stream`` (without decoding) and index its frames.

    Raises:
        DecodeError: no frames, fewer frames than the container declares (a truncated
            file), or a damaged container.
        TooLargeError: more than ``max_packets`` packets
            (``limit="max_stream_packets"``), or the decode deadline passed
            (``limit="decode_timeout"``).
    """
    with av_errors("reading the video packets"):
        stamps, packets, missing, last_corrupt, last_duration = _demux_stamps(
            container, stream, max_packets, _sync_samples(container, stream)
        )
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
        fps = _frame_rate(stream, pts, time_base)
        return StreamIndex(
            pts=pts,
            keyframes=keyframes or [0],
            exact=exact and bool(keyframes),
            fps=fps,
            time_base=time_base,
            end=_end(stream, pts, last_duration, fps, time_base),
            rotate_tag=tag_orientation(_metadata(stream)),
        )


def index_remote(
    data: RandomAccess, *, max_pixels: int, max_packets: int = MAX_STREAM_PACKETS
) -> StreamIndex:
    """``index_stream`` of a video read by position, without reading its packets' data.

    Only an MP4/MOV whose sample tables list every packet (the index at the front, or at
    the end: one more read there) is indexed so: once the container is open, the
    packets' bytes (the spans those tables give, for every stream) read as zeros while
    the demuxer walks them; the timestamps, sizes and sync samples come from the tables,
    as they do from the bytes. The container is closed afterwards.

    Raises:
        RangeReadUnsupported: another container, or an MP4 whose tables do not list
            every packet (a fragmented one): it needs a linear read.
        DecodeError, TooLargeError: as ``open_video`` and ``index_stream``.
    """
    view = RangeFile(data)
    container, stream = open_video(view, max_pixels=max_pixels)
    try:
        with av_errors("reading the video index"):
            if container.format.name not in _COUNTING_FORMATS - {"avi"}:
                kind = container.format.name.split(",")[0]
                raise RangeReadUnsupported(f"a {kind} video needs a linear read")
            spans: list[tuple[int, int]] = []
            for each in container.streams:
                entries = each.index_entries
                if each is stream and (len(entries) == 0 or len(entries) < int(stream.frames or 0)):
                    raise RangeReadUnsupported(
                        "the MP4's sample tables do not list every frame (a fragmented "
                        "file): it needs a linear read"
                    )
                spans.extend((entry.pos, entry.pos + entry.size) for entry in entries)
        view.set_hollow(merged_spans(spans))
        return index_stream(container, stream, max_packets=max_packets)
    finally:
        container.close()


def _metadata(stream: VideoStream) -> dict[str, str]:
    try:
        return dict(stream.metadata or {})
    except (TypeError, ValueError, UnicodeError):
        return {}


def _end(
    stream: VideoStream, pts: list[int], last_duration: int, fps: float, time_base: Fraction
) -> Fraction:
    """Where the last frame stops being shown, in ``time_base`` units: where the stream
    declares it ends, when that lies after the last frame's timestamp and within two
    mean frame steps of it; else the last frame's timestamp plus its packet's duration;
    else plus the mean step between frames (one frame period for a single frame).

    A packet's duration is the gap to the next packet in decoding order in some
    containers (MP4 with B-frames), not how long the frame is shown: the stream's own
    end comes first.
    """
    last = pts[-1]
    step = (
        Fraction(last - pts[0], len(pts) - 1)
        if len(pts) > 1 and last > pts[0]
        else Fraction(1) / (Fraction(fps).limit_denominator(1 << 20) * time_base)
    )
    if stream.duration and stream.duration > 0:
        declared = int(stream.start_time or 0) + int(stream.duration)
        if last < declared <= last + 2 * step:
            return Fraction(declared)
    if last_duration > 0:
        return Fraction(last + last_duration)
    return last + step


def _sync_samples(container: InputContainer, stream: VideoStream) -> frozenset[int] | None:
    """Where the keyframes of an MP4/MOV stream start, by its sync-sample table (the
    index FFmpeg seeks by); ``None`` for other containers, whose packets say it.

    Packet flags can differ from the table: FFmpeg's bitstream parser re-derives them
    from the packet data. The table is what a seek lands on, and it is known before any
    packet is read, so it is the one rule whether the bytes are in memory or read
    through ranges (where the index is built without the packet data).
    """
    if container.format.name not in _COUNTING_FORMATS - {"avi"}:
        return None
    entries = stream.index_entries
    if len(entries) == 0:
        return None
    return frozenset(entry.pos for entry in entries if entry.is_keyframe)


def _demux_stamps(
    container: InputContainer,
    stream: VideoStream,
    max_packets: int,
    sync_samples: frozenset[int] | None = None,
) -> tuple[list[tuple[int, bool]], int, bool, bool, int]:
    """``(timestamp, keyframe)`` of each kept packet (a keyframe by ``sync_samples``,
    the positions of the container's sync samples, when given), the packets read, whether any
    lacked a presentation timestamp, whether the last one was corrupt, and the duration
    of the kept packet with the latest timestamp (0 when unknown). The decode deadline
    is checked between packets.

    Raises:
        TooLargeError: over ``max_packets`` packets, or past the deadline.
    """
    stamps: list[tuple[int, bool]] = []
    packets = 0
    missing = False
    last_corrupt = False
    latest: int | None = None
    last_duration = 0
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None and packet.dts is None:
            continue  # the demuxer's end-of-stream marker
        packets += 1
        if not packets % _DEADLINE_PACKETS:
            check_deadline()
        if packets > max_packets:
            raise TooLargeError(
                f"the video stream has more than {max_packets} packets "
                "(MediaPolicy.max_stream_packets)",
                limit="max_stream_packets",
                value=packets,
                maximum=max_packets,
            )
        last_corrupt = packet.is_corrupt
        if packet.size == 0 or packet.is_discard:
            continue  # a dropped frame (AVI) or one an edit list hides (MP4)
        ts = packet.pts if packet.pts is not None else packet.dts
        if packet.pts is None:
            missing = True
        stamp = len(stamps) if ts is None else ts
        if latest is None or stamp >= latest:
            latest, last_duration = stamp, int(packet.duration or 0)
        key = packet.is_keyframe if sync_samples is None else packet.pos in sync_samples
        stamps.append((stamp, key))
    return stamps, packets, missing, last_corrupt, last_duration


def _frame_rate(stream: VideoStream, pts: list[int], time_base: Fraction) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < float(rate) < 10_000:
            return float(rate)
    span = float((pts[-1] - pts[0]) * time_base) if len(pts) > 1 else 0.0
    if span > 0:
        return (len(pts) - 1) / span
    return 1.0
