"""Whole requests: one Chat Completions request with 16 images, resolved to RGB arrays.

The request is one user message with a text part and 16 ``image_url`` parts, each a
distinct 1920x1080 JPEG (quality 90). Four persistent worker processes, one per side,
resolve it in alternation (reference, mediagate, floor, reference, ...) after one
warm-up each:

* ``reference``: vLLM 0.33's own chat content parser, ``parse_chat_messages_async``
  (``vllm.renderers.chat_utils``), in ``benchmarks/.ref-venv``, then ``np.asarray`` of
  every image it returns. The parser needs a ``ModelConfig`` only to count items against
  the model's limit and to pick the placeholder string; with no model files here, a
  stand-in supplies those two answers (no limit, ``<image>``) and everything else (the
  part walk, the per-request connector and budgets, the concurrent ``fetch_image_async``
  calls its tracker gathers, the decodes on vLLM's media thread pool) is vLLM's.
* ``sequential``: the loop custom servers write, in the same environment: vLLM's
  ``MediaConnector.fetch_image_async`` awaited for one part after another (the issue's
  fallback reference; shown beside the table's columns, not judged).
* ``mediagate``: ``resolve_chat_request_async(request, connector)`` with a connector
  allowed to reach ``127.0.0.1/32`` only, then ``np.asarray(item.media)`` for every item.
* ``floor``: the raw work with no framework: one aiohttp session fetching the 16 URLs at
  once, each body decoded by ``simplejpeg.decode_jpeg`` on a pool of one thread per CPU
  (``data:`` URLs: base64 decode, then the same).

The images are served from memory by the loopback server the image group uses, under
URLs no run repeats, so no side can reuse a download. A second row sends the same 16
JPEGs inline as base64 ``data:`` URLs.

Run as ``bench_requests.py --worker SIDE`` this file is one of those workers (one JSON
command per line on stdin, one answer per line on stdout); at module level it imports
only the standard library and numpy, so it runs in either virtual environment.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import sys
import time
import traceback
import types
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Result
from reference_worker import PeakRSS

__all__ = ["IMAGES", "SIDES", "TARGET", "build_request", "image_urls", "run"]

BENCH = Path(__file__).resolve().parent
SIDES = ("reference", "sequential", "mediagate", "floor")
#: Image parts in the request.
IMAGES = 16
#: The issue's target for a whole request on 2 cores.
TARGET = "reference/mediagate >= 3x"
SOURCES = ("http", "data")
#: How the reference resolves the request (see the module docstring).
REFERENCE_NOTE = (
    "reference: vLLM's parse_chat_messages_async with no model; its tracker gathers all 16 "
    "fetch_image_async calls at once and decodes on vLLM's media thread pool, so both sides "
    "are CPU-bound on the same cores and the ratio is capped near the decoders' own ratio "
    "(Pillow plus the np.asarray copy against simplejpeg)"
)


# -- the request -----------------------------------------------------------------------


def build_request(urls: Sequence[str]) -> dict[str, Any]:
    """A Chat Completions request: one user message, a text part, then one image per URL."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What do these pictures show?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": "bench", "messages": [{"role": "user", "content": parts}]}


