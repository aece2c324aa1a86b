"""``torch.save`` payloads, loaded so that nothing in them can run code.

``torch.load`` runs with ``weights_only=True`` (an unpickler that only rebuilds
tensors and plain containers, never calls an arbitrary global), under sparse-tensor
invariant checks, from memory, onto the CPU. Zip archives are checked first: every
entry stored uncompressed, as ``torch.save`` writes them, and their total size within
the payload, so no entry can inflate. The pickle must use protocol 2, the one
``torch.save`` writes and the safe unpickler is built for. Sparse tensors are
densified only after their dense size is checked against the budget. Legacy (non-zip)
streams are read opcode by opcode first, without unpickling anything, and refused when
their storages declare more bytes than the payload holds: torch allocates declared
storages before reading them (for zip archives it checks each record's size first);
an archive's ``data.pkl`` is read opcode by opcode too, so a truncated one is refused
before torch sees it.

Only dense or sparse CPU data is returned: a plain tensor or a ``Parameter`` (returned
as its data). Tensor subclasses, meta tensors, tensors on any other device, nested,
quantised and opaque-layout (e.g. MKL-DNN) tensors are refused before anything is
densified or copied.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
from typing import TYPE_CHECKING

from ..._errors import DecodeError
from .common import allowed_dtypes, check_shape, check_tensor_bytes

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
                program = pkl.read()
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
            raise DecodeError("torch.save archive is not a valid zip file") from exc
    _check_pickle_head(program[:2])
    _check_complete_pickle(program)


def _check_complete_pickle(program: bytes) -> None:
    """Refuse a pickle that is truncated, malformed or followed by stray bytes, by
    reading its opcodes (nothing is unpickled)."""
    stream = io.BytesIO(program)
    try:
        for _op in pickletools.genops(stream):
            pass
    except (ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise DecodeError(
            "torch.save payload is malformed (a truncated or corrupt pickle)"
        ) from exc
    if stream.tell() != len(program):
        raise DecodeError("torch.save payload is malformed (bytes after the pickle)")


def _check_pickle_head(head: bytes) -> None:
    if head != _TORCH_PICKLE_HEAD:
        raise DecodeError("torch.save payload uses a pickle protocol other than 2")


class _Opaque:
    """A value the storage walk does not follow."""


_OPAQUE = _Opaque()
_MARK = object()
_LITERALS = frozenset(
    {
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "BININT",
        "BININT1",
        "BININT2",
        "INT",
        "LONG",
        "LONG1",
        "LONG4",
    }
)
# Bytes per element of the storage classes a legacy torch.save stream names.
_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "UntypedStorage": 1,
    "QUInt8Storage": 1,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
}
# The pickles a legacy torch.save stream starts with: magic number, version, system info.
_LEGACY_PREAMBLE = 3


def _storage_bytes(pid: object) -> tuple[str, int] | None:
    """``(key, bytes)`` for a legacy storage reference
    ``("storage", <torch XStorage>, key, location, numel, ...)``; None for anything else."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return None
    kind, key, numel = pid[1], pid[2], pid[4]
    if not (isinstance(kind, tuple) and kind[0] == "global" and isinstance(numel, int)):
        raise DecodeError("torch.save payload has a malformed storage reference")
    module, _, name = str(kind[1]).partition(" ")
    itemsize = _STORAGE_ITEMSIZE.get(name) if module == "torch" else None
    if itemsize is None or numel < 0:
        raise DecodeError("torch.save payload has a malformed storage reference")
    return str(key), numel * itemsize


