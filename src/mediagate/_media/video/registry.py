"""VIDEO_LOADER_REGISTRY: video loaders by name.

A loader is any class offering ``load_bytes(data, num_frames=-1, **options) ->
(frames, metadata)``; ``VideoMediaIO`` builds it with no arguments. Optional class
attributes: ``options`` (a mapping of option name to ``OptionSpec``, checked before
loading) and ``wants_policy`` (receive the ``MediaPolicy`` as ``policy=``).

Example::

    @VIDEO_LOADER_REGISTRY.register("my_gpu")
    class MyGpuLoader:
        def load_bytes(self, data, num_frames=-1, **options): ...
"""

from __future__ import annotations

from typing import Any

from ..._registry import Registry

__all__ = ["VIDEO_LOADER_REGISTRY"]

VIDEO_LOADER_REGISTRY: Registry[Any] = Registry("video loader")

VIDEO_LOADER_REGISTRY.register_lazy("pyav", "mediagate._media.video.pyav:PyAVVideoLoader")
VIDEO_LOADER_REGISTRY.register_lazy(
    "opencv", "mediagate._media.video.opencv:OpenCVVideoLoader", extra="opencv"
)
