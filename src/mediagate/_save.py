"""Files of the decoded arrays and their metadata (``mediagate fetch --save FILE``).

The suffix picks the format:

- ``.npy``: the main array alone (an image's pixels, a video's frames, audio samples,
  a tensor);
- ``.npz``: the arrays by name (``image``, ``frames``, ``audio`` or ``embedding``) and
  ``metadata``, the metadata as a JSON string;
- ``.safetensors``: the same arrays, the JSON string under ``metadata`` in the header's
  ``__metadata__``; needs the ``safetensors`` package (``mediagate[torch]``; without
  it an ``ImportError`` names the extra before anything is loaded). A torch
  tensor is written as torch writes it, every dtype kept.

The metadata is ``modality`` plus, for a video, the loader's metadata dict as it is; for
an image ``mode`` and ``size``; for audio ``sample_rate``; and ``shape`` and ``dtype`` of
the main array. numpy has no bfloat16 or float8: such a tensor goes into ``.npy`` and
``.npz`` as float32 (exactly), and the metadata's ``saved_dtype`` says so.

Every file is written to a temporary name in the same folder, then renamed over the
target, so a reader never sees half a file; a folder is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import OptionError
from ._media.results import MediaWithBytes
from ._modalities import modality_name

__all__ = [
    "SAFETENSORS_HINT",
    "SAVE_SUFFIXES",
    "check_save_path",
    "check_target",
    "media_arrays",
    "save_media",
    "write_atomically",
]

SAVE_SUFFIXES = (".npy", ".npz", ".safetensors")
SAFETENSORS_HINT = (
    "writing .safetensors needs the safetensors package: pip install 'mediagate[torch]'"
)
_MAIN = {"image": "image", "video": "frames", "audio": "audio"}


def check_save_path(path: str | os.PathLike[str]) -> Path:
    """The file ``--save`` writes, checked before anything is loaded.

    Raises:
        OptionError: a suffix other than ``.npy``, ``.npz`` or ``.safetensors``, an
            existing folder, or a missing folder.
        ImportError: ``.safetensors`` without the ``safetensors`` package (the message
            names ``mediagate[torch]``).
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise OptionError(
            f"--save writes .npy, .npz or .safetensors files, not {target.name!r}",
            option="save",
        )
    if suffix == ".safetensors":
        _safetensors_numpy()
    check_target(target, "save")
    return target


def check_target(target: Path, option: str) -> None:
    """Refuse to write ``--option target`` over a folder or into a missing one.

    Raises:
        OptionError: ``target`` is a folder, or its folder does not exist.
    """
    if target.is_dir():
        raise OptionError(f"--{option} {target} is a folder", option=option)
    if not target.parent.is_dir():
        raise OptionError(
            f"--{option} {target}: the folder {target.parent} does not exist", option=option
        )


def write_atomically(target: Path, write: Callable[[Path], None], option: str) -> None:
    """Run ``write(temporary path)``, then rename the file it wrote to ``target``.

    The temporary file is in ``target``'s folder and is removed if anything fails.

    Raises:
        OptionError: the file cannot be written (the error names ``--option``).
    """
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        os.replace(temporary, target)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OptionError(
            f"--{option} {target}: cannot write it ({reason})", option=option
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def save_media(path: str | os.PathLike[str], modality: str, result: Any) -> Path:
    """Write ``result`` (what ``load_media`` gave for ``modality``) to ``path`` in the
    format its suffix names.

    Raises:
        OptionError: as ``check_save_path``, an unknown modality, or the file cannot be
            written.
    """
    target = check_save_path(path)
    suffix = target.suffix.lower()
    arrays, metadata = _contents(modality, result, keep_torch=suffix == ".safetensors")
    text = json.dumps(metadata, default=_jsonable)

    def write(temporary: Path) -> None:
        if suffix == ".safetensors":
            _write_safetensors(arrays, temporary, {"metadata": text})
            return
        with open(temporary, "wb") as out:
            if suffix == ".npy":
                np.save(out, next(iter(arrays.values())), allow_pickle=False)
            else:
                np.savez(out, **arrays, metadata=np.array(text))

    write_atomically(target, write, "save")
    return target


def media_arrays(modality: str, result: Any) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """The arrays ``--save`` writes for ``result`` (the main one first) and the metadata
    it writes beside them.

    Raises:
        OptionError: an unknown modality.
    """
    arrays, metadata = _contents(modality, result, keep_torch=False)
    return {name: np.asarray(array) for name, array in arrays.items()}, metadata


def _contents(
    modality: str, result: Any, *, keep_torch: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    name = modality_name(modality)
    media = result.media if isinstance(result, MediaWithBytes) else result
    metadata: dict[str, Any] = {"modality": name}
    if name == "image":
        main: Any = np.asarray(result)
        metadata.update(mode=media.mode, size=list(media.size))
    elif name == "video":
        frames, loader_metadata = media
        main = np.asarray(frames)
        metadata.update(loader_metadata)
    elif name == "audio":
        audio, rate = media
        main = np.asarray(audio)
        metadata["sample_rate"] = rate
    else:
        main = _tensor(media, metadata, keep_torch=keep_torch)
    metadata.setdefault("shape", [int(d) for d in main.shape])
    metadata.setdefault("dtype", str(main.dtype).replace("torch.", ""))
    saved = str(main.dtype).replace("torch.", "")
    if "saved_dtype" not in metadata and saved != metadata["dtype"]:
        metadata["saved_dtype"] = saved
    return {_MAIN.get(name, "embedding"): main}, metadata


def _tensor(tensor: Any, metadata: dict[str, Any], *, keep_torch: bool) -> Any:
    """A tensor as numpy (torch dtypes numpy lacks as float32), or the torch tensor
    itself when ``keep_torch``."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensor, torch.Tensor):
        return np.asarray(tensor)
    tensor = tensor.detach().cpu()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    metadata["shape"] = [int(d) for d in tensor.shape]
    metadata["dtype"] = str(tensor.dtype).replace("torch.", "")
    if keep_torch:
        return tensor.contiguous()
    try:
        return tensor.numpy()
    except TypeError:  # bfloat16, float8: no numpy dtype
        metadata["saved_dtype"] = "float32"
        return tensor.to(torch.float32).numpy()


def _write_safetensors(arrays: dict[str, Any], path: Path, metadata: dict[str, str]) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(a, torch.Tensor) for a in arrays.values()):
        from safetensors.torch import save_file as save_tensors

        save_tensors(arrays, str(path), metadata=metadata)
        return
    save_arrays = _safetensors_numpy()
    save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata)


def _safetensors_numpy() -> Callable[..., None]:
    try:
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise ImportError(SAFETENSORS_HINT, name="safetensors") from exc
    writer: Callable[..., None] = save_file
    return writer


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)
