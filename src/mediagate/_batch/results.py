"""What a batch load hands back: one ``RowResult`` per reference, and outcome counts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._media.budget import decoded_size

if TYPE_CHECKING:
    import pyarrow

__all__ = ["OK", "BatchResult", "Outcomes", "RowResult"]

#: The outcome of a row that decoded.
OK = "ok"


@dataclass
class RowResult:
    """One reference's outcome.

    ``media`` is the model-ready value: an image ``HxWxC`` uint8 array, ``(samples,
    sample_rate)`` for audio, ``(frames NxHxWxC, metadata)`` for video, a numpy array for
    a tensor; ``None`` when the row failed, with ``error_type`` (the ``MediaError`` class
    name), ``error`` (its message) and ``http_status`` (the upstream's HTTP answer, when
    there was one) set.
    """

    index: int
    modality: str | None = None
    media: Any = None
    error_type: str | None = None
    error: str | None = None
    http_status: int | None = None
    num_bytes: int = 0
    fetch_s: float = 0.0
    decode_s: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        """Whether the row decoded."""
        return self.error_type is None

    @property
    def outcome(self) -> str:
        """``"ok"`` or the error class name."""
        return self.error_type or OK

    @property
    def decoded_bytes(self) -> int:
        """Bytes of decoded media this row holds."""
        return decoded_size(self.media)

    def __repr__(self) -> str:
        shown = _shape_of(self.media)
        return (
            f"RowResult(index={self.index}, modality={self.modality!r}, media={shown}, "
            f"outcome={self.outcome!r})"
        )


def _shape_of(media: Any) -> str:
    if media is None:
        return "None"
    if isinstance(media, np.ndarray):
        return f"<{media.dtype} {tuple(media.shape)}>"
    if isinstance(media, tuple) and media and isinstance(media[0], np.ndarray):
        return f"(<{media[0].dtype} {tuple(media[0].shape)}>, ...)"
    return f"<{type(media).__name__}>"


@dataclass
class Outcomes:
    """How many rows ended each way: ``"ok"`` or an error class name.

    Example::

        total = result.outcomes.merge(other.outcomes)
        total.as_dict()            # {"FetchError": 2, "ok": 98}
        print(total.table())
    """

    counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, outcomes: Iterable[str]) -> Outcomes:
        """Counts of ``outcomes`` (one entry per row)."""
        return cls(Counter(outcomes))

    @classmethod
    def from_dict(cls, counts: Mapping[str, int]) -> Outcomes:
        """The outcomes ``as_dict`` gave."""
        return cls(Counter({str(k): int(v) for k, v in counts.items() if int(v)}))

    @property
    def total(self) -> int:
        """Rows counted."""
        return sum(self.counts.values())

    @property
    def ok(self) -> int:
        """Rows that decoded."""
        return self.counts.get(OK, 0)

    @property
    def failed(self) -> int:
        """Rows that did not."""
        return self.total - self.ok

    def merge(self, other: Outcomes) -> Outcomes:
        """The counts of both (neither is changed)."""
        return Outcomes(self.counts + other.counts)

    def __add__(self, other: Outcomes) -> Outcomes:
        return self.merge(other)

    def as_dict(self) -> dict[str, int]:
        """``{outcome: rows}``, ``ok`` first, then the most frequent."""
        ordered = sorted(self.counts.items(), key=lambda kv: (kv[0] != OK, -kv[1], kv[0]))
        return {name: count for name, count in ordered if count}

    def table(self) -> str:
        """A plain-text table: outcome, rows, share of all rows."""
        counts = self.as_dict()
        total = self.total
        width = max([len("outcome"), len("total"), *(len(name) for name in counts)])
        digits = max(len("rows"), len(str(total)))
        lines = [f"{'outcome':<{width}}  {'rows':>{digits}}  share"]
        for name, count in counts.items():
            share = 100.0 * count / total if total else 0.0
            lines.append(f"{name:<{width}}  {count:>{digits}}  {share:5.1f}%")
        lines.append(f"{'total':<{width}}  {total:>{digits}}  {100.0 if total else 0.0:5.1f}%")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


@dataclass
class BatchResult:
    """The rows of one batch, in the order of its references, and their outcome counts.

    Rows dropped because ``keep_failed=False`` are counted in ``outcomes`` but are not
    in ``rows``.
    """

    rows: list[RowResult]
    outcomes: Outcomes
    #: The ``(width, height)`` images were fitted to (``BatchOptions.image_size``).
    image_size: tuple[int, int] | None = None
    #: Modalities whose columns appear even when no row holds them (``None``: those of
    #: the rows present).
    modalities: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def decoded_bytes(self) -> int:
        """Bytes of decoded media the rows hold."""
        return sum(row.decoded_bytes for row in self.rows)

    def present(self) -> tuple[str, ...]:
        """The column groups of this batch: ``image``, ``audio``, ``video``, ``tensor``."""
        if self.modalities is not None:
            groups = [column_group(m) for m in self.modalities]
        else:
            groups = [column_group(row.modality) for row in self.rows if row.ok]
        return tuple(g for g in ("image", "audio", "video", "tensor") if g in groups)

    def columns(self) -> dict[str, list[Any]]:
        """Plain columns, one entry per row: numpy arrays (``None`` where a row failed or
        holds another modality), Python numbers and strings."""
        out: dict[str, list[Any]] = {}
        groups = self.present()
        rows = self.rows
        if "image" in groups:
            out["image"] = [_media(row, "image") for row in rows]
        if "video" in groups:
            videos = [_media(row, "video") for row in rows]
            out["video_frames"] = [None if v is None else v[0] for v in videos]
            out["video_metadata"] = [None if v is None else metadata_json(v[1]) for v in videos]
        if "audio" in groups:
            sounds = [_media(row, "audio") for row in rows]
            out["audio"] = [None if s is None else s[0] for s in sounds]
            out["sample_rate"] = [None if s is None else int(s[1]) for s in sounds]
        if "tensor" in groups:
            out["tensor"] = [_media(row, "tensor") for row in rows]
        out["error_type"] = [row.error_type for row in rows]
        out["error"] = [row.error for row in rows]
        out["http_status"] = [row.http_status for row in rows]
        out["num_bytes"] = [row.num_bytes for row in rows]
        out["fetch_s"] = [row.fetch_s for row in rows]
        out["decode_s"] = [row.decode_s for row in rows]
        return out

    def to_arrow(self) -> pyarrow.Table:
        """The columns as a ``pyarrow.Table`` whose tensor columns use Arrow's canonical
        extension types (``arrow.fixed_shape_tensor``, ``arrow.variable_shape_tensor``),
        so a Parquet file written from it describes itself.

        Raises:
            ImportError: pyarrow is not installed (``pip install mediagate[batch]``).
        """
        from .arrow import to_table

        return to_table(self)


def column_group(modality: str | None) -> str:
    """The column group a modality's media lands in."""
    if modality is None:
        return ""
    return "tensor" if modality.endswith("_embedding") else modality


def _media(row: RowResult, group: str) -> Any:
    return row.media if row.ok and column_group(row.modality) == group else None


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """A video's metadata as JSON text (numpy numbers as plain ones)."""
    return json.dumps(metadata, default=_plain, sort_keys=True)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
