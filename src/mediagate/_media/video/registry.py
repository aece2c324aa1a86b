"""VIDEO_LOADER_REGISTRY: video loaders by name.

A loader is any class offering ``load_bytes(data, num_frames=-1, **options) ->
(frames, metadata)``; ``VideoMediaIO`` builds it with no arguments but those its
``constructor_options`` name. Optional class attributes: ``options`` (a mapping of
option name to ``OptionSpec``, checked before loading), ``wants_policy`` (receive the
``MediaPolicy`` as ``policy=``) and ``constructor_options`` (names of ``options`` given
to the constructor instead of ``load_bytes``).

Example::

    @VIDEO_LOADER_REGISTRY.register("my_gpu")
    class MyGpuLoader:
        def load_bytes(self, data, num_frames=-1, **options): ...
"""

from __future__ import annotations

from typing import Any

from ..._registry import Registry

__all__ = ["VIDEO_LOADER_REGISTRY", "VIDEO_PROCESSOR_BACKENDS", "backend_for_video_processor"]

VIDEO_LOADER_REGISTRY: Registry[Any] = Registry("video loader")

#: The backend whose sampling a model's video processor (its class name, as vLLM passes
#: it to ``fetch_video(video_processor=...)``) expects its frames from: vLLM 0.33's
#: table, for the samplers mediagate has (``samplers``). vLLM's other processors
#: (``EmbeddingGemma2VideoProcessor``, ``Glm46VVideoProcessor``,
#: ``Glm5NextVideoProcessor``, ``GlmgaVideoProcessor``, ``Molmo2VideoProcessor``) have no
#: sampler here and get the default backend.
VIDEO_PROCESSOR_BACKENDS: dict[str, str] = {
    "Qwen3VLVideoProcessor": "qwen3_vl",
    "Cosmos3EdgeVideoProcessor": "qwen3_vl",
    "Qwen2VLVideoProcessor": "qwen2_vl",
    "Glm4vVideoProcessor": "opencv_dynamic",
}


def backend_for_video_processor(video_processor: str | None) -> str | None:
    """The video backend for ``video_processor``: the one ``VIDEO_PROCESSOR_BACKENDS``
    names, or a backend registered under that very name; ``None`` when there is none
    (the default backend samples the frames)."""
    if not isinstance(video_processor, str) or not video_processor:
        return None
    backend = VIDEO_PROCESSOR_BACKENDS.get(video_processor, video_processor)
    return backend if backend in VIDEO_LOADER_REGISTRY else None


VIDEO_LOADER_REGISTRY.register_lazy("pyav", "mediagate._media.video.pyav:PyAVVideoLoader")
VIDEO_LOADER_REGISTRY.register_lazy(
    "opencv", "mediagate._media.video.opencv:OpenCVVideoLoader", extra="opencv"
)
VIDEO_LOADER_REGISTRY.register_lazy("qwen3_vl", "mediagate._media.video.samplers:Qwen3VLSampler")
VIDEO_LOADER_REGISTRY.register_lazy("qwen2_vl", "mediagate._media.video.samplers:Qwen2VLSampler")
VIDEO_LOADER_REGISTRY.register_lazy(
    "opencv_dynamic", "mediagate._media.video.samplers:DynamicSampler"
)
