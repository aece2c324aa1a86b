"""What every embedding format shares: the torch import, the dtype allowlist, budgets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..._errors import DecodeError, TooLargeError
from ..budget import reserve_output

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_NDIM",
    "TORCH_EXTRA_HINT",
    "allowed_dtypes",
    "check_shape",
    "check_tensor_bytes",
    "require_torch",
]

#: Most dimensions a tensor may have (numpy's own limit).
MAX_NDIM = 64

TORCH_EXTRA_HINT = "embedding tensors need torch: pip install 'mediagate[torch]'"


def require_torch() -> None:
    """Make sure torch can be imported.

    Raises:
        ImportError: torch is not installed (the message names ``mediagate[torch]``).
    """
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(TORCH_EXTRA_HINT) from exc


def allowed_dtypes() -> frozenset[torch.dtype]:
    """Real numeric and bool dtypes: what an embedding may hold (no complex, no quantised)."""
    import torch

    return frozenset(
        {
            torch.bool,
            torch.uint8,
            torch.int8,
            torch.int16,
            torch.int32,
            torch.int64,
            torch.uint16,
            torch.uint32,
            torch.uint64,
            torch.float16,
            torch.bfloat16,
            torch.float32,
            torch.float64,
            torch.float8_e4m3fn,
            torch.float8_e5m2,
        }
    )


def check_tensor_bytes(numel: int, element_size: int, limit: int, *, what: str) -> None:
    """Refuse a tensor of ``numel`` elements of ``element_size`` bytes over ``limit``.

    The size is also reserved against the decoded-output budget of the decode running
    on this thread (``budget.reserve_output``), before anything is allocated.

    Raises:
        TooLargeError: ``numel * element_size`` is over ``limit`` (``max_tensor_bytes``)
            or over the decoded-output budget (``max_decoded_bytes``).
    """
    size = numel * element_size
    if size > limit:
        raise TooLargeError(
            f"{what} would take {size} bytes, over max_tensor_bytes={limit} "
            f"(raise MediaPolicy.max_tensor_bytes to allow it)",
            limit="max_tensor_bytes",
            value=size,
            maximum=limit,
        )
    reserve_output(size, what)


def check_shape(shape: Sequence[object], element_size: int, limit: int, *, what: str) -> int:
    """Validate a declared shape before any tensor is made from it; returns ``numel``.

    A zero-element shape is judged by its extent (every dimension counted as at least
    one), so dimensions too large for any stride or allocator are refused even when
    they hold no element.

    Raises:
        DecodeError: more than ``MAX_NDIM`` dimensions, or a dimension that is not a
            non-negative integer.
        TooLargeError: the shape's extent times ``element_size`` is over ``limit``.
    """
    if len(shape) > MAX_NDIM:
        raise DecodeError(f"{what} has {len(shape)} dimensions, more than {MAX_NDIM}")
    dims: list[int] = []
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise DecodeError(f"{what} declares an invalid shape")
        dims.append(dim)
    numel = math.prod(dims)
    extent = math.prod(max(dim, 1) for dim in dims)
    if numel == 0 and extent * element_size > limit:
        raise TooLargeError(
            f"{what} holds no element but declares dimensions spanning "
            f"{extent * element_size} bytes, over max_tensor_bytes={limit}",
            limit="max_tensor_bytes",
            value=extent * element_size,
            maximum=limit,
        )
    return numel
