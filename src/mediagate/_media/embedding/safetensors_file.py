"""safetensors payloads, parsed here: the header and every offset are checked first.

Layout: an 8-byte little-endian header length, a JSON header mapping tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus optional ``__metadata__``),
then the byte buffer, which the tensors must cover exactly, in order, without overlap.
Only the chosen tensor's bytes are ever copied.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._errors import DecodeError, TooLargeError
from .common import MAX_NDIM, check_shape, check_tensor_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_HEADER_BYTES", "dump_safetensors", "is_safetensors", "load_safetensors"]

#: The largest JSON header accepted (a single embedding needs about a hundred bytes).
MAX_HEADER_BYTES = 1 << 20

# safetensors dtype name -> (torch dtype attribute name, element size)
_DTYPES: Mapping[str, tuple[str, int]] = {
    "BOOL": ("bool", 1),
    "U8": ("uint8", 1),
    "I8": ("int8", 1),
    "I16": ("int16", 2),
    "U16": ("uint16", 2),
    "I32": ("int32", 4),
    "U32": ("uint32", 4),
    "I64": ("int64", 8),
    "U64": ("uint64", 8),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F32": ("float32", 4),
    "F64": ("float64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def is_safetensors(data: bytes) -> bool:
    """Whether ``data`` starts like a safetensors file (length word, then ``{``)."""
    return len(data) >= 10 and data[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DecodeError("safetensors header repeats a key")
    return out


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(name: str, spec: Any) -> _Entry:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise DecodeError("safetensors header entry is malformed")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise DecodeError(
            "safetensors tensor has an unsupported dtype (complex and exotic types are refused)"
        )
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(map(_is_count, shape)):
        raise DecodeError("safetensors tensor has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise DecodeError("safetensors tensor has invalid data_offsets")
    return _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _parse_header(data: bytes) -> tuple[list[_Entry], int]:
    (length,) = struct.unpack_from("<Q", data)
    if length > MAX_HEADER_BYTES:
        raise TooLargeError(
            f"safetensors header declares {length} bytes, over {MAX_HEADER_BYTES}",
            limit="safetensors_header",
            value=length,
            maximum=MAX_HEADER_BYTES,
        )
    if length > len(data) - 8:
        raise DecodeError("safetensors header is longer than the payload")
    try:
        header = json.loads(data[8 : 8 + length], object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("safetensors header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise DecodeError("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DecodeError("safetensors __metadata__ must map strings to strings")
    entries = sorted((_entry(k, v) for k, v in header.items()), key=lambda e: (e.begin, e.end))
    return entries, 8 + length


def _check_layout(entries: list[_Entry], buffer_len: int, max_tensor_bytes: int) -> None:
    position = 0
    for entry in entries:
        size = _DTYPES[entry.dtype][1]
        numel = check_shape(entry.shape, size, max_tensor_bytes, what="safetensors tensor")
        check_tensor_bytes(numel, size, max_tensor_bytes, what="safetensors tensor")
        if entry.begin != position or entry.end < entry.begin:
            raise DecodeError("safetensors tensors overlap or leave a gap in the buffer")
        if entry.end - entry.begin != numel * size:
            raise DecodeError("safetensors tensor's data_offsets do not match its shape")
        position = entry.end
    if position != buffer_len:
        raise DecodeError("safetensors data_offsets do not cover the byte buffer exactly")


def load_safetensors(
    data: bytes, max_tensor_bytes: int, tensor_name: str | None = None
) -> torch.Tensor:
    """One tensor from safetensors bytes.

    Args:
        data: the payload.
        max_tensor_bytes: the budget for any one tensor.
        tensor_name: which tensor to return; needed when the file holds several.

    Raises:
        DecodeError: a malformed header, bad offsets, an unsupported dtype, no such
            tensor, or several tensors and no ``tensor_name``.
        TooLargeError: the header or a tensor is over its budget (a tensor holding no
            element is judged by the extent of its dimensions).
    """
    import torch

    entries, start = _parse_header(data)
    _check_layout(entries, len(data) - start, max_tensor_bytes)
    if tensor_name is not None:
        chosen = [e for e in entries if e.name == tensor_name]
        if not chosen:
            raise DecodeError("safetensors payload has no tensor with the requested tensor_name")
    elif len(entries) != 1:
        raise DecodeError(
            f"safetensors payload holds {len(entries)} tensors; choose one with tensor_name"
        )
    else:
        chosen = entries
    entry = chosen[0]
    dtype = getattr(torch, _DTYPES[entry.dtype][0])
    if entry.end == entry.begin:
        return torch.empty(entry.shape, dtype=dtype)
    raw = bytearray(data[start + entry.begin : start + entry.end])
    # safetensors is little-endian, as is every platform torch supports.
    return torch.frombuffer(raw, dtype=dtype).reshape(entry.shape)


def dump_safetensors(tensor: torch.Tensor, name: str = "embedding") -> bytes:
    """safetensors bytes holding ``tensor`` (dense, on the CPU) under ``name``.

    Raises:
        ValueError: the tensor's dtype has no safetensors name.
    """
    import torch

    names = {getattr(torch, attr): key for key, (attr, _) in _DTYPES.items()}
    if tensor.dtype not in names:
        raise ValueError(f"dtype {tensor.dtype} cannot be written to safetensors")
    dense = tensor.detach().cpu().contiguous()
    payload = dense.reshape(-1).view(torch.uint8).numpy().tobytes() if dense.numel() else b""
    header = {
        name: {
            "dtype": names[tensor.dtype],
            "shape": list(dense.shape),
            "data_offsets": [0, len(payload)],
        }
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload
