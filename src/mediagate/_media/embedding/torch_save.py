"""``torch.save`` payloads, loaded so that nothing in them can run code.

``torch.load`` runs with ``weights_only=True`` (an unpickler that only rebuilds
tensors and plain containers, never calls an arbitrary global), under sparse-tensor
invariant checks, from memory, onto the CPU. Zip archives are checked first: every
entry stored uncompressed, as ``torch.save`` writes them, and their total size within
the payload, so no entry can inflate. The pickle must use protocol 2, the one
``torch.save`` writes and the safe unpickler is built for. Sparse tensors are
densified only after their dense size is checked against the budget.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import TYPE_CHECKING

from ..._errors import DecodeError
from .common import allowed_dtypes, check_tensor_bytes

if TYPE_CHECKING:
    import torch

__all__ = ["ZIP_MAGIC", "is_torch_save", "load_torch_save"]

ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
#: The pickle protocol ``torch.save`` writes; the safe unpickler is made for it.
_TORCH_PICKLE_HEAD = b"\x80\x02"


def is_torch_save(data: bytes) -> bool:
    """Whether ``data`` looks like a ``torch.save`` zip archive or legacy pickle stream."""
    return data.startswith(ZIP_MAGIC) or data[:1] == bytes([_PICKLE_PROTO])


def _check_zip(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DecodeError("torch.save archive is not a valid zip file") from exc
    with archive:
        infos = archive.infolist()
        total = 0
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise DecodeError("torch.save archive has a compressed entry")
            total += info.file_size
        if total > len(data):
            raise DecodeError("torch.save archive declares more data than it holds")
        pickles = [i for i in infos if i.filename.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise DecodeError("torch.save archive must hold exactly one data.pkl")
        try:
            with archive.open(pickles[0]) as pkl:
                head = pkl.read(2)
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise DecodeError("torch.save archive is not a valid zip file") from exc
    _check_pickle_head(head)


def _check_pickle_head(head: bytes) -> None:
    if head != _TORCH_PICKLE_HEAD:
        raise DecodeError("torch.save payload uses a pickle protocol other than 2")


def _load(data: bytes) -> object:
    import torch

    with torch.sparse.check_sparse_tensor_invariants():  # type: ignore[no-untyped-call]
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def load_torch_save(data: bytes, max_tensor_bytes: int) -> torch.Tensor:
    """The one tensor a ``torch.save`` payload holds, dense.

    Raises:
        DecodeError: not a tensor (a dict, a list, any other object), a payload the
            safe unpickler refuses (it would call a global it does not allow), a
            sparse tensor that breaks its invariants, or a complex, quantised or
            other non-real dtype.
        TooLargeError: the tensor, densified, would be over ``max_tensor_bytes``.
    """
    import torch

    if data.startswith(ZIP_MAGIC):
        _check_zip(data)
    else:
        _check_pickle_head(data[:2])
    try:
        obj = _load(data)
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError) as exc:
        raise DecodeError("torch.save payload was refused by the safe loader") from exc
    except (EOFError, OSError, KeyError, AttributeError, IndexError) as exc:
        raise DecodeError("torch.save payload is malformed") from exc
    if not isinstance(obj, torch.Tensor):
        raise DecodeError(
            f"torch.save payload holds a {type(obj).__name__}, not a tensor "
            f"(save exactly one tensor)"
        )
    if obj.dtype not in allowed_dtypes():
        raise DecodeError("tensor dtype is not a real numeric or bool type")
    check_tensor_bytes(obj.numel(), obj.element_size(), max_tensor_bytes, what="tensor")
    tensor = obj.detach()
    if tensor.layout != torch.strided:
        try:
            tensor = tensor.to_dense()
        except (RuntimeError, ValueError) as exc:
            raise DecodeError("sparse tensor could not be densified") from exc
    return tensor
