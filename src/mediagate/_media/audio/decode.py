"""Audio bytes to mono float32 under a duration and decoded-size budget.

Two decoders, chosen by ``sniff_audio``: libsndfile (through soundfile) and FFmpeg
(through PyAV). Both read the payload from memory in blocks, average the channels of
each block into one growing mono buffer, and count what they decoded as they go, so a
small file that expands to hours stops at the cap instead of being decoded in full.
When a sample rate is asked for, finished blocks are resampled as they come.
Headers are checked first, when they declare a length, to fail before decoding at all.

The output is budgeted as samples after resampling (float32, or the native samples
when there are more of them) against the decoded-output budget: from the declared
length before any decoder or resampler is set up, and at every block as the buffer
grows, so a tiny file at 1 Hz asked for at 384 kHz is refused before anything is
allocated. The decode deadline is checked between blocks and resampled chunks.
FFmpeg opens the payload through the shared hardened open (``_ffmpeg.open_stream``),
under the audio demuxers and ``ALLOWED_AV_CODECS``. Library exceptions become
``DecodeError`` (``MemoryError`` a ``TooLargeError``) in ``decode_audio`` and nowhere
else.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf
from av.audio.stream import AudioStream

from ..._errors import DecodeError, MediaError
from .._ffmpeg import LIBRARY_ERRORS, StreamRules, ffmpeg_errors, open_stream
from .._helpers import helper_pool
from ..budget import check_deadline, current_limits, reserve_output
from .limits import INITIAL_CAPACITY_CAP, AudioLimits, MonoBuffer
from .resample import StreamResampler
from .sniff import AV_FORMATS, AudioKind, Decoder, sniff_audio

__all__ = ["ALLOWED_AV_CODECS", "decode_audio"]

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
# Uncompressed integer PCM is read as integers: a copy where float means a conversion
# pass (2.5x faster on 16-bit WAV); compressed formats (FLAC) are no faster that way.
_PCM_CONTAINERS = frozenset({"WAV", "WAVEX", "AIFF"})
# libsndfile subtype -> (dtype to read it as, scale to [-1, 1]); others read as float32.
# libsndfile widens narrower integer samples to the top bits of the type read.
_PCM_READ: dict[str, tuple[np.dtype[Any], float]] = {
    "PCM_S8": (np.dtype(np.int16), 2.0**-15),
    "PCM_U8": (np.dtype(np.int16), 2.0**-15),
    "PCM_16": (np.dtype(np.int16), 2.0**-15),
    "PCM_24": (np.dtype(np.int32), 2.0**-31),
    "PCM_32": (np.dtype(np.int32), 2.0**-31),
}
# Samples reserved for a stream that declares no length.
_UNKNOWN_LENGTH_CAPACITY = 1 << 16
# Samples (all channels) per soundfile read: libsndfile's MP3 reader costs ~60 us a
# call, so reads are large; 1 MiB of float32 at most.
_READ_SAMPLES = 1 << 18

# FFmpeg sample format (without the planar "p") -> (dtype, offset, scale to [-1, 1]).
_SAMPLE_FORMATS: dict[str, tuple[np.dtype[Any], float, float]] = {
    "u8": (np.dtype(np.uint8), 128.0, 2.0**-7),
    "s16": (np.dtype(np.int16), 0.0, 2.0**-15),
    "s32": (np.dtype(np.int32), 0.0, 2.0**-31),
    "flt": (np.dtype(np.float32), 0.0, 1.0),
    "dbl": (np.dtype(np.float64), 0.0, 1.0),
}


def _sum_channels(block: npt.NDArray[Any], dst: npt.NDArray[np.float32]) -> None:
    """Sum a ``(frames, channels)`` block into ``dst``."""
    if block.shape[1] == 1:
        dst[:] = block[:, 0]
    elif block.shape[1] == 2:
        np.add(block[:, 0], block[:, 1], out=dst, dtype=np.float32)
    else:
        np.sum(block, axis=1, dtype=np.float32, out=dst)


#: What the libraries raise on bytes they cannot read: the next decoder is tried.
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (*LIBRARY_ERRORS, sf.SoundFileError)


class _Output:
    """Where one decode attempt's samples go: kept at the native rate, or resampled to
    ``sample_rate`` as the samples are finished, while the rest is still decoding.
    ``max_output`` is the decoded-output budget used outside a guarded decode."""

    def __init__(self, sample_rate: int | None, max_output: int | None = None) -> None:
        self.sample_rate = sample_rate
        self.max_output = max_output
        self._resampler: StreamResampler | None = None

    def _target(self, rate: int) -> int:
        return rate if self.sample_rate is None else self.sample_rate

    def reserve(self, frames: int, rate: int) -> None:
        """Refuse ``frames`` native samples at ``rate`` when they, or what they resample
        to, are over the decoded-output budget.

        Raises:
            TooLargeError: over the budget (``limit="max_decoded_bytes"``).
        """
        target = self._target(rate)
        samples = max(frames, math.ceil(frames * target / rate))
        what = f"{frames} audio samples at {rate} Hz"
        if target != rate:
            what += f" resampled to {target} Hz"
        reserve_output(samples * 4, what, fallback=self.max_output)

    def _ceiling(self, rate: int) -> int | None:
        """The most native samples at ``rate`` the budget allows, if there is one."""
        limits = current_limits()
        budget = limits.max_output if limits is not None else self.max_output
        if budget is None:
            return None
        samples = budget // 4
        return max(1, min(samples, samples * rate // self._target(rate)))

    def buffer(self, capacity: int, rate: int, scale: float) -> MonoBuffer:
        """The buffer for a stream at ``rate``, whose channel sums are multiplied by
        ``scale``; every claim on it is held against the budget (see ``reserve``)."""

        def reserve(frames: int) -> None:
            self.reserve(frames, rate)

        ceiling = self._ceiling(rate)
        if self.sample_rate is None or rate == self.sample_rate:
            return MonoBuffer(capacity, scale, reserve=reserve, ceiling=ceiling)
        self._resampler = StreamResampler(rate, self.sample_rate, helper_pool())
        return MonoBuffer(capacity, scale, self._resampler.feed, reserve=reserve, ceiling=ceiling)

    def result(
        self, native: npt.NDArray[np.float32], rate: int
    ) -> tuple[npt.NDArray[np.float32], int]:
        """The samples as asked for, given all of them at the native ``rate``."""
        if self._resampler is None or self.sample_rate is None:
            return native, rate
        return self._resampler.finish(native), self.sample_rate

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._resampler is not None:
            self._resampler.__exit__(*exc_info)


class _ForgivingSource(io.BytesIO):
    """The payload as libsndfile reads it: a seek it asks for that cannot be done (a
    negative position from a damaged header) leaves the position where it was, so the
    reader sees a short file instead of an exception lost inside a C callback."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return super().seek(offset, whence)
        except (ValueError, OverflowError):
            return self.tell()


