"""mediagate: untrusted media references in, model-ready arrays out, safely and fast."""

from ._connector import MEDIA_CONNECTOR_REGISTRY, MediaConnector
from ._errors import (
    DecodeError,
    FetchError,
    FetchTimeout,
    LocalMediaDisabledError,
    MediaError,
    OptionError,
    PolicyError,
    TooLargeError,
)
from ._media.base import MediaIO, MediaWithBytes
from ._media.image import ImageMediaIO
from ._media.video.registry import VIDEO_LOADER_REGISTRY
from ._policy import MediaPolicy

__all__ = [
    "DecodeError",
    "FetchError",
    "FetchTimeout",
    "ImageMediaIO",
    "LocalMediaDisabledError",
    "MEDIA_CONNECTOR_REGISTRY",
    "MediaConnector",
    "MediaError",
    "MediaIO",
    "MediaPolicy",
    "MediaWithBytes",
    "OptionError",
    "PolicyError",
    "TooLargeError",
    "VIDEO_LOADER_REGISTRY",
]

__version__ = "0.1.0"