def _declared_storage_bytes(stream: io.BytesIO) -> int:
    """The bytes the storages referenced by the pickle at ``stream`` declare, found by
    reading its opcodes (nothing is unpickled or imported from the payload)."""
    stack: list[object] = []
    memo: dict[object, object] = {}
    storages: dict[str, int] = {}

    def pop_to_mark() -> list[object]:
        for at in range(len(stack) - 1, -1, -1):
            if stack[at] is _MARK:
                items = stack[at + 1 :]
                del stack[at:]
                return items
        raise DecodeError("torch.save payload is malformed")

    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name == "STOP":
            break
        if name == "MARK":
            stack.append(_MARK)
        elif name in _LITERALS or name == "NONE":
            stack.append(arg)
        elif name == "GLOBAL":
            stack.append(("global", arg))
        elif name == "TUPLE":
            stack.append(tuple(pop_to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise DecodeError("torch.save payload is malformed")
            items = stack[len(stack) - count :]
            del stack[len(stack) - count :]
            stack.append(tuple(items))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE") and stack:
            memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(arg, _OPAQUE))
        elif name == "BINPERSID":
            if not stack:
                raise DecodeError("torch.save payload is malformed")
            found = _storage_bytes(stack.pop())
            if found is not None:
                storages[found[0]] = max(storages.get(found[0], 0), found[1])
            stack.append(_OPAQUE)
        else:
            before = op.stack_before
            if pickletools.markobject in before:
                pop_to_mark()
                del stack[len(stack) - before.index(pickletools.markobject) :]
            elif before:
                if len(stack) < len(before):
                    raise DecodeError("torch.save payload is malformed")
                del stack[len(stack) - len(before) :]
            stack.extend(_OPAQUE for _ in op.stack_after)
    return sum(storages.values())


def _check_legacy(data: bytes) -> None:
    """Refuse a legacy (non-zip) stream whose storages declare more bytes than it holds:
    torch would allocate every declared storage before reading any data."""
    stream = io.BytesIO(data)
    try:
        for _ in range(_LEGACY_PREAMBLE):
            for _op in pickletools.genops(stream):
                pass
        declared = _declared_storage_bytes(stream)
    except (ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise DecodeError("torch.save payload is malformed") from exc
    if declared > len(data):
        raise DecodeError("torch.save payload declares more tensor data than it holds")


def _load(data: bytes) -> object:
    import torch

    with torch.sparse.check_sparse_tensor_invariants():  # type: ignore[no-untyped-call]
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _check_dense_cpu(obj: object) -> torch.Tensor:
    """``obj`` when it is a plain tensor (or a ``Parameter``) of CPU data in a strided
    or sparse layout with an allowed dtype; nothing about it is computed or copied.

    Raises:
        DecodeError: anything else.
    """
    import torch

    if not isinstance(obj, torch.Tensor):
        raise DecodeError(
            f"torch.save payload holds a {type(obj).__name__}, not a tensor "
            f"(save exactly one tensor)"
        )
    if obj.is_nested:
        raise DecodeError("nested tensors are not accepted (save one dense tensor)")
    if type(obj) not in (torch.Tensor, torch.nn.Parameter):
        raise DecodeError("torch.save payload holds a tensor subclass (save a plain tensor)")
    if obj.device.type != "cpu":
        raise DecodeError(
            f"tensor is on the {obj.device.type!r} device, not the CPU (meta and device "
            f"tensors hold no data to load)"
        )
    if obj.is_quantized:
        raise DecodeError("quantized tensors are not accepted")
    if obj.layout not in _accepted_layouts():
        raise DecodeError(f"tensor layout {obj.layout} is not accepted (dense or sparse only)")
    if obj.dtype not in allowed_dtypes():
        raise DecodeError("tensor dtype is not a real numeric or bool type")
    return obj


def _accepted_layouts() -> frozenset[torch.layout]:
    import torch

    return frozenset(
        {
            torch.strided,
            torch.sparse_coo,
            torch.sparse_csr,
            torch.sparse_csc,
            torch.sparse_bsr,
            torch.sparse_bsc,
        }
    )


def load_torch_save(data: bytes, max_tensor_bytes: int) -> torch.Tensor:
    """The one tensor a ``torch.save`` payload holds, dense, on the CPU.

    A ``Parameter`` is returned as its data (a plain tensor, no gradient).

    Raises:
        DecodeError: not a tensor (a dict, a list, any other object), a tensor
            subclass, a payload the safe unpickler refuses (it would call a global it
            does not allow), a truncated or malformed payload, a sparse tensor that
            breaks its invariants, a meta, non-CPU, nested, quantised or opaque-layout
            tensor, or a complex or other non-real dtype.
        TooLargeError: the tensor, densified, would be over ``max_tensor_bytes`` or
            the decoded-output budget (a tensor holding no element is judged by the
            extent of its dimensions).
    """
    import torch

    if data.startswith(ZIP_MAGIC):
        _check_zip(data)  # torch checks each storage record against its declared size
    else:
        _check_pickle_head(data[:2])
        _check_legacy(data)
    try:
        obj = _load(data)
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError) as exc:
        raise DecodeError("torch.save payload was refused by the safe loader") from exc
    except (EOFError, OSError, KeyError, AttributeError, IndexError, struct.error) as exc:
        raise DecodeError("torch.save payload is malformed") from exc
    tensor = _check_dense_cpu(obj)
    size = tensor.element_size()
    numel = check_shape(tuple(tensor.shape), size, max_tensor_bytes, what="tensor")
    check_tensor_bytes(numel, size, max_tensor_bytes, what="tensor")
    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        try:
            tensor = tensor.to_dense()
        except (RuntimeError, ValueError) as exc:
            raise DecodeError("sparse tensor could not be densified") from exc
    return tensor
