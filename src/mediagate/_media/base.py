"""MediaIO and the typed option rules every modality shares (``MediaWithBytes`` lives in
``results`` and is re-exported here).

Decoders take bytes and options and return arrays. Nothing in ``_media`` opens a
socket or knows about connectors or caches.
"""

from __future__ import annotations

import binascii
import functools
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pybase64

from .._errors import (
    DecodeError,
    OptionError,
    PolicyError,
    TooLargeError,
    error_boundary,
    logger,
)
from .._local import read_file_capped
from .._policy import MediaPolicy
from .budget import (
    DecodedBudget,
    DecodeLimits,
    as_decoded_budget,
    current_limits,
    decoded_size,
    decoding,
)
from .results import MediaWithBytes

__all__ = [
    "MediaIO",
    "MediaWithBytes",
    "OptionSpec",
    "decode_base64",
    "opt_bool",
    "opt_choice",
    "opt_float",
    "opt_int",
    "opt_rgb",
    "validate_options",
]

T = TypeVar("T")
_M = TypeVar("_M")


# ---------------------------------------------------------------------------
# Options: every per-modality option is declared with a checker that returns the
# normalised value or raises OptionError naming the key.

Checker = Callable[[str, str, Any], Any]


@dataclass(frozen=True)
class OptionSpec:
    """A per-modality option: its checker and a one-line description."""

    check: Checker
    doc: str


def _bad(modality: str, key: str, expected: str, value: Any) -> OptionError:
    shown = type(value).__name__ if not isinstance(value, (int, float, bool)) else repr(value)
    return OptionError(
        f"{modality} option {key!r} must be {expected} (got {shown})",
        option=key,
    )


def opt_int(
    minimum: int | None = None, maximum: int | None = None, *, allow_none: bool = False
) -> Checker:
    """An integer in ``[minimum, maximum]``."""

    def check(modality: str, key: str, value: Any) -> Any:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _bad(modality, key, "an integer", value)
        value = int(value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            lo = "-inf" if minimum is None else minimum
            hi = "inf" if maximum is None else maximum
            raise _bad(modality, key, f"an integer in [{lo}, {hi}]", value)
        return value

    return check


def opt_float(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    allow_none: bool = False,
    exclusive_minimum: bool = False,
) -> Checker:
    """A finite number in ``[minimum, maximum]``."""

    def check(modality: str, key: str, value: Any) -> Any:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise _bad(modality, key, "a number", value)
        value = float(value)
        if not math.isfinite(value):
            raise _bad(modality, key, "a finite number", value)
        low_bad = minimum is not None and (
            value <= minimum if exclusive_minimum else value < minimum
        )
        if low_bad or (maximum is not None and value > maximum):
            bound = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
            raise _bad(modality, key, f"a number {bound}", value)
        return value

    return check


def opt_bool() -> Checker:
    """``True`` or ``False``."""

    def check(modality: str, key: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _bad(modality, key, "true or false", value)
        return value

    return check


def opt_choice(choices: Sequence[str], *, allow_none: bool = False) -> Checker:
    """One of ``choices``."""

    def check(modality: str, key: str, value: Any) -> Any:
        if value is None and allow_none:
            return None
        if not isinstance(value, str) or value not in choices:
            raise _bad(modality, key, "one of " + ", ".join(map(repr, choices)), value)
        return value

    return check


def opt_rgb() -> Checker:
    """A list or tuple of exactly three integers in 0..255."""

    def check(modality: str, key: str, value: Any) -> Any:
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255
                for v in value
            )
        ):
            raise OptionError(
                f"{modality} option {key!r} must be a list or tuple of 3 integers in 0..255",
                option=key,
            )
        return tuple(int(v) for v in value)

    return check


def validate_options(
    modality: str,
    options: Mapping[str, Any],
    specs: Mapping[str, OptionSpec],
    *,
    also_known: Iterable[str] = (),
) -> dict[str, Any]:
    """Check ``options`` against ``specs`` and return the normalised values.

    ``also_known`` are the modality's other option names (checked elsewhere): an
    unknown key's message lists them with ``specs``, so it names every option there is.

    Raises:
        OptionError: an unknown key, or a value of the wrong type or range.
    """
    if not isinstance(options, Mapping):
        raise OptionError(
            f"{modality} options must be a mapping, not {type(options).__name__}",
            option=modality,
        )
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or key not in specs:
            known = ", ".join(sorted({*specs, *also_known})) or "none"
            raise OptionError(
                f"unknown {modality} option {key!r} (known options: {known})",
                option=str(key),
            )
        out[key] = specs[key].check(modality, key, value)
    return out


