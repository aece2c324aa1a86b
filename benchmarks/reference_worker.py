"""A persistent benchmark worker: runs one side of an image workload per command.

The harness (``benchmarks/run.py``) starts one worker per side and keeps it alive, so
imports, connection pools and thread pools are warm after the first command:

* ``--side reference``: vLLM's ``MediaConnector``, run by ``benchmarks/.ref-venv``;
* ``--side mediagate``: mediagate's ``MediaConnector``, run by the project venv;
* ``--side floor``: the raw decoder alone on bytes already in memory (simplejpeg for
  JPEG, Pillow ``open().convert("RGB")`` for PNG).

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.

    {"op": "run", "fmt": "jpeg", "source": "http", "items": [...], "concurrency": 16,
     "output": "array"}
    -> {"ok": true, "elapsed": 0.91, "peak_rss": 123456789, "count": 256,
        "shape": [1080, 1920, 3]}
    {"op": "info"} -> {"ok": true, "versions": {...}}
    {"op": "quit"}

``items`` are URLs for ``source == "http"`` and file paths otherwise (``data`` turns
each file into a ``data:`` URL once, before any timing; ``bytes`` decodes the file's
bytes without a connector). ``elapsed`` covers fetching and decoding every item with
``concurrency`` in flight (1: one after another) and turning each result into what the
workload asks for (``array``: ``np.asarray(result)``; ``pil``: ``result.media``).
``peak_rss`` is the growth of the resident set over the run (Linux ``VmHWM``, reset
before each run), which counts memory that Python's allocator tracing cannot see
(Pillow's image buffers, libjpeg's work memory).

This file imports only the standard library, numpy and Pillow at module level, so it
runs in either virtual environment.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

SIDES = ("reference", "mediagate", "floor")
_MIME = {"jpeg": "image/jpeg", "png": "image/png"}


# -- resident-set accounting (Linux) ---------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak growth of the resident set while the ``with`` block runs (0 if unknown)."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self._ok = _reset_peak()
        self._base = _status_kib("VmRSS") or 0
        self.peak_bytes = 0
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_kib("VmHWM") if self._ok else None
        if peak is not None:
            self.peak_bytes = max(0, peak - self._base) * 1024


# -- the three sides -------------------------------------------------------------------


Loader = Callable[[str], Awaitable[Any]]


class Side:
    """What one side does with one item; subclasses fill in ``load`` and ``decode``."""

    name = ""

    def __init__(self) -> None:
        self._bytes: dict[str, bytes] = {}
        self._data_urls: dict[str, str] = {}

    def file_bytes(self, path: str) -> bytes:
        data = self._bytes.get(path)
        if data is None:
            data = self._bytes[path] = Path(path).read_bytes()
        return data

    def data_url(self, path: str, fmt: str) -> str:
        url = self._data_urls.get(path)
        if url is None:
            payload = base64.b64encode(self.file_bytes(path)).decode("ascii")
            url = self._data_urls[path] = f"data:{_MIME[fmt]};base64,{payload}"
        return url

    def prepare(self, command: dict[str, Any]) -> list[str]:
        """Turn the command's items into what ``load`` takes (outside the timing)."""
        source, fmt = command["source"], command["fmt"]
        items: list[str] = command["items"]
        if source == "data":
            return [self.data_url(path, fmt) for path in items]
        if source == "bytes":
            for path in items:
                self.file_bytes(path)
        return items

    async def load(self, item: str, command: dict[str, Any]) -> Any:
        raise NotImplementedError

    def decode(self, item: str, command: dict[str, Any]) -> Any:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        import PIL

        return {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "pillow": PIL.__version__,
        }

    def close(self) -> None:
        """Release what the side holds."""


def _shape(out: Any) -> list[int]:
    """The shape of a result without converting it (a PIL image is not copied)."""
    if isinstance(out, np.ndarray):
        return list(out.shape)
    width, height = out.size
    bands = len(out.getbands())
    return [height, width] if bands == 1 else [height, width, bands]


def _finish(result: Any, output: str) -> Any:
    if output == "pil":
        return result.media
    return np.asarray(result)


class ReferenceSide(Side):
    """vLLM's media layer, through its public ``MediaConnector``."""

    name = "reference"

    def __init__(self) -> None:
        super().__init__()
        from vllm.multimodal.media import ImageMediaIO  # type: ignore[import-not-found]
        from vllm.multimodal.utils import MediaConnector  # type: ignore[import-not-found]

        self._connector = MediaConnector()
        self._image_io = ImageMediaIO(image_mode="RGB")

    async def load(self, item: str, command: dict[str, Any]) -> Any:
        return _finish(await self._connector.fetch_image_async(item), command["output"])

    def decode(self, item: str, command: dict[str, Any]) -> Any:
        return _finish(self._image_io.load_bytes(self.file_bytes(item)), command["output"])

    def versions(self) -> dict[str, str]:
        import vllm  # type: ignore[import-not-found]

        return {**super().versions(), "vllm": vllm.__version__}


