"""BatchOptions: how a batch loader decodes a column of references (a frozen value)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import OptionError
from .._modalities import modality_name

__all__ = ["EMBEDS_ALIASES", "BatchOptions", "batch_modality"]

#: vLLM's spellings of the embedding modalities, accepted as ``BatchOptions.modality``.
EMBEDS_ALIASES: Mapping[str, str] = {
    "image_embeds": "image_embedding",
    "audio_embeds": "audio_embedding",
    "video_embeds": "video_embedding",
}


def batch_modality(name: object) -> str:
    """``name`` as ``"auto"`` or a modality in its one spelling.

    Raises:
        OptionError: not a modality.
    """
    if isinstance(name, str):
        spelled = name.strip().lower().replace("-", "_")
        if spelled == "auto":
            return "auto"
        name = EMBEDS_ALIASES.get(spelled, spelled)
    return modality_name(name)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"BatchOptions.{name} must be a positive whole number", option=name)
    return value


@dataclass(frozen=True)
class BatchOptions:
    """How a ``BatchLoader`` turns references into decoded rows.

    Example::

        options = BatchOptions(modality="image", image_size=(224, 224))
        with BatchLoader(policy, options) as loader:
            result = loader.load(urls)

    Args:
        modality: ``"auto"`` (each row's content decides), or ``image``, ``audio``,
            ``video``, ``image_embedding``, ``audio_embedding``, ``video_embedding``
            (``image_embeds`` and the other vLLM spellings are accepted).
        media_io_kwargs: per-modality options, the connector's nested shape
            (``{"video": {"num_frames": 8}}``).
        image_size: ``(width, height)``: every image is resized to fit inside it (aspect
            kept, up or down) and centred on black padding (letterbox), so the image
            column has one fixed shape.
        keep_failed: keep failed rows (media null, error columns set); ``False`` drops them.
        max_in_flight: fetches in progress at once, per loader.
        max_decoded_bytes: decoded output the loader may hold before handing it back;
            also the most one row may decode to.

    Raises:
        OptionError: a field has the wrong type or range (the field is named).
    """

    modality: str = "auto"
    media_io_kwargs: Mapping[str, Any] | None = None
    image_size: tuple[int, int] | None = None
    keep_failed: bool = True
    max_in_flight: int = 16
    max_decoded_bytes: int = 512 << 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", batch_modality(self.modality))
        kwargs = self.media_io_kwargs
        if kwargs is not None:
            if not isinstance(kwargs, Mapping) or not all(
                isinstance(v, Mapping) or v is None for v in kwargs.values()
            ):
                raise OptionError(
                    "BatchOptions.media_io_kwargs must map a modality to its options",
                    option="media_io_kwargs",
                )
            object.__setattr__(
                self, "media_io_kwargs", {str(k): dict(v or {}) for k, v in kwargs.items()}
            )
        size = self.image_size
        if size is not None:
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 2
                or not all(
                    isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 65535 for n in size
                )
            ):
                raise OptionError(
                    "BatchOptions.image_size must be (width, height), two whole numbers "
                    "in 1..65535",
                    option="image_size",
                )
            object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        if not isinstance(self.keep_failed, bool):
            raise OptionError(
                "BatchOptions.keep_failed must be True or False", option="keep_failed"
            )
        _positive_int("max_in_flight", self.max_in_flight)
        _positive_int("max_decoded_bytes", self.max_decoded_bytes)

    def replace(self, **changes: Any) -> BatchOptions:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | BatchOptions | None) -> BatchOptions:
        """Options from a plain mapping (what a job's configuration carries), or as given.

        Raises:
            OptionError: an unknown field, or a bad value.
        """
        if values is None:
            return cls()
        if isinstance(values, BatchOptions):
            return values
        if not isinstance(values, Mapping):
            raise OptionError("batch options must be a mapping or BatchOptions", option="options")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise OptionError(
                    f"unknown batch option {key!r} (known: {', '.join(sorted(known))})",
                    option=str(key),
                )
        given = dict(values)
        if isinstance(given.get("image_size"), list):
            given["image_size"] = tuple(given["image_size"])
        return cls(**given)