# ---------------------------------------------------------------------------


def decode_base64(data: str | bytes, *, limit: int, what: str = "base64 payload") -> bytes:
    """Strict base64 decode with the size checked from the text length first.

    Raises:
        TooLargeError: the decoded size would exceed ``limit``.
        DecodeError: not valid base64.
    """
    if isinstance(data, str):
        try:
            raw = data.strip().encode("ascii")
        except UnicodeEncodeError as exc:
            raise DecodeError(f"{what} is not valid base64") from exc
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data).strip()
    else:
        raise DecodeError(f"{what} must be a base64 string, not {type(data).__name__}")
    estimated = len(raw) // 4 * 3
    if estimated > limit + 2:
        raise TooLargeError.over_max_bytes(what, estimated, limit, estimate=True)
    try:
        decoded: bytes = pybase64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"{what} is not valid base64") from exc
    if len(decoded) > limit:
        raise TooLargeError.over_max_bytes(what, len(decoded), limit)
    return decoded


#: The entry points every ``MediaIO`` subclass gets guarded (see ``MediaIO``).
_GUARDED = ("load_bytes", "load_base64", "load_file")


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: MediaIO[Any], *args: Any, **kwargs: Any) -> Any:
        if current_limits() is not None:
            return method(self, *args, **kwargs)  # a nested load inside one decode
        return self._run_decode(method.__name__, method, args, kwargs)

    guarded.__mediagate_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _call_in_worker(media_io: MediaIO[Any], name: str, limits: DecodeLimits, *args: Any) -> Any:
    """Run one guarded entry point of ``media_io`` under ``limits`` (in a worker process).

    The payload is passed as a top-level argument, so results that hold it (such as
    ``MediaWithBytes.original_bytes``) come back as the caller's own object.
    """
    with decoding(limits):
        return getattr(media_io, name)(*args)


