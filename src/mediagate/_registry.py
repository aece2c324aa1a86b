"""Named, pluggable registries: connectors by scheme or name, video loaders by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> class table with lazy imports and no silent overwrite.

    Example::

        @VIDEO_LOADER_REGISTRY.register("my_gpu")
        class MyGpuLoader:
            def load_bytes(self, data, num_frames=-1, **options): ...

    ``load(name, *args, **kwargs)`` returns ``cls(*args, **kwargs)``; ``get(name)`` the
    class itself.
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, tuple[str, str | None]] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Decorator that registers a class under ``name``.

        Raises:
            ValueError: ``name`` is taken and ``override`` is not set.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self._kind} names must be non-empty strings")

        def decorator(obj: T) -> T:
            if not override and (name in self._entries or name in self._lazy):
                raise ValueError(
                    f"{self._kind} {name!r} is already registered (pass override=True to replace)"
                )
            self._lazy.pop(name, None)
            self._entries[name] = obj
            return obj

        return decorator

    def register_lazy(self, name: str, target: str, *, extra: str | None = None) -> None:
        """Register ``"package.module:Attribute"``, imported on first use.

        ``extra`` names the ``mediagate[...]`` extra that provides its dependencies.
        """
        if name in self._entries or name in self._lazy:
            raise ValueError(f"{self._kind} {name!r} is already registered")
        self._lazy[name] = (target, extra)

    def _resolve(self, name: str) -> T:
        # Threads may resolve the same lazy entry at once (decode workers building their
        # MediaIO): each reads the entry once, and the first to finish retires it.
        if name in self._entries:
            return self._entries[name]
        entry = self._lazy.get(name)
        if entry is None:
            if name in self._entries:
                return self._entries[name]
            raise ValueError(
                f"unknown {self._kind} {name!r}; available: {', '.join(self.available()) or 'none'}"
            )
        target, extra = entry
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (pip install 'mediagate[{extra}]')" if extra else ""
            raise ImportError(f"{self._kind} {name!r} needs a missing dependency{hint}") from exc
        obj: T = getattr(module, attr)
        self._entries[name] = obj
        self._lazy.pop(name, None)
        return obj

    def get(self, name: str) -> T:
        """The registered class.

        Raises:
            ValueError: no such name (the message lists the available ones).
            ImportError: the entry's optional dependency is missing (names the extra).
        """
        return self._resolve(name)

    def load(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """An instance of the registered class, built with ``args`` and ``kwargs``."""
        cls: Any = self._resolve(name)
        return cls(*args, **kwargs)

    def available(self) -> list[str]:
        """Sorted names whose dependencies import."""
        names = list(self._entries)
        for name in list(self._lazy):
            try:
                self._resolve(name)
            except ImportError:
                continue
            names.append(name)
        return sorted(set(names))

    def names(self) -> list[str]:
        """Every registered name, importable or not."""
        return sorted({*self._entries, *self._lazy})

    @property
    def entries(self) -> Mapping[str, T]:
        """A read-only view of the classes imported so far."""
        return MappingProxyType(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __len__(self) -> int:
        return len(self._entries.keys() | self._lazy.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self._kind!r}, names={self.names()})"
