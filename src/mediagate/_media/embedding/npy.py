"""``.npy`` payloads: the header is parsed and checked before any array is made.

No pickle is ever involved: object and structured dtypes are refused from the header,
and the declared size must match the bytes that follow it exactly.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.lib.format as npformat

from ..._errors import DecodeError
from .common import check_shape, check_tensor_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["NPY_MAGIC", "load_npy"]

NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000
_ALLOWED_KINDS = frozenset("biuf")


def _read_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    fp = io.BytesIO(data)
    try:
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp, _MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp, _MAX_HEADER)
        else:
            raise DecodeError("unsupported .npy format version")
    except DecodeError:
        raise
    except (
        ValueError,
        TypeError,
        SyntaxError,
        EOFError,
        OverflowError,
        MemoryError,
        RecursionError,
        struct.error,
    ) as exc:
        raise DecodeError(".npy header is malformed") from exc
    if not isinstance(shape, tuple):
        raise DecodeError(".npy header declares an invalid shape")
    return shape, bool(fortran), np.dtype(dtype), fp.tell()


def load_npy(data: bytes, max_tensor_bytes: int) -> torch.Tensor:
    """A tensor from ``.npy`` bytes.

    Raises:
        DecodeError: a malformed header, a dtype that is not real numeric or bool
            (object, structured, complex, ...), more than 64 dimensions, or a
            size that does not match the data.
        TooLargeError: the declared array (or, holding no element, the extent of its
            dimensions) is over ``max_tensor_bytes``, or over the decoded-output budget.
    """
    import torch

    shape, fortran, dtype, offset = _read_header(data)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DecodeError(".npy object and structured dtypes are not accepted")
    if dtype.kind not in _ALLOWED_KINDS or dtype.itemsize > 8:
        raise DecodeError(f".npy dtype kind {dtype.kind!r} is not a real numeric type")
    numel = check_shape(shape, dtype.itemsize, max_tensor_bytes, what=".npy array")
    check_tensor_bytes(numel, dtype.itemsize, max_tensor_bytes, what=".npy array")
    declared = numel * dtype.itemsize
    if declared != len(data) - offset:
        raise DecodeError(
            f".npy header declares {declared} bytes of data but {len(data) - offset} follow"
        )
    flat = np.frombuffer(data, dtype=dtype, count=numel, offset=offset)
    arr = flat.reshape(shape, order="F" if fortran else "C")
    # One copy: native byte order, C order, writable (torch refuses read-only memory).
    owned = np.array(arr, dtype=dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(owned)
