"""A ``BatchResult`` as a ``pyarrow.Table`` with Arrow's canonical tensor types.

Images fitted to ``image_size`` share one shape and become an ``arrow.fixed_shape_tensor``
column; other images, video frames and tensors become ``arrow.variable_shape_tensor``
(storage ``struct<data: list<T>, shape: fixed_size_list<int32>[ndim]>``); audio is a
``list<float32>`` column. pyarrow builds the variable-shape type only from a schema it
reads, so the type is made once per value type and rank by reading back a one-column
schema that names it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow

    from .results import BatchResult

__all__ = ["VARIABLE_SHAPE_TENSOR", "to_table", "variable_shape_tensor"]

VARIABLE_SHAPE_TENSOR = "arrow.variable_shape_tensor"

#: The outcome columns every batch has, in order.
OUTCOME_COLUMNS = ("error_type", "error", "http_status", "num_bytes", "fetch_s", "decode_s")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError as exc:
        raise ImportError(
            "Arrow output needs pyarrow: pip install 'mediagate[batch]'", name="pyarrow"
        ) from exc
    return pyarrow


@functools.lru_cache(maxsize=64)
def variable_shape_tensor(value_type: pyarrow.DataType, ndim: int) -> pyarrow.DataType:
    """Arrow's canonical variable-shape tensor type of ``value_type`` and rank ``ndim``."""
    pa = _pyarrow()
    storage = pa.struct([("data", pa.list_(value_type)), ("shape", pa.list_(pa.int32(), ndim))])
    meta = {
        b"ARROW:extension:name": VARIABLE_SHAPE_TENSOR.encode(),
        b"ARROW:extension:metadata": b"{}",
    }
    schema = pa.schema([pa.field("t", storage, metadata=meta)])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    read: pyarrow.DataType = pa.ipc.open_stream(sink.getvalue()).schema.field("t").type
    if getattr(read, "extension_name", None) != VARIABLE_SHAPE_TENSOR:  # pragma: no cover
        raise ImportError("this pyarrow lacks arrow.variable_shape_tensor (pyarrow>=14 has it)")
    return read


def _common(arrays: Sequence[np.ndarray[Any, Any] | None]) -> tuple[np.dtype[Any], int]:
    present = [a for a in arrays if a is not None]
    if not present:
        return np.dtype(np.uint8), 0
    dtype = np.result_type(*present) if len({a.dtype for a in present}) > 1 else present[0].dtype
    return dtype, max(a.ndim for a in present)


def variable_tensor_array(
    arrays: Sequence[np.ndarray[Any, Any] | None],
    *,
    dtype: np.dtype[Any] | None = None,
    ndim: int | None = None,
) -> pyarrow.Array:
    """``arrays`` (``None`` for null) as one variable-shape tensor array. Arrays of a
    lower rank get leading dimensions of 1; differing dtypes are promoted."""
    pa = _pyarrow()
    found_dtype, found_ndim = _common(arrays)
    dtype = found_dtype if dtype is None else dtype
    ndim = max(found_ndim, ndim or 0, 1)
    value_type = pa.from_numpy_dtype(dtype)
    flats, shapes, valid = [], [], []
    for array in arrays:
        if array is None:
            shapes.append([0] * ndim)
            valid.append(False)
            continue
        array = np.asarray(array, dtype=dtype)
        shape = (1,) * (ndim - array.ndim) + tuple(array.shape)
        flats.append(np.ascontiguousarray(array).reshape(-1))
        shapes.append(list(shape))
        valid.append(True)
    lengths = [int(np.prod(s)) if ok else 0 for s, ok in zip(shapes, valid, strict=True)]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(flats) if flats else np.empty(0, dtype=dtype)
    data = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))
    shape = pa.FixedSizeListArray.from_arrays(
        pa.array(np.asarray(shapes, dtype=np.int32).reshape(-1), type=pa.int32()), ndim
    )
    mask = pa.array([not ok for ok in valid], type=pa.bool_())
    storage = pa.StructArray.from_arrays([data, shape], names=["data", "shape"], mask=mask)
    return pa.ExtensionArray.from_storage(variable_shape_tensor(value_type, ndim), storage)