def image_urls(request: dict[str, Any]) -> list[str]:
    """The image URLs of a request built by ``build_request``, in order."""
    return [
        part["image_url"]["url"]
        for message in request["messages"]
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


# -- the sides (run inside a worker) ---------------------------------------------------


class _Side:
    """Resolves one request to a list of RGB arrays, on the worker's event loop."""

    def __init__(self) -> None:
        self._data_urls: dict[str, str] = {}

    def request_for(self, command: dict[str, Any]) -> dict[str, Any]:
        """The request for ``command`` (outside the timing): its URLs, or for ``data`` its
        files as base64 ``data:`` URLs (encoded once per file)."""
        items: list[str] = command["items"]
        if command["source"] == "http":
            return build_request(items)
        urls = []
        for path in items:
            url = self._data_urls.get(path)
            if url is None:
                payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                url = self._data_urls[path] = f"data:image/jpeg;base64,{payload}"
            urls.append(url)
        return build_request(urls)

    async def resolve(self, request: dict[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError

    def stages(self) -> dict[str, float]:
        """Median seconds per image of each stage of the last run, where the side knows."""
        return {}

    async def aclose(self) -> None:
        """Release what the side holds."""


class _AnyAttribute(types.ModuleType):
    """A module whose every attribute is an inert class (see ``_metrics_stand_in``)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        class Inert:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            def __getattr__(self, attribute: str) -> Any:
                return lambda *args, **kwargs: self

        Inert.__name__ = name
        return Inert


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``prometheus_client`` (and its submodules) as ``_AnyAttribute`` modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] != "prometheus_client":
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _AnyAttribute(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def _metrics_stand_in() -> bool:
    """Let vLLM's renderer package import without ``prometheus_client``.

    The reference environment installs vLLM with ``--no-deps`` and only what its media
    layer imports; the chat parser's package also imports vLLM's metrics module, which
    needs ``prometheus_client`` at import time and never on the parsing path. Returns
    whether the stand-in was needed.
    """
    try:
        import prometheus_client  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        sys.meta_path.insert(0, _StandIn())
        return True
    return False


class _ReferenceSide(_Side):
    """vLLM 0.33's chat content parser, with a stand-in for the model it would serve."""

    def __init__(self) -> None:
        super().__init__()
        _metrics_stand_in()
        from vllm.renderers.chat_utils import (
            AsyncMultiModalItemTracker,
            chat_message,
        )

        class _Info:
            def validate_num_items(self, modality: str, num_items: int) -> None:
                """No model, so no per-prompt limit to hold the count to."""

        class _Processor:
            info = _Info()

        class _ModelClass:
            @staticmethod
            def get_placeholder_str(modality: str, index: int) -> str:
                return f"<{modality}>"

        class Tracker(AsyncMultiModalItemTracker):  # type: ignore[misc]
            """vLLM's tracker, asking the stand-in instead of a model for the two
            model-specific answers (item limit, placeholder text)."""

            mm_processor = _Processor()
            model_cls = _ModelClass

        # What parse_chat_messages_async and its tracker read from the model config.
        self._model_config = types.SimpleNamespace(
            multimodal_config=types.SimpleNamespace(
                media_io_kwargs=None,
                interleave_mm_strings=False,
                enable_mm_embeds=False,
                get_limit_per_prompt=lambda modality: 1 << 20,
            ),
            hf_config=types.SimpleNamespace(),
            is_multimodal_model=True,
            allowed_local_media_path="",
            allowed_media_domains=None,
            enable_prompt_embeds=False,
        )
        chat_message.AsyncMultiModalItemTracker = Tracker
        self._parse = chat_message.parse_chat_messages_async

    async def resolve(self, request: dict[str, Any]) -> list[np.ndarray]:
        _, mm_data, _ = await self._parse(request["messages"], self._model_config, "openai")
        return [np.asarray(image) for image in (mm_data or {}).get("image", [])]


class _SequentialSide(_Side):
    """The loop custom servers write: vLLM's ``MediaConnector.fetch_image_async`` awaited
    for one part after another (what the issue's fallback reference describes)."""

    def __init__(self) -> None:
        super().__init__()
        _metrics_stand_in()
        from vllm.multimodal.utils import MediaConnector

        self._connector = MediaConnector()

    async def resolve(self, request: dict[str, Any]) -> list[np.ndarray]:
        images = [await self._connector.fetch_image_async(url) for url in image_urls(request)]
        return [np.asarray(image) for image in images]


class _MediagateSide(_Side):
    """``resolve_chat_request_async`` with a connector allowed to reach 127.0.0.1 only."""

    def __init__(self) -> None:
        super().__init__()
        from mediagate import MediaConnector, MediaPolicy, resolve_chat_request_async

        policy = MediaPolicy(allowed_networks=["127.0.0.1/32"])
        self._connector = MediaConnector(policy=policy)
        self._resolve = resolve_chat_request_async
        self._stages: dict[str, list[float]] = {}

    async def resolve(self, request: dict[str, Any]) -> list[np.ndarray]:
        resolved = await self._resolve(request, self._connector)
        self._stages = {}
        for item in resolved.items:
            if item.report is not None:
                for stage, seconds in item.report.stages.items():
                    self._stages.setdefault(stage, []).append(seconds)
        return [np.asarray(item.media) for item in resolved.items]

    def stages(self) -> dict[str, float]:
        return {stage: statistics.median(values) for stage, values in self._stages.items()}

    async def aclose(self) -> None:
        self._connector.close()


class _FloorSide(_Side):
    """aiohttp fetching every URL at once, simplejpeg decoding on one thread per CPU."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        self._session: Any = None

    async def _one(self, url: str) -> np.ndarray:
        import simplejpeg

        if url.startswith("data:"):
            data = binascii.a2b_base64(url.partition(",")[2])
        else:
            async with self._session.get(url) as response:
                response.raise_for_status()
                data = await response.read()
        loop = asyncio.get_running_loop()
        pixels: np.ndarray = await loop.run_in_executor(
            self._pool, lambda: simplejpeg.decode_jpeg(data, colorspace="RGB")
        )
        return pixels

    async def resolve(self, request: dict[str, Any]) -> list[np.ndarray]:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        return list(await asyncio.gather(*(self._one(url) for url in image_urls(request))))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._pool.shutdown(wait=False)


def _make_side(name: str) -> _Side:
    sides: dict[str, type[_Side]] = {
        "reference": _ReferenceSide,
        "sequential": _SequentialSide,
        "mediagate": _MediagateSide,
        "floor": _FloorSide,
    }
    return sides[name]()


def _run_command(side: _Side, loop: asyncio.AbstractEventLoop, command: dict[str, Any]) -> Any:
    request = side.request_for(command)
    with PeakRSS() as peak:
        start = time.perf_counter()
        arrays = loop.run_until_complete(side.resolve(request))
        elapsed = time.perf_counter() - start
    shapes = {json.dumps(list(array.shape)) for array in arrays}
    return {
        "ok": True,
        "elapsed": elapsed,
        "peak_rss": peak.peak_bytes,
        "count": len(arrays),
        "shape": json.loads(shapes.pop()) if len(shapes) == 1 else sorted(shapes),
        "stages": side.stages(),
    }


def serve(side_name: str, stdin: IO[str], answers: IO[str]) -> None:
    """Answer commands (``run``, ``quit``) from ``stdin`` until ``quit`` or EOF."""

    def answer(payload: dict[str, Any]) -> None:
        answers.write(json.dumps(payload) + "\n")
        answers.flush()

    loop = asyncio.new_event_loop()
    try:
        side = _make_side(side_name)
    except Exception as exc:  # reported to the harness, which records "not run"
        traceback.print_exc()
        answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        loop.close()
        return
    answer({"ok": True, "ready": side_name})
    try:
        for line in stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            op = command.get("op")
            if op == "quit":
                break
            try:
                if op == "run":
                    answer(_run_command(side, loop, command))
                else:
                    answer({"ok": False, "error": f"unknown op {op!r}"})
            except Exception as exc:
                traceback.print_exc()
                answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        loop.run_until_complete(side.aclose())
        loop.close()


# -- the harness -----------------------------------------------------------------------


def _media() -> list[Path]:
    """``IMAGES`` distinct JPEGs like the image group's (the first 8 are its files)."""
    from bench_images import HEIGHT, MEDIA_DIR, WIDTH, _encode

    MEDIA_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(IMAGES):
        path = MEDIA_DIR / f"jpeg_{WIDTH}x{HEIGHT}_{seed}.jpg"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(_encode("jpeg", seed))
            tmp.replace(path)
        paths.append(path)
    return paths


def _worker_class() -> type:
    """``bench_images.Worker`` started on this file instead of ``reference_worker.py``."""
    from bench_images import Worker

    class RequestWorker(Worker):
        def __init__(self, side: str, python: Path | str) -> None:
            script = Path(__file__).resolve()
            super().__init__(
                side, python, script=script, side_flag="--worker", log_name="requests-worker"
            )

    return RequestWorker


def _label(source: str) -> str:
    how = "http" if source == "http" else "inline base64 data: URLs"
    return f"Chat request, {IMAGES} JPEG 1920x1080 image_url parts ({how}) -> np.asarray"


def _stage_note(stages: list[dict[str, float]]) -> str:
    """mediagate's per-image stage times (median over its timed runs), for the note."""
    names = sorted({name for run in stages for name in run})
    if not names:
        return ""
    shown = ", ".join(
        f"{name} {statistics.median(run[name] for run in stages if name in run) * 1e3:.1f} ms"
        for name in names
    )
    return f"mediagate stages per image (median; 16 in flight, so they overlap): {shown}"


def run_requests(
    *,
    quick: bool = False,
    reference_python: Path | str | None = None,
    runs: int | None = None,
    log: Any = print,
) -> list[Result]:
    """Both request workloads; the reference side only when ``reference_python`` is set."""
    from bench_images import MediaServer, WorkerError

    runs = runs if runs is not None else (3 if quick else 5)
    files = _media()
    worker_class = _worker_class()
    workers: dict[str, Any] = {}
    startup: list[str] = []
    plan = [("reference", reference_python), ("sequential", reference_python)]
    plan.append(("mediagate", sys.executable))
    plan.append(("floor", sys.executable))
    results: list[Result] = []
    try:
        for side, python in plan:
            if python is None:
                startup.append(f"{side} not run: no reference environment (--no-reference)")
                continue
            try:
                workers[side] = worker_class(side, python)
            except WorkerError as exc:
                startup.append(f"{side} not run: {exc}")
        with MediaServer({"jpeg": files}) as server:
            counter = 0
            for source in SOURCES:
                log(f"  requests/{source}: {_label(source)}")
                times: dict[str, list[float]] = {side: [] for side in workers}
                peaks: dict[str, list[int]] = {side: [] for side in workers}
                stages: list[dict[str, float]] = []
                shapes: dict[str, Any] = {}
                failed: dict[str, str] = {}
                for round_index in range(1 + runs):  # one warm-up round, then the timed ones
                    for side, worker in workers.items():
                        if side in failed:
                            continue
                        if source == "http":  # URLs no run repeats (n picks image n % 16)
                            items = [server.url("jpeg", counter + i) for i in range(IMAGES)]
                            counter += IMAGES
                        else:
                            items = [str(path) for path in files]
                        command = {"op": "run", "source": source, "items": items}
                        try:
                            answer = worker.request(command)
                        except WorkerError as exc:
                            failed[side] = str(exc)
                            continue
                        shapes[side] = (answer["count"], answer["shape"])
                        if round_index >= 1:
                            times[side].append(float(answer["elapsed"]))
                            peaks[side].append(int(answer["peak_rss"]))
                            if answer.get("stages"):
                                stages.append(answer["stages"])
                notes = list(startup)
                notes += [f"{side} not run: {reason}" for side, reason in failed.items()]
                expected = (IMAGES, [1080, 1920, 3])
                wrong = {side: got for side, got in shapes.items() if tuple(got) != expected}
                if wrong:
                    notes.append(f"results differ from {IMAGES} x 1080x1920x3: {wrong}")
                if "reference" in workers and "reference" not in failed:
                    notes.append(REFERENCE_NOTE)
                if stage_note := _stage_note(stages):
                    notes.append(stage_note)
                results.append(
                    Result(
                        group="requests",
                        workload=_label(source),
                        times={side: values for side, values in times.items() if values},
                        peak_bytes={
                            side: int(statistics.median(values))
                            for side, values in peaks.items()
                            if values
                        },
                        target=TARGET,
                        note="; ".join(notes),
                    )
                )
    finally:
        for worker in workers.values():
            worker.close()
    return results


def run(quick: bool = False) -> list[Result]:
    """The request workloads, against the reference when ``$MEDIAGATE_BENCH_REF_PYTHON``
    names its interpreter (``run.py`` sets it unless ``--no-reference``)."""
    from _reference import REF_PYTHON_ENV

    return run_requests(quick=quick, reference_python=os.environ.get(REF_PYTHON_ENV) or None)


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--worker", choices=SIDES, help="serve one side's commands")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        # Answers go to the original stdout; anything a library prints goes to stderr.
        answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        serve(args.worker, sys.stdin, answers)
        return
    from _reference import REF_PYTHON, REF_PYTHON_ENV, REF_STAMP

    if REF_STAMP.exists() and REF_PYTHON.exists():  # run alone: the built reference, if any
        os.environ.setdefault(REF_PYTHON_ENV, str(REF_PYTHON))
    for result in run(quick=args.quick):
        medians = {side: f"{result.median(side) * 1e3:.1f} ms" for side in result.times}
        print(result.workload, medians, result.note)


if __name__ == "__main__":
    _main()
