"""mediagate on Ray Data: a column of media references in, decoded columns out.

``MediaLoader`` is a callable class for ``Dataset.map_batches``: each actor owns one
``BatchLoader`` (one guarded connector, its limits, samplers and cache), reads the
reference column of every batch (strings or bytes) and yields the batch back, in order,
with the decoded columns and the outcome columns added. ``summarize`` counts a
dataset's outcomes at the end of a job.

Example::

    import ray
    from mediagate.ray import MediaLoader, summarize

    ds = ray.data.read_parquet("refs.parquet")          # a "url" column
    ds = ds.map_batches(
        MediaLoader,
        fn_constructor_kwargs={"options": {"modality": "image", "image_size": [224, 224]}},
        compute=ray.data.ActorPoolStrategy(size=4), batch_size=256, batch_format="pyarrow",
    )
    print(summarize(ds).table())

Tensor columns use Ray Data's own tensor types (``ArrowTensorTypeV2`` for images fitted
to ``image_size``, ``ArrowVariableShapedTensorType`` otherwise), which hold no nulls: a
failed row's ``image``, ``video_frames`` or ``tensor`` cell is an array with no
elements (an all-zero image of the fixed shape when ``image_size`` is set), and its
``error_type`` says why. Every batch has the same columns (those of the configured
modality; image, audio and video for ``"auto"``).

Faults: an actor that dies is restarted by Ray and the batch it was working on is run
again whole (Ray Data's actor pools default to ``max_restarts=-1`` and
``max_task_retries=-1``); output of the lost attempt is not kept, so rows are neither
lost nor counted twice. Ray is imported only when this module is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._batch import BatchLoader, BatchOptions, BatchResult, Outcomes
from ._batch.arrow import OUTCOME_COLUMNS, to_table
from ._batch.results import OK
from ._policy import MediaPolicy

if TYPE_CHECKING:
    import pyarrow
    import ray.data

__all__ = ["MediaLoader", "summarize"]

#: The media columns of each column group, as the core names them.
_GROUP_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "image": ("image",),
    "audio": ("audio", "sample_rate"),
    "video": ("video_frames", "video_metadata"),
    "tensor": ("tensor",),
}


def _groups(modality: str) -> tuple[str, ...]:
    if modality == "auto":
        return ("image", "audio", "video")
    return ("tensor",) if modality.endswith("_embedding") else (modality,)


def _as_policy(policy: MediaPolicy | Mapping[str, Any] | None) -> MediaPolicy | None:
    if policy is None or isinstance(policy, MediaPolicy):
        return policy
    if isinstance(policy, Mapping):
        return MediaPolicy(**dict(policy))
    raise TypeError("policy must be a MediaPolicy or a mapping of its fields")


def _references(column: Any) -> list[Any]:
    """A column's cells as ``str``, ``bytes`` or ``None``."""
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    out: list[Any] = []
    for value in values:
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and value != value:  # pandas' missing value
            value = None
        out.append(value)
    return out


