"""Budgets one decode runs under: decoded bytes (per item and per request) and time.

Pure accounting, no I/O. A decode runs inside ``decoding(...)``, which makes its
``DecodeLimits`` current for the calling thread; decoders ask the current limits
before they allocate output (``reserve_output``) and between units of work (frames,
packets, blocks: ``check_deadline``). Code called outside any ``decoding`` block (a
loader used on its own) falls back to the limits its caller passes.

``DecodedBudget`` is the per-request pool several items draw from: an item reserves
its per-item budget (or what is left) before decoding and settles to the bytes it
really produced afterwards, so concurrent items cannot together exceed the request's
budget, and the item that crossed it is the one refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._errors import TooLargeError

__all__ = [
    "BorrowedBudget",
    "DecodeLimits",
    "DecodedBudget",
    "as_decoded_budget",
    "check_deadline",
    "current_limits",
    "decoded_size",
    "decoding",
    "reserve_output",
]


class DecodedBudget:
    """Decoded bytes that all items of one request may produce together.

    Thread-safe. ``reserve`` before decoding an item, ``settle`` after it (or
    ``release`` when it failed); ``charge`` counts bytes produced outside a reservation.

    Example::

        budget = DecodedBudget(512 * 2**20)
        connector = MediaConnector(decoded_budget=budget)
        ...                                   # every item of this request draws from it
        budget.used                           # bytes the request's decoded items hold

    Raises:
        ValueError: ``limit`` is not a positive whole number.
    """

    #: How refusals name this budget when it is what ran out.
    limit_name = "decoded budget (DecodedBudget)"

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("DecodedBudget limit must be a positive number of bytes")
        self.limit = limit
        self.used = 0
        self._reserved = 0
        self._lock = threading.Condition()

    @property
    def available(self) -> int:
        """Bytes neither used nor reserved."""
        with self._lock:
            return self.limit - self.used - self._reserved

    def _refused(self, wanted: int) -> TooLargeError:
        return TooLargeError(
            f"this item would take the request's decoded media past its budget of "
            f"{self.limit} bytes ({self.used} used)",
            limit="request_decoded_bytes",
            value=self.used + wanted,
            maximum=self.limit,
        )

    def reserve(self, max_bytes: int, *, timeout: float | None = None) -> int:
        """Reserve up to ``max_bytes`` for one item; returns what was reserved.

        While other items hold reservations that leave less than ``max_bytes``, waits
        (at most ``timeout`` seconds) for them to settle, so concurrent items are not
        refused for room that is only held, not used.

        Raises:
            TooLargeError: nothing is left of the budget.
        """
        max_bytes = max(0, int(max_bytes))
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                available = self.limit - self.used - self._reserved
                left = None if end is None else end - time.monotonic()
                if (
                    available >= max_bytes
                    or self._reserved == 0
                    or (left is not None and left <= 0)
                ):
                    break
                self._lock.wait(left)
            if available <= 0:
                raise self._refused(1)
            reserved = min(max_bytes, available)
            self._reserved += reserved
            return reserved

    def settle(self, reserved: int, decoded_bytes: int) -> None:
        """Replace a reservation with the item's real decoded size.

        Raises:
            TooLargeError: the item produced more than it reserved or than is left.
        """
        with self._lock:
            self._reserved -= reserved
            self._lock.notify_all()
            used = self.used + decoded_bytes
            if decoded_bytes > reserved or used > self.limit:
                raise self._refused(decoded_bytes)
            self.used = used

    def release(self, reserved: int) -> None:
        """Give back a reservation whose item failed."""
        with self._lock:
            self._reserved -= reserved
            self._lock.notify_all()

    def charge(self, decoded_bytes: int) -> None:
        """Count ``decoded_bytes`` produced without a reservation.

        Raises:
            TooLargeError: they do not fit in what is left.
        """
        with self._lock:
            if self.used + self._reserved + decoded_bytes > self.limit:
                raise self._refused(decoded_bytes)
            self.used += decoded_bytes

    def __repr__(self) -> str:
        return f"DecodedBudget(limit={self.limit}, used={self.used})"


class BorrowedBudget(DecodedBudget):
    """Another library's per-request decoded-bytes budget (one with ``reserve(n) -> int``,
    ``settle(reserved, decoded)`` and ``charge(n)``, such as vLLM's ``MediaDecodedBudget``)
    used where a ``DecodedBudget`` is expected. It keeps its own limit; the
    ``ValueError`` it raises to refuse becomes ``TooLargeError(limit="max_decoded_bytes")``.
    """

    def __init__(self, budget: Any) -> None:
        super().__init__(1 << 62)
        self.borrowed = budget
        if type(self).limit_name == DecodedBudget.limit_name:
            self.limit_name = f"decoded budget ({type(budget).__name__})"

    @staticmethod
    def _translated(exc: ValueError) -> TooLargeError:
        return TooLargeError(str(exc), limit="max_decoded_bytes")

    def reserve(self, max_bytes: int, *, timeout: float | None = None) -> int:
        try:
            reserved = self.borrowed.reserve(max_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc
        if isinstance(reserved, bool) or not isinstance(reserved, int) or reserved < 0:
            raise TypeError("the borrowed budget's reserve() must return a byte count")
        return reserved

    def settle(self, reserved: int, decoded_bytes: int) -> None:
        try:
            self.borrowed.settle(reserved, decoded_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc

    def release(self, reserved: int) -> None:
        self.borrowed.settle(reserved, 0)

    def charge(self, decoded_bytes: int) -> None:
        try:
            self.borrowed.charge(decoded_bytes)
        except ValueError as exc:
            raise self._translated(exc) from exc

    def __repr__(self) -> str:
        return f"BorrowedBudget({type(self.borrowed).__name__})"


def as_decoded_budget(budget: Any) -> DecodedBudget | None:
    """``budget`` as a ``DecodedBudget``: itself, another library's borrowed (see
    ``BorrowedBudget``), or ``None``.

    Raises:
        TypeError: it is neither.
    """
    if budget is None or isinstance(budget, DecodedBudget):
        return budget
    if all(callable(getattr(budget, name, None)) for name in ("reserve", "settle", "charge")):
        return BorrowedBudget(budget)
    raise TypeError("decoded_budget must be a DecodedBudget (or have reserve, settle, charge)")


@dataclass(frozen=True)
class DecodeLimits:
    """What one item's decode may produce and until when.

    ``max_output`` is the decoded-bytes budget of the item (already lowered to what the
    request budget reserved); ``deadline`` is a ``time.monotonic()`` instant;
    ``timeout`` the seconds it was set from, for messages.
    """

    modality: str
    max_output: int
    deadline: float
    timeout: float
    #: What lowered ``max_output`` below the item's own budget (a request budget's
    #: ``limit_name``), named in the refusal; empty when nothing did.
    lowered_by: str = ""

    @classmethod
    def starting_now(
        cls, modality: str, max_output: int, timeout: float, *, lowered_by: str = ""
    ) -> DecodeLimits:
        """Limits whose deadline is ``timeout`` seconds from now."""
        return cls(modality, max_output, time.monotonic() + timeout, timeout, lowered_by)

    @property
    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def over_output(self, nbytes: int, what: str) -> TooLargeError:
        """The error for ``what`` needing ``nbytes`` of decoded output."""
        source = (
            f"what is left of the request's {self.lowered_by}"
            if self.lowered_by
            else "MediaPolicy.max_decoded_bytes, or a lower request budget"
        )
        return TooLargeError(
            f"{what} would decode to {nbytes} bytes, over the decoded-output budget of "
            f"{self.max_output} bytes for {self.modality} ({source})",
            # Named after what ran out: the request's budget when it lowered the item's.
            limit="request_decoded_bytes" if self.lowered_by else "max_decoded_bytes",
            value=nbytes,
            maximum=self.max_output,
        )

    def overran(self) -> TooLargeError:
        """The error for a decode that ran past its deadline."""
        return TooLargeError(
            f"decoding the {self.modality} took longer than decode_timeout="
            f"{self.timeout:g} s (MediaPolicy.decode_timeout)",
            limit="decode_timeout",
            maximum=self.timeout,
        )


_current: contextvars.ContextVar[DecodeLimits | None] = contextvars.ContextVar(
    "mediagate_decode_limits", default=None
)


def current_limits() -> DecodeLimits | None:
    """The limits of the decode running on this thread, if any."""
    return _current.get()


@contextlib.contextmanager
def decoding(limits: DecodeLimits) -> Iterator[DecodeLimits]:
    """Make ``limits`` current for the decode run inside the block (this thread)."""
    token = _current.set(limits)
    try:
        yield limits
    finally:
        _current.reset(token)


def reserve_output(nbytes: float, what: str, *, fallback: int | None = None) -> None:
    """Refuse an output of ``nbytes`` before it is allocated, if over the item's budget.

    ``fallback`` is the budget used outside any ``decoding`` block (``None``: no check
    there). ``nbytes`` may be a float from a header's arithmetic: NaN or infinity is
    over any budget.

    Raises:
        TooLargeError: over the decoded-output budget.
    """
    limits = _current.get()
    if limits is None:
        if fallback is None:
            return
        limits = DecodeLimits("media", fallback, math.inf, math.inf)
    if not nbytes <= limits.max_output:  # NaN-safe
        shown = int(nbytes) if math.isfinite(nbytes) else 0
        raise limits.over_output(shown, what)


def check_deadline() -> None:
    """Raise when the current decode has run past its deadline (no-op outside one).

    Raises:
        TooLargeError: the deadline passed (``limit="decode_timeout"``).
    """
    limits = _current.get()
    if limits is not None and time.monotonic() > limits.deadline:
        raise limits.overran()


def decoded_size(obj: object, _depth: int = 0) -> int:
    """Bytes of decoded media held by ``obj``: arrays, PIL images, tensors, and the
    tuples, lists, dicts and ``MediaWithBytes`` results that hold them."""
    if _depth > 4:
        return 0
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and "original_bytes" in state:  # MediaWithBytes
        # Read first, from its own fields: any other attribute is delegated to the media,
        # and asking for one would build the PIL image of an array-backed result.
        held = state.get("_array", state.get("media"))
        return decoded_size(held, _depth + 1)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and not isinstance(obj, (bytes, bytearray, memoryview)):
        return nbytes
    if isinstance(obj, (tuple, list)):
        return sum(decoded_size(item, _depth + 1) for item in obj)
    if isinstance(obj, dict):
        return sum(decoded_size(item, _depth + 1) for item in obj.values())
    numel, element_size = getattr(obj, "numel", None), getattr(obj, "element_size", None)
    if callable(numel) and callable(element_size):  # torch.Tensor
        return int(numel()) * int(element_size())
    size, mode = getattr(obj, "size", None), getattr(obj, "mode", None)
    if isinstance(size, tuple) and len(size) == 2 and isinstance(mode, str):  # PIL image
        return int(size[0]) * int(size[1]) * _pil_bytes_per_pixel(mode)
    return 0


def _pil_bytes_per_pixel(mode: str) -> int:
    if mode in ("1", "L", "P"):
        return 1
    if mode in ("LA", "PA", "I;16", "I;16B", "I;16L", "I;16N"):
        return 2
    if mode in ("RGB", "YCbCr", "LAB", "HSV"):
        return 3
    return 4
