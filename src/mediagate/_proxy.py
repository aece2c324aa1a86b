"""``mediagate proxy``: safe media URLs for servers that accept only inline base64.

An OpenAI-compatible reverse proxy. Each ``POST /v1/chat/completions`` and
``POST /v1/responses`` is resolved by ``resolve_chat_request_async`` under the policy
and the request limits: images are re-encoded (fitted to ``max_image_pixels`` and
``max_image_bytes``) and inlined as ``data:`` URLs, audio is inlined as WAV, a video is
inlined as it came or turned into sampled frames (``video_as_frames``), embeddings are
checked and passed on. The rewritten request goes to the upstream, whose answer streams
back unchanged (SSE included). A refused part answers an OpenAI error body with its
status and nothing is forwarded. With ``metrics`` on, ``GET /metrics`` is answered here
with the Prometheus exposition (``enable_metrics``). Any other path is forwarded as it is.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pybase64
import simplejpeg
import soundfile
from aiohttp import web
from PIL import Image

from ._connector import MediaConnector
from ._errors import MediaError, PolicyError, TooLargeError
from ._fetch._forward import Upstream
from ._requests import (
    FileLookup,
    RequestLimits,
    ResolvedItem,
    ResolvedRequest,
    openai_error_body,
    resolve_chat_request_async,
)

__all__ = ["ProxyConfig", "ProxyServer", "build_app", "folder_lookup", "serve"]

logger = logging.getLogger("mediagate.proxy")

#: The endpoints whose media are resolved, and the key of their list of messages.
MEDIA_ENDPOINTS = {"/v1/chat/completions": "messages", "/v1/responses": "input"}

IMAGE_FORMATS = ("jpeg", "png", "webp")


@dataclass(frozen=True)
class ProxyConfig:
    """How the proxy rewrites requests.

    Attributes:
        upstream: the base URL of the server behind the proxy (``http://127.0.0.1:8080``).
        limits: the request limits every request is held to.
        image_format: the format images are re-encoded to (jpeg, png or webp).
        image_quality: the starting quality of lossy formats.
        max_image_pixels: images larger than this are scaled down to fit (``None``: any).
        max_image_bytes: an encoded image larger than this is encoded again at a lower
            quality, then smaller, until it fits (refused past eight tries).
        video_as_frames: turn each video into this many sampled frames sent as images
            (for image-only models); ``None`` inlines the video.
        max_request_bytes: the largest request body accepted.
        upstream_timeout: seconds the upstream may take to start answering and between
            chunks.
        file_lookup: turns a ``file_id`` into a reference or bytes (see
            ``resolve_chat_request``); ``None`` refuses ``file_id`` parts.
        metrics: serve ``GET /metrics`` (Prometheus text) on the proxy's own port
            instead of forwarding it; needs ``mediagate[metrics]``.
        metrics_registry: the ``prometheus_client`` registry to feed and serve
            (``None``: the default registry).
    """

    upstream: str
    limits: RequestLimits = field(default_factory=RequestLimits)
    image_format: str = "jpeg"
    image_quality: int = 90
    max_image_pixels: int | None = None
    max_image_bytes: int | None = 20 * 1024 * 1024
    video_as_frames: int | None = None
    max_request_bytes: int = 64 * 1024 * 1024
    upstream_timeout: float = 600.0
    file_lookup: FileLookup | None = None
    metrics: bool = False
    metrics_registry: Any = None

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}")
        for name in ("max_image_pixels", "max_image_bytes", "video_as_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive whole number")
        if not 1 <= self.image_quality <= 100:
            raise ValueError("image_quality must be between 1 and 100")
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError("the upstream must be an http:// or https:// URL")


_FILE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def folder_lookup(folder: str | os.PathLike[str]) -> FileLookup:
    """A ``file_lookup`` that finds a ``file_id`` as a file of that name in ``folder``
    (a ``file:`` URL, read under the connector's allowed local folder); ids with a path
    separator or a leading dot are unknown."""
    root = Path(folder).resolve()

    def lookup(file_id: str) -> str | None:
        if not _FILE_ID.fullmatch(file_id):
            return None
        path = root / file_id
        return path.as_uri() if path.is_file() else None

    return lookup


# -- re-encoding ------------------------------------------------------------------------


def _encode(array: np.ndarray[Any, Any], fmt: str, quality: int) -> bytes:
    if fmt == "jpeg":
        if array.ndim == 2:
            gray = np.ascontiguousarray(array[:, :, None])
            data: bytes = simplejpeg.encode_jpeg(gray, quality=quality, colorspace="GRAY")
            return data
        # 4:2:0 chroma, as photo encoders write by default: a third smaller and faster.
        data = simplejpeg.encode_jpeg(
            np.ascontiguousarray(array[:, :, :3]),
            quality=quality,
            colorspace="RGB",
            colorsubsampling="420",
        )
        return data
    out = io.BytesIO()
    params = {"quality": quality} if fmt == "webp" else {"compress_level": 1}
    Image.fromarray(array).save(out, format=fmt.upper(), **params)
    return out.getvalue()


def _scaled(array: np.ndarray[Any, Any], factor: float) -> np.ndarray[Any, Any]:
    height, width = array.shape[:2]
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    resized = Image.fromarray(array).resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(resized)


def encode_image(media: Any, config: ProxyConfig) -> tuple[bytes, str]:
    """An image as bytes within the upstream's limits, and its media type.

    Raises:
        TooLargeError: it does not fit ``max_image_bytes`` after eight tries.
    """
    array = np.asarray(media)
    if array.dtype != np.uint8:
        array = np.asarray(Image.fromarray(array).convert("RGB"))
    if array.ndim == 3 and array.shape[2] == 4 and config.image_format == "jpeg":
        array = array[:, :, :3]
    pixels = array.shape[0] * array.shape[1]
    if config.max_image_pixels is not None and pixels > config.max_image_pixels:
        array = _scaled(array, math.sqrt(config.max_image_pixels / pixels))
    quality = config.image_quality
    for _ in range(8):
        data = _encode(array, config.image_format, quality)
        if config.max_image_bytes is None or len(data) <= config.max_image_bytes:
            return data, f"image/{config.image_format}"
        if config.image_format != "png" and quality > 60:
            quality = max(60, quality - 15)
        else:
            array = _scaled(array, 0.75)
    raise TooLargeError(
        f"the image does not fit the upstream's max_image_bytes={config.max_image_bytes}",
        limit="max_image_bytes",
        maximum=config.max_image_bytes,
    )


def _wav(audio: Any) -> str:
    samples, rate = audio
    out = io.BytesIO()
    soundfile.write(out, np.asarray(samples), round(rate), format="WAV", subtype="PCM_16")
    return pybase64.b64encode(out.getvalue()).decode("ascii")


def _video_type(data: bytes) -> str:
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    return "application/octet-stream"


def _data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{pybase64.b64encode(data).decode('ascii')}"


# -- rewriting --------------------------------------------------------------------------


def _detail(part: Mapping[str, Any]) -> Any:
    image_url = part.get("image_url")
    if isinstance(image_url, Mapping):
        return image_url.get("detail")
    return part.get("detail")


def _image_part(url: str, detail: Any, responses: bool) -> dict[str, Any]:
    if responses:
        return {"type": "input_image", "image_url": url, "detail": detail or "auto"}
    image_url: dict[str, Any] = {"url": url}
    if detail is not None:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def _rewritten(
    item: ResolvedItem, original: Mapping[str, Any], config: ProxyConfig, responses: bool
) -> list[Any]:
    """The parts that stand for one resolved part in the forwarded request."""
    modality = item.modality
    if item.media is None or modality.endswith("_embedding"):
        # A uuid the client named is not forwarded: the upstream must not match media by
        # a name one client chose.
        return [{key: value for key, value in original.items() if key != "uuid"}]
    if modality == "image":
        data, media_type = encode_image(item.media, config)
        return [_image_part(_data_url(media_type, data), _detail(original), responses)]
    if modality == "audio":
        return [{"type": "input_audio", "input_audio": {"data": _wav(item.media), "format": "wav"}}]
    frames, _metadata = item.media
    if config.video_as_frames is not None:
        parts = []
        for frame in np.asarray(frames):
            data, media_type = encode_image(frame, config)
            parts.append(_image_part(_data_url(media_type, data), None, responses))
        return parts
    original_bytes = item.media.original_bytes
    url = _data_url(_video_type(original_bytes), original_bytes)
    return [{"type": "video_url", "video_url": {"url": url}}]


def rewrite_request(
    body: dict[str, Any], resolved: ResolvedRequest, config: ProxyConfig, root: str
) -> dict[str, Any]:
    """``body`` with every media part replaced by its inline form, order kept."""
    responses = root == "input"
    messages = list(body[root])
    by_message: dict[int, list[ResolvedItem]] = {}
    for item in resolved.items:
        by_message.setdefault(item.part.message, []).append(item)
    for index, items in by_message.items():
        message = dict(messages[index])
        content = list(message["content"])
        for item in sorted(items, key=lambda it: it.part.content, reverse=True):
            position = item.part.content
            content[position : position + 1] = _rewritten(
                item, content[position], config, responses
            )
        message["content"] = content
        messages[index] = message
    return {**body, root: messages}


# -- the server -------------------------------------------------------------------------


def _error(error: BaseException) -> web.Response:
    status = error.http_status if isinstance(error, MediaError) else 500
    return web.json_response(openai_error_body(error), status=status)


class _Proxy:
    def __init__(self, config: ProxyConfig, connector: MediaConnector) -> None:
        self.config = config
        self.connector = connector
        self.upstream = Upstream(config.upstream, timeout=config.upstream_timeout)
        options: dict[str, dict[str, Any]] = {}
        if config.video_as_frames is not None:
            options["video"] = {"num_frames": config.video_as_frames}
        self.media_io_kwargs = options

    async def media(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        root = MEDIA_ENDPOINTS[request.path]
        try:
            raw = await request.read()
            body = json.loads(raw)
        except web.HTTPRequestEntityTooLarge:
            return _error(
                TooLargeError(
                    f"the request body is over {self.config.max_request_bytes} bytes",
                    limit="max_request_bytes",
                    maximum=self.config.max_request_bytes,
                )
            )
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes.
            return _error(PolicyError("the request body is not valid JSON", http_status=400))
        if not isinstance(body, dict) or root not in body:
            return await self.forward(request, raw, start)
        try:
            resolved = await resolve_chat_request_async(
                body,
                self.connector,
                limits=self.config.limits,
                media_io_kwargs=self.media_io_kwargs,
                file_lookup=self.config.file_lookup,
                api="responses" if root == "input" else "chat",
            )
            if resolved.items:
                rewritten = await asyncio.get_running_loop().run_in_executor(
                    None, rewrite_request, body, resolved, self.config, root
                )
                raw = json.dumps(rewritten, separators=(",", ":")).encode()
        except MediaError as exc:
            logger.warning(
                "%s refused: %s %s (%d)",
                request.path,
                type(exc).__name__,
                exc.message,
                exc.http_status,
            )
            return _error(exc)
        resolved_s = time.perf_counter() - start
        counts: dict[str, int] = {}
        for item in resolved.items:
            counts[item.modality] = counts.get(item.modality, 0) + 1
        return await self.forward(request, raw, start, resolved, counts, resolved_s)

    async def forward(
        self,
        request: web.Request,
        body: bytes,
        start: float,
        resolved: ResolvedRequest | None = None,
        counts: Mapping[str, int] | None = None,
        resolved_s: float = 0.0,
    ) -> web.StreamResponse:
        try:
            reply = await self.upstream.send(request.method, request.path_qs, request.headers, body)
        except MediaError as exc:
            return _error(exc)
        sent = 0
        try:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            await response.prepare(request)
            async for chunk in reply.chunks():
                sent += len(chunk)
                await response.write(chunk)
            await response.write_eof()
        finally:
            reply.release()
        shown = ", ".join(f"{count} {name}" for name, count in sorted((counts or {}).items()))
        logger.info(
            "%s %s -> %d: media [%s] %d bytes downloaded, %d bytes forwarded, %d bytes back, "
            "resolve %.1f ms, total %.1f ms",
            request.method,
            request.path,
            reply.status,
            shown or "none",
            resolved.downloaded_bytes if resolved is not None else 0,
            len(body),
            sent,
            resolved_s * 1e3,
            (time.perf_counter() - start) * 1e3,
        )
        return response

    async def other(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return await self.forward(request, body, time.perf_counter())

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        from ._metrics import METRICS_CONTENT_TYPE, metrics_text

        text = metrics_text(self.config.metrics_registry)
        return web.Response(
            body=text.encode("utf-8"), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def close(self, app: web.Application) -> None:
        await self.upstream.close()


def build_app(config: ProxyConfig, connector: MediaConnector) -> web.Application:
    """The proxy as an aiohttp application (serve it with ``aiohttp.web.run_app`` or
    ``ProxyServer``).

    Raises:
        ImportError: ``config.metrics`` without ``mediagate[metrics]`` installed.
    """
    proxy = _Proxy(config, connector)
    app = web.Application(client_max_size=config.max_request_bytes)
    if config.metrics:
        from ._metrics import enable_metrics

        enable_metrics(config.metrics_registry)
        app.router.add_get("/metrics", proxy.metrics)
    for path in MEDIA_ENDPOINTS:
        app.router.add_post(path, proxy.media)
    app.router.add_route("*", "/{tail:.*}", proxy.other)
    app.on_cleanup.append(proxy.close)
    return app


class ProxyServer:
    """The proxy serving on ``host:port`` from a thread of its own (``port=0``: any free
    port, then ``self.port``); a context manager.

    Example::

        with ProxyServer(ProxyConfig("http://127.0.0.1:8080"), MediaConnector()) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="-")
    """

    def __init__(
        self,
        config: ProxyConfig,
        connector: MediaConnector,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config
        self.connector = connector
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mediagate-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.config, self.connector), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    def start(self) -> ProxyServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: ProxyConfig, connector: MediaConnector, host: str, port: int) -> None:
    """Serve the proxy in the foreground until interrupted."""
    web.run_app(
        build_app(config, connector),
        host=host,
        port=port,
        access_log=None,
        print=lambda message: logger.info("%s", message),
    )