def fixed_tensor_array(
    arrays: Sequence[np.ndarray[Any, Any] | None], shape: tuple[int, ...], dtype: np.dtype[Any]
) -> pyarrow.Array:
    """``arrays`` of one ``shape`` (``None`` for null) as a fixed-shape tensor array."""
    pa = _pyarrow()
    size = int(np.prod(shape))
    block = np.zeros((len(arrays), size), dtype=dtype)
    for i, array in enumerate(arrays):
        if array is not None:
            block[i] = np.asarray(array, dtype=dtype).reshape(-1)
    value_type = pa.from_numpy_dtype(dtype)
    mask = pa.array([a is None for a in arrays], type=pa.bool_())
    values = pa.array(block.reshape(-1), type=value_type)
    storage = pa.FixedSizeListArray.from_arrays(values, size, mask=mask)
    tensor_type = pa.fixed_shape_tensor(value_type, list(shape))
    return pa.ExtensionArray.from_storage(tensor_type, storage)


def _image_column(images: list[Any], image_size: tuple[int, int] | None) -> pyarrow.Array:
    present = [a for a in images if a is not None]
    if image_size is not None:
        width, height = image_size
        channels = {a.shape[2] for a in present} or {3}
        if len(channels) == 1 and all(a.shape[:2] == (height, width) for a in present):
            shape = (height, width, channels.pop())
            return fixed_tensor_array(images, shape, np.dtype(np.uint8))
    return variable_tensor_array(images, dtype=np.dtype(np.uint8), ndim=3)


#: The columns that hold tensors.
TENSOR_COLUMNS = frozenset({"image", "video_frames", "tensor"})


def to_table(result: BatchResult, *, tensors: bool = True) -> pyarrow.Table:
    """``result`` as a table: media columns of the modalities present, then the outcome
    columns (see the module docstring for the types). ``tensors=False`` leaves out the
    tensor columns (for a caller that builds them in types of its own)."""
    pa = _pyarrow()
    columns = result.columns()
    arrays: dict[str, Any] = {}
    if "image" in columns and tensors:
        arrays["image"] = _image_column(columns["image"], result.image_size)
    if "video_frames" in columns:
        if tensors:
            arrays["video_frames"] = variable_tensor_array(
                columns["video_frames"], dtype=np.dtype(np.uint8), ndim=4
            )
        arrays["video_metadata"] = pa.array(columns["video_metadata"], type=pa.string())
    if "audio" in columns:
        sounds = [None if s is None else np.asarray(s, np.float32) for s in columns["audio"]]
        arrays["audio"] = pa.array(sounds, type=pa.list_(pa.float32()))
        arrays["sample_rate"] = pa.array(columns["sample_rate"], type=pa.int32())
    if "tensor" in columns and tensors:
        arrays["tensor"] = variable_tensor_array(columns["tensor"])
    types = {
        "error_type": pa.string(),
        "error": pa.string(),
        "http_status": pa.int32(),
        "num_bytes": pa.int64(),
        "fetch_s": pa.float64(),
        "decode_s": pa.float64(),
    }
    for name in OUTCOME_COLUMNS:
        arrays[name] = pa.array(columns[name], type=types[name])
    return pa.table(arrays)


def tensor_from_arrow(value: Any) -> np.ndarray[Any, Any] | None:
    """One cell of a tensor column read back (fixed or variable shape), as an array."""
    if value is None or not value.is_valid:
        return None
    ext = getattr(value.type, "extension_name", None)
    if ext == VARIABLE_SHAPE_TENSOR:
        cell = value.value
        data = np.asarray(cell["data"].values.to_numpy(zero_copy_only=False))
        shape = [int(n) for n in cell["shape"].as_py()]
        return data.reshape(shape)
    if ext == "arrow.fixed_shape_tensor":
        array: np.ndarray[Any, Any] = value.to_numpy_ndarray()
        return array
    raise TypeError(f"not a tensor cell: {value.type}")


def metadata_from_arrow(value: Any) -> dict[str, Any] | None:
    """One ``video_metadata`` cell read back as a dict."""
    text = value.as_py() if hasattr(value, "as_py") else value
    return None if text is None else dict(json.loads(text))
