"""Where ``mediagate batch`` writes: the output folder, its manifest, and the shards.

A shard is written to a hidden temporary file beside its name, flushed to disk and
renamed into place, then recorded in ``DIR/_manifest.json`` (a name Parquet readers skip,
as they skip the hidden temporary files and ``.lock``); the manifest also holds the
identity of the run (input fingerprint, shard size, output format, options). A shard is
finished when the manifest records it and its file is there: one renamed into place
just before an interruption, and not yet recorded, is written again. Temporary files
an interrupted run left are removed when the next run opens the folder, and a lock
file keeps a second run out of a folder in use.

Parquet shards hold the loader's table (``BatchResult.to_arrow``) with ``row`` and
``url`` in front. WebDataset shards hold, per row, ``<key>.json`` (the row's outcome and
metadata; the key is the row number, nine digits) and, for a row that loaded, its media:
an image as ``.png`` (the decoded pixels, lossless), audio as ``.wav`` (32-bit float at
the row's sample rate), video frames as ``.npy`` (N x H x W x C uint8; their metadata in
the JSON) and a tensor as ``.npy`` (its dtype kept).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ._batch_input import Ref
from ._cli_input import UsageError
from ._present import shown_url

__all__ = ["MANIFEST", "SHARD_FORMATS", "OutputFolder", "ShardWriter", "shard_name"]

MANIFEST = "_manifest.json"
_MANIFEST_VERSION = 1
_SUFFIX = {"parquet": ".parquet", "webdataset": ".tar"}
#: The shard formats, by their ``--format`` name.
SHARD_FORMATS = tuple(_SUFFIX)
_SHARD = re.compile(r"^part-(\d{5,})\.(parquet|tar)$")
_TEMPORARY = re.compile(r"^\.part-\d{5,}\.(parquet|tar)\.\d+\.tmp$")


def shard_name(number: int, output_format: str) -> str:
    return f"part-{number:05d}{_SUFFIX[output_format]}"


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a hidden temporary file beside ``path``, flush it to disk, rename it
    into place: ``path`` is either absent or whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        with temporary.open("rb+") as done:
            os.fsync(done.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _is_record(record: object) -> bool:
    """Whether a manifest's shard record is one this module writes."""
    if not isinstance(record, dict):
        return False
    outcomes = record.get("outcomes")
    return isinstance(outcomes, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in outcomes.items()
    )


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = [key for key in new if old.get(key) != new[key]]
    if "input" in changed:
        return "another input (or the input changed)"
    return "other options: " + ", ".join(
        f"--{key.replace('_', '-')}" if key != "format" else "--format" for key in changed
    )


class OutputFolder:
    """DIR: its manifest, its finished shards, and the lock that keeps one run in it."""

    def __init__(self, path: Path, identity: dict[str, Any], overwrite: bool) -> None:
        self.path = path
        self.identity = identity
        self.shards: dict[str, dict[str, Any]] = {}
        self._lock: IO[bytes] | None = None
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path} is not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {self.path}: cannot create it ({exc.strerror})") from None
        self._take_lock()
        try:
            self._resume(overwrite)
        except BaseException:
            self.close()
            raise

    def _resume(self, overwrite: bool) -> None:
        for entry in self.path.iterdir():
            if _TEMPORARY.match(entry.name):
                entry.unlink(missing_ok=True)  # a shard an interrupted run left unfinished
        manifest = self._read_manifest(unreadable_ok=overwrite)
        if manifest is not None and manifest.get("identity") == self.identity:
            if not overwrite:
                self.shards = {
                    name: record
                    for name, record in manifest["shards"].items()
                    if _SHARD.match(name) and _is_record(record) and (self.path / name).is_file()
                }
                return
        elif manifest is not None and not overwrite:
            other = _diff(manifest["identity"], self.identity)
            raise UsageError(
                f"--out {self.path} holds the shards of {other}; rerun with the options "
                "it was written with to resume, or --overwrite to replace it"
            )
        elif manifest is None and not overwrite and any(self._ours()):
            raise UsageError(
                f"--out {self.path} holds shards but no {MANIFEST}; --overwrite replaces them"
            )
        for entry in self._ours():
            entry.unlink()
        self._save()

    def _ours(self) -> Iterator[Path]:
        for entry in self.path.iterdir():
            if _SHARD.match(entry.name) or entry.name == MANIFEST:
                yield entry

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not a POSIX system
            return
        self._lock = (self.path / ".lock").open("ab")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise UsageError(f"--out {self.path}: another mediagate batch is writing it") from None

    def _read_manifest(self, *, unreadable_ok: bool) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = None
        if (
            not isinstance(manifest, dict)
            or manifest.get("version") != _MANIFEST_VERSION
            or not isinstance(manifest.get("identity"), dict)
            or not isinstance(manifest.get("shards"), dict)
        ):
            if unreadable_ok:
                return None
            raise UsageError(
                f"--out {self.path}: {MANIFEST} is damaged or not mediagate's; --overwrite "
                "replaces the folder's shards"
            )
        return manifest

    def _save(self) -> None:
        manifest = {
            "version": _MANIFEST_VERSION,
            "identity": self.identity,
            "shards": dict(sorted(self.shards.items())),
        }
        text = json.dumps(manifest, indent=1)
        _write_atomically(self.path / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))

    def finished(self, name: str, record: dict[str, Any]) -> None:
        """Record shard ``name`` (already in place) as finished."""
        self.shards[name] = record
        self._save()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# -- shards ---------------------------------------------------------------------------


