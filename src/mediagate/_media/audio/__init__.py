"""Audio: sniff the container, decode to mono float32 under a duration cap, resample.

``sniff`` picks the decoder from magic bytes, ``limits`` holds the duration and size
accounting, ``decode`` runs the decoders under it, ``mediaio`` is the ``AudioMediaIO``
face with its options.
"""

from .limits import MAX_CHANNELS, MAX_SAMPLE_RATE
from .mediaio import AUDIO_OPTIONS, AudioMediaIO

__all__ = ["AUDIO_OPTIONS", "MAX_CHANNELS", "MAX_SAMPLE_RATE", "AudioMediaIO"]
