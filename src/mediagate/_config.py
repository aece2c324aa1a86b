"""The only place that reads the environment.

Every ``MEDIAGATE_*`` variable is read here, once, for a ``from_env`` constructor; fetch
and decode code never looks at ``os.environ``. Reading builds settings (plain values),
never objects, so this module imports nothing else of the package.

| variable | meaning |
|---|---|
| ``MEDIAGATE_ALLOW_PRIVATE_NETWORKS`` | ``1``/``true`` to allow non-public addresses |
| ``MEDIAGATE_ALLOWED_NETWORKS`` | comma-separated CIDRs reachable although private |
| ``MEDIAGATE_MAX_REDIRECTS`` | redirect hops (``0`` disables redirects) |
| ``MEDIAGATE_MAX_BYTES`` | bytes per item, every modality |
| ``MEDIAGATE_TIMEOUT`` | total seconds per fetch, every modality |
| ``MEDIAGATE_MAX_PIXELS``, ``..._MAX_VIDEO_FRAMES`` | limits |
| ``MEDIAGATE_MAX_AUDIO_SECONDS``, ``..._MAX_TENSOR_BYTES`` | limits |
| ``MEDIAGATE_PROXY`` | an http(s) proxy URL (proxy variables of other tools are ignored) |
| ``MEDIAGATE_TRUST_PROXY_DNS`` | ``1`` to let the proxy resolve names unjudged |
| ``MEDIAGATE_MAX_DECODED_BYTES`` | decoded-output bytes per item, every modality |
| ``MEDIAGATE_DECODE_TIMEOUT`` | seconds to decode one item, every modality |
| ``MEDIAGATE_ISOLATION`` | ``1``/``0``, or comma-separated modalities decoded in worker processes |
| ``MEDIAGATE_ALLOWED_LOCAL_MEDIA_PATH`` | the folder ``file:`` URLs may read |
| ``MEDIAGATE_ALLOWED_MEDIA_DOMAINS`` | comma-separated host allowlist |
| ``MEDIAGATE_VIDEO_BACKEND`` | default video loader (``pyav``, ``opencv``, ...) |
| ``MEDIAGATE_DECODE_WORKERS`` | size of the decode worker pool |
| ``MEDIAGATE_MAX_IN_FLIGHT`` | downloads in progress at once (default 64) |
| ``MEDIAGATE_MAX_CONNECTIONS``, ``..._MAX_URL_LENGTH`` | connection pool size, longest URL |
| ``MEDIAGATE_MAX_STREAM_PACKETS`` | packets one video stream may hold (default 3,000,000) |
| ``MEDIAGATE_RANGE_READS_ABOVE`` | bytes from which remote video is read by ranges (``off``) |
| ``MEDIAGATE_MAX_RANGE_REQUESTS``, ``..._MAX_RANGE_REQUEST_BYTES`` | range request caps |
| ``MEDIAGATE_MEDIA_CACHE`` | download cache folder (unset: no cache) |
| ``MEDIAGATE_MEDIA_CACHE_MAX_SIZE_MB`` / ``MEDIAGATE_MEDIA_CACHE_TTL_HOURS`` | cache budget |
| ``MEDIAGATE_ALLOWED_BUCKETS`` | comma-separated ``s3://bucket`` / ``gs://bucket`` allowlist |
| ``MEDIAGATE_S3_ENDPOINT_URL``, ``..._S3_KEY``, ``..._S3_SECRET``, ``..._S3_REGION`` | S3 |
| ``MEDIAGATE_GCS_TOKEN``, ``MEDIAGATE_GCS_PROJECT`` | Google Cloud Storage settings |
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "cache_kwargs_from_env",
    "connector_kwargs_from_env",
    "policy_fields_from_env",
    "vllm_settings_from_env",
]

PREFIX = "MEDIAGATE_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false (1/0, yes/no, on/off)")


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
    def parse(name: str, value: str) -> Any:
        try:
            return kind(value.strip())
        except ValueError as exc:
            raise ValueError(f"{name} must be a {kind.__name__} (got {value!r})") from exc

    return parse


def _csv(name: str, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _size_or_off(name: str, value: str) -> int | None:
    """A byte count, or ``None`` for ``off``/``none``/``0``... (disabled)."""
    if value.strip().lower() in (_FALSE | {"none"}) - {"0"}:
        return None
    parsed: int = _number(int)(name, value)
    return parsed


def _isolation(name: str, value: str) -> bool | tuple[str, ...]:
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return _bool(name, value)
    return _csv(name, value)


_POLICY_FIELDS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "ALLOW_PRIVATE_NETWORKS": ("allow_private_networks", _bool),
    "ALLOWED_NETWORKS": ("allowed_networks", _csv),
    "MAX_REDIRECTS": ("max_redirects", _number(int)),
    "MAX_BYTES": ("max_bytes", _number(int)),
    "TIMEOUT": ("timeout", _number(float)),
    "MAX_PIXELS": ("max_pixels", _number(int)),
    "MAX_VIDEO_FRAMES": ("max_video_frames", _number(int)),
    "MAX_AUDIO_SECONDS": ("max_audio_seconds", _number(float)),
    "MAX_TENSOR_BYTES": ("max_tensor_bytes", _number(int)),
    "PROXY": ("proxy", lambda name, value: value.strip() or None),
    "TRUST_PROXY_DNS": ("trust_proxy_dns", _bool),
    "MAX_DECODED_BYTES": ("max_decoded_bytes", _number(int)),
    "DECODE_TIMEOUT": ("decode_timeout", _number(float)),
    "ISOLATION": ("isolation", lambda name, value: _isolation(name, value)),
    "ALLOWED_BUCKETS": ("allowed_buckets", _csv),
    "MAX_URL_LENGTH": ("max_url_length", _number(int)),
    "MAX_CONNECTIONS": ("max_connections", _number(int)),
    "MAX_IN_FLIGHT": ("max_in_flight", _number(int)),
    "MAX_STREAM_PACKETS": ("max_stream_packets", _number(int)),
    "RANGE_READS_ABOVE": ("range_reads_above", lambda name, value: _size_or_off(name, value)),
    "MAX_RANGE_REQUESTS": ("max_range_requests", _number(int)),
    "MAX_RANGE_REQUEST_BYTES": ("max_range_request_bytes", _number(int)),
}

#: ``storage_options`` entries by scheme: variable suffix -> option name.
_STORAGE_FIELDS: dict[str, dict[str, str]] = {
    "s3": {"S3_ENDPOINT_URL": "endpoint_url", "S3_KEY": "key", "S3_SECRET": "secret"},
    "gs": {"GCS_TOKEN": "token", "GCS_PROJECT": "project"},
}


def _storage_options(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for scheme, names in _STORAGE_FIELDS.items():
        settings: dict[str, Any] = {
            option: env[PREFIX + suffix].strip()
            for suffix, option in names.items()
            if env.get(PREFIX + suffix, "").strip()
        }
        if scheme == "s3" and env.get(PREFIX + "S3_REGION", "").strip():
            settings["client_kwargs"] = {"region_name": env[PREFIX + "S3_REGION"].strip()}
        if settings:
            options[scheme] = settings
    return options


def policy_fields_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``MediaPolicy`` fields the ``MEDIAGATE_*`` variables set (the rest keep defaults).

    Raises:
        ValueError: a variable's value is malformed (the message names the variable).
    """
    env = _environ(environ)
    fields: dict[str, Any] = {}
    for suffix, (field, parse) in _POLICY_FIELDS.items():
        name = PREFIX + suffix
        if name in env:
            fields[field] = parse(name, env[name])
    storage = _storage_options(env)
    if storage:
        fields["storage_options"] = storage
    return fields


