"""Optional dependencies: which extra installs each, and what a missing one tells a user.

mediagate raises ``ImportError`` naming the extra (``pip install 'mediagate[torch]'``)
when a feature needs a package its install lacks; the command line and the demo turn
that into one line naming the extra, never a traceback.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

__all__ = ["EXTRA_MODULES", "MissingExtra", "has_extra", "missing_extra"]

#: The modules each extra of ``pyproject.toml`` installs, as they are imported.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "safetensors"),
    "opencv": ("cv2",),
    "s3": ("fsspec", "s3fs"),
    "gcs": ("fsspec", "gcsfs"),
    "heif": ("pillow_heif",),
    "batch": ("pyarrow",),
    "metrics": ("prometheus_client",),
}

_NAMED = re.compile(r"mediagate\[([a-z0-9_-]+)\]")


@dataclass(frozen=True)
class MissingExtra:
    """An optional dependency a feature needed and this install lacks."""

    extra: str
    message: str

    @property
    def install(self) -> str:
        """The command that installs it."""
        return f"pip install 'mediagate[{self.extra}]'"


def has_extra(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported here (looked up, not imported)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in EXTRA_MODULES[extra])
    except (ImportError, ValueError):
        return False


def _extra_of_module(name: str | None) -> str | None:
    top = (name or "").split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return extra
    return None


def missing_extra(exc: ImportError) -> MissingExtra | None:
    """The extra whose absence ``exc`` reports, from its message (mediagate's own name
    the extra) or the module that failed to import; ``None`` when it is none of them
    (a broken install of a required dependency)."""
    seen: BaseException | None = exc
    while isinstance(seen, ImportError):
        named = _NAMED.search(str(seen))
        extra = named.group(1) if named else _extra_of_module(seen.name)
        if extra is not None:
            if named:
                return MissingExtra(extra, str(seen))
            return MissingExtra(
                extra, f"{seen.name} is not installed: pip install 'mediagate[{extra}]'"
            )
        seen = seen.__cause__
    return None
