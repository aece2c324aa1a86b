"""Prometheus metrics of every load (the optional ``mediagate[metrics]`` extra).

``enable_metrics()`` registers one ``on_load`` hook and one cache-eviction listener that
feed these metrics into a ``prometheus_client`` registry (the default one unless told):

==========================================  =========  ==============================
name                                        kind       labels
==========================================  =========  ==============================
``mediagate_loads_total``                   counter    modality, source, outcome
``mediagate_fetch_seconds``                 histogram  modality, source
``mediagate_decode_seconds``                histogram  modality, source
``mediagate_media_bytes``                   histogram  modality, source
``mediagate_cache_hits_total``              counter    modality
``mediagate_cache_misses_total``            counter    modality
``mediagate_cache_evictions_total``         counter
``mediagate_load_errors_total``             counter    error_type, reason
``mediagate_downloads_in_flight``           gauge
==========================================  =========  ==============================

The histograms and the cache counters describe loads that succeeded (a cache miss is
a successful load a cache could have served and did not); every failed load counts
once in ``mediagate_load_errors_total``. Every label is bounded: modalities and sources
are the known names (anything else is ``other``), reasons a fixed vocabulary
(``mediagate.on_load``). ``metrics_text()`` is the text exposition for any web
framework; ``mediagate proxy --metrics`` serves it at ``/metrics``.

``import mediagate`` does not import ``prometheus_client``; only these functions do.
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._cache import on_evictions
from ._fetch import downloads_in_flight
from ._observe import on_load
from ._policy import MODALITIES

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._connector import LoadReport

__all__ = ["METRICS_CONTENT_TYPE", "LoadMetrics", "enable_metrics", "metrics_text"]

#: The content type of ``metrics_text()`` (Prometheus text format 0.0.4).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds of the stage-time buckets, in seconds.
SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: Upper bounds of the size buckets, in bytes (1 KiB to 1 GiB, by fours).
BYTES_BUCKETS = tuple(float(1024 * 4**n) for n in range(11))

_LABEL = re.compile(r"[a-z][a-z0-9_+.-]{0,31}")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "metrics need prometheus-client: pip install 'mediagate[metrics]'",
            name="prometheus_client",
        ) from exc
    return prometheus_client


def _modality(value: str) -> str:
    return value if value in MODALITIES else ("unknown" if not value else "other")


def _source(value: str) -> str:
    return value if _LABEL.fullmatch(value) else "other"


class LoadMetrics:
    """The metrics of one registry, fed by every load while enabled.

    Made by ``enable_metrics``; ``close()`` stops feeding them and unregisters them.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        prom = _prometheus()
        self.registry = registry
        by_item = ("modality", "source")
        self.loads = prom.Counter(
            "mediagate_loads_total",
            "Media loads by modality, source scheme and outcome (ok or error).",
            (*by_item, "outcome"),
            registry=registry,
        )
        self.fetch_seconds = prom.Histogram(
            "mediagate_fetch_seconds",
            "Seconds to fetch the bytes of a load that succeeded (cache, network or file).",
            by_item,
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.decode_seconds = prom.Histogram(
            "mediagate_decode_seconds",
            "Seconds to decode the bytes of a load that succeeded.",
            by_item,
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.media_bytes = prom.Histogram(
            "mediagate_media_bytes",
            "Bytes of media a load that succeeded read.",
            by_item,
            buckets=BYTES_BUCKETS,
            registry=registry,
        )
        self.cache_hits = prom.Counter(
            "mediagate_cache_hits_total",
            "Loads served from the media cache.",
            ("modality",),
            registry=registry,
        )
        self.cache_misses = prom.Counter(
            "mediagate_cache_misses_total",
            "Loads the media cache could have served and did not.",
            ("modality",),
            registry=registry,
        )
        self.cache_evictions = prom.Counter(
            "mediagate_cache_evictions_total",
            "Media cache entries evicted to stay within the cache's size budget.",
            registry=registry,
        )
        self.errors = prom.Counter(
            "mediagate_load_errors_total",
            "Loads refused or failed, by error class and reason.",
            ("error_type", "reason"),
            registry=registry,
        )
        self.in_flight = prom.Gauge(
            "mediagate_downloads_in_flight",
            "HTTP(S) downloads (whole files or range requests) in progress now.",
            registry=registry,
        )
        self.in_flight.set_function(downloads_in_flight)
        self._collectors = (
            self.loads,
            self.fetch_seconds,
            self.decode_seconds,
            self.media_bytes,
            self.cache_hits,
            self.cache_misses,
            self.cache_evictions,
            self.errors,
            self.in_flight,
        )
        self._stops: list[Callable[[], None]] = [
            on_load(self.observe),
            on_evictions(self.cache_evictions.inc),
        ]

    def observe(self, report: LoadReport) -> None:
        """Count one finished load (the ``on_load`` hook)."""
        modality, source = _modality(report.modality), _source(report.source)
        if report.error_type is not None:
            self.loads.labels(modality, source, "error").inc()
            self.errors.labels(report.error_type, report.reason or "unknown").inc()
            return
        self.loads.labels(modality, source, "ok").inc()
        fetch = report.stages.get("fetch")
        if fetch is not None:
            self.fetch_seconds.labels(modality, source).observe(fetch)
        decode = report.stages.get("decode")
        if decode is not None:
            self.decode_seconds.labels(modality, source).observe(decode)
        self.media_bytes.labels(modality, source).observe(report.num_bytes)
        if report.cached:
            self.cache_hits.labels(modality).inc()
        elif report.cacheable:
            self.cache_misses.labels(modality).inc()

    def close(self) -> None:
        """Stop counting loads and remove these metrics from the registry."""
        for stop in self._stops:
            stop()
        self._stops.clear()
        for collector in self._collectors:
            with contextlib.suppress(KeyError):
                self.registry.unregister(collector)
        with _lock:
            if _enabled.get(self.registry) is self:
                del _enabled[self.registry]


_enabled: weakref.WeakKeyDictionary[Any, LoadMetrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def enable_metrics(registry: CollectorRegistry | None = None) -> LoadMetrics:
    """Feed every load's report into Prometheus metrics in ``registry`` (default:
    ``prometheus_client.REGISTRY``); enabling a registry twice returns the same metrics.

    Raises:
        ImportError: ``prometheus-client`` is not installed (names ``mediagate[metrics]``).

    Example::

        mediagate.enable_metrics()
        body = mediagate.metrics_text()   # serve at /metrics with METRICS_CONTENT_TYPE
    """
    prom = _prometheus()
    target = registry if registry is not None else prom.REGISTRY
    with _lock:
        metrics = _enabled.get(target)
        if metrics is None:
            metrics = _enabled[target] = LoadMetrics(target)
        return metrics


def metrics_text(registry: CollectorRegistry | None = None) -> str:
    """The Prometheus text exposition of ``registry`` (default:
    ``prometheus_client.REGISTRY``), served with ``METRICS_CONTENT_TYPE``.

    Raises:
        ImportError: ``prometheus-client`` is not installed (names ``mediagate[metrics]``).
    """
    prom = _prometheus()
    text: bytes = prom.generate_latest(registry if registry is not None else prom.REGISTRY)
    return text.decode("utf-8")
