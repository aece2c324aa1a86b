"""``mediagate batch INPUT --out DIR``: load a list of references into shards on one machine.

The rows of INPUT (see ``_batch_input``) are cut into shards of ``--shard-size`` input
rows; shard ``k`` holds rows ``k * size`` to ``(k + 1) * size - 1`` (fewer with
``--drop-failed``) and is written as ``DIR/part-0000k.parquet`` or, with
``--format webdataset``, ``DIR/part-0000k.tar``. Every row keeps its input index in
column ``row``, with its reference (``url``; a ``data:`` URL shortened, media bytes
left out), the decoded columns of the batch loader and its outcome (``error_type``
null when it loaded, ``error``, ``http_status``, ``num_bytes``, ``fetch_s``,
``decode_s``).

Shards are written atomically and recorded in ``DIR/_manifest.json`` with what
identifies the run (see ``_batch_output``): a rerun with the same input and options
skips the finished shards and writes the rest, so an interrupted run resumes where it
stopped. A folder holding another input's or other options' shards is a usage error
unless ``--overwrite``. The network, time and size policy is not part of the identity,
so a rerun may, say, raise ``--timeout``.

The run's progress (rows done, rate, time left, failures) is drawn on standard error
when it is a terminal or with ``--progress``: a tqdm bar when tqdm is installed
(``mediagate[progress]``), else a line every few seconds. The summary (outcome, count,
share) goes to standard error at the end; ``--json`` prints it on standard output as
one JSON object. A run that writes every shard exits 0 however many rows failed (their
outcomes are in the output); usage errors exit 2 before anything is fetched.

Ctrl-C (SIGINT) ends the run with ``KeyboardInterrupt`` (exit 130 from the command
line) wherever it lands: during a load it cancels the load at the event loop's next
turn, which stops the fetches, drops the shard being written and keeps the finished
ones; a second Ctrl-C stops without waiting for that.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TextIO, TypeVar

from ._batch_input import FORMATS, BatchInput, Ref, open_input
from ._batch_output import SHARD_FORMATS, OutputFolder, ShardWriter, shard_name
from ._cache import MediaCache
from ._connector import MediaConnector
from ._modalities import modality_name
from ._policy import MediaPolicy

__all__ = ["BatchSettings", "add_batch_parser", "run_batch"]

_IMAGE_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
_T = TypeVar("_T")
#: The media columns every shard of a ``--modality auto`` run has (null where a row is
#: something else); a tensor column is added only by an embedding modality.
_AUTO_COLUMNS = ("image", "audio", "video")
#: Input rows loaded as one group (several shards, their references held at once):
#: loading goes on across the shards of a group and drains only at its end.
_GROUP_ROWS = 16384
#: Rows of one load of the loader's (fewer of video, whose rows are large), and how
#: many such loads run at once (at most; never more than --max-in-flight). Each load
#: is taken whole as soon as the loader has it (``BatchLoader.iter_load_async`` paused
#: between chunks until every row it started is done fails on the next chunk).
_SLICE_ROWS = 64
_SLICE_ROWS_VIDEO = 8
#: Slices loaded or loading at once (waiting to be written in order behind a slow one).
_SLICES_AHEAD = 16
_SLICES_AHEAD_VIDEO = 8
_SLICES_AT_ONCE = 4
#: Seconds an interrupted load may take to unwind before the run stops anyway.
_UNWIND_S = 5.0
#: Seconds between two plain progress lines.
_PROGRESS_EVERY = 2.0

_EXAMPLES = """\
INPUT:
  urls.txt         one reference a line (blank lines and # comments skipped)
  rows.csv         CSV with a header row; --column names the column (default url)
  rows.jsonl       one JSON object a line, the reference under --column
  rows.parquet     a Parquet column of references (strings) or of media (binary)
  -                reference lines from standard input

examples:
  mediagate batch urls.txt --out shards/
  mediagate batch rows.parquet --column image_url --modality image --image-size 224x224 \\
      --out shards/ --shard-size 5000 --workers 8
  mediagate batch clips.csv --modality video --media-io-kwargs '{"num_frames": 8}' \\
      --format webdataset --out wds/ --drop-failed
  rerun the same command to resume an interrupted run (finished shards are kept)

Exit codes: 0 every shard written (failed rows are in the output), 2 usage error or
missing extra, 3 internal fault, 130 interrupted (rerun to resume).
"""


# -- arguments ------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _image_size(text: str) -> tuple[int, int]:
    match = _IMAGE_SIZE.match(text)
    if match is None or not all(int(side) > 0 for side in match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT (e.g. 224x224)")
    return int(match.group(1)), int(match.group(2))


def add_batch_parser(
    sub: Any,
    *,
    formatter: type[argparse.HelpFormatter],
    description: str,
    media_io_help: str,
    modalities: Sequence[str],
    policy_arguments: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    """Add ``batch`` to the subcommands ``sub``, with the policy options of ``fetch``
    (``policy_arguments`` adds them); ``media_io_help`` ends the help."""
    batch: argparse.ArgumentParser = sub.add_parser(
        "batch",
        help="load a list of references into Parquet or WebDataset shards "
        "(mediagate batch urls.txt --out shards/)",
        description=description,
        epilog=_EXAMPLES + "\n" + media_io_help,
        formatter_class=formatter,
    )
    batch.add_argument(
        "input",
        metavar="INPUT",
        help="a text file of references, CSV, JSONL or Parquet, or - (standard input)",
    )
    batch.add_argument(
        "--out", required=True, metavar="DIR", help="the folder shards go to (--out shards/)"
    )
    batch.add_argument(
        "--column",
        default="url",
        metavar="NAME",
        help="the column of CSV, JSONL or Parquet input holding the references "
        "(default url; --column image_url)",
    )
    batch.add_argument(
        "--input-format",
        choices=FORMATS,
        default=None,
        help="how INPUT is read (default: by its suffix, text otherwise; --input-format jsonl)",
    )
    batch.add_argument(
        "--format",
        choices=SHARD_FORMATS,
        default="parquet",
        help="shard format (default parquet; --format webdataset writes tar shards)",
    )
    batch.add_argument(
        "--shard-size",
        type=_positive,
        default=1000,
        metavar="N",
        help="input rows per shard (default 1000; --shard-size 5000)",
    )
    batch.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shards in DIR from another input or other options (--overwrite)",
    )
    batch.add_argument(
        "--modality",
        choices=modalities,
        default="auto",
        help="decode every row as this (default auto: what each row's content is; "
        "--modality image)",
    )
    batch.add_argument(
        "--image-size",
        type=_image_size,
        default=None,
        metavar="WxH",
        help="fit every image inside WxH, padded to that shape (--image-size 224x224)",
    )
    batch.add_argument(
        "--drop-failed",
        action="store_true",
        help="leave rows that failed out of the shards; the summary still counts them "
        "(--drop-failed)",
    )
    batch.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="decode workers (default: the connector's, MEDIAGATE_DECODE_WORKERS; --workers 8)",
    )
    batch.add_argument(
        "--max-in-flight",
        type=_positive,
        default=None,
        metavar="N",
        help="fetches in progress at once (default 16; --max-in-flight 64)",
    )
    policy_arguments(batch)
    batch.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw progress on standard error (default: when it is a terminal; --progress "
        "in a log, --no-progress on a terminal)",
    )
    batch.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object (--json)"
    )
    return batch


# -- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchSettings:
    """What the command line resolved from the options and the environment: the policy
    (allowed folder and domains in it), the per-modality options, the cache and the
    decode workers, as a ``MediaConnector`` built from them holds them."""

    policy: MediaPolicy
    media_io_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cache: MediaCache | None = None
    max_workers: int | None = None

    @classmethod
    def of(cls, connector: MediaConnector) -> BatchSettings:
        """The settings ``connector`` was built with."""
        return cls(
            policy=connector.policy,
            media_io_kwargs=connector.media_io_kwargs,
            cache=connector.cache,
            max_workers=connector.max_workers,
        )


def _identity(
    args: argparse.Namespace, source: BatchInput, settings: BatchSettings
) -> dict[str, Any]:
    """What a rerun must share with the run that wrote DIR to continue it."""
    return {
        "input": {
            "fingerprint": source.fingerprint,
            "format": source.kind,
            "column": source.column,
            "rows": source.count,
        },
        "shard_size": args.shard_size,
        "format": args.format,
        "modality": modality_name(args.modality) if args.modality != "auto" else "auto",
        "media_io_kwargs": json.loads(json.dumps(settings.media_io_kwargs, sort_keys=True)),
        "image_size": list(args.image_size) if args.image_size else None,
        "drop_failed": bool(args.drop_failed),
    }


# -- progress and summary -------------------------------------------------------------


class _Progress:
    """Rows done out of the total, the rate, the time left and the failures so far."""

    def __init__(self, total: int, kept: int, enabled: bool, stream: TextIO) -> None:
        self.total = total
        self.done = kept  # rows an earlier run finished: done, not part of the rate
        self.failed = 0
        self.enabled = enabled
        self.stream = stream
        self._start = time.monotonic()
        self._counted = 0
        self._last = 0.0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(
                    total=total,
                    initial=kept,
                    unit="row",
                    file=stream,
                    dynamic_ncols=True,
                    smoothing=0.1,
                )

    def advance(self, rows: int, failed: int) -> None:
        self.done += rows
        self._counted += rows
        self.failed += failed
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(rows)
        elif self.enabled and time.monotonic() - self._last >= _PROGRESS_EVERY:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        elapsed = max(self._last - self._start, 1e-9)
        rate = self._counted / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 else "?"
        share = 100 * self.done / self.total if self.total else 100.0
        print(
            f"mediagate: {self.done}/{self.total} rows ({share:.0f}%), {rate:.1f} rows/s, "
            f"ETA {eta}, {self.failed} failed",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._line()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


# -- the run --------------------------------------------------------------------------


def _shards(rows: Iterator[Ref], size: int) -> Iterator[list[Ref]]:
    shard: list[Ref] = []
    for ref in rows:
        shard.append(ref)
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


@dataclass
class _Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    written: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    rows_kept: int = 0


def run_batch(
    args: argparse.Namespace, settings: BatchSettings, *, stdin: IO[bytes] | None = None
) -> int:
    """Run ``mediagate batch`` with the parsed ``args``; 0 when every shard is written.

    Raises:
        UsageError: a bad input, a folder that holds another run, a folder in use.
        ImportError: pyarrow (or an extra a row needs) is not installed, naming the extra.
    """
    from ._batch import BatchLoader, BatchOptions

    started = time.monotonic()
    if args.format == "parquet":
        _need_pyarrow()
    modality = modality_name(args.modality) if args.modality != "auto" else "auto"
    # Failed rows are kept by the loader and dropped when written, so that each shard
    # counts its own.
    in_flight = args.max_in_flight or BatchOptions().max_in_flight
    slices = min(_SLICES_AT_ONCE, in_flight)
    options = BatchOptions(
        modality=modality,
        media_io_kwargs=settings.media_io_kwargs or None,
        image_size=args.image_size,
        # The fetches of one slice of rows: `slices` of them load at a time.
        max_in_flight=in_flight // slices,
    )
    if args.input == "-" and stdin is not None and stdin.isatty():
        print(
            "mediagate: reading references from the terminal, one a line (end with Ctrl-D)",
            file=sys.stderr,
        )
    with open_input(
        args.input,
        column=args.column,
        input_format=args.input_format,
        policy=settings.policy,
        modality=args.modality,
        stdin=stdin,
    ) as source:
        folder = OutputFolder(Path(args.out), _identity(args, source, settings), args.overwrite)
        tally = _Tally()
        shown = args.progress if args.progress is not None else sys.stderr.isatty()
        kept = sum(
            min(args.shard_size, source.count - start)
            for start in range(0, source.count, args.shard_size)
            if shard_name(start // args.shard_size, args.format) in folder.shards
        )
        progress = _Progress(source.count, kept, bool(shown), sys.stderr)
        run = _Run(args, options, slices, folder, tally, progress)
        loop = asyncio.new_event_loop()
        # Around the cleanup too: a Ctrl-C it swallows still ends the run as interrupted.
        with _Interrupts(loop) as interrupts:
            try:
                with BatchLoader(settings.policy, options, settings.cache) as loader:
                    if settings.max_workers is not None:
                        # The decode pool is made on first use, of the connector's size.
                        loader.connector.max_workers = settings.max_workers
                    for group in _groups(source, args.shard_size, args.format, folder, tally):
                        _run_to_end(loop, run.load(loader, group), interrupts)
            finally:
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), _UNWIND_S))
                interrupts.unwatch()
                loop.close()
                progress.close()
                folder.close()
        _summarize(args, source, tally, time.monotonic() - started)
    return 0


def _need_pyarrow() -> None:
    """Parquet output needs pyarrow: said before anything is fetched.

    Raises:
        ImportError: it is not installed (naming the extra).
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "Parquet output needs pyarrow: pip install 'mediagate[batch]' (or --format webdataset)"
        ) from exc