class MediagateSide(Side):
    """mediagate's ``MediaConnector``, allowed to reach the loopback server only."""

    name = "mediagate"

    def __init__(self) -> None:
        super().__init__()
        from mediagate import ImageMediaIO, MediaConnector, MediaPolicy

        policy = MediaPolicy(allowed_networks=["127.0.0.1/32"])
        self._connector = MediaConnector(policy=policy)
        self._image_io = ImageMediaIO("RGB", policy=policy)

    async def load(self, item: str, command: dict[str, Any]) -> Any:
        return _finish(await self._connector.fetch_image_async(item), command["output"])

    def decode(self, item: str, command: dict[str, Any]) -> Any:
        return _finish(self._image_io.load_bytes(self.file_bytes(item)), command["output"])

    def versions(self) -> dict[str, str]:
        import simplejpeg

        import mediagate

        return {
            **super().versions(),
            "mediagate": mediagate.__version__,
            "simplejpeg": simplejpeg.__version__,
        }

    def close(self) -> None:
        self._connector.close()


class FloorSide(Side):
    """The raw decoder alone, on bytes already in memory: the speed limit."""

    name = "floor"

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)

    def prepare(self, command: dict[str, Any]) -> list[str]:
        items: list[str] = command["items"]
        if command["source"] == "http":  # the harness sends the files behind the URLs too
            items = command["files"]
        for path in items:
            self.file_bytes(path)
        return items

    def decode(self, item: str, command: dict[str, Any]) -> Any:
        data = self.file_bytes(item)
        if command["fmt"] == "jpeg":
            import simplejpeg

            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        return rgb if command["output"] == "pil" else np.asarray(rgb)

    async def load(self, item: str, command: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.decode, item, command)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def make_side(name: str) -> Side:
    if name == "reference":
        return ReferenceSide()
    if name == "mediagate":
        return MediagateSide()
    if name == "floor":
        return FloorSide()
    raise ValueError(f"unknown side {name!r} (known: {', '.join(SIDES)})")


# -- running one command ---------------------------------------------------------------


async def _run_async(side: Side, items: list[str], command: dict[str, Any]) -> tuple[int, Any]:
    concurrency = int(command.get("concurrency", 1))
    shape: Any = None
    count = 0
    if concurrency <= 1:
        for item in items:
            out = await side.load(item, command)
            shape = shape or _shape(out)
            count += 1
            del out
        return count, shape
    gate = asyncio.Semaphore(concurrency)

    async def one(item: str) -> list[int]:
        async with gate:
            out = await side.load(item, command)
            return _shape(out)  # the result itself is dropped here

    shapes = await asyncio.gather(*(one(item) for item in items))
    return len(shapes), shapes[0] if shapes else None


def run_command(
    side: Side, loop: asyncio.AbstractEventLoop, command: dict[str, Any]
) -> dict[str, Any]:
    items = side.prepare(command)
    sync = command["source"] == "bytes" or (
        isinstance(side, FloorSide) and int(command.get("concurrency", 1)) <= 1
    )
    with PeakRSS() as peak:
        start = time.perf_counter()
        if sync:
            shape = None
            for item in items:
                out = side.decode(item, command)
                shape = shape or _shape(out)
                del out
            count = len(items)
        else:
            count, shape = loop.run_until_complete(_run_async(side, items, command))
        elapsed = time.perf_counter() - start
    return {
        "ok": True,
        "elapsed": elapsed,
        "peak_rss": peak.peak_bytes,
        "count": count,
        "shape": shape,
    }


def serve(side_name: str, stdin: IO[str], answers: IO[str]) -> None:
    """Answer commands from ``stdin`` until ``quit`` or end of input."""

    def answer(payload: dict[str, Any]) -> None:
        answers.write(json.dumps(payload) + "\n")
        answers.flush()

    try:
        side = make_side(side_name)
    except Exception as exc:  # reported to the harness, which records "not run"
        answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return
    answer({"ok": True, "ready": side_name})
    loop = asyncio.new_event_loop()
    try:
        for line in stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            op = command.get("op")
            if op == "quit":
                break
            try:
                if op == "info":
                    answer({"ok": True, "versions": side.versions()})
                elif op == "run":
                    answer(run_command(side, loop, command))
                else:
                    answer({"ok": False, "error": f"unknown op {op!r}"})
            except Exception as exc:
                traceback.print_exc()
                answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        side.close()
        loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--side", choices=SIDES, required=True)
    args = parser.parse_args(argv)
    # Answers go to the original stdout; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(args.side, sys.stdin, answers)


if __name__ == "__main__":
    main()
