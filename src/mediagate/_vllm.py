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

import logging
from collections.abc import Mapping
from typing import Any

from ._cache import MediaCache
from ._connector import MediaConnector
from ._errors import TooLargeError
from ._media.budget import DecodedBudget
from ._media.results import MediaWithBytes
from ._policy import MediaPolicy

__all__ = ["NAME", "VllmMediaConnector", "register"]

logger = logging.getLogger("mediagate")

#: The name the connector is registered under in vLLM.
NAME = "mediagate"


class VllmDecodedBudget(DecodedBudget):
    """vLLM's per-request ``MediaDecodedBudget`` seen through mediagate's budget.

    vLLM's object keeps its own limit (``VLLM_MAX_MEDIA_REQUEST_DECODE_BYTES``); its
    refusals become ``TooLargeError(limit="max_decoded_bytes")``.
    """

    def __init__(self, budget: Any) -> None:
        super().__init__(1 << 62)
        self._vllm = budget

    def _translated(self, exc: ValueError) -> TooLargeError:
        return TooLargeError(str(exc), limit="max_decoded_bytes")

    def reserve(self, max_bytes: int, *, timeout: float | None = None) -> int:
        try:
            reserved: int = self._vllm.reserve(max_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc
        return reserved

    def settle(self, reserved: int, decoded_bytes: int) -> None:
        try:
            self._vllm.settle(reserved, decoded_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc

    def release(self, reserved: int) -> None:
        self._vllm.settle(reserved, 0)

    def charge(self, decoded_bytes: int) -> None:
        try:
            self._vllm.charge(decoded_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc


def _as_vllm(result: Any) -> Any:
    """mediagate's ``MediaWithBytes`` as vLLM's own type (anything else unchanged)."""
    if not isinstance(result, MediaWithBytes):
        return result
    from vllm.multimodal.media import MediaWithBytes as VllmMediaWithBytes

    return VllmMediaWithBytes(result.media, result.original_bytes, result.io_config)


class VllmMediaConnector(MediaConnector):
    """``MediaConnector`` with the constructor vLLM's content parser calls and vLLM's
    result types.

    ``connection`` (vLLM's HTTP client) is not used: every fetch goes through mediagate's
    guarded fetcher.
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
        budget = decoded_budget
        if budget is not None and not isinstance(budget, DecodedBudget):
            budget = VllmDecodedBudget(budget)
        super().__init__(
            media_io_kwargs,
            allowed_local_media_path=allowed_local_media_path,
            allowed_media_domains=allowed_media_domains,
            policy=policy if policy is not None else MediaPolicy.from_env(),
            cache=cache if cache is not None else MediaCache.from_env(),
            decoded_budget=budget,
            download_budget=download_budget,
        )

    def fetch_image(self, image_url: str, **kwargs: Any) -> Any:
        return _as_vllm(super().fetch_image(image_url, **kwargs))

    async def fetch_image_async(self, image_url: str, **kwargs: Any) -> Any:
        return _as_vllm(await super().fetch_image_async(image_url, **kwargs))

    def fetch_video(self, video_url: str, **kwargs: Any) -> Any:
        return _as_vllm(super().fetch_video(video_url, **kwargs))

    async def fetch_video_async(self, video_url: str, **kwargs: Any) -> Any:
        return _as_vllm(await super().fetch_video_async(video_url, **kwargs))


def register() -> None:
    """Register the ``mediagate`` connector with vLLM (a no-op without vLLM)."""
    try:
        from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY
    except ImportError:
        return
    if MEDIA_CONNECTOR_REGISTRY.name2class.get(NAME) is not VllmMediaConnector:
        MEDIA_CONNECTOR_REGISTRY.register(NAME)(VllmMediaConnector)
        logger.debug("registered the %r media connector with vLLM", NAME)
