"""What every embedding format shares: the torch import, the dtype allowlist, budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._errors import TooLargeError

if TYPE_CHECKING:
    import torch

__all__ = ["TORCH_EXTRA_HINT", "allowed_dtypes", "check_tensor_bytes", "require_torch"]

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

    Raises:
        TooLargeError: ``numel * element_size`` is over ``limit``.
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
