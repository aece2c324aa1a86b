"""VIDEO_LOADER_REGISTRY: video loaders by name."""

from __future__ import annotations

from typing import Any

from ..._registry import Registry

__all__ = ["VIDEO_LOADER_REGISTRY"]

VIDEO_LOADER_REGISTRY: Registry[Any] = Registry("video loader")