def cache_kwargs_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``MediaCache`` arguments from ``MEDIAGATE_MEDIA_CACHE*``, or ``None`` when unset."""
    env = _environ(environ)
    directory = env.get(PREFIX + "MEDIA_CACHE", "").strip()
    if not directory:
        return None
    kwargs: dict[str, Any] = {"directory": directory}
    size = env.get(PREFIX + "MEDIA_CACHE_MAX_SIZE_MB")
    if size is not None:
        kwargs["max_bytes"] = int(_number(float)(PREFIX + "MEDIA_CACHE_MAX_SIZE_MB", size) * 2**20)
    ttl = env.get(PREFIX + "MEDIA_CACHE_TTL_HOURS")
    if ttl is not None:
        kwargs["ttl"] = _number(float)(PREFIX + "MEDIA_CACHE_TTL_HOURS", ttl) * 3600.0
    return kwargs


def connector_kwargs_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``MediaConnector`` keyword arguments from the ``MEDIAGATE_*`` variables, but for
    ``policy`` and ``cache`` (see ``policy_fields_from_env`` and ``cache_kwargs_from_env``):
    settings only, so reading the environment builds nothing."""
    env = _environ(environ)
    kwargs: dict[str, Any] = {}
    local = env.get(PREFIX + "ALLOWED_LOCAL_MEDIA_PATH", "").strip()
    if local:
        kwargs["allowed_local_media_path"] = local
    domains = env.get(PREFIX + "ALLOWED_MEDIA_DOMAINS")
    if domains is not None:
        kwargs["allowed_media_domains"] = list(_csv(PREFIX + "ALLOWED_MEDIA_DOMAINS", domains))
    backend = env.get(PREFIX + "VIDEO_BACKEND", "").strip()
    if backend:
        kwargs["media_io_kwargs"] = {"video": {"video_backend": backend}}
    workers = env.get(PREFIX + "DECODE_WORKERS")
    if workers is not None:
        kwargs["max_workers"] = _number(int)(PREFIX + "DECODE_WORKERS", workers)
    return kwargs


