"""Embedding MediaIOs: .npy, safetensors and torch.save payloads to torch.Tensor."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from mediagate import (
    AudioEmbeddingMediaIO,
    DecodeError,
    ImageEmbeddingMediaIO,
    MediaPolicy,
    OptionError,
    TooLargeError,
)

CLASSES = [ImageEmbeddingMediaIO, AudioEmbeddingMediaIO]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def saved(obj: object, *, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture
def embedding() -> torch.Tensor:
    return torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7


@pytest.mark.parametrize("cls", CLASSES)
def test_modalities_and_byte_budgets(cls: type[ImageEmbeddingMediaIO]) -> None:
    io_ = cls(policy=MediaPolicy())
    assert io_.modality in ("image_embedding", "audio_embedding")
    assert io_.max_bytes == MediaPolicy().max_bytes_for(io_.modality)
    assert cls(policy=MediaPolicy(max_bytes=123)).max_bytes == 123


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(12, dtype=np.float16).reshape(2, 6),
        np.arange(5, dtype=np.int64),
        np.array([True, False, True]),
        np.arange(6, dtype=np.uint8).reshape(1, 2, 3),
        np.array(3.5, dtype=np.float64),
        np.zeros((0, 8), dtype=np.float32),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.arange(12, dtype=">f4").reshape(4, 3),
    ],
    ids=["f32", "f16", "i64", "bool", "u8-3d", "scalar", "empty", "fortran", "big-endian"],
)
def test_npy_arrays_load_exactly(array: np.ndarray) -> None:
    tensor = ImageEmbeddingMediaIO().load_bytes(npy(array))
    assert isinstance(tensor, torch.Tensor)
    assert tuple(tensor.shape) == array.shape
    np.testing.assert_array_equal(tensor.numpy(), array)
    assert tensor.numpy().dtype == array.dtype.newbyteorder("=")
    assert tensor.numpy().flags.writeable  # owns its memory, never a view of the payload


@pytest.mark.parametrize(
    "dtype",
    [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.bool],
)
def test_safetensors_written_by_the_library_load(dtype: torch.dtype) -> None:
    tensor = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    data = safetensors.torch.save({"emb": tensor}, metadata={"format": "pt"})
    loaded = AudioEmbeddingMediaIO().load_bytes(data)
    assert loaded.dtype == dtype and torch.equal(loaded, tensor)


def test_safetensors_tensor_name_picks_one_of_several(embedding: torch.Tensor) -> None:
    data = safetensors.torch.save({"a": embedding, "b": embedding * 2})
    loaded = ImageEmbeddingMediaIO(tensor_name="b").load_bytes(data)
    assert torch.equal(loaded, embedding * 2)
    with pytest.raises(DecodeError, match="choose one with tensor_name"):
        ImageEmbeddingMediaIO().load_bytes(data)
    with pytest.raises(DecodeError, match="no tensor with the requested tensor_name"):
        ImageEmbeddingMediaIO(tensor_name="c").load_bytes(data)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_tensors_load(embedding: torch.Tensor, legacy: bool) -> None:
    loaded = ImageEmbeddingMediaIO().load_bytes(saved(embedding, legacy=legacy))
    assert torch.equal(loaded, embedding)


def test_a_saved_parameter_comes_back_as_a_plain_tensor(embedding: torch.Tensor) -> None:
    loaded = ImageEmbeddingMediaIO().load_bytes(saved(torch.nn.Parameter(embedding)))
    assert type(loaded) is torch.Tensor and not loaded.requires_grad
    assert torch.equal(loaded, embedding)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors_are_densified(embedding: torch.Tensor, layout: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "CSR support is in beta"
        sparse = embedding.to_sparse() if layout == "coo" else embedding.to_sparse_csr()
        loaded = ImageEmbeddingMediaIO().load_bytes(saved(sparse))
    assert loaded.layout == torch.strided
    assert torch.equal(loaded, embedding)


@pytest.mark.parametrize("cls", CLASSES)
def test_encode_base64_round_trips_through_safetensors(
    cls: type[ImageEmbeddingMediaIO], embedding: torch.Tensor
) -> None:
    io_ = cls()
    text = io_.encode_base64(embedding)
    assert torch.equal(io_.load_base64("", text), embedding)
    # Readable by the reference implementation too.
    assert torch.equal(safetensors.torch.load(base64.b64decode(text))["embedding"], embedding)


def test_encode_base64_densifies_sparse_and_refuses_complex(embedding: torch.Tensor) -> None:
    io_ = ImageEmbeddingMediaIO()
    assert torch.equal(io_.load_base64("", io_.encode_base64(embedding.to_sparse())), embedding)
    with pytest.raises(ValueError):
        io_.encode_base64(torch.zeros(2, dtype=torch.complex64))


def test_load_file_and_base64(embedding: torch.Tensor, tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    path.write_bytes(safetensors.torch.save({"e": embedding}))
    assert torch.equal(ImageEmbeddingMediaIO().load_file(path), embedding)
    text = base64.b64encode(npy(embedding.numpy())).decode()
    assert torch.equal(
        AudioEmbeddingMediaIO().load_base64("application/octet-stream", text), embedding
    )


def test_base64_over_max_bytes_is_refused_before_decoding() -> None:
    text = "A" * 4000
    with pytest.raises(TooLargeError) as info:
        ImageEmbeddingMediaIO(policy=MediaPolicy(max_bytes=1000)).load_base64("", text)
    assert info.value.limit == "max_bytes"
    with pytest.raises(DecodeError):
        ImageEmbeddingMediaIO().load_base64("", "not*base64")


@pytest.mark.parametrize(
    "options,key",
    [
        ({"tensor": "x"}, "tensor"),
        ({"tensor_name": 3}, "tensor_name"),
        ({"tensor_name": ""}, "tensor_name"),
        ({"formats": ["npy"]}, "formats"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as info:
        ImageEmbeddingMediaIO(**options)
    assert info.value.option == key


@pytest.mark.parametrize("payload", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32])
def test_unknown_payloads_are_decode_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        ImageEmbeddingMediaIO().load_bytes(payload)


def test_without_torch_the_module_imports_and_construction_names_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from mediagate import ImageEmbeddingMediaIO\n"
        "try:\n"
        "    ImageEmbeddingMediaIO()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "mediagate[torch]" in result.stdout
