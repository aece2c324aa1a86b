"""AudioMediaIO: audio bytes to ``(mono float32 samples, sample rate)``."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pybase64
import soundfile as sf

from ..._errors import OptionError
from ..._policy import MediaPolicy
from ..base import MediaIO, OptionSpec, opt_float, opt_int, validate_options
from ..budget import DecodedBudget
from .decode import decode_audio
from .limits import MAX_SAMPLE_RATE, AudioLimits
from .sniff import Decoder

__all__ = ["AUDIO_BACKENDS", "AUDIO_OPTIONS", "ENCODE_FORMATS", "AudioMediaIO"]

#: The audio decoders ``audio_backend`` names ("auto": chosen from the format).
AUDIO_BACKENDS = ("auto", "soundfile", "pyav")

#: The per-request options ``AudioMediaIO`` accepts ("media_io_kwargs" for audio).
AUDIO_OPTIONS: Mapping[str, OptionSpec] = {
    "sample_rate": OptionSpec(
        opt_int(1000, MAX_SAMPLE_RATE, allow_none=True),
        "resample to this rate in Hz (soxr, high quality); None keeps the native rate",
    ),
    "max_seconds": OptionSpec(
        opt_float(0.0, allow_none=True, exclusive_minimum=True),
        "a lower duration cap for this request; never raises MediaPolicy.max_audio_seconds",
    ),
    "audio_backend": OptionSpec(
        lambda modality, key, value: _check_backend(key, value),
        "the decoder: 'auto' (default: from the format, the other one if it fails), "
        "'soundfile' or 'pyav'",
    ),
}


def _check_backend(key: str, value: Any) -> Any:
    if value is None or value in AUDIO_BACKENDS:
        return value
    raise OptionError(
        f"audio option {key!r} must be one of {', '.join(AUDIO_BACKENDS)}, not {value!r}",
        option=key,
    )


#: ``audio_format`` values of ``encode_base64`` and the libsndfile subtype each uses.
ENCODE_FORMATS: Mapping[str, str] = {
    "WAV": "FLOAT",
    "FLAC": "PCM_24",
    "OGG": "VORBIS",
    "MP3": "MPEG_LAYER_III",
}

_ENCODE_BLOCK = 1 << 15


class AudioMediaIO(MediaIO[tuple[npt.NDArray[np.float32], float]]):
    """Decodes audio to mono float32 at its native rate, or resampled to ``sample_rate``.

    WAV, AIFF, FLAC, MP3, Ogg (Vorbis, Opus, FLAC), AAC (ADTS), MP4/M4A and
    Matroska/WebM decode, including the first audio track of a video file. Channels
    are averaged to mono before any resampling. The duration is capped by
    ``MediaPolicy.max_audio_seconds`` (or the lower ``max_seconds`` option), from the
    header where it states a length and by counting samples while decoding.

    The sample rate returned is an ``int``: the file's own rate, or ``sample_rate``.

    Example::

        io = AudioMediaIO(sample_rate=16000)
        audio, sr = io.load_bytes(wav_bytes)
        assert audio.dtype == np.float32 and sr == 16000

    Raises:
        OptionError: an unknown option, or a value of the wrong type or range.
    """

    modality = "audio"

    def __init__(
        self,
        /,
        *,
        sample_rate: int | None = None,
        policy: MediaPolicy | None = None,
        decoded_budget: DecodedBudget | None = None,
        **options: Any,
    ) -> None:
        super().__init__(policy=policy, decoded_budget=decoded_budget)
        checked = validate_options(
            self.modality, {"sample_rate": sample_rate, **options}, AUDIO_OPTIONS
        )
        self.sample_rate: int | None = checked.get("sample_rate")
        max_seconds = self.policy.max_audio_seconds
        requested = checked.get("max_seconds")
        if requested is not None:
            max_seconds = min(max_seconds, requested)
        self.max_seconds: float = max_seconds
        backend = checked.get("audio_backend")
        self.audio_backend: Decoder | None = None if backend in (None, "auto") else backend

    def load_bytes(self, data: bytes) -> tuple[npt.NDArray[np.float32], float]:
        """Decode ``data`` to ``(samples, sample_rate)``.

        Raises:
            TooLargeError: the payload is over ``max_bytes``, or the audio is longer
                than the duration cap (from its header or while decoding), its rate or
                channel count is over ``MAX_SAMPLE_RATE`` or ``MAX_CHANNELS``, its
                samples (after resampling) over ``MediaPolicy.max_decoded_bytes``, or
                its decode past ``MediaPolicy.decode_timeout``.
            DecodeError: not a supported audio format, or not decodable.
        """
        self.policy.check_size(len(data), self.modality)
        limits = AudioLimits(self.max_seconds, self.policy.max_decoded_bytes_for(self.modality))
        return decode_audio(bytes(data), limits, self.sample_rate, backend=self.audio_backend)

    def encode_base64(
        self, media: tuple[npt.ArrayLike, float], *, audio_format: str = "WAV"
    ) -> str:
        """Encode ``(audio, sample_rate)`` as base64 of an audio file.

        ``audio`` is 1-D (mono) or ``(frames, channels)``. WAV is written as 32-bit
        float so that ``load_base64`` gives the same samples back; FLAC as 24-bit PCM;
        OGG as Vorbis; MP3 as MPEG layer III.

        Raises:
            OptionError: ``audio_format`` is not one of ``ENCODE_FORMATS``.
            ValueError: the audio is not 1-D or 2-D, or the sample rate is not a
                positive whole number.
        """
        if audio_format not in ENCODE_FORMATS:
            known = ", ".join(ENCODE_FORMATS)
            raise OptionError(f"audio_format must be one of {known}", option="audio_format")
        audio, rate = media
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim not in (1, 2) or arr.size == 0:
            raise ValueError("audio to encode must be a non-empty 1-D or 2-D array")
        if isinstance(rate, bool) or not float(rate).is_integer() or not rate > 0:
            raise ValueError("sample rate to encode must be a positive whole number")
        channels = 1 if arr.ndim == 1 else arr.shape[1]
        buffer = io.BytesIO()
        with sf.SoundFile(
            buffer,
            "w",
            samplerate=int(rate),
            channels=channels,
            format=audio_format,
            subtype=ENCODE_FORMATS[audio_format],
        ) as snd:
            # Some libsndfile encoders fail on very large single writes.
            for start in range(0, len(arr), _ENCODE_BLOCK):
                snd.write(arr[start : start + _ENCODE_BLOCK])
        return pybase64.b64encode(buffer.getvalue()).decode("ascii")