def _shown_ref(ref: Ref) -> str | None:
    if not isinstance(ref, str):
        return None  # media bytes are not copied into the output
    return shown_url(ref) if ref[:5].lower() == "data:" else ref


def _shard_table(result: Any, start: int, refs: Sequence[Ref]) -> Any:
    """The loader's table of rows of one shard, with ``row`` and ``url`` in front."""
    import pyarrow as pa

    table = result.to_arrow()
    rows = [start + row.index for row in result.rows]
    table = table.add_column(
        0, "url", pa.array([_shown_ref(refs[r - start]) for r in rows], pa.string())
    )
    return table.add_column(0, "row", pa.array(rows, pa.int64()))


def _conform(table: Any, schema: Any, path: Path) -> Any:
    """``table`` with ``schema``, the one its shard's file was opened with (list field
    names and nulls may differ between chunks; tensor dtypes and ranks may not).

    Raises:
        UsageError: rows whose columns a Parquet file of ``schema`` cannot hold.
    """
    import pyarrow as pa

    if table.schema.equals(schema):
        return table
    try:
        if table.column_names != schema.names:
            raise pa.ArrowInvalid("other columns")
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        differ = [
            name
            for name in set(table.column_names) | set(schema.names)
            if name not in table.column_names
            or name not in schema.names
            or not table.schema.field(name).type.equals(schema.field(name).type)
        ]
        raise UsageError(
            f"{path.name}: rows of one shard hold {', '.join(sorted(differ))} of different "
            "types (tensors of other dtypes or ranks); one Parquet file holds one type per "
            "column: --format webdataset keeps each row's own, or name the --modality"
        ) from None


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _npy(array: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _media_members(modality: str, media: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """What a loaded row's media adds to its JSON, and its files by extension."""
    import numpy as np

    if modality == "image":
        from PIL import Image

        pixels = np.asarray(media)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]  # one channel: a greyscale PNG
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return {"shape": list(pixels.shape)}, {"png": buffer.getvalue()}
    if modality == "audio":
        import soundfile

        samples, rate = media
        buffer = io.BytesIO()
        soundfile.write(buffer, np.asarray(samples, np.float32), int(rate), "FLOAT", format="WAV")
        return {"sample_rate": int(rate), "num_samples": len(samples)}, {"wav": buffer.getvalue()}
    if modality == "video":
        frames, metadata = media
        return {"shape": list(np.shape(frames)), "video_metadata": _json_ready(metadata)}, {
            "npy": _npy(frames)
        }
    array = media.numpy() if hasattr(media, "numpy") else np.asarray(media)
    return {"shape": list(array.shape), "dtype": str(array.dtype)}, {"npy": _npy(array)}


def _add_members(tar: tarfile.TarFile, result: Any, start: int, refs: Sequence[Ref]) -> None:
    for row in result.rows:
        number = start + row.index
        record: dict[str, Any] = {
            "row": number,
            "url": _shown_ref(refs[row.index]),
            "modality": row.modality,
            "error_type": row.error_type,
            "error": row.error,
            "http_status": row.http_status,
            "num_bytes": row.num_bytes,
            "fetch_s": round(row.fetch_s, 6),
            "decode_s": round(row.decode_s, 6),
            "cached": row.cached,
        }
        files: dict[str, bytes] = {}
        if row.error_type is None and row.media is not None:
            extra, files = _media_members(str(row.modality), row.media)
            record.update(extra)
        members = {"json": json.dumps(record).encode(), **files}
        for extension, data in members.items():
            info = tarfile.TarInfo(f"{number:09d}.{extension}")
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """One shard being written: chunks of its rows appended, as they are loaded, to a
    hidden temporary file (a Parquet row group or tar members each), which
    :meth:`commit` flushes to disk and renames into place and :meth:`abort` removes.

    Args:
        path: the shard's final name.
        output_format: ``parquet`` or ``webdataset``.
        start: the input row of the shard's first reference.
        refs: the shard's references (``RowResult.index`` points into them).
    """

    def __init__(self, path: Path, output_format: str, start: int, refs: Sequence[Ref]) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.output_format = output_format
        self.start = start
        self.refs = refs
        #: Rows written so far.
        self.rows = 0
        self._parquet: Any = None
        self._tar: tarfile.TarFile | None = None
        if output_format == "webdataset":
            # Closed by commit() or abort().
            self._tar = tarfile.open(self.temporary, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def add(self, result: Any) -> None:
        """Append the rows of ``result`` (a ``BatchResult`` of some of the shard's rows;
        a Parquet shard needs one call, if only of no rows, to know its columns)."""
        self.rows += len(result.rows)
        if self._tar is not None:
            _add_members(self._tar, result, self.start, self.refs)
            return
        import pyarrow.parquet as pq

        table = _shard_table(result, self.start, self.refs)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.temporary, table.schema)
        else:
            table = _conform(table, self._parquet.schema, self.path)
        self._parquet.write_table(table)

    def commit(self) -> None:
        """Finish the file, flush it to disk and rename it into place."""
        self._close()
        with self.temporary.open("rb+") as done:
            os.fsync(done.fileno())
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(Exception):
            self._close()
        self.temporary.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
