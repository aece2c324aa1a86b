"""MediaWithBytes: decoded media together with the bytes it came from."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["MediaWithBytes"]

_M = TypeVar("_M")

_PENDING = ("_array", "_to_media", "_known")
_OWN_FIELDS = frozenset({"media", "original_bytes", "io_config", *_PENDING})


@dataclass(repr=False)
class MediaWithBytes(Generic[_M]):
    """Decoded media together with the bytes it came from.

    Attribute access falls through to ``media`` (so an image result has ``.size`` and
    ``.mode``), ``np.array(x)`` gives ``np.array(x.media)``, iterating and indexing go
    to ``media`` (``frames, metadata = video_result``), and the bytes stay out of
    ``repr``. ``io_config`` names the decode settings that changed the media relative
    to ``original_bytes`` (an image's ``image_mode`` conversion), so a cache keyed on
    the bytes can tell two decodes of them apart.
    """

    media: _M
    original_bytes: bytes = field(repr=False)
    io_config: dict[str, Any] | None = None

    @classmethod
    def from_array(
        cls,
        array: npt.NDArray[Any],
        original_bytes: bytes,
        to_media: Callable[[npt.NDArray[Any]], _M],
        *,
        known: Mapping[str, Any] | None = None,
    ) -> MediaWithBytes[_M]:
        """A result whose array is decoded already and whose ``media`` is built on demand.

        ``np.asarray(result)`` returns ``array`` itself (no copy); ``result.media`` is
        ``to_media(array)``, built on first access and then kept. Attributes named in
        ``known`` (e.g. ``size`` and ``mode``) are answered without building it, so
        reading them never costs a conversion on the caller's thread.
        """
        obj = cls.__new__(cls)
        obj.__dict__.update(
            original_bytes=original_bytes,
            _array=array,
            _to_media=to_media,
            _known=dict(known or {}),
        )
        return obj

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        arr: npt.NDArray[Any] | None = self.__dict__.get("_array")
        if arr is None:
            arr = np.asarray(self.media, dtype=None)
        if dtype is not None and arr.dtype != dtype:
            converted: npt.NDArray[Any] = arr.astype(dtype)
            return converted
        if copy:
            duplicate: npt.NDArray[Any] = arr.copy()
            return duplicate
        return arr

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set on the instance. ``media`` may be pending
        # (see ``from_array``). Dunders and our own fields are never delegated:
        # unpickling and copy probe them before ``media`` exists.
        state = self.__dict__
        known = state.get("_known")
        if known and name in known and "media" not in state:
            return known[name]
        if name == "media" and "_to_media" in state:
            media = state["_to_media"](state["_array"])
            state["media"] = media
            return media
        if name.startswith("__") or name in _OWN_FIELDS:
            raise AttributeError(name)
        return getattr(self.media, name)

    def __repr__(self) -> str:
        # A repr (a log line, a debugger, asyncio's own reprs) must not build the media.
        state = self.__dict__
        if "media" not in state and "_array" in state:
            array = state["_array"]
            shown = f"<not built: array {list(array.shape)} {array.dtype}>"
        else:
            shown = repr(state.get("media"))
        return f"MediaWithBytes(media={shown}, io_config={state.get('io_config')!r})"

    def __iter__(self) -> Iterator[Any]:
        media: Any = self.media
        return iter(media)

    def __getitem__(self, index: Any) -> Any:
        media: Any = self.media
        return media[index]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__
        extra = {"io_config": state["io_config"]} if state.get("io_config") is not None else {}
        if "media" not in state and "_array" in state:
            # Not built yet: the array travels, and the view is built where it is used.
            return {name: state[name] for name in ("original_bytes", *_PENDING)} | extra
        return {"media": self.media, "original_bytes": self.original_bytes} | extra