@dataclass(frozen=True)
class _Shard:
    name: str
    start: int
    refs: list[Ref]


def _groups(
    source: BatchInput, size: int, output_format: str, folder: OutputFolder, tally: _Tally
) -> Iterator[list[_Shard]]:
    """The shards still to write, a few at a time (``_GROUP_ROWS``): loading goes on
    across the shards of a group, so a slow row holds back the end of a group, not of
    each shard. Finished shards are counted in ``tally`` as they are passed."""
    group: list[_Shard] = []
    rows = 0
    for number, refs in enumerate(_shards(source.rows(), size)):
        name = shard_name(number, output_format)
        finished = folder.shards.get(name)
        if finished is not None:
            tally.outcomes.update(finished["outcomes"])
            tally.shards_kept += 1
            tally.rows_kept += len(refs)
            continue
        group.append(_Shard(name, number * size, refs))
        rows += len(refs)
        if rows >= _GROUP_ROWS:
            yield group
            group, rows = [], 0
    if group:
        yield group


class _Interrupts:
    """Ctrl-C while ``run_batch`` runs (on the main thread, where SIGINT was Python's
    default): during a load (``task``) the first one cancels it on ``loop``, where its
    fetches, decodes and the shard being written unwind at an ``await``; elsewhere, or
    a second time, it raises ``KeyboardInterrupt`` as Python would. ``count`` says one
    came, so a load that ended anyway, or an interrupt a cleanup swallowed, still ends
    the run as interrupted.

    SIGINT may be taken by a thread other than the main one (a fetch, decode or writer
    thread, a native library's), and the main thread runs its handler only once it
    wakes; the signal's wakeup byte goes to a socket the loop watches, so a loop
    waiting in ``select`` wakes at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.count = 0
        #: The load running on ``loop``, if any.
        self.task: asyncio.Task[None] | None = None
        self._installed = False
        self._previous: Any = None
        self._previous_wakeup = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return self  # ignored (a background job) or someone else's: left as it is
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._sockets = reader, writer
        self._previous = signal.signal(signal.SIGINT, self._on_signal)
        self._installed = True
        self._previous_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self.loop.add_reader(reader.fileno(), self._drain)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.set_wakeup_fd(self._previous_wakeup)
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        self.unwatch()
        if self._sockets is not None:
            for end in self._sockets:
                end.close()
            self._sockets = None
        if self.count and exc_type is None:
            raise KeyboardInterrupt

    def unwatch(self) -> None:
        """Stop the loop watching the wakeup socket (before the loop is closed)."""
        if self._sockets is not None and not self.loop.is_closed():
            self.loop.remove_reader(self._sockets[0].fileno())

    def _drain(self) -> None:
        assert self._sockets is not None
        with contextlib.suppress(OSError):
            while self._sockets[0].recv(512):
                pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        task = self.task
        if self.count == 1 and task is not None and not task.done() and not self.loop.is_closed():
            # Not from inside the handler, which may have stopped the loop mid-step.
            self.loop.call_soon_threadsafe(task.cancel)
            return
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C came."""
        if self.count:
            raise KeyboardInterrupt


