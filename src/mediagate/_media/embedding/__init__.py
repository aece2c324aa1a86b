"""Embedding tensors: ``.npy``, safetensors and ``torch.save`` payloads to ``torch.Tensor``.

torch is optional: this package imports without it, and the MediaIO classes raise an
``ImportError`` naming ``mediagate[torch]`` when constructed without it.
"""

from .mediaio import (
    EMBEDDING_OPTIONS,
    AudioEmbeddingMediaIO,
    ImageEmbeddingMediaIO,
    VideoEmbeddingMediaIO,
    sniff_embedding,
)

__all__ = [
    "EMBEDDING_OPTIONS",
    "AudioEmbeddingMediaIO",
    "ImageEmbeddingMediaIO",
    "VideoEmbeddingMediaIO",
    "sniff_embedding",
]
