"""What ``mediagate batch`` reads: a list of references, checked before anything is fetched.

INPUT is one of

* a text file, one reference a line (blank lines and lines starting with ``#`` are no
  rows); ``-`` reads the text from standard input;
* CSV (``.csv``) with a header row, JSON Lines (``.jsonl``, ``.ndjson``: one object a
  line) or Parquet (``.parquet``, ``.pq``), the references in column ``--column``
  (default ``url``). A Parquet column may hold the media bytes themselves
  (``binary``); an empty cell or a null is a row without a reference (its outcome
  says so).

The whole input is read once up front, bounded line by line, so a broken file (a
line longer than a reference may be, a NUL byte, text that is not UTF-8, a missing
column, no rows at all) is a :class:`~mediagate._cli_input.UsageError` naming the line,
before the first fetch. That pass also counts the rows and takes the input's
fingerprint (BLAKE3 of its bytes, with the format and column), which lets a rerun
know it is reading the same input. Rows are numbered from 0 in input order; comment
and blank lines of a text file are not rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

from blake3 import blake3

from ._cli_input import UsageError, _text_limit, byte_limit
from ._policy import MediaPolicy

__all__ = ["FORMATS", "BatchInput", "Ref", "open_input"]

#: A reference as the loader takes it: text, the media bytes themselves, or none.
Ref = str | bytes | None

Format = Literal["text", "csv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("text", "csv", "jsonl", "parquet")

_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CHUNK = 1 << 20
#: Room around a reference on a CSV or JSON line (quotes, other fields, keys).
_LINE_SLACK = 64 * 1024
_PARQUET_BATCH = 4096
#: Columns named in a missing-column message.
_SHOWN_COLUMNS = 8


@dataclass(frozen=True)
class _Limits:
    """The longest line: a URL's, or a ``data:`` URL's holding the byte budget."""

    url: int
    data: int


def _limits(policy: MediaPolicy, modality: str) -> _Limits:
    url = policy.max_url_length + _LINE_SLACK
    return _Limits(url=url, data=max(url, _text_limit(policy, byte_limit(policy, modality))))


def _lines(stream: BinaryIO, limits: _Limits, where: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of ``stream`` (from 1, end of line kept off), each read
    at most one byte past its limit.

    Raises:
        UsageError: a line longer than a reference may be.
    """
    number = 0
    while True:
        line = stream.readline(limits.url + 1)
        if not line:
            return
        number += 1
        if len(line) > limits.url and not line.endswith(b"\n"):
            cap = limits.data if b"data:" in line[: limits.url] else limits.url
            rest = stream.readline(cap + 1 - len(line)) if cap > len(line) else b""
            line += rest
            if len(line) > cap and not line.endswith(b"\n"):
                raise UsageError(
                    f"{where} line {number} is longer than {cap} bytes, longer than a "
                    "reference may be (is it a list of references, one a line?)"
                )
        yield number, line.rstrip(b"\r\n")


def _text(raw: bytes, where: str, number: int) -> str:
    if b"\x00" in raw:
        raise UsageError(f"{where} line {number} holds a NUL byte (is it a text file?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where} line {number} is not UTF-8 text") from None


def _text_rows(stream: BinaryIO, limits: _Limits, where: str) -> Iterator[Ref]:
    for number, raw in _lines(stream, limits, where):
        line = _text(raw, where, number).strip()
        if line and not line.startswith("#"):
            yield line


def _jsonl_rows(stream: BinaryIO, limits: _Limits, where: str, column: str) -> Iterator[Ref]:
    for number, raw in _lines(stream, limits, where):
        line = _text(raw, where, number).strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UsageError(f"{where} line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise UsageError(
                f"{where} line {number} is not a JSON object (each line should be one, "
                f'e.g. {{"{column}": "https://..."}})'
            )
        if column not in record:
            raise UsageError(f"{where} line {number} has no {column!r} key (--column NAME)")
        value = record[column]
        if value is not None and not isinstance(value, str):
            raise UsageError(
                f"{where} line {number}: {column!r} is {type(value).__name__}, not a string"
            )
        if value is not None and "\x00" in value:
            raise UsageError(f"{where} line {number}: {column!r} holds a NUL character")
        yield value or None


def _decoded_lines(stream: BinaryIO, limits: _Limits, where: str) -> Iterator[str]:
    for number, raw in _lines(stream, limits, where):
        yield _text(raw, where, number) + "\n"


