"""Audio bytes to mono float32 under a duration and decoded-size budget.

Two decoders, chosen by ``sniff_audio``: libsndfile (through soundfile) and FFmpeg
(through PyAV). Both read the payload from memory in blocks, average the channels of
each block into one growing mono buffer, and count what they decoded as they go, so a
small file that expands to hours stops at the cap instead of being decoded in full.
Headers are checked first, when they declare a length, to fail before decoding at all.
Library exceptions become ``DecodeError`` here and nowhere else.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, NoReturn

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf

from ..._errors import DecodeError, MediaError, TooLargeError
from .sniff import AudioKind, Decoder, sniff_audio

__all__ = ["MAX_CHANNELS", "MAX_SAMPLE_RATE", "AudioLimits", "decode_audio"]

#: The highest sample rate (Hz) accepted from a header or a decoded frame.
MAX_SAMPLE_RATE = 384_000
#: The most channels accepted from a header or a decoded frame.
MAX_CHANNELS = 32
#: Decoded-size budget per second of ``max_seconds``: stereo float32 at MAX_SAMPLE_RATE.
DECODED_BYTES_PER_SECOND = MAX_SAMPLE_RATE * 2 * 4

#: FFmpeg decoders allowed to run on untrusted audio.
ALLOWED_AV_CODECS = frozenset(
    {
        "aac",
        "aac_fixed",
        "alac",
        "flac",
        "mp1",
        "mp1float",
        "mp2",
        "mp2float",
        "mp3",
        "mp3float",
        "opus",
        "libopus",
        "vorbis",
        "libvorbis",
        "pcm_alaw",
        "pcm_mulaw",
        "pcm_u8",
        "pcm_s16le",
        "pcm_s16be",
        "pcm_s24le",
        "pcm_s24be",
        "pcm_s32le",
        "pcm_s32be",
        "pcm_f32le",
        "pcm_f32be",
        "pcm_f64le",
        "pcm_f64be",
    }
)

_SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "AIFF", "FLAC", "MP3", "OGG"})
_BLOCK_FRAMES = 1 << 16
_INITIAL_CAPACITY_CAP = 1 << 24  # samples reserved up front on a header's word alone

# FFmpeg sample format (without the planar "p") -> (dtype, offset, scale to [-1, 1]).
_SAMPLE_FORMATS: dict[str, tuple[np.dtype[Any], float, float]] = {
    "u8": (np.dtype(np.uint8), 128.0, 2.0**-7),
    "s16": (np.dtype(np.int16), 0.0, 2.0**-15),
    "s32": (np.dtype(np.int32), 0.0, 2.0**-31),
    "flt": (np.dtype(np.float32), 0.0, 1.0),
    "dbl": (np.dtype(np.float64), 0.0, 1.0),
}


@dataclass(frozen=True)
class AudioLimits:
    """The duration cap for one decode and the budgets derived from it."""

    max_seconds: float

    @property
    def max_decoded_bytes(self) -> int:
        """PCM bytes (all channels, float32) a decode may produce before it stops."""
        return math.floor(self.max_seconds * DECODED_BYTES_PER_SECOND)

    def check_format(self, rate: float, channels: int) -> None:
        """Refuse a sample rate or channel count no real audio has.

        Raises:
            TooLargeError: the rate or the channel count is over its ceiling.
            DecodeError: the rate or channel count is not positive.
        """
        if not rate > 0 or channels < 1:
            raise DecodeError("audio declares no sample rate or no channels")
        if rate > MAX_SAMPLE_RATE:
            raise TooLargeError(
                f"audio sample rate is over {MAX_SAMPLE_RATE} Hz",
                limit="sample_rate",
                value=rate,
                maximum=MAX_SAMPLE_RATE,
            )
        if channels > MAX_CHANNELS:
            raise TooLargeError(
                f"audio has more than {MAX_CHANNELS} channels",
                limit="channels",
                value=channels,
                maximum=MAX_CHANNELS,
            )

    def check(self, frames: int, rate: float, channels: int, *, declared: bool = False) -> None:
        """Refuse ``frames`` per channel at ``rate`` if over the duration or size budget.

        Raises:
            TooLargeError: over ``max_seconds`` or over ``max_decoded_bytes``.
        """
        seconds = frames / rate
        how = "declares" if declared else "decodes to"
        if seconds > self.max_seconds:
            raise TooLargeError(
                f"audio {how} more than max_audio_seconds={self.max_seconds:g} s "
                f"(raise MediaPolicy.max_audio_seconds to allow longer audio)",
                limit="max_audio_seconds",
                value=seconds,
                maximum=self.max_seconds,
            )
        decoded = frames * channels * 4
        if decoded > self.max_decoded_bytes:
            raise TooLargeError(
                f"audio {how} more than {self.max_decoded_bytes} bytes of samples "
                f"(the budget follows MediaPolicy.max_audio_seconds)",
                limit="decoded_bytes",
                value=decoded,
                maximum=self.max_decoded_bytes,
            )


class _MonoBuffer:
    """A growing float32 buffer that blocks of channel sums are written into."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1), dtype=np.float32)
        self.size = 0

    def claim(self, frames: int) -> npt.NDArray[np.float32]:
        """A writable view of the next ``frames`` samples (committed by ``commit``)."""
        end = self.size + frames
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), dtype=np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        return self._data[self.size : end]

    def commit(self, frames: int) -> None:
        self.size += frames

    def result(self, scale: float) -> npt.NDArray[np.float32]:
        out = self._data[: self.size]
        if len(self._data) > 2 * self.size + 4096:
            out = out.copy()  # do not keep a mostly empty reservation alive
        if scale != 1.0:
            out *= np.float32(scale)
        return out