def _ray_tensors(
    arrays: list[Any], dtype: np.dtype[Any], ndim: int, fixed: tuple[int, ...] | None
) -> pyarrow.Array:
    """``arrays`` (``None`` for a failed row) as a Ray Data tensor column."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorTypeV2, ArrowVariableShapedTensorType

    value_type = pa.from_numpy_dtype(dtype)
    if fixed is not None:
        size = int(np.prod(fixed))
        block = np.zeros((len(arrays), size), dtype=dtype)
        for i, array in enumerate(arrays):
            if array is not None:
                block[i] = np.asarray(array, dtype=dtype).reshape(-1)
        offsets = pa.array(np.arange(len(arrays) + 1, dtype=np.int64) * size)
        storage = pa.LargeListArray.from_arrays(offsets, pa.array(block.reshape(-1)))
        return pa.ExtensionArray.from_storage(ArrowTensorTypeV2(fixed, value_type), storage)
    shapes, flats = [], []
    for array in arrays:
        if array is None:
            shapes.append([0] * ndim)
            continue
        array = np.asarray(array, dtype=dtype)
        shape = (1,) * (ndim - array.ndim) + tuple(array.shape)
        shapes.append(list(shape))
        flats.append(np.ascontiguousarray(array).reshape(-1))
    sizes = [int(np.prod(shape)) for shape in shapes]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = np.concatenate(flats) if flats else np.empty(0, dtype=dtype)
    data = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))
    shape_array = pa.array(shapes, type=pa.list_(pa.int64()))
    storage = pa.StructArray.from_arrays([data, shape_array], names=["data", "shape"])
    tensor_type = ArrowVariableShapedTensorType(value_type, ndim)
    return pa.ExtensionArray.from_storage(tensor_type, storage)


def _tensor_dtype(arrays: list[Any]) -> tuple[np.dtype[Any], int]:
    present = [np.asarray(a) for a in arrays if a is not None]
    if not present:
        return np.dtype(np.float32), 1
    return np.result_type(*present), max(1, max(a.ndim for a in present))


class MediaLoader:
    """A ``map_batches`` callable class: decodes the reference column of each batch.

    Args:
        column: the column holding references (URLs, ``data:``/``file:`` URLs, raw
            media bytes, or base64 tensors for an embedding modality).
        options: ``BatchOptions`` or a mapping of its fields.
        policy: ``MediaPolicy`` or a mapping of its fields (default ``MediaPolicy()``).
        cache_dir: a ``MediaCache`` folder, shared by the actors of a node.
        prefix: put before every column this adds (``"media_"`` -> ``media_image``).
        overwrite: replace input columns that have the name of a column this adds
            (otherwise such a batch is a ``ValueError``).
        keep_column: keep the reference column in the output.

    Raises:
        OptionError: a bad option (when Ray builds the actor).
    """

    def __init__(
        self,
        column: str = "url",
        *,
        options: BatchOptions | Mapping[str, Any] | None = None,
        policy: MediaPolicy | Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        prefix: str = "",
        overwrite: bool = False,
        keep_column: bool = True,
    ) -> None:
        self.column = column
        self.options = BatchOptions.from_mapping(options)
        self.prefix = prefix
        self.overwrite = overwrite
        self.keep_column = keep_column
        self.groups = _groups(self.options.modality)
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        self.loader = BatchLoader(_as_policy(policy), self.options, cache)
        self.added = tuple(
            prefix + name for group in self.groups for name in _GROUP_COLUMNS[group]
        ) + tuple(prefix + name for name in OUTCOME_COLUMNS)

    def __call__(self, batch: Any) -> Iterator[pyarrow.Table]:
        """The batch with its decoded and outcome columns, in order, in one or more
        tables (more when its decoded rows exceed ``max_decoded_bytes``)."""
        import pyarrow as pa

        table = batch if isinstance(batch, pa.Table) else _as_table(batch)
        if self.column not in table.column_names:
            raise ValueError(f"the batch has no reference column {self.column!r}")
        clashes = [name for name in self.added if name in table.column_names]
        if clashes and not self.overwrite:
            raise ValueError(
                f"the batch already has columns {clashes} (pass overwrite=True or a prefix)"
            )
        refs = _references(table.column(self.column))
        keep = [n for n in table.column_names if n not in self.added]
        if not self.keep_column:
            keep = [n for n in keep if n != self.column]
        base = table.select(keep)
        for chunk in self.loader.iter_load(refs):
            indices = pa.array([row.index for row in chunk.rows], type=pa.int64())
            yield self._with_media(base.take(indices), chunk)

    def _with_media(self, base: pyarrow.Table, chunk: BatchResult) -> pyarrow.Table:
        import pyarrow as pa

        chunk.modalities = self.groups
        plain = to_table(chunk, tensors=False)
        columns = chunk.columns()
        arrays: dict[str, Any] = {}
        for name in columns:
            if name == "image":
                arrays[name] = self._image_column(columns["image"])
            elif name == "video_frames":
                arrays[name] = _ray_tensors(columns[name], np.dtype(np.uint8), 4, None)
            elif name == "tensor":
                dtype, ndim = _tensor_dtype(columns[name])
                arrays[name] = _ray_tensors(columns[name], dtype, ndim, None)
            else:
                arrays[name] = plain.column(name)
        if base.num_columns == 0:
            return pa.table({self.prefix + name: array for name, array in arrays.items()})
        for name, array in arrays.items():
            base = base.append_column(self.prefix + name, array)
        return base

    def _image_column(self, images: list[Any]) -> pyarrow.Array:
        size = self.options.image_size
        present = [a for a in images if a is not None]
        channels = {a.shape[2] for a in present}
        if size is not None and len(channels) <= 1:
            fixed = (size[1], size[0], channels.pop() if channels else self._channels())
            if all(a.shape == fixed for a in present):
                return _ray_tensors(images, np.dtype(np.uint8), 3, fixed)
        return _ray_tensors(images, np.dtype(np.uint8), 3, None)

    def _channels(self) -> int:
        mode = (self.options.media_io_kwargs or {}).get("image", {}).get("image_mode", "RGB")
        return {"L": 1, "LA": 2, "RGBA": 4}.get(str(mode), 3)

    def __del__(self) -> None:
        loader = getattr(self, "loader", None)
        if loader is not None:
            loader.close()


def _as_table(batch: Any) -> pyarrow.Table:
    import pyarrow as pa

    if isinstance(batch, Mapping):
        return pa.table({name: _references(values) for name, values in batch.items()})
    table: pyarrow.Table = pa.Table.from_pandas(batch, preserve_index=False)
    return table


def _outcome_counts(batch: Any) -> Any:
    import pyarrow as pa

    (column,) = batch.column_names
    outcomes = [OK if value is None else value for value in batch.column(column).to_pylist()]
    return pa.table({"outcome": pa.array(outcomes, type=pa.string())})


def summarize(ds: ray.data.Dataset, *, prefix: str = "") -> Outcomes:
    """How many rows of ``ds`` (a ``MediaLoader`` output) ended each way, by
    ``error_type`` (``"ok"`` for rows that decoded). Runs the dataset if it has not run."""
    column = prefix + "error_type"
    counted = (
        ds.select_columns([column])
        .map_batches(_outcome_counts, batch_format="pyarrow")
        .groupby("outcome")
        .count()
        .take_all()
    )
    return Outcomes.from_dict({row["outcome"]: row["count()"] for row in counted})
