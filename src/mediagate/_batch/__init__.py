"""Batch loading: columns of media references in, decoded rows with outcomes out.

The core that offline pipelines build on (the ``mediagate batch`` command, the Ray Data
adapter ``mediagate.ray``): ``BatchLoader`` runs every row through one
``MediaConnector``, so rows get the same guard, limits, samplers and cache as the
server path, with bounded concurrency and a bounded decoded-bytes budget.
``BatchResult.to_arrow`` needs pyarrow (``mediagate[batch]``), imported only then.
"""

from .loader import BatchLoader, Reference, letterbox, model_ready
from .options import BatchOptions, batch_modality
from .results import OK, BatchResult, Outcomes, RowResult

__all__ = [
    "OK",
    "BatchLoader",
    "BatchOptions",
    "BatchResult",
    "Outcomes",
    "Reference",
    "RowResult",
    "batch_modality",
    "letterbox",
    "model_ready",
]
