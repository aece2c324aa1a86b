"""The vLLM plugin: ``VLLM_MEDIA_CONNECTOR=mediagate`` puts every media URL of every
request through mediagate.

vLLM calls ``register`` from its ``vllm.general_plugins`` entry-point group. It adds a
connector named ``mediagate`` to ``vllm.multimodal.media.MEDIA_CONNECTOR_REGISTRY``; vLLM's
content parser then builds one per request with its own keywords (``media_io_kwargs``,
``allowed_local_media_path``, ``allowed_media_domains``, ``decoded_budget``,
``download_budget``). Nothing here is imported unless vLLM loads the plugin, and nothing
of vLLM is imported before then.

The connector's policy and download cache come from the ``MEDIAGATE_*`` variables
(``MediaPolicy.from_env``, ``MediaCache.from_env``); its results are vLLM's own
``MediaWithBytes`` so vLLM's parser, hasher and processors take them unchanged; vLLM's
per-request budgets are charged; every refusal is a ``MediaError`` (a ``ValueError`` for
client errors, so vLLM answers 400) that keeps its ``http_status``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import numpy as np

from ._cache import MediaCache
from ._config import vllm_settings_from_env
from ._connector import MediaConnector
from ._errors import FetchError
from ._media.budget import BorrowedBudget, DecodedBudget
from ._media.results import MediaWithBytes
from ._media.video.registry import VIDEO_LOADER_REGISTRY
from ._media.video.sampling import VLLM_METADATA_KEYS
from ._policy import MediaPolicy

__all__ = ["NAME", "UpstreamClientError", "VllmDecodedBudget", "VllmMediaConnector", "register"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

logger = logging.getLogger("mediagate")

#: The name the connector is registered under in vLLM.
NAME = "mediagate"


class VllmDecodedBudget(BorrowedBudget):
    """vLLM's per-request ``MediaDecodedBudget`` seen through mediagate's budget: it
    keeps its own limit (``VLLM_MAX_MEDIA_REQUEST_DECODE_BYTES``), which refusals name."""

    limit_name = "VLLM_MAX_MEDIA_REQUEST_DECODE_BYTES"


def _vllm_media(media: Any) -> Any:
    """Video ``(frames, metadata)`` with only the metadata keys vLLM's loaders return:
    model code builds ``transformers.VideoMetadata(**metadata)`` from the dict, which
    refuses the others (``timestamps``, the frame sizes, the orientation)."""
    if isinstance(media, tuple) and len(media) == 2 and isinstance(media[1], dict):
        frames, metadata = media
        return frames, {key: metadata[key] for key in VLLM_METADATA_KEYS if key in metadata}
    return media


def _as_vllm(result: Any) -> Any:
    """mediagate's ``MediaWithBytes`` as vLLM's own type (anything else unchanged)."""
    if not isinstance(result, MediaWithBytes):
        return result
    from vllm.multimodal.media import MediaWithBytes as VllmMediaWithBytes

    media = _vllm_media(result.media)
    return VllmMediaWithBytes(media, result.original_bytes, result.io_config)


class UpstreamClientError(FetchError, ValueError):
    """A ``FetchError`` caused by the reference itself (the media server answered 4xx):
    a ``ValueError`` too, so vLLM answers it as a client error. Raised as vLLM's
    ``VLLMUnprocessableEntityError`` as well where vLLM has it, so vLLM answers 422 as
    its own connector does for the same failure."""

    parameter: str | None = None
    value: Any = None


@functools.cache
def _unprocessable_class() -> type[UpstreamClientError]:
    try:
        from vllm.exceptions import VLLMUnprocessableEntityError
    except ImportError:
        return UpstreamClientError
    return type(
        "UpstreamClientError",
        (UpstreamClientError, VLLMUnprocessableEntityError),
        {"__module__": __name__, "__doc__": UpstreamClientError.__doc__},
    )


def _client_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(method)
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except FetchError as exc:
            raise _as_client_error(exc) from exc

    return translated


def _client_errors_async(
    method: Callable[_P, Awaitable[_R]],
) -> Callable[_P, Awaitable[_R]]:
    @functools.wraps(method)
    async def translated(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return await method(*args, **kwargs)
        except FetchError as exc:
            raise _as_client_error(exc) from exc

    return translated


def _as_client_error(exc: FetchError) -> FetchError:
    if isinstance(exc, ValueError) or exc.http_status >= 500:
        return exc
    error = _unprocessable_class()(
        str(exc), upstream_status=exc.upstream_status, url=exc.url, http_status=exc.http_status
    )
    error.parameter = "image_url"  # the parameter vLLM names for every media URL
    return error


class VllmMediaConnector(MediaConnector):
    """``MediaConnector`` with the constructor vLLM's content parser calls and vLLM's
    result types.

    The policy is ``MediaPolicy.from_env()`` tightened by vLLM's own media flags where
    they are set (``VLLM_MEDIA_URL_ALLOW_REDIRECTS=0``, ``VLLM_MAX_IMAGE_PIXELS``, the
    ``VLLM_*_FETCH_TIMEOUT`` deadlines); ``VLLM_VIDEO_LOADER_BACKEND`` is the video
    backend when neither the options nor the model's video processor name one; the cache
    is ``MediaCache.from_env()``, else the one ``VLLM_MEDIA_CACHE`` names.
    ``connection`` (vLLM's HTTP client) is not used:
    every fetch goes through mediagate's guarded fetcher.
    """

    def __init__(
        self,
        media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        connection: Any = None,
        *,
        allowed_local_media_path: str = "",
        allowed_media_domains: list[str] | None = None,
        decoded_budget: Any = None,
        download_budget: Any = None,
        policy: MediaPolicy | None = None,
        cache: MediaCache | None = None,
    ) -> None:
        settings = vllm_settings_from_env()
        if policy is None:
            policy = MediaPolicy.from_env()
            tightened: dict[str, Any] = {}
            if "max_redirects" in settings:
                tightened["max_redirects"] = 0
            if "max_pixels" in settings:
                tightened["max_pixels"] = min(policy.max_pixels, settings["max_pixels"])
            policy = policy.replace(**tightened) if tightened else policy
        if cache is None:
            cache = MediaCache.from_env()
            if cache is None and "cache" in settings:
                cache = MediaCache(**settings["cache"])
        self._fetch_timeouts: dict[str, float] = {
            modality: min(seconds, policy.timeout_for(modality))
            for modality, seconds in settings.get("fetch_timeouts", {}).items()
        }
        budget = decoded_budget
        if budget is not None and not isinstance(budget, DecodedBudget):
            budget = VllmDecodedBudget(budget)  # vLLM's, named as vLLM names its limit
        #: ``VLLM_VIDEO_LOADER_BACKEND``: the backend when nothing else names one.
        self._default_video_backend: str | None = settings.get("video_backend")
        super().__init__(
            media_io_kwargs,
            allowed_local_media_path=allowed_local_media_path,
            allowed_media_domains=allowed_media_domains,
            policy=policy,
            cache=cache,
            decoded_budget=budget,
            download_budget=download_budget,
        )

    def _video_backend(self, named: Any, video_processor: str | None) -> Any:
        """The backend as vLLM chooses it: the options', else the sampler of the model's
        video processor (mediagate's own, or vLLM's handed the bytes), else
        ``VLLM_VIDEO_LOADER_BACKEND``."""
        name = super()._video_backend(named, video_processor)
        if name is None and video_processor is not None:
            name = _vllm_backend_for_processor(video_processor)
        if name is None:
            name = self._default_video_backend
        if isinstance(name, str):
            _bridge_vllm_loader(name)
        return name

    def _timeout(self, modality: str, fetch_timeout: float | None) -> float:
        if fetch_timeout is None and modality in self._fetch_timeouts:
            return self._fetch_timeouts[modality]
        return super()._timeout(modality, fetch_timeout)

    @_client_errors
    def fetch_image(self, image_url: str, **kwargs: Any) -> Any:
        return _as_vllm(super().fetch_image(image_url, **kwargs))

    @_client_errors_async
    async def fetch_image_async(self, image_url: str, **kwargs: Any) -> Any:
        return _as_vllm(await super().fetch_image_async(image_url, **kwargs))

    @_client_errors
    def fetch_video(self, video_url: str, **kwargs: Any) -> Any:
        return _as_vllm(super().fetch_video(video_url, **kwargs))

    @_client_errors_async
    async def fetch_video_async(self, video_url: str, **kwargs: Any) -> Any:
        return _as_vllm(await super().fetch_video_async(video_url, **kwargs))

    @_client_errors
    def fetch_audio(self, audio_url: str, **kwargs: Any) -> Any:
        return super().fetch_audio(audio_url, **kwargs)

    @_client_errors_async
    async def fetch_audio_async(self, audio_url: str, **kwargs: Any) -> Any:
        return await super().fetch_audio_async(audio_url, **kwargs)

    @_client_errors
    def load_from_url(self, url: str, media_io: Any, **kwargs: Any) -> Any:
        return _as_vllm(super().load_from_url(url, media_io, **kwargs))

    @_client_errors_async
    async def load_from_url_async(self, url: str, media_io: Any, **kwargs: Any) -> Any:
        return _as_vllm(await super().load_from_url_async(url, media_io, **kwargs))


def _vllm_backend_for_processor(video_processor: str) -> str | None:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY as VLLM_LOADERS

    backend: str | None = VLLM_LOADERS.get_backend_for_video_processor(video_processor)
    return backend


_bridged: set[str] = set()

#: vLLM's loaders that sample ``num_frames`` uniformly (the rest choose their count).
_UNIFORM_VLLM_LOADERS = frozenset({"opencv", "torchcodec", "pynvvideocodec", "deepstream"})


def _bridge_vllm_loader(name: str) -> None:
    """Serve a video backend that only vLLM has (a GPU decoder, a model's own sampler)
    by handing it the bytes mediagate fetched under its guard, rather than refusing.

    Its decoding is vLLM's: it runs in this process, outside mediagate's decoders and
    their checks (the byte budget, the fetch rules and the result's shape still hold).
    """
    if name in VIDEO_LOADER_REGISTRY or name in _bridged:
        return
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY as VLLM_LOADERS

    vllm_loader = VLLM_LOADERS.name2class.get(name)
    if vllm_loader is None:
        return

    class VllmLoaderBridge:
        """vLLM's ``{name}`` video loader, given bytes mediagate fetched."""

        # vLLM's model samplers pick their own frame count; only its uniform loaders
        # take num_frames.
        takes_num_frames = name in _UNIFORM_VLLM_LOADERS

        def load_bytes(self, data: bytes, num_frames: int = -1, **options: Any) -> Any:
            frames, metadata = vllm_loader.load_bytes(data, num_frames=num_frames, **options)
            return np.asarray(frames), dict(metadata)

    # vLLM's code, in vLLM's module: not one of the built-in backends mediagate isolates.
    VllmLoaderBridge.__module__ = getattr(vllm_loader, "__module__", "vllm")
    VIDEO_LOADER_REGISTRY.register(name)(VllmLoaderBridge)
    _bridged.add(name)
    logger.warning(
        "video backend %r is vLLM's own: mediagate fetches the bytes and vLLM's loader "
        "decodes them in this process",
        name,
    )


def register() -> None:
    """Register the ``mediagate`` connector with vLLM (a no-op without vLLM)."""
    try:
        from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY
    except ImportError:
        return
    if MEDIA_CONNECTOR_REGISTRY.name2class.get(NAME) is not VllmMediaConnector:
        MEDIA_CONNECTOR_REGISTRY.register(NAME)(VllmMediaConnector)
        logger.debug("registered the %r media connector with vLLM", NAME)