def _sum_channels(block: npt.NDArray[Any], dst: npt.NDArray[np.float32]) -> None:
    """Sum a ``(frames, channels)`` block into ``dst``."""
    if block.shape[1] == 1:
        dst[:] = block[:, 0]
    elif block.shape[1] == 2:
        np.add(block[:, 0], block[:, 1], out=dst, dtype=np.float32)
    else:
        np.sum(block, axis=1, dtype=np.float32, out=dst)


def _decode_soundfile(
    data: bytes, kind: AudioKind, limits: AudioLimits
) -> tuple[npt.NDArray[np.float32], int]:
    with sf.SoundFile(io.BytesIO(data)) as snd:
        if snd.format not in _SOUNDFILE_FORMATS:
            raise DecodeError("audio container is not supported")
        rate, channels = int(snd.samplerate), int(snd.channels)
        limits.check_format(rate, channels)
        declared = int(snd.frames)
        if declared > 0 and kind.exact_length:
            limits.check(declared, rate, channels, declared=True)
        capacity = min(max(declared, 0), _INITIAL_CAPACITY_CAP) or _BLOCK_FRAMES
        out = _MonoBuffer(capacity)
        block = np.empty((_BLOCK_FRAMES, channels), dtype=np.float32)
        while True:
            # Reading into ``out=`` asks libsndfile for what is really there rather
            # than trusting the header's frame count.
            got = len(snd.read(out=block))
            if got == 0:
                break
            limits.check(out.size + got, rate, channels)
            _sum_channels(block[:got], out.claim(got))
            out.commit(got)
            if got < _BLOCK_FRAMES:
                break
    return out.result(1.0 / channels), rate


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> NoReturn:
    raise PermissionError("the container tried to open another resource")


@dataclass(frozen=True)
class _FrameLayout:
    """How one decoded frame's planes become a block of channel sums."""

    name: str
    dtype: np.dtype[Any]
    planar: bool
    offset: float
    scale: float

    @classmethod
    def of(cls, frame: av.AudioFrame) -> _FrameLayout:
        name = frame.format.name
        planar = name.endswith("p")
        spec = _SAMPLE_FORMATS.get(name[:-1] if planar else name)
        if spec is None:
            raise DecodeError("audio decodes to an unsupported sample format")
        return cls(name, spec[0], planar, spec[1], spec[2])

    def sum_into(self, frame: av.AudioFrame, channels: int, dst: npt.NDArray[np.float32]) -> None:
        """Write the sum of the frame's channels, scaled to [-1, 1] per channel, to ``dst``."""
        frames = len(dst)
        # The planes expose FFmpeg's buffers (buffer protocol, untyped in PyAV's
        # stubs): numpy views of them mean no copy until the sum.
        planes: Any = frame.planes
        if self.planar:
            if len(planes) != channels:
                raise DecodeError("audio changes its channel count mid-stream")
            views = [np.frombuffer(plane, self.dtype, frames) for plane in planes]
            if channels == 1:
                dst[:] = views[0]
            else:
                np.add(views[0], views[1], out=dst, dtype=np.float32)
                for view in views[2:]:
                    np.add(dst, view, out=dst, dtype=np.float32)
        else:
            block = np.frombuffer(planes[0], self.dtype, frames * channels)
            _sum_channels(block.reshape(frames, channels), dst)
        if self.offset:
            dst -= np.float32(self.offset * channels)
        if self.scale != 1.0:
            dst *= np.float32(self.scale)


