"""BatchLoader: a column of references in, decoded rows and their outcomes out.

One loader per process (or Ray actor) owns one ``MediaConnector``, so every row runs
under the same guard, limits, samplers and cache as the server path. Within a batch,
fetches are async and concurrent (at most ``max_in_flight`` at once, in row order);
decodes run in the connector's worker pool, each admitted by the batch's
``DecodeGate`` only when its worst case fits what is left of ``max_decoded_bytes``.
Rows are handed back in order, in chunks (``iter_load``) or all at once (``load``).

A decode reserves its worst case: for an image, width x height x 4 from its header
(plus the letterboxed copy); for other media, the modality's decoded-output cap (the
policy's, lowered to ``max_decoded_bytes``). At most ``max(64, 4 * max_in_flight)``
rows are under way at once, so fetched bytes waiting for a decode are bounded too.
While a row whose worst case is the whole budget (``"auto"`` or video, before its
bytes arrive) is still fetching, later rows fetch but do not start decoding.

Bad input never raises: each ``MediaError`` becomes its row's outcome. What raises is
a fault of the loader itself (a closed loader, a call from inside a running event
loop, a bug).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .._cache import MediaCache
from .._connector import MediaConnector, _head
from .._errors import FetchError, MediaError, PolicyError, TooLargeError
from .._media.base import MediaIO, MediaWithBytes
from .._media.budget import DecodedBudget, decoded_size
from .._media.image import _open_plugin, sniff_image_format
from .._modalities import guess_modality, reference_modality
from .._policy import MODALITIES, MediaPolicy
from .._sources import SourceResult
from .._urls import ParsedURL
from .gate import DecodeGate
from .options import BatchOptions
from .results import BatchResult, Outcomes, RowResult

__all__ = ["BatchLoader", "Reference"]

#: What one row of the reference column may hold.
Reference = str | bytes | bytearray | memoryview | None


_DEFAULT_OPTIONS = BatchOptions()


class _RowShare(DecodedBudget):
    """The room one row was admitted with: its decode may not produce more."""

    limit_name = "batch loader's decoded budget (BatchOptions.max_decoded_bytes)"


@dataclass
class _Job:
    """One row, judged and ready to fetch (``ref``) or already in hand (``inline``)."""

    ref: ParsedURL | None
    inline: SourceResult | None
    url: str
    limit: int
    timeout: float


def _looks_like_url(text: str) -> bool:
    scheme, sep, _ = text[:64].partition(":")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum()


class BatchLoader:
    """Load a column of media references into decoded rows, with per-row outcomes.

    Example::

        with BatchLoader(MediaPolicy(), BatchOptions(modality="image")) as loader:
            result = loader.load(["https://example.com/a.jpg", "https://example.com/b.png"])
        result.outcomes.as_dict()        # {"ok": 2}

    Args:
        policy: limits and network rules for every row (default ``MediaPolicy()``).
        options: how rows are decoded and how much runs at once.
        cache: a ``MediaCache``, or a folder for one (several processes may share it).

    Raises:
        OptionError: ``options.media_io_kwargs`` names an unknown modality or option.
    """

    def __init__(
        self,
        policy: MediaPolicy | None = None,
        options: BatchOptions = _DEFAULT_OPTIONS,
        cache: MediaCache | str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(options, BatchOptions):
            raise TypeError("options must be a BatchOptions")
        if isinstance(cache, (str, os.PathLike)):
            cache = MediaCache(cache)
        self.options = options
        self.connector = MediaConnector(
            options.media_io_kwargs, policy=policy, cache=cache, max_in_flight=None
        )
        self.policy = self.connector.policy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._closed = False
        #: The most decoded bytes the last batch held at once (reserved or not handed back).
        self.peak_decoded_bytes = 0

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connector (connection pools, worker pool) and the loader's loop."""
        if self._closed:
            return
        self._closed = True
        self.connector.close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this BatchLoader is closed")

    # -- the blocking face ----------------------------------------------------------------

    def _own_loop(self) -> asyncio.AbstractEventLoop:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "BatchLoader.load blocks; inside a running event loop use load_async"
            )
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def iter_load(self, refs: Sequence[Reference]) -> Iterator[BatchResult]:
        """``refs`` loaded and handed back in order, in chunks; the next chunk is worked
        on only while this iterator is pulled, and never more than ``max_decoded_bytes``
        of decoded rows is held before it is handed back."""
        self._check_open()
        with self._lock:
            loop = self._own_loop()
            chunks = self.iter_load_async(refs)
            step: asyncio.Future[BatchResult] | None = None
            try:
                while True:
                    step = asyncio.ensure_future(chunks.__anext__(), loop=loop)
                    try:
                        chunk = loop.run_until_complete(step)
                    except StopAsyncIteration:
                        return
                    yield chunk
            finally:
                if step is not None and not step.done():
                    # Interrupted inside a step (Ctrl-C): the generator is still running;
                    # cancelling the step lets it cancel its rows and end.
                    step.cancel()
                    loop.run_until_complete(asyncio.gather(step, return_exceptions=True))
                loop.run_until_complete(chunks.aclose())

    def load(self, refs: Sequence[Reference]) -> BatchResult:
        """Every row of ``refs`` at once, in order (see ``iter_load`` for a bounded
        hand-back). Never raises for bad input: each row carries its outcome."""
        return _joined(list(self.iter_load(refs)), self.options)

    # -- the async face -------------------------------------------------------------------

    async def load_async(self, refs: Sequence[Reference]) -> BatchResult:
        """The async twin of ``load``: never blocks the running event loop."""
        chunks = [chunk async for chunk in self.iter_load_async(refs)]
        return _joined(chunks, self.options)

    async def iter_load_async(self, refs: Sequence[Reference]) -> AsyncGenerator[BatchResult, None]:
        """The async twin of ``iter_load``."""
        self._check_open()
        refs = list(refs)
        total = len(refs)
        options = self.options
        gate = DecodeGate(options.max_decoded_bytes)
        slots = asyncio.Semaphore(options.max_in_flight)
        window = max(64, 4 * options.max_in_flight)
        tasks: dict[int, asyncio.Task[RowResult]] = {}
        started = done = 0
        pending: list[RowResult] = []
        try:
            while done < total:
                while started < min(total, done + window):
                    gate.expect(started, self._upper(refs[started]))
                    tasks[started] = asyncio.ensure_future(
                        self._row(started, refs[started], gate, slots)
                    )
                    started += 1
                while done < started and tasks[done].done():
                    pending.append(tasks.pop(done).result())
                    done += 1
                if pending and (done == total or gate.starved or len(pending) >= 4 * window):
                    held = sum(row.decoded_bytes for row in pending)
                    chunk, pending = pending, []
                    await gate.hand_back(held)
                    yield _chunk(chunk, options)
                    continue
                if done == total:
                    break
                if done == started:
                    # Every started row is handed back (the consumer took its time):
                    # start the next ones.
                    continue
                changed = asyncio.ensure_future(gate.wait_for_change())
                try:
                    await asyncio.wait({tasks[done], changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
        finally:
            self.peak_decoded_bytes = gate.peak
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)

    # -- one row --------------------------------------------------------------------------

    def _candidates(self, url: str) -> list[str]:
        modality = self.options.modality
        if modality != "auto":
            return [modality]
        named = reference_modality(url) if url else None
        return [named] if named is not None else list(MODALITIES)

    def _upper(self, ref: Reference) -> int:
        """The most decoded bytes row ``ref`` may need (before anything is known of it)."""
        modality = self.options.modality
        names = [modality] if modality != "auto" else list(MODALITIES)
        return min(
            self.options.max_decoded_bytes,
            max(self.policy.max_decoded_bytes_for(name) for name in names),
        )

    def _prepare(self, ref: Reference) -> _Job:
        """Judge ``ref`` with every rule that needs no I/O."""
        policy = self.policy
        modality = self.options.modality
        if ref is None:
            raise PolicyError("the reference is null", http_status=400)
        if isinstance(ref, (bytes, bytearray, memoryview)):
            limit = max(policy.max_bytes_for(name) for name in self._candidates(""))
            if len(ref) > limit:
                raise TooLargeError.over_max_bytes("the media bytes", len(ref), limit)
            return _Job(None, SourceResult(data=bytes(ref)), "", limit, 0.0)
        if not isinstance(ref, str):
            raise PolicyError("a reference must be a string or bytes", http_status=400)
        if modality.endswith("_embedding") and not _looks_like_url(ref):
            limit = policy.max_bytes_for(modality)
            inline = self.connector._checked(SourceResult(base64=ref), limit)
            return _Job(None, inline, "", limit, 0.0)
        parsed = self.connector._parse(ref)
        self.connector._start(parsed)
        names = self._candidates(parsed.url)
        limit = max(policy.max_bytes_for(name) for name in names)
        timeout = max(policy.timeout_for(name) for name in names)
        return _Job(parsed, None, parsed.url, limit, timeout)

    def _pick(self, job: _Job, fetched: SourceResult) -> tuple[MediaIO[Any], int]:
        """The ``MediaIO`` for what was fetched, held to its modality's byte budget, and
        the most its decode may produce (see ``_estimate``)."""
        modality = self.options.modality
        if modality == "auto":
            modality = guess_modality(job.url, _head(fetched))
        request: dict[str, Any] | None = None
        image_options = self.connector.media_io_kwargs.get("image", {})
        if (
            modality == "image"
            and self.options.image_size
            and "max_image_size" not in image_options
        ):
            # Decoding straight to about the fitted size (JPEG's reduced DCT scales).
            request = {"max_image_size": list(self.options.image_size)}
        media_io = self.connector.media_io(modality, request)
        self.connector._checked(fetched, self.policy.max_bytes_for(media_io.modality))
        cap = min(
            self.policy.max_decoded_bytes_for(media_io.modality), self.options.max_decoded_bytes
        )
        return media_io, min(cap, self._estimate(media_io.modality, fetched, cap))

    def _estimate(self, modality: str, fetched: SourceResult, cap: int) -> int:
        """The most a decode of ``fetched`` may hold, from its header where that is cheap
        to read (images: width x height x 4, the most the image decoder stores per pixel,
        plus the letterboxed copy); ``cap`` where it is not."""
        if modality != "image" or fetched.base64 is not None:
            return cap
        data = bytes(fetched.data)
        fmt = sniff_image_format(data[:64])
        if fmt is None:
            return cap
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                width, height = _open_plugin(data, fmt).size
        except Exception:
            return cap
        fitted = 0
        if self.options.image_size is not None:
            fitted = 4 * self.options.image_size[0] * self.options.image_size[1]
        return 4 * int(width) * int(height) + fitted + 4096

    def _decode(self, media_io: MediaIO[Any], fetched: SourceResult) -> Any:
        """Decode (in a pool thread) and make the media model-ready."""
        if fetched.base64 is not None:
            media = media_io.load_base64(fetched.content_type or "", fetched.base64)
        else:
            media = media_io.load_bytes(bytes(fetched.data))
        return model_ready(media_io.modality, media, self.options.image_size)

    async def _row(
        self, index: int, ref: Reference, gate: DecodeGate, slots: asyncio.Semaphore
    ) -> RowResult:
        connector = self.connector
        row = RowResult(index)
        reserved: int | None = None
        admitted = False
        try:
            job = self._prepare(ref)
            async with slots:
                start = time.perf_counter()
                try:
                    if job.ref is not None:
                        fetched, row.cached = await connector._fetch_anywhere(
                            job.ref, job.limit, job.timeout, connector.download_budget
                        )
                    else:
                        assert job.inline is not None
                        fetched = job.inline
                finally:
                    row.fetch_s = time.perf_counter() - start
            row.num_bytes = fetched.size
            media_io, need = await connector._in_pool(self._pick, job, fetched)
            row.modality = media_io.modality
            cap = min(self.policy.max_decoded_bytes_for(media_io.modality), gate.limit)
            await gate.admit(index, need)
            admitted, reserved = True, need
            start = time.perf_counter()
            try:
                media = None
                while media is None:
                    media_io.decoded_budget = _RowShare(need)
                    try:
                        media = await connector._in_pool(self._decode, media_io, fetched)
                    except TooLargeError as exc:
                        if need >= cap or exc.limit != "request_decoded_bytes":
                            raise
                        # The header's estimate fell short: reserve what the decoder asked.
                        asked = exc.value if isinstance(exc.value, (int, float)) else 0
                        more = min(cap, max(int(asked) + 4096, 2 * need))
                        timeout = self.policy.decode_timeout_for(media_io.modality)
                        if not await gate.admit_again(more - need, timeout):
                            raise
                        reserved = need = more
            finally:
                row.decode_s = time.perf_counter() - start
            held = decoded_size(media)
            if held > need:
                raise TooLargeError(
                    f"the decoded {media_io.modality} holds {held} bytes, over the "
                    f"{need} bytes the loader's decoded budget could give it "
                    "(BatchOptions.max_decoded_bytes)",
                    limit="max_decoded_bytes",
                    value=held,
                    maximum=need,
                )
            await gate.settle(need, held)
            reserved = None
            row.media = media
            source = connector._source(job.ref.scheme) if job.ref is not None else None
            if job.ref is not None and not row.cached and connector._cache_for(source):
                await connector._in_pool(connector._store, job.ref, fetched)
        except MediaError as exc:
            row.media = None
            row.error_type = type(exc).__name__
            row.error = str(exc)
            status = getattr(exc, "upstream_status", None) if isinstance(exc, FetchError) else None
            row.http_status = status if isinstance(status, int) else None
            if reserved is not None:
                await gate.settle(reserved, 0)
                reserved = None
        finally:
            if not admitted:
                await gate.skip(index)
        return row


def _chunk(rows: list[RowResult], options: BatchOptions) -> BatchResult:
    outcomes = Outcomes.of(row.outcome for row in rows)
    kept = rows if options.keep_failed else [row for row in rows if row.ok]
    return BatchResult(kept, outcomes, image_size=options.image_size)


def _joined(chunks: list[BatchResult], options: BatchOptions) -> BatchResult:
    rows = [row for chunk in chunks for row in chunk.rows]
    outcomes = Outcomes()
    for chunk in chunks:
        outcomes = outcomes.merge(chunk.outcomes)
    return BatchResult(rows, outcomes, image_size=options.image_size)


# -- model-ready values ---------------------------------------------------------------------


def letterbox(pixels: np.ndarray[Any, Any], size: tuple[int, int]) -> np.ndarray[Any, Any]:
    """``pixels`` (HxWxC uint8) resized to fit inside ``size`` = (width, height), aspect
    kept (up or down), centred on black."""
    width, height = size
    h, w, channels = pixels.shape
    if (w, h) == (width, height):
        return pixels
    scale = min(width / w, height / h)
    new_w = min(width, max(1, round(w * scale)))
    new_h = min(height, max(1, round(h * scale)))
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))
    if resized.ndim == 2:
        resized = resized[:, :, None]
    out = np.zeros((height, width, channels), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def model_ready(modality: str, media: Any, image_size: tuple[int, int] | None = None) -> Any:
    """A decoded value as plain numpy (see ``RowResult.media``), without original bytes."""
    inner = media.media if isinstance(media, MediaWithBytes) else media
    if modality == "image":
        pixels = np.asarray(media)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.dtype != np.uint8:
            pixels = pixels.astype(np.uint8)
        return letterbox(pixels, image_size) if image_size is not None else pixels
    if modality == "audio":
        samples, rate = inner
        return np.asarray(samples, dtype=np.float32), int(rate)
    if modality == "video":
        frames, metadata = inner
        return np.asarray(frames), dict(metadata)
    # An embedding tensor (torch): numpy keeps its dtype; bfloat16 has no numpy twin.
    tensor = inner.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.numpy()
