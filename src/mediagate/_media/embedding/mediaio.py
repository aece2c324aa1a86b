"""ImageEmbeddingMediaIO and AudioEmbeddingMediaIO: tensor payloads to ``torch.Tensor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pybase64

from ..._errors import DecodeError, OptionError
from ..._policy import MediaPolicy
from ..base import MediaIO, OptionSpec, validate_options
from ..budget import DecodedBudget
from .common import check_tensor_bytes, require_torch
from .npy import NPY_MAGIC, load_npy
from .safetensors_file import dump_safetensors, is_safetensors, load_safetensors
from .torch_save import is_torch_save, load_torch_save

if TYPE_CHECKING:
    import torch

__all__ = [
    "EMBEDDING_OPTIONS",
    "AudioEmbeddingMediaIO",
    "ImageEmbeddingMediaIO",
]

_MAX_NAME = 1024


def _opt_tensor_name(modality: str, key: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_NAME:
        raise OptionError(
            f"{modality} option {key!r} must be a non-empty string of at most {_MAX_NAME} "
            f"characters",
            option=key,
        )
    return value


#: The options embedding MediaIOs accept ("media_io_kwargs" for the embedding modalities).
EMBEDDING_OPTIONS: Mapping[str, OptionSpec] = {
    "tensor_name": OptionSpec(
        _opt_tensor_name, "which tensor of a safetensors payload to return (None: the only one)"
    ),
}


def sniff_embedding(data: bytes) -> str:
    """``"npy"``, ``"safetensors"`` or ``"torch"``, from the payload's first bytes.

    Raises:
        DecodeError: none of them.
    """
    if data.startswith(NPY_MAGIC):
        return "npy"
    if is_safetensors(data):
        return "safetensors"
    if is_torch_save(data):
        return "torch"
    raise DecodeError("embedding payload is not .npy, safetensors or torch.save data")


class _EmbeddingMediaIO(MediaIO["torch.Tensor"]):
    """Decodes an untrusted tensor payload to a dense ``torch.Tensor`` on the CPU.

    Payloads are sniffed by their magic bytes: ``.npy`` (never with pickle),
    safetensors (the preferred format; parsed and bounds-checked here) and
    ``torch.save`` files (loaded with ``weights_only=True``). Every tensor is checked
    against ``MediaPolicy.max_tensor_bytes`` before it is allocated or densified.

    Raises:
        ImportError: torch is not installed (install ``mediagate[torch]``).
        OptionError: an unknown option, or a value of the wrong type.
    """

    def __init__(
        self,
        /,
        *,
        policy: MediaPolicy | None = None,
        decoded_budget: DecodedBudget | None = None,
        **options: Any,
    ) -> None:
        require_torch()
        super().__init__(policy=policy, decoded_budget=decoded_budget)
        checked = validate_options(self.modality, options, EMBEDDING_OPTIONS)
        self.tensor_name: str | None = checked.get("tensor_name")

    def load_bytes(self, data: bytes) -> torch.Tensor:
        """Decode one tensor from ``data``.

        Raises:
            TooLargeError: the payload is over ``max_bytes`` or the tensor over
                ``max_tensor_bytes``.
            DecodeError: an unknown or refused format, a malformed payload, something
                other than one real-valued tensor.
        """
        data = bytes(data)
        self.policy.check_size(len(data), self.modality)
        kind = sniff_embedding(data)
        limit = self.policy.max_tensor_bytes
        if kind == "npy":
            return load_npy(data, limit)
        if kind == "safetensors":
            return load_safetensors(data, limit, self.tensor_name)
        return load_torch_save(data, limit)

    def encode_base64(self, media: torch.Tensor) -> str:
        """Base64 of a safetensors file holding ``media`` as its only tensor.

        Sparse tensors are densified (within ``max_tensor_bytes``) before writing.

        Raises:
            TooLargeError: the dense tensor is over ``max_tensor_bytes``.
            ValueError: the dtype has no safetensors name (complex, quantised, ...).
        """
        check_tensor_bytes(
            media.numel(), media.element_size(), self.policy.max_tensor_bytes, what="tensor"
        )
        dense = media if media.layout == _strided() else media.to_dense()
        return pybase64.b64encode(dump_safetensors(dense)).decode("ascii")


def _strided() -> torch.layout:
    import torch

    return torch.strided


class ImageEmbeddingMediaIO(_EmbeddingMediaIO):
    """Image embeddings (``modality = "image_embedding"``); see ``_EmbeddingMediaIO``.

    Example::

        io = ImageEmbeddingMediaIO()
        tensor = io.load_base64("", b64_of_safetensors)
        assert tensor.ndim == 2
    """

    modality = "image_embedding"


class AudioEmbeddingMediaIO(_EmbeddingMediaIO):
    """Audio embeddings (``modality = "audio_embedding"``); see ``_EmbeddingMediaIO``.

    Example::

        io = AudioEmbeddingMediaIO(tensor_name="audio")
        tensor = io.load_bytes(safetensors_bytes)
    """

    modality = "audio_embedding"


class VideoEmbeddingMediaIO(_EmbeddingMediaIO):
    """Video embeddings (``modality = "video_embedding"``); see ``_EmbeddingMediaIO``.

    Example::

        tensor = VideoEmbeddingMediaIO().load_base64("", payload)
    """

    modality = "video_embedding"
