"""mediagate: untrusted media references in, model-ready arrays out, safely and fast."""

from ._cache import MediaCache
from ._connector import MEDIA_CONNECTOR_REGISTRY, LoadedMedia, LoadReport, MediaConnector
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
from ._media.audio import AudioMediaIO
from ._media.base import MediaIO, MediaWithBytes, OptionSpec
from ._media.budget import DecodedBudget
from ._media.embedding import (
    AudioEmbeddingMediaIO,
    ImageEmbeddingMediaIO,
    VideoEmbeddingMediaIO,
)
from ._media.image import ImageMediaIO
from ._media.video.io import VideoMediaIO
from ._media.video.loader import SampledVideoLoader
from ._media.video.registry import VIDEO_LOADER_REGISTRY
from ._metrics import METRICS_CONTENT_TYPE, enable_metrics, metrics_text
from ._modalities import guess_modality, sniff_modality
from ._observe import on_load
from ._policy import MediaPolicy
from ._requests import (
    MediaPart,
    RequestLimits,
    ResolvedItem,
    ResolvedRequest,
    content_hash,
    find_media_parts,
    openai_error_body,
    resolve_chat_request,
    resolve_chat_request_async,
)
from ._sources import SOURCE_REGISTRY, Source, SourceResult

__all__ = [
    "MEDIA_CONNECTOR_REGISTRY",
    "METRICS_CONTENT_TYPE",
    "SOURCE_REGISTRY",
    "VIDEO_LOADER_REGISTRY",
    "AudioEmbeddingMediaIO",
    "AudioMediaIO",
    "DecodeError",
    "DecodedBudget",
    "FetchError",
    "FetchTimeout",
    "ImageEmbeddingMediaIO",
    "ImageMediaIO",
    "LoadReport",
    "LoadedMedia",
    "LocalMediaDisabledError",
    "MediaCache",
    "MediaConnector",
    "MediaError",
    "MediaIO",
    "MediaPart",
    "MediaPolicy",
    "MediaWithBytes",
    "OptionError",
    "OptionSpec",
    "PolicyError",
    "RequestLimits",
    "ResolvedItem",
    "ResolvedRequest",
    "SampledVideoLoader",
    "Source",
    "SourceResult",
    "TooLargeError",
    "VideoEmbeddingMediaIO",
    "VideoMediaIO",
    "content_hash",
    "enable_metrics",
    "find_media_parts",
    "guess_modality",
    "metrics_text",
    "on_load",
    "openai_error_body",
    "resolve_chat_request",
    "resolve_chat_request_async",
    "sniff_modality",
]

__version__ = "0.1.0"