def _csv_rows(stream: BinaryIO, limits: _Limits, where: str, column: str) -> Iterator[Ref]:
    reader = csv.reader(_decoded_lines(stream, limits, where), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{where} is empty (a CSV file starts with a header row)")
        names = [name.strip() for name in header]
        if column not in names:
            shown = ", ".join(repr(name) for name in names[:_SHOWN_COLUMNS])
            more = ", ..." if len(names) > _SHOWN_COLUMNS else ""
            raise UsageError(
                f"{where} has no column {column!r} (its columns: {shown}{more}; --column NAME)"
            )
        position = names.index(column)
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            value = cells[position].strip() if position < len(cells) else ""
            yield value or None
    except csv.Error as exc:
        raise UsageError(f"{where} line {reader.line_num} is not CSV ({exc})") from None


def _parquet_file(path: Path, where: str, column: str) -> Any:
    """The open ``pyarrow.parquet.ParquetFile``, its column checked.

    Raises:
        UsageError: not Parquet, no such column, or a column of neither text nor bytes.
        ImportError: pyarrow is not installed (naming the extra).
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            "Parquet input and output need pyarrow: pip install 'mediagate[batch]'"
        ) from exc
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{where} is not a Parquet file ({type(exc).__name__})") from None
    schema = parquet.schema_arrow
    if column not in schema.names:
        shown = ", ".join(repr(name) for name in schema.names[:_SHOWN_COLUMNS])
        raise UsageError(f"{where} has no column {column!r} (its columns: {shown}; --column NAME)")
    kind = schema.field(column).type
    if not (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        raise UsageError(
            f"{where}: column {column!r} is {kind}, not strings (references) or binary (media)"
        )
    return parquet


def _parquet_rows(path: Path, where: str, column: str) -> Iterator[Ref]:
    parquet = _parquet_file(path, where, column)
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=[column]):
            for value in batch.column(0).to_pylist():
                yield value if value else None
    except OSError as exc:
        raise UsageError(f"{where} could not be read as Parquet ({type(exc).__name__})") from None
    finally:
        parquet.close()


def _fingerprint(path: Path, kind: Format, column: str) -> str:
    digest = blake3(f"mediagate batch input\0{kind}\0{column}\0".encode())
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BatchInput:
    """An input checked whole: where it is, its format and column, its row count and
    fingerprint. :meth:`rows` reads it again, row by row."""

    path: Path
    where: str
    kind: Format
    column: str
    count: int
    fingerprint: str
    limits: _Limits

    def rows(self) -> Iterator[Ref]:
        """Every row's reference, in input order."""
        if self.kind == "parquet":
            yield from _parquet_rows(self.path, self.where, self.column)
            return
        with self.path.open("rb") as stream:
            if self.kind == "text":
                yield from _text_rows(stream, self.limits, self.where)
            elif self.kind == "jsonl":
                yield from _jsonl_rows(stream, self.limits, self.where, self.column)
            else:
                yield from _csv_rows(stream, self.limits, self.where, self.column)


def _kind(argument: str, asked: str | None) -> Format:
    if asked is not None:
        for kind in FORMATS:
            if kind == asked:
                return kind
        raise UsageError(f"--input-format {asked}: not one of {', '.join(FORMATS)}")
    if argument == "-":
        return "text"
    return _SUFFIXES.get(Path(argument).suffix.lower(), "text")


def _spooled(stdin: IO[bytes], folder: Path) -> Path:
    path = folder / "stdin"
    with path.open("wb") as out:
        shutil.copyfileobj(stdin, out, _CHUNK)
    return path


@contextlib.contextmanager
def open_input(
    argument: str,
    *,
    column: str,
    input_format: str | None,
    policy: MediaPolicy,
    modality: str,
    stdin: IO[bytes] | None = None,
) -> Iterator[BatchInput]:
    """The input ``argument`` names (``-``: standard input, spooled to a private
    temporary file for the run), read through once and checked.

    Raises:
        UsageError: no such file, a directory, an empty input or one with no rows, or
            a line or column that is not what the format needs (the message names it).
        ImportError: Parquet without pyarrow (naming the extra).
    """
    kind = _kind(argument, input_format)
    limits = _limits(policy, modality)
    with contextlib.ExitStack() as stack:
        if argument == "-":
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mediagate-")))
            path = _spooled(stdin if stdin is not None else io.BytesIO(), folder)
            where = "standard input"
        else:
            path = Path(argument)
            where = f"INPUT {argument}"
            if not path.exists():
                raise UsageError(f"{where}: no such file")
            if not path.is_file():
                raise UsageError(f"{where} is not a regular file")
        if path.stat().st_size == 0:
            raise UsageError(f"{where} is empty (it should list one reference a line)")
        if kind == "parquet":
            parquet = _parquet_file(path, where, column)
            count = int(parquet.metadata.num_rows)
            parquet.close()
        else:
            probe = BatchInput(path, where, kind, column, 0, "", limits)
            count = sum(1 for _ in probe.rows())
        if count == 0:
            raise UsageError(f"{where} holds no rows (blank lines and # comments are skipped)")
        yield BatchInput(path, where, kind, column, count, _fingerprint(path, kind, column), limits)