def _decode_pyav(
    data: bytes, kind: AudioKind, limits: AudioLimits
) -> tuple[npt.NDArray[np.float32], int]:
    with av.open(
        io.BytesIO(data),
        format=kind.av_format,
        metadata_errors="ignore",
        io_open=_refuse_nested_open,
    ) as container:
        if not container.streams.audio:
            raise DecodeError(f"{kind.name} payload has no audio track")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if ctx.name not in ALLOWED_AV_CODECS:
            raise DecodeError(f"audio codec of the {kind.name} payload is not supported")
        rate, channels = int(ctx.sample_rate), int(ctx.channels)
        limits.check_format(rate, channels)
        declared = 0
        if stream.duration is not None and stream.time_base is not None:
            declared = max(0, math.ceil(stream.duration * stream.time_base * rate))
        elif container.duration is not None:
            declared = max(0, math.ceil(container.duration * rate / av.time_base))
        if declared and kind.exact_length:
            limits.check(declared, rate, channels, declared=True)
        out = _MonoBuffer(min(declared, _INITIAL_CAPACITY_CAP) or _BLOCK_FRAMES)
        layout: _FrameLayout | None = None
        for packet in container.demux(stream):
            for frame in ctx.decode(packet):
                if frame.sample_rate != rate:
                    raise DecodeError("audio changes its sample rate mid-stream")
                if layout is None or frame.format.name != layout.name:
                    if layout is not None:
                        raise DecodeError("audio changes its sample format mid-stream")
                    layout = _FrameLayout.of(frame)
                got = frame.samples
                limits.check(out.size + got, rate, channels)
                layout.sum_into(frame, channels, out.claim(got))
                out.commit(got)
    return out.result(1.0 / channels), rate


def _decode_with(
    decoder: Decoder, data: bytes, kind: AudioKind, limits: AudioLimits
) -> tuple[npt.NDArray[np.float32], int]:
    if decoder == "soundfile":
        return _decode_soundfile(data, kind, limits)
    return _decode_pyav(data, kind, limits)


def decode_audio(data: bytes, limits: AudioLimits) -> tuple[npt.NDArray[np.float32], int]:
    """Decode ``data`` to mono float32 at its native rate.

    The decoder is picked from the magic bytes; the other decoder is tried only when
    the first one cannot read the payload.

    Returns:
        The samples (1-D float32, channels averaged) and the sample rate in Hz.

    Raises:
        TooLargeError: the audio is over ``limits`` (from its header or while decoding).
        DecodeError: not a supported format, or neither decoder can read it.
    """
    kind = sniff_audio(data)
    order: list[Decoder] = [kind.decoder]
    fallback: Decoder = "pyav" if kind.decoder == "soundfile" else "soundfile"
    if fallback == "pyav" or kind.soundfile_can_read:
        order.append(fallback)
    failure: BaseException | None = None
    for decoder in order:
        try:
            audio, rate = _decode_with(decoder, data, kind, limits)
        except MediaError:
            raise
        except (av.FFmpegError, RuntimeError, OSError, ValueError, EOFError, TypeError) as exc:
            failure = exc
            continue
        if audio.size == 0:
            raise DecodeError(f"{kind.name} payload holds no audio samples")
        return audio, rate
    raise DecodeError(f"{kind.name} audio could not be decoded") from failure