def _decode_soundfile(
    data: bytes, kind: AudioKind, limits: AudioLimits, output: _Output
) -> tuple[npt.NDArray[np.float32], int]:
    with sf.SoundFile(_ForgivingSource(data)) as snd:
        if snd.format not in _SOUNDFILE_FORMATS:
            raise DecodeError("audio container is not supported")
        rate, channels = int(snd.samplerate), int(snd.channels)
        limits.check_format(rate, channels)
        declared = int(snd.frames)
        if declared > 0 and kind.exact_length:
            limits.check(declared, rate, channels, declared=True)
            output.reserve(declared, rate)
        capacity = min(max(declared, 0), INITIAL_CAPACITY_CAP) or _UNKNOWN_LENGTH_CAPACITY
        # Integer samples summed to float32 and scaled give the same floats, to the
        # last bit, as libsndfile's own conversion.
        dtype, scale = np.dtype(np.float32), 1.0
        if snd.format in _PCM_CONTAINERS:
            dtype, scale = _PCM_READ.get(snd.subtype, (dtype, scale))
        out = output.buffer(capacity, rate, scale / channels)
        block = np.empty((max(_READ_SAMPLES // channels, 1), channels), dtype=dtype)
        while True:
            check_deadline()
            # Reading into ``out=`` asks libsndfile for what is really there rather
            # than trusting the header's frame count.
            got = len(snd.read(out=block))
            if got == 0:
                break
            limits.check(out.size + got, rate, channels)
            _sum_channels(block[:got], out.claim(got))
            out.commit(got)
    return out.result(), rate


@functools.cache
def _stream_rules(kind: AudioKind) -> StreamRules[AudioStream]:
    """How FFmpeg opens a payload of ``kind``: the audio demuxers, the allowed decoders
    (the only ones that may run while the stream is probed), messages naming ``kind``."""
    refused = f"audio codec of the {kind.name} payload is not supported"
    return StreamRules(
        media="audio",
        stream_type=AudioStream,
        demuxers=AV_FORMATS,
        codecs=ALLOWED_AV_CODECS,
        no_stream=f"{kind.name} payload has no audio track",
        unknown_codec=refused,
        bad_codec=refused.replace("{", "{{").replace("}", "}}"),
        match_decoder=True,
        probe_decoders=ALLOWED_AV_CODECS,
    )


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
    data: bytes, kind: AudioKind, limits: AudioLimits, output: _Output
) -> tuple[npt.NDArray[np.float32], int]:
    container, stream = open_stream(data, kind.av_format, _stream_rules(kind))
    with container:
        ctx = stream.codec_context
        rate, channels = int(ctx.sample_rate), int(ctx.channels)
        limits.check_format(rate, channels)
        declared = 0
        if stream.duration is not None and stream.time_base is not None:
            declared = max(0, math.ceil(stream.duration * stream.time_base * rate))
        elif container.duration is not None:
            declared = max(0, math.ceil(container.duration * rate / av.time_base))
        if declared and kind.exact_length:
            limits.check(declared, rate, channels, declared=True)
            output.reserve(declared, rate)
        out = output.buffer(
            min(declared, INITIAL_CAPACITY_CAP) or _UNKNOWN_LENGTH_CAPACITY, rate, 1 / channels
        )
        layout: _FrameLayout | None = None
        for packet in container.demux(stream):
            check_deadline()
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
    return out.result(), rate


def _decode_with(
    decoder: Decoder, data: bytes, kind: AudioKind, limits: AudioLimits, sample_rate: int | None
) -> tuple[npt.NDArray[np.float32], int]:
    decode = _decode_soundfile if decoder == "soundfile" else _decode_pyav
    with _Output(sample_rate, limits.max_output) as output:
        audio, rate = decode(data, kind, limits, output)
        if audio.size == 0:
            return audio, rate
        return output.result(audio, rate)


def _decode_any(
    order: list[Decoder], data: bytes, kind: AudioKind, limits: AudioLimits, sample_rate: int | None
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode with the first decoder in ``order`` that can read ``data``.

    Raises:
        MediaError: at once, from whichever decoder refused the payload.
        Exception: the last decoder's library failure, when none can read it.
    """
    for decoder in order[:-1]:
        try:
            return _decode_with(decoder, data, kind, limits, sample_rate)
        except MediaError:
            raise
        except _LIBRARY_ERRORS:
            continue
    return _decode_with(order[-1], data, kind, limits, sample_rate)


def decode_audio(
    data: bytes,
    limits: AudioLimits,
    sample_rate: int | None = None,
    *,
    backend: Decoder | None = None,
) -> tuple[npt.NDArray[np.float32], int]:
    """Decode ``data`` to mono float32 at its native rate, or resampled to ``sample_rate``.

    The decoder is picked from the magic bytes; the other decoder is tried only when
    the first one cannot read the payload. ``backend`` (``"soundfile"`` or ``"pyav"``)
    names the one decoder to use instead; a format libsndfile cannot read is always
    decoded with PyAV. Resampling (soxr, high quality) runs beside
    the decoding, as the samples are finished, and equals one-pass ``soxr.resample``.

    Returns:
        The samples (1-D float32, channels averaged) and their sample rate in Hz.

    Raises:
        TooLargeError: the audio is over ``limits`` (from its header or while decoding),
            its output over the decoded-output budget, its decode past the deadline,
            or memory ran out (``limit="memory"``).
        DecodeError: not a supported format, or neither decoder can read it.
    """
    kind = sniff_audio(data)
    order: list[Decoder] = [kind.decoder]
    fallback: Decoder = "pyav" if kind.decoder == "soundfile" else "soundfile"
    if fallback == "pyav" or kind.soundfile_can_read:
        order.append(fallback)
    if backend is not None:
        order = [backend if backend == "pyav" or kind.soundfile_can_read else "pyav"]
    with ffmpeg_errors(
        f"{kind.name} audio could not be decoded",
        f"decoding the {kind.name} audio needed more memory than this server allows "
        "(lower MediaPolicy.max_decoded_bytes or the requested sample_rate)",
        more=(sf.SoundFileError,),
    ):
        audio, rate = _decode_any(order, data, kind, limits, sample_rate)
    if audio.size == 0:
        raise DecodeError(f"{kind.name} payload holds no audio samples")
    return audio, rate
