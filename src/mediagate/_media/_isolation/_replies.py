"""Replies between a worker and the parent: large buffers through shared memory, and
an unpickler in the parent that accepts only the data types a decoder returns."""

from __future__ import annotations

import io
import mmap
import os
import pickle
import stat
import sys
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from ..._errors import MediaError
from ..results import MediaWithBytes
from ._segments import (
    _SEGMENT_TOKEN,
    SHARED_COPY_THRESHOLD,
    SHM_DIR,
    _call_segments,
    _new_segment,
    _Segment,
    _segment_of,
    _unlink,
)


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain data (what an image's ``info`` may carry back)."""
    if type(value) in (str, bytes, int, float, bool) or value is None:
        return True
    if type(value) is tuple and depth < 2:
        return all(_plain(item, depth + 1) for item in value)
    return False


def _is_module_function(fn: object) -> bool:
    qualname = getattr(fn, "__qualname__", "")
    return callable(fn) and "<" not in qualname and "." not in qualname


class _ResultPickler(pickle.Pickler):
    """Pickles a result, sending large buffers through shared memory."""

    def __init__(self, file: io.BytesIO, inputs: Sequence[object]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._inputs = {id(obj): index for index, obj in enumerate(inputs) if type(obj) is bytes}
        self._keep = inputs
        self.used: dict[str, _Segment] = {}

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is bytes:
            index = self._inputs.get(id(obj))
            return None if index is None else ("input", index)
        if kind is np.ndarray:
            return self._array_id(obj)
        if kind is MediaWithBytes:
            return self._pending_id(obj)
        image_module = sys.modules.get("PIL.Image")
        if image_module is not None and isinstance(obj, image_module.Image):
            return self._image_id(obj)
        torch = sys.modules.get("torch")
        if torch is not None and kind is torch.Tensor:
            return self._tensor_id(obj)
        return None

    def _array_id(self, array: npt.NDArray[Any]) -> tuple[Any, ...] | None:
        if array.dtype.hasobject or array.size == 0:
            return None
        segment = _segment_of(array)
        if segment is None:
            if array.nbytes < SHARED_COPY_THRESHOLD:
                return None
            segment = _new_segment(array.nbytes)
            if segment is None:
                return None
            copy = segment.array(array.shape, array.dtype)
            np.copyto(copy, array)
            array = copy
        self.used[segment.name] = segment
        offset = array.__array_interface__["data"][0] - segment.address
        layout = (array.dtype, array.shape, array.strides, offset)
        return ("array", segment.name, segment.size, *layout)

    def _pending_id(self, result: MediaWithBytes[Any]) -> tuple[Any, ...] | None:
        state = result.__dict__
        to_media = state.get("_to_media")
        if "media" in state or not _is_module_function(to_media):
            return None
        ref = (getattr(to_media, "__module__", ""), getattr(to_media, "__qualname__", ""))
        return ("pending", state["_array"], state["original_bytes"], ref, state["_known"])

    def _image_id(self, image: Any) -> tuple[Any, ...] | None:
        data: bytes = image.tobytes()
        segment = _new_segment(len(data)) if len(data) >= SHARED_COPY_THRESHOLD else None
        if segment is not None:
            segment.mm[: len(data)] = data
            self.used[segment.name] = segment
        # Small images (or no shared memory) travel inline, still as plain pixel data.
        where: str | bytes = data if segment is None else segment.name
        palette = image.getpalette("RGBA") if image.mode in ("P", "PA") else None
        info = {k: v for k, v in image.info.items() if _plain(v)}
        return (
            "image",
            where,
            len(data) if segment is None else segment.size,
            image.mode,
            image.size,
            palette,
            info,
            image.format,
        )

    def _tensor_id(self, tensor: Any) -> tuple[Any, ...] | None:
        torch = sys.modules["torch"]
        if tensor.layout != torch.strided or tensor.device.type != "cpu" or tensor.requires_grad:
            return None
        dense = tensor.detach().contiguous()
        try:
            return ("tensor", dense.numpy(), None, tuple(dense.shape))
        except (TypeError, RuntimeError):
            raw = dense.reshape(-1).view(torch.uint8).numpy()
            return ("tensor", raw, str(dense.dtype).removeprefix("torch."), tuple(dense.shape))


def _encode_reply(status: str, value: object, inputs: Sequence[object]) -> bytes:
    buffer = io.BytesIO()
    pickler = _ResultPickler(buffer, inputs)
    pickler.dump(value)
    for key, segment in list(_call_segments.items()):
        if segment.name not in pickler.used:
            _unlink(segment.name)
        del _call_segments[key]
    names = sorted(pickler.used)
    return pickle.dumps((status, names, buffer.getvalue()), protocol=pickle.HIGHEST_PROTOCOL)


_SAFE_GLOBALS = frozenset(
    {
        ("builtins", "complex"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
        ("fractions", "Fraction"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("mediagate._errors", "_rebuild"),
        ("mediagate._media.results", "MediaWithBytes"),
        ("mediagate._media.audiovisual", "VideoWithAudio"),
    }
)


class _ReplyUnpickler(pickle.Unpickler):
    """Reads a worker's reply: data types only, shared segments mapped once."""

    def __init__(self, data: bytes, prefix: str, inputs: Sequence[object]) -> None:
        super().__init__(io.BytesIO(data))
        self._prefix = prefix
        self._inputs = inputs
        self._mapped: dict[str, mmap.mmap] = {}

    def find_class(self, module: str, name: str) -> Any:
        loaded = sys.modules.get(module)
        if loaded is None or "." in name:
            raise pickle.UnpicklingError("a worker reply named a module not in use")
        found = getattr(loaded, name, None)
        allowed = (module, name) in _SAFE_GLOBALS or (
            isinstance(found, type) and issubclass(found, MediaError)
        )
        if not allowed and module.startswith("numpy.dtypes"):
            allowed = isinstance(found, type) and issubclass(found, np.dtype)
        if not allowed and module == "torch":
            allowed = type(found).__name__ == "dtype"
        if not allowed:
            raise pickle.UnpicklingError("a worker reply named a global outside the allowlist")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("bad reference in a worker reply")
        kind = pid[0]
        if kind == "input" and type(pid[1]) is int and 0 <= pid[1] < len(self._inputs):
            return self._inputs[pid[1]]
        if kind == "array" and len(pid) == 7:
            return self._array(*pid[1:])
        if kind == "pending" and len(pid) == 5:
            return self._pending(*pid[1:])
        if kind == "image" and len(pid) == 8:
            return self._image(*pid[1:])
        if kind == "tensor" and len(pid) == 4:
            return self._tensor(*pid[1:])
        raise pickle.UnpicklingError("bad reference in a worker reply")

    def _map(self, name: object, size: object) -> mmap.mmap:
        if not isinstance(name, str) or not isinstance(size, int) or size <= 0:
            raise pickle.UnpicklingError("bad segment in a worker reply")
        token = name[len(self._prefix) :]
        if not name.startswith(self._prefix) or not _SEGMENT_TOKEN.fullmatch(token):
            raise pickle.UnpicklingError("bad segment in a worker reply")
        mapped = self._mapped.get(name)
        if mapped is not None:
            return mapped
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(SHM_DIR, name), flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                raise pickle.UnpicklingError("bad segment in a worker reply")
            if info.st_size != size:
                raise pickle.UnpicklingError("bad segment in a worker reply")
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._mapped[name] = mapped
        return mapped

    def _array(
        self,
        name: object,
        size: object,
        dtype: object,
        shape: object,
        strides: object,
        offset: object,
    ) -> npt.NDArray[Any]:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(offset, int):
            raise pickle.UnpicklingError("bad array in a worker reply")
        if not _int_tuple(shape) or not _int_tuple(strides) or len(shape) != len(strides):
            raise pickle.UnpicklingError("bad array in a worker reply")
        mapped = self._map(name, size)
        array: npt.NDArray[Any] = np.ndarray(
            shape, dtype, buffer=mapped, offset=offset, strides=strides
        )
        return array

    def _pending(
        self, array: object, original: object, ref: object, known: object
    ) -> MediaWithBytes[Any]:
        if not isinstance(array, np.ndarray) or not isinstance(original, bytes):
            raise pickle.UnpicklingError("bad result in a worker reply")
        if not isinstance(known, dict) or not isinstance(ref, tuple) or len(ref) != 2:
            raise pickle.UnpicklingError("bad result in a worker reply")
        module, name = ref
        if not isinstance(module, str) or not module.startswith("mediagate."):
            raise pickle.UnpicklingError("bad result in a worker reply")
        to_media = getattr(sys.modules.get(module), str(name), None)
        if to_media is None or not _is_module_function(to_media):
            raise pickle.UnpicklingError("bad result in a worker reply")
        return MediaWithBytes.from_array(array, original, to_media, known=known)

    def _image(
        self,
        name: object,
        size: object,
        mode: object,
        dims: object,
        palette: object,
        info: object,
        fmt: object,
    ) -> Any:
        from PIL import Image

        if not isinstance(mode, str) or not isinstance(dims, tuple):
            raise pickle.UnpicklingError("bad image in a worker reply")
        source = name if isinstance(name, bytes) else self._map(name, size)
        pixels = np.frombuffer(source, np.uint8)
        image = Image.frombuffer(mode, dims, pixels, "raw", mode, 0, 1)
        if isinstance(palette, list):
            image.putpalette(palette, "RGBA")
        if isinstance(info, dict):
            image.info.update(info)
        if isinstance(fmt, str):
            image.format = fmt
        return image

    def _tensor(self, array: object, reinterpret: object, shape: object) -> Any:
        import torch

        if not isinstance(array, np.ndarray) or not isinstance(shape, tuple):
            raise pickle.UnpicklingError("bad tensor in a worker reply")
        tensor = torch.from_numpy(array)
        if reinterpret is None:
            return tensor
        dtype = getattr(torch, str(reinterpret), None)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError("bad tensor in a worker reply")
        return tensor.view(dtype).reshape(shape)


def _int_tuple(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(type(n) is int for n in value)


def _read_reply(reply: bytes, prefix: str, inputs: Sequence[object]) -> tuple[str, object]:
    """Unpickle a worker's reply; the segments it names are unlinked whatever happens.

    Raises:
        pickle.UnpicklingError, OSError, ValueError, TypeError: an unreadable reply.
    """
    status, names, payload = _ReplyUnpickler(reply, prefix, ()).load()
    try:
        value = _ReplyUnpickler(payload, prefix, inputs).load()
    finally:
        for name in names if isinstance(names, list) else ():
            if isinstance(name, str) and name.startswith(prefix) and "/" not in name:
                _unlink(name)
    return str(status), value