#: vLLM's own media flags the vLLM plugin honours (only when set, and only to tighten).
VLLM_FETCH_TIMEOUTS = {
    "image": "VLLM_IMAGE_FETCH_TIMEOUT",
    "video": "VLLM_VIDEO_FETCH_TIMEOUT",
    "audio": "VLLM_AUDIO_FETCH_TIMEOUT",
}


def vllm_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The vLLM media flags that are set, as settings for the vLLM plugin.

    Keys present only when their variable is: ``max_redirects`` (0 when
    ``VLLM_MEDIA_URL_ALLOW_REDIRECTS=0``), ``max_pixels`` (``VLLM_MAX_IMAGE_PIXELS`` > 0),
    ``fetch_timeouts`` (seconds by modality, ``VLLM_*_FETCH_TIMEOUT``), ``video_backend``
    (``VLLM_VIDEO_LOADER_BACKEND``) and ``cache`` (``MediaCache`` arguments from
    ``VLLM_MEDIA_CACHE*``).
    """
    env = _environ(environ)
    settings: dict[str, Any] = {}
    redirects = env.get("VLLM_MEDIA_URL_ALLOW_REDIRECTS")
    if redirects is not None and not _bool("VLLM_MEDIA_URL_ALLOW_REDIRECTS", redirects):
        settings["max_redirects"] = 0
    pixels = env.get("VLLM_MAX_IMAGE_PIXELS")
    if pixels is not None and _number(int)("VLLM_MAX_IMAGE_PIXELS", pixels) > 0:
        settings["max_pixels"] = _number(int)("VLLM_MAX_IMAGE_PIXELS", pixels)
    timeouts = {}
    for modality, name in VLLM_FETCH_TIMEOUTS.items():
        value = env.get(name)
        if value is None:
            continue
        seconds = _number(float)(name, value)
        if not 0 < seconds < float("inf"):
            raise ValueError(f"{name} must be a finite number of seconds > 0 (got {value!r})")
        timeouts[modality] = seconds
    if timeouts:
        settings["fetch_timeouts"] = timeouts
    backend = env.get("VLLM_VIDEO_LOADER_BACKEND", "").strip()
    if backend:
        settings["video_backend"] = backend
    directory = env.get("VLLM_MEDIA_CACHE", "").strip()
    if directory:
        cache: dict[str, Any] = {"directory": directory}
        size = env.get("VLLM_MEDIA_CACHE_MAX_SIZE_MB")
        if size is not None:
            cache["max_bytes"] = int(_number(float)("VLLM_MEDIA_CACHE_MAX_SIZE_MB", size) * 2**20)
        ttl = env.get("VLLM_MEDIA_CACHE_TTL_HOURS")
        if ttl is not None:
            cache["ttl"] = _number(float)("VLLM_MEDIA_CACHE_TTL_HOURS", ttl) * 3600.0
        settings["cache"] = cache
    return settings