class MediaIO(ABC, Generic[T]):
    """Turns bytes of one modality into a model-ready value.

    Subclasses implement ``load_bytes``; ``load_base64`` and ``load_file`` apply the
    same size budget and hand over to it.

    Every ``load_*`` of every subclass runs behind one guard, added when the subclass
    is defined: the decode gets the item's decoded-output budget (the policy's
    ``max_decoded_bytes_for`` the modality, lowered to what ``decoded_budget``, the
    request's shared budget, can reserve) and its deadline (``decode_timeout_for``);
    it runs in an isolated worker process when the policy isolates the modality; and
    anything it raises that is not a ``MediaError`` becomes one (``DecodeError``, or
    ``TooLargeError`` for memory), the cause chained.

    Example::

        io = ImageMediaIO("RGB")
        image = io.load_bytes(png_bytes)
        pixels = np.asarray(image)
    """

    #: The modality whose byte budget and options apply (see ``MediaPolicy``).
    modality: ClassVar[str] = "image"

    #: The limits in force; subclasses that skip ``MediaIO.__init__`` get the defaults.
    policy: MediaPolicy = MediaPolicy()

    #: The request's shared decoded-bytes budget, if any (set by the connector).
    decoded_budget: DecodedBudget | None = None

    _warned_not_isolatable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _GUARDED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__mediagate_guarded__", False):
                setattr(cls, name, _guard(method))

    def __init__(
        self, *, policy: MediaPolicy | None = None, decoded_budget: DecodedBudget | None = None
    ) -> None:
        if policy is not None and not isinstance(policy, MediaPolicy):
            raise OptionError("policy must be a MediaPolicy", option="policy")
        try:
            budget = as_decoded_budget(decoded_budget)
        except TypeError as exc:
            raise OptionError(str(exc), option="decoded_budget") from exc
        self.policy = policy if policy is not None else MediaPolicy()
        self.decoded_budget = budget

    @property
    def isolatable(self) -> bool:
        """Whether this instance's decodes may run in an isolated worker process (they do
        when the policy isolates the modality)."""
        return True

    def __getstate__(self) -> dict[str, Any]:
        # The request budget stays with the process that owns the request.
        state = dict(self.__dict__)
        state.pop("decoded_budget", None)
        return state

    def _run_decode(
        self,
        name: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """One guarded decode: reserve, run (in place or isolated), settle."""
        policy = self.policy
        modality = self.modality
        what = f"the {modality.replace('_', ' ')}"
        timeout = policy.decode_timeout_for(modality)
        budget = self.decoded_budget
        item_limit = policy.max_decoded_bytes_for(modality)
        reserved = budget.reserve(item_limit, timeout=timeout) if budget is not None else 0
        lowered = budget is not None and reserved < item_limit
        limits = DecodeLimits.starting_now(
            modality,
            reserved if budget is not None else item_limit,
            timeout,
            lowered_by=budget.limit_name if budget is not None and lowered else "",
        )
        try:
            with error_boundary(what):
                if policy.isolates(modality) and self.isolatable and not kwargs:
                    result = self._run_isolated(name, args, limits)
                else:
                    with decoding(limits):
                        result = method(self, *args, **kwargs)
        except BaseException:
            if budget is not None:
                budget.release(reserved)
            raise
        if budget is not None:
            budget.settle(reserved, decoded_size(result))
        return result

    def _run_isolated(self, name: str, args: tuple[Any, ...], limits: DecodeLimits) -> Any:
        from ._isolation import NotIsolatable, decoder_pool, in_worker

        if in_worker():
            with decoding(limits):
                return getattr(self, name)(*args)
        payload = sum(len(a) for a in args if isinstance(a, (bytes, str)))
        try:
            return self._send_to_worker(decoder_pool(), name, args, limits, payload)
        except NotIsolatable as exc:
            # The server's own set-up, not the input: this MediaIO carries something that
            # cannot leave the process (a function defined at run time, say), or workers
            # cannot be started here (a daemonic process).
            if not MediaIO._warned_not_isolatable:
                MediaIO._warned_not_isolatable = True
                logger.warning("%s: %s; decoding in this process", type(self).__name__, exc)
            with decoding(limits):
                return getattr(self, name)(*args)

    def _send_to_worker(
        self, pool: Any, name: str, args: tuple[Any, ...], limits: DecodeLimits, payload: int
    ) -> Any:
        return pool.run(
            _call_in_worker,
            self,
            name,
            limits,
            *args,
            timeout=limits.remaining,
            memory_limit=2 * limits.max_output + 4 * payload,
            what=self.modality.replace("_", " "),
        )

    @property
    def max_bytes(self) -> int:
        """The byte budget for one item under this instance's policy."""
        return self.policy.max_bytes_for(self.modality)

    @abstractmethod
    def load_bytes(self, data: bytes) -> T:
        """Decode ``data``.

        Raises:
            TooLargeError: a limit of the policy was exceeded.
            DecodeError: the bytes are not decodable media of this modality.
        """

    def load_base64(self, media_type: str, data: str) -> T:
        """Decode base64 ``data`` of the given media type.

        Raises:
            TooLargeError, DecodeError: as ``load_bytes``; invalid base64 is a DecodeError.
        """
        return self.load_bytes(decode_base64(data, limit=self.max_bytes))

    def load_file(self, path: Path) -> T:
        """Decode a local regular file.

        Raises:
            PolicyError: not a regular file or not readable.
            TooLargeError, DecodeError: as ``load_bytes``.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise PolicyError(
                f"the file path must be a string or a path, not {type(path).__name__}",
                http_status=400,
            )
        return self.load_bytes(read_file_capped(path, self.max_bytes))

    @classmethod
    def merge_kwargs(
        cls,
        default_kwargs: Mapping[str, Any] | None,
        runtime_kwargs: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Shallow-merge server defaults with request values; request values win.

        ``None`` counts as ``{}``; neither input is mutated.

        Raises:
            OptionError: either input is not a mapping.
        """
        merged: dict[str, Any] = {}
        for name, kwargs in (
            ("default_kwargs", default_kwargs),
            ("runtime_kwargs", runtime_kwargs),
        ):
            if kwargs is None:
                continue
            if not isinstance(kwargs, Mapping):
                raise OptionError(
                    f"{cls.__name__}.merge_kwargs: {name} must be a mapping, "
                    f"not {type(kwargs).__name__}",
                    option=name,
                )
            merged.update(kwargs)
        return merged


# MediaIO's own entry points (inherited by subclasses that do not override them) are
# guarded like every subclass's.
for _name in _GUARDED:
    setattr(MediaIO, _name, _guard(getattr(MediaIO, _name)))