def _run_to_end(
    loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None], interrupts: _Interrupts
) -> None:
    """``work`` run to its end on ``loop``; on Ctrl-C it is cancelled and waited for
    (its fetches and decodes unwound, the shard being written dropped) before
    ``KeyboardInterrupt`` is raised; a second Ctrl-C stops the wait."""
    task = loop.create_task(work)
    interrupts.task = task
    try:
        loop.run_until_complete(task)
    except BaseException as exc:
        if not task.done() and interrupts.count < 2:
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.wait([task], timeout=_UNWIND_S))
        if interrupts.count or isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        interrupts.task = None
    interrupts.check()


class _Run:
    """Loads groups of shards and writes each shard as its rows come back."""

    def __init__(
        self,
        args: argparse.Namespace,
        options: Any,
        slices: int,
        folder: OutputFolder,
        tally: _Tally,
        progress: _Progress,
    ) -> None:
        self.slices = slices
        self.output_format: str = args.format
        self.drop_failed = bool(args.drop_failed)
        self.options = options
        # Every shard has the same columns, so that the folder reads as one dataset.
        self.modalities = _AUTO_COLUMNS if options.modality == "auto" else (options.modality,)
        self.folder = folder
        self.tally = tally
        self.progress = progress

    async def load(self, loader: Any, group: list[_Shard]) -> None:
        """Load the rows of ``group`` and write each shard as its rows come back (a
        writer thread writes while fetching goes on), putting each shard in place once
        its last row is written.

        The rows are loaded in slices of at most ``_SLICE_ROWS``, ``self.slices`` of them
        at a time (``--max-in-flight`` is split between them); each slice is one load
        of the loader's, taken whole as soon as it is ready. Slices are written in
        order, and up to ``_SLICES_AHEAD`` of them may be loaded or loading at once, so
        a slow row holds back its slice while the next ones go on, and what a run holds
        is at most that many slices of decoded rows.
        """
        refs = [ref for shard in group for ref in shard.refs]
        video = self.options.modality == "video"
        size = min(_SLICE_ROWS_VIDEO if video else _SLICE_ROWS, -(-len(refs) // self.slices))
        ahead = _SLICES_AHEAD_VIDEO if video else _SLICES_AHEAD
        loop = asyncio.get_running_loop()
        writer = _GroupWriter(self, group)
        slices: collections.deque[tuple[int, asyncio.Task[Any]]] = collections.deque()
        offset = 0
        with ThreadPoolExecutor(1, thread_name_prefix="mediagate-shard") as pool:
            try:
                while slices or offset < len(refs):
                    running = sum(not task.done() for _, task in slices)
                    while running < self.slices and len(slices) < ahead and offset < len(refs):
                        part = refs[offset : offset + size]
                        slices.append((offset, loop.create_task(loader.load_async(part))))
                        offset += len(part)
                        running += 1
                    first, head = slices[0]
                    if not head.done():
                        busy = {task for _, task in slices if not task.done()}
                        await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    slices.popleft()
                    result = head.result()
                    rows = [replace(row, index=row.index + first) for row in result.rows]
                    await loop.run_in_executor(pool, writer.write, rows)
                    self.progress.advance(len(rows), sum(not row.ok for row in rows))
            except BaseException:
                for _, task in slices:
                    task.cancel()
                await asyncio.gather(*(task for _, task in slices), return_exceptions=True)
                # After the rows being written, if any: the pool runs one thing at a time.
                pool.submit(writer.abort).result()
                raise

    def result(self, rows: list[Any]) -> Any:
        """``rows`` as the loader's result for a shard file (failed ones left out with
        ``--drop-failed``), with the run's columns."""
        from ._batch import BatchResult, Outcomes

        if self.drop_failed:
            rows = [row for row in rows if row.ok]
        outcomes = Outcomes.of(row.outcome for row in rows)
        return BatchResult(rows, outcomes, self.options.image_size, modalities=self.modalities)

    def finished(self, shard: _Shard, outcomes: Counter[str], written: int) -> None:
        """Record ``shard`` (in place) in the manifest and the tally."""
        counts = dict(outcomes.most_common())
        self.folder.finished(
            shard.name,
            {
                "rows": [shard.start, shard.start + len(shard.refs)],
                "written": written,
                "outcomes": counts,
            },
        )
        self.tally.outcomes.update(counts)
        self.tally.written += written
        self.tally.shards_written += 1


class _GroupWriter:
    """The shards of one group, written in order as consecutive rows come in (in the
    writer thread)."""

    def __init__(self, run: _Run, group: list[_Shard]) -> None:
        self.run = run
        self.group = group
        self.ends = list(itertools.accumulate(len(shard.refs) for shard in group))
        self.current = 0
        self.seen = 0
        self.outcomes: Counter[str] = Counter()
        self.writer = self._writer(group[0])

    def _writer(self, shard: _Shard) -> ShardWriter:
        path = self.run.folder.path / shard.name
        return ShardWriter(path, self.run.output_format, shard.start, shard.refs)

    def write(self, rows: list[Any]) -> None:
        """Append ``rows`` (the next ones, indexed in the group) to their shards, putting
        each shard in place when its last row is in."""
        while rows:
            shard = self.group[self.current]
            end = self.ends[self.current]
            take = bisect.bisect_left([row.index for row in rows], end)
            base = end - len(shard.refs)
            piece = [replace(row, index=row.index - base) for row in rows[:take]]
            rows = rows[take:]
            self.outcomes.update(row.outcome for row in piece)
            self.writer.add(self.run.result(piece))
            self.seen += len(piece)
            if self.seen == len(shard.refs):
                self.writer.commit()
                self.run.finished(shard, self.outcomes, self.writer.rows)
                self.current, self.seen, self.outcomes = self.current + 1, 0, Counter()
                if self.current < len(self.group):
                    self.writer = self._writer(self.group[self.current])

    def abort(self) -> None:
        """Drop the shard being written."""
        self.writer.abort()


def _summarize(args: argparse.Namespace, source: BatchInput, tally: _Tally, elapsed: float) -> None:
    from ._batch import Outcomes

    fetched = source.count - tally.rows_kept
    print(Outcomes.from_dict(tally.outcomes).table(), file=sys.stderr)
    kept = (
        f"; {tally.shards_kept} finished shard(s) of {tally.rows_kept} rows kept from an "
        "earlier run"
        if tally.shards_kept
        else ""
    )
    if fetched:
        rate = fetched / max(elapsed, 1e-9)
        said = (
            f"mediagate: loaded {fetched} rows in {elapsed:.1f} s ({rate:.1f} rows/s) into "
            f"{tally.shards_written} shard(s) in {args.out}{kept}"
        )
    else:
        said = f"mediagate: nothing left to load in {args.out}{kept}"
    print(said, file=sys.stderr)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "out": str(args.out),
                    "format": args.format,
                    "rows": source.count,
                    "rows_loaded": fetched,
                    "rows_written": tally.written,
                    "rows_kept": tally.rows_kept,
                    "shards_written": tally.shards_written,
                    "shards_kept": tally.shards_kept,
                    "outcomes": dict(tally.outcomes),
                    "elapsed_s": round(elapsed, 3),
                }
            )
        )
