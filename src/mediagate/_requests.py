"""Whole OpenAI requests: every media part found, counted, fetched and decoded at once.

A Chat Completions request (``messages``) or a Responses request (``input``) is walked
once, in order. Each media part becomes a ``MediaPart`` with its JSON location; the
parts are counted against the request's ``RequestLimits`` before any I/O, every
reference is parsed and judged by the policy before any fetch, and then all parts are
fetched and decoded concurrently, within the connector's bounds, under one deadline, one
download-bytes total and one decoded-bytes budget. The same reference twice is fetched
once; the same reference with the same options is decoded once.

Errors are the connector's ``MediaError`` classes with ``param`` set to the location of
the part (``messages[2].content[1].image_url.url``) and the location leading the
message; ``openai_error_body`` turns one into the body an OpenAI-compatible server
answers with, under ``error.http_status``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import blake3
import pybase64

from ._connector import (
    LoadReport,
    MediaConnector,
    _check_media_io_kwargs,
    _head,
    _Plan,
    _source_label,
)
from ._errors import (
    DecodeError,
    FetchError,
    FetchTimeout,
    MediaError,
    OptionError,
    PolicyError,
    TooLargeError,
    as_media_error,
)
from ._media.base import MediaIO, MediaWithBytes, decode_base64
from ._media.budget import DecodedBudget
from ._modalities import guess_modality, modality_name, reference_modality
from ._observe import observing, report_load
from ._policy import MODALITIES, MiB
from ._sources import SourceResult

if TYPE_CHECKING:
    from ._urls import ParsedURL

__all__ = [
    "MediaPart",
    "RequestLimits",
    "ResolvedItem",
    "ResolvedRequest",
    "content_hash",
    "find_media_parts",
    "openai_error_body",
    "resolve_chat_request",
    "resolve_chat_request_async",
]

_T = TypeVar("_T")

#: The modality of each media part type ("auto": the content decides).
PART_MODALITIES: dict[str, str] = {
    "image_url": "image",
    "input_image": "image",
    "audio_url": "audio",
    "input_audio": "audio",
    "video_url": "video",
    "file": "auto",
    "input_file": "auto",
    "image_embeds": "image_embedding",
    "audio_embeds": "audio_embedding",
    "video_embeds": "video_embedding",
}

#: Part types that carry text (kept, never fetched).
TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})

_AUDIO_FORMAT = re.compile(r"[a-z0-9][a-z0-9.+-]{0,15}")
_MAX_UUID = 256
_MAX_FILE_ID = 1024
_MAX_TENSORS = 64


@dataclass(frozen=True)
class RequestLimits:
    """What one request's media may take together.

    ``None`` means no limit of that kind. The server's limits are lowered by a
    request's (``lowered``); a request can never raise them.

    Attributes:
        max_items: media parts in the request.
        max_items_per_modality: media parts per modality, e.g. ``{"image": 16}``.
        max_download_bytes: bytes downloaded for the request (not ``data:``/``file:``).
        max_decoded_bytes: bytes of decoded media the request's items hold together.
        timeout: seconds for every part of the request together (the request deadline).
    """

    max_items: int | None = 64
    max_items_per_modality: Mapping[str, int] = field(default_factory=dict)
    max_download_bytes: int | None = 1024 * MiB
    max_decoded_bytes: int | None = 4096 * MiB
    timeout: float | None = 120.0

    def __post_init__(self) -> None:
        for name in ("max_items", "max_download_bytes", "max_decoded_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise OptionError(f"{name} must be a whole number or None", option=name)
            if value is not None and value < 0:
                raise OptionError(f"{name} must not be negative", option=name)
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < math.inf
        ):
            raise OptionError("timeout must be a finite number of seconds > 0", option="timeout")
        per = self.max_items_per_modality
        if not isinstance(per, Mapping):
            raise OptionError(
                "max_items_per_modality must map a modality to a count",
                option="max_items_per_modality",
            )
        checked: dict[str, int] = {}
        for modality, count in per.items():
            name = modality_name(modality)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise OptionError(
                    f"max_items_per_modality[{modality!r}] must be a whole number >= 0",
                    option="max_items_per_modality",
                )
            checked[name] = count
        object.__setattr__(self, "max_items_per_modality", checked)

    def lowered(self, other: RequestLimits | Mapping[str, Any] | None) -> RequestLimits:
        """These limits with each of ``other``'s values that is lower (a mapping is read as
        ``RequestLimits`` fields); a value can only go down.

        Raises:
            OptionError: an unknown field or a bad value.
        """
        if other is None:
            return self
        if isinstance(other, Mapping):
            known = {f.name for f in fields(RequestLimits)}
            for key in other:
                if key not in known:
                    raise OptionError(
                        f"unknown request limit {key!r} (known: {', '.join(sorted(known))})",
                        option=str(key),
                    )
            base: dict[str, Any] = {f.name: None for f in fields(RequestLimits)}
            base["max_items_per_modality"] = {}
            other = RequestLimits(**(base | dict(other)))
        if not isinstance(other, RequestLimits):
            raise OptionError("request limits must be RequestLimits or a mapping", option="limits")
        changes: dict[str, Any] = {}
        for name in ("max_items", "max_download_bytes", "max_decoded_bytes", "timeout"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None and (mine is None or theirs < mine):
                changes[name] = theirs
        per = dict(self.max_items_per_modality)
        for modality, count in other.max_items_per_modality.items():
            if modality not in per or count < per[modality]:
                per[modality] = count
        changes["max_items_per_modality"] = per
        return replace(self, **changes)


@dataclass(frozen=True)
class MediaPart:
    """One media part of a request, as found (nothing fetched yet).

    Attributes:
        index: the part's place among the request's media parts.
        message: the index of its message (``messages[i]``) or input item (``input[i]``).
        content: the index of the part in that message's ``content`` list.
        location: the JSON location of the part's media in the request.
        part_type: the part's ``type`` (``image_url``, ``input_audio``, ...).
        modality: the modality the part type names (``auto`` for files).
        reference: the media reference (a URL of any accepted scheme), if it has one.
        embeds: base64 tensor payload(s) of an ``*_embeds`` part.
        file_id: the file id of a ``file``/``input_file``/``input_image`` part.
        uuid: the caller's identifier of the media, if given.
    """

    index: int
    message: int
    content: int
    location: str
    part_type: str
    modality: str
    reference: str | None = None
    embeds: str | Mapping[str, str] | None = field(default=None, repr=False)
    file_id: str | None = None
    uuid: str | None = None


@dataclass
class ResolvedItem:
    """One media part, resolved: its decoded media (what the matching ``fetch_*``
    returns; a ``dict`` of tensors for a named ``*_embeds`` part) or its error.

    ``content_hash`` identifies the media and the options that shaped it (see
    ``content_hash``); for a part whose ``uuid`` was honoured it is derived from the
    uuid and the caller's namespace instead. ``media`` is ``None`` for a part that
    gave only a uuid.
    """

    part: MediaPart
    modality: str
    media: Any = None
    content_hash: str | None = None
    report: LoadReport | None = None
    seconds: float = 0.0
    error: MediaError | None = None

    @property
    def location(self) -> str:
        return self.part.location

    @property
    def uuid(self) -> str | None:
        return self.part.uuid

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ResolvedRequest:
    """Every media part of a request, resolved, in request order.

    Attributes:
        items: one per media part, in the order they appear in the request.
        texts: per message (or input item), its text with each media part replaced by
            the caller's placeholder for its modality (left out when it has none).
        seconds: wall time of the whole resolution.
        downloaded_bytes: bytes downloaded for the request.
        decoded_bytes: bytes of decoded media the items hold.
    """

    items: list[ResolvedItem]
    texts: list[str]
    seconds: float
    downloaded_bytes: int = 0
    decoded_bytes: int = 0

    @property
    def errors(self) -> list[MediaError]:
        """The errors of the parts that failed, in request order."""
        return [item.error for item in self.items if item.error is not None]

    @property
    def ok(self) -> bool:
        return not self.errors

    def media(self, modality: str) -> list[Any]:
        """The decoded media of the items of ``modality``, in request order."""
        name = modality_name(modality)
        return [item.media for item in self.items if item.modality == name and item.ok]


# -- finding the parts ------------------------------------------------------------------


def _malformed(location: str, what: str) -> MediaError:
    return _located(PolicyError(what, http_status=400), location)


def _string(value: Any, location: str, what: str, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise _malformed(location, f"{what} must be a string, not {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise _malformed(location, f"{what} is longer than {limit} characters")
    return value


def _part_type(part: Mapping[str, Any], location: str) -> str | None:
    kind = part.get("type")
    if kind is None:
        # The short form some clients send: the part's one known key names its type.
        keys = [key for key in part if key in PART_MODALITIES or key == "text"]
        return keys[0] if len(keys) == 1 else None
    return _string(kind, f"{location}.type", "a part's type", limit=64)


class _Walk:
    """The media parts and text segments of a request, found in one pass."""

    def __init__(self, unknown_parts: str) -> None:
        self.unknown_parts = unknown_parts
        self.parts: list[MediaPart] = []
        #: Per message: its text segments, and the index of each media part in place.
        self.segments: list[list[str | int]] = []

    def message(self, message: Any, location: str, index: int) -> None:
        segments: list[str | int] = []
        self.segments.append(segments)
        if not isinstance(message, Mapping):
            raise _malformed(location, "a message must be an object")
        content = message.get("content")
        if content is None:
            return
        if isinstance(content, str):
            segments.append(content)
            return
        if isinstance(content, (bytes, bytearray)) or not isinstance(content, Sequence):
            raise _malformed(f"{location}.content", "content must be a string or a list of parts")
        for position, part in enumerate(content):
            self.part(part, f"{location}.content[{position}]", (index, position), segments)

    def part(
        self, part: Any, location: str, where: tuple[int, int], segments: list[str | int]
    ) -> None:
        if isinstance(part, str):
            segments.append(part)
            return
        if not isinstance(part, Mapping):
            raise _malformed(location, "a content part must be an object")
        kind = _part_type(part, location)
        if kind in TEXT_PARTS:
            text = part.get(kind if kind != "input_text" and kind != "output_text" else "text")
            if text is None:
                text = part.get("text")
            if isinstance(text, str):
                segments.append(text)
            return
        if kind not in PART_MODALITIES:
            if self.unknown_parts == "refuse":
                raise _malformed(location, f"unsupported content part type {kind!r}")
            return
        uuid = part.get("uuid")
        if uuid is not None:
            uuid = _string(uuid, f"{location}.uuid", "uuid", limit=_MAX_UUID)
        found = _FINDERS[kind](part, location, kind)
        self.parts.append(
            MediaPart(
                index=len(self.parts),
                message=where[0],
                content=where[1],
                part_type=kind,
                modality=PART_MODALITIES[kind],
                uuid=uuid,
                **found,
            )
        )
        segments.append(len(self.parts) - 1)


def _find_url(part: Mapping[str, Any], location: str, kind: str) -> dict[str, Any]:
    """``image_url``/``audio_url``/``video_url``: a string, or ``{"url": ..., "detail"}``."""
    value = part.get(kind)
    if value is None:
        return {"location": location}
    if isinstance(value, Mapping):
        url = value.get("url")
        where = f"{location}.{kind}.url"
        if url is None:
            return {"location": where}
        return {"location": where, "reference": _string(url, where, "the media URL")}
    where = f"{location}.{kind}"
    return {"location": where, "reference": _string(value, where, "the media URL")}


def _audio_data_url(value: Any, location: str) -> dict[str, Any]:
    """``input_audio``: ``{"data": base64, "format": "wav"}`` as a ``data:`` reference."""
    if not isinstance(value, Mapping):
        raise _malformed(location, "input_audio must be an object with data and format")
    data = _string(value.get("data"), f"{location}.data", "input_audio.data")
    audio_format = value.get("format", "wav")
    audio_format = _string(audio_format, f"{location}.format", "input_audio.format", limit=16)
    audio_format = audio_format.lower()
    if not _AUDIO_FORMAT.fullmatch(audio_format):
        raise _malformed(f"{location}.format", "input_audio.format is not a format name")
    return {
        "location": f"{location}.data",
        "reference": f"data:audio/{audio_format};base64,{data}",
    }


def _find_input_audio(part: Mapping[str, Any], location: str, kind: str) -> dict[str, Any]:
    return _audio_data_url(part.get("input_audio"), f"{location}.input_audio")


def _file_reference(data: str) -> str:
    """``file_data``: a ``data:`` URL, or bare base64 taken as one of unknown type."""
    if data[:5].lower() == "data:":
        return data
    return f"data:application/octet-stream;base64,{data}"


def _find_file(part: Mapping[str, Any], location: str, kind: str) -> dict[str, Any]:
    """Chat ``file``: ``{"file": {"file_data" | "file_id", "filename"}}``; Responses
    ``input_file``: ``file_data``, ``file_id`` or ``file_url`` on the part itself."""
    if kind == "file":
        body = part.get("file")
        location = f"{location}.file"
        if not isinstance(body, Mapping):
            raise _malformed(location, "file must be an object with file_data or file_id")
    else:
        body = part
    if body.get("file_data") is not None:
        where = f"{location}.file_data"
        return {
            "location": where,
            "reference": _file_reference(_string(body["file_data"], where, "file_data")),
        }
    if body.get("file_url") is not None:
        where = f"{location}.file_url"
        return {"location": where, "reference": _string(body["file_url"], where, "file_url")}
    if body.get("file_id") is not None:
        where = f"{location}.file_id"
        return {
            "location": where,
            "file_id": _string(body["file_id"], where, "file_id", limit=_MAX_FILE_ID),
        }
    raise _malformed(location, "a file part needs file_data, file_id or file_url")


def _find_input_image(part: Mapping[str, Any], location: str, kind: str) -> dict[str, Any]:
    """Responses ``input_image``: ``image_url`` (a string) or ``file_id``."""
    if part.get("image_url") is not None:
        return _find_url(part, location, "image_url")
    if part.get("file_id") is not None:
        where = f"{location}.file_id"
        return {
            "location": where,
            "file_id": _string(part["file_id"], where, "file_id", limit=_MAX_FILE_ID),
        }
    return {"location": location}


def _find_embeds(part: Mapping[str, Any], location: str, kind: str) -> dict[str, Any]:
    """``*_embeds``: one base64 tensor, or a mapping of names to base64 tensors."""
    value = part.get(kind)
    where = f"{location}.{kind}"
    if value is None:
        return {"location": where}
    if isinstance(value, Mapping):
        if not value:
            raise _malformed(where, f"{kind} must name at least one tensor")
        if len(value) > _MAX_TENSORS:
            raise _malformed(where, f"{kind} names more than {_MAX_TENSORS} tensors")
        for name, data in value.items():
            _string(name, where, "a tensor name", limit=256)
            _string(data, f"{where}.{name}", "a base64 tensor")
        return {"location": where, "embeds": dict(value)}
    return {"location": where, "embeds": _string(value, where, "a base64 tensor")}


_FINDERS: dict[str, Callable[[Mapping[str, Any], str, str], dict[str, Any]]] = {
    "image_url": _find_url,
    "audio_url": _find_url,
    "video_url": _find_url,
    "input_image": _find_input_image,
    "input_audio": _find_input_audio,
    "file": _find_file,
    "input_file": _find_file,
    "image_embeds": _find_embeds,
    "audio_embeds": _find_embeds,
    "video_embeds": _find_embeds,
}


def _walk(request: Any, api: Literal["auto", "chat", "responses"], unknown_parts: str) -> _Walk:
    if api not in ("auto", "chat", "responses"):
        raise OptionError("api must be 'auto', 'chat' or 'responses'", option="api")
    if unknown_parts not in ("ignore", "refuse"):
        raise OptionError("unknown_parts must be 'ignore' or 'refuse'", option="unknown_parts")
    walk = _Walk(unknown_parts)
    if isinstance(request, Mapping):
        if api != "responses" and "messages" in request:
            items, root = request["messages"], "messages"
        elif api != "chat" and "input" in request:
            items, root = request["input"], "input"
        else:
            raise _malformed(
                "", "the request has no messages (Chat Completions) or input (Responses)"
            )
    else:
        items, root = request, "input" if api == "responses" else "messages"
    if isinstance(items, str) and root == "input":
        walk.segments.append([items])  # Responses: a plain text input
        return walk
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise _malformed(root, f"{root} must be a list")
    for index, item in enumerate(items):
        walk.message(item, f"{root}[{index}]", index)
    return walk


def find_media_parts(
    request: Any,
    *,
    api: Literal["auto", "chat", "responses"] = "auto",
    unknown_parts: Literal["ignore", "refuse"] = "ignore",
) -> list[MediaPart]:
    """The media parts of a Chat Completions request (or its ``messages``) or a
    Responses request (its ``input``), in request order; nothing is fetched.

    Raises:
        PolicyError: a malformed part (400), or an unknown part type with
            ``unknown_parts="refuse"``; ``param`` names its location.
    """
    return _walk(request, api, unknown_parts).parts


# -- identity ---------------------------------------------------------------------------


def content_hash(modality: str, data: bytes, options: Mapping[str, Any] | None = None) -> str:
    """A stable identity (BLAKE3, hex) of media bytes decoded as ``modality`` with
    ``options``: equal for equal bytes and options whatever reference they came from.

    BLAKE3 because it is the fastest cryptographic hash measured here (about 4x
    SHA-256), and a key other clients' requests are matched by must not be forgeable.
    """
    head = json.dumps([modality, dict(options or {})], sort_keys=True, default=repr)
    hasher = blake3.blake3(b"mediagate/item/1\0")
    hasher.update(head.encode())
    hasher.update(b"\0")
    hasher.update(data)
    return hasher.hexdigest()


def _uuid_hash(namespace: str, modality: str, uuid: str) -> str:
    key = json.dumps([namespace, modality, uuid])
    return blake3.blake3(b"mediagate/uuid/1\0" + key.encode()).hexdigest()


# -- errors -----------------------------------------------------------------------------


def _located(error: MediaError, location: str) -> MediaError:
    """A copy of ``error`` that names ``location`` (in ``param`` and its message)."""
    if error.param is not None:
        return error
    located = copy.copy(error)
    located.param = location
    if location:
        located.message = f"{location}: {error.message}"
        located.args = (located.message,)
    return located


_CODES: dict[type[MediaError], str] = {
    FetchTimeout: "media_fetch_timeout",
    FetchError: "media_fetch_failed",
    TooLargeError: "media_too_large",
    OptionError: "invalid_media_option",
    PolicyError: "media_refused",
}


def openai_error_body(error: BaseException) -> dict[str, Any]:
    """The OpenAI-style body for ``error``: ``{"error": {"message", "type", "param",
    "code"}}``; answer it with ``error.http_status`` (500 for anything not a
    ``MediaError``, whose message is never shown)."""
    if not isinstance(error, MediaError):
        return {
            "error": {
                "message": "internal error while resolving the request's media",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
    status = error.http_status
    code = "invalid_media"
    for cls, name in _CODES.items():
        if isinstance(error, cls):
            code = name
            break
    if isinstance(error, TooLargeError):
        code = error.limit
    elif isinstance(error, PolicyError) and status == 400:
        code = "invalid_media_reference"
    elif status == 415:
        code = "unsupported_media_type"
    kind = "invalid_request_error" if status < 500 else "upstream_error"
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": code}}


# -- the request budget -----------------------------------------------------------------


class _Downloads:
    """The request's download total: ``charge`` refuses what would cross it."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def remaining(self) -> int | None:
        with self._lock:
            return None if self.limit is None else max(0, self.limit - self.used)

    def refused(self, size: int) -> TooLargeError:
        return TooLargeError(
            f"the request's downloads would reach {self.used + size} bytes, over its "
            f"max_download_bytes={self.limit}",
            limit="max_download_bytes",
            value=self.used + size,
            maximum=self.limit,
        )

    def charge(self, size: int) -> None:
        with self._lock:
            if self.limit is not None and self.used + size > self.limit:
                raise self.refused(size)
            self.used += size


def _count(parts: Sequence[MediaPart], limits: RequestLimits) -> dict[int, MediaError]:
    """The parts past the request's item counts (the first of them is the one that
    crossed a limit), by index; a file part of unknown modality counts only in total."""
    errors: dict[int, MediaError] = {}
    per: dict[str, int] = {}
    total = 0
    for part in parts:
        total += 1
        if limits.max_items is not None and total > limits.max_items:
            errors[part.index] = _located(
                TooLargeError(
                    f"the request has more than max_items={limits.max_items} media parts",
                    limit="max_items",
                    value=len(parts),
                    maximum=limits.max_items,
                ),
                part.location,
            )
            continue
        modality = part.modality
        if modality == "auto" and part.reference is not None:
            modality = reference_modality(part.reference) or "auto"
        if modality == "auto":
            continue
        per[modality] = per.get(modality, 0) + 1
        allowed = limits.max_items_per_modality.get(modality)
        if allowed is not None and per[modality] > allowed:
            errors[part.index] = _located(
                TooLargeError(
                    f"the request has more than {allowed} {modality.replace('_', ' ')} "
                    f"part(s) (max_items_per_modality)",
                    limit="max_items_per_modality",
                    value=per[modality],
                    maximum=allowed,
                ),
                part.location,
            )
    return errors


# -- resolution -------------------------------------------------------------------------


FileLookup = Callable[
    [str], "str | bytes | SourceResult | Awaitable[str | bytes | SourceResult | None] | None"
]


@dataclass
class _Job:
    """One part on its way: its parsed reference (or inline bytes) and its result."""

    part: MediaPart
    modality: str
    ref: ParsedURL | None = None
    inline: SourceResult | None = None
    item: ResolvedItem | None = None


class _Resolution:
    """One request's resolution: shared fetches, shared decodes, one budget, one deadline."""

    def __init__(
        self,
        connector: MediaConnector,
        limits: RequestLimits,
        media_io_kwargs: Mapping[str, Any],
        video_processor: str | None,
        uuid_namespace: str | None,
        file_lookup: FileLookup | None,
    ) -> None:
        self.connector = connector
        self.limits = limits
        self.media_io_kwargs = dict(media_io_kwargs)
        self.video_processor = video_processor
        self.uuid_namespace = uuid_namespace
        self.file_lookup = file_lookup
        self.start = time.perf_counter()
        self.deadline = None if limits.timeout is None else self.start + limits.timeout
        self.downloads = _Downloads(limits.max_download_bytes)
        budget = connector.decoded_budget
        if limits.max_decoded_bytes is not None:
            budget = DecodedBudget(max(1, limits.max_decoded_bytes))
        self.decoded = budget
        self.fetches: dict[str, asyncio.Future[tuple[SourceResult, bool, float]]] = {}
        self.fetch_limits: dict[str, int] = {}
        self.decodes: dict[str, asyncio.Future[ResolvedItem]] = {}
        self.stored: set[str] = set()

    def remaining(self) -> float:
        if self.deadline is None:
            return math.inf
        return self.deadline - time.perf_counter()

    def timed_out(self) -> FetchTimeout:
        return FetchTimeout(
            f"the request's media took longer than its deadline of {self.limits.timeout} s "
            "(RequestLimits.timeout)"
        )

    # -- before any fetch ---------------------------------------------------------------

    async def look_up(self, job: _Job) -> None:
        """Turn a ``file_id`` into a reference or bytes through the caller's lookup."""
        file_id = job.part.file_id
        assert file_id is not None
        lookup = self.file_lookup
        if lookup is None:
            raise PolicyError(
                "file_id parts need a file lookup on this server (file_lookup=)",
                http_status=400,
            )
        try:
            if inspect.iscoroutinefunction(lookup):
                found = await lookup(file_id)
            else:
                found = await self.connector._in_pool(lookup, file_id)
                if inspect.isawaitable(found):
                    found = await found
        except MediaError:
            raise
        except Exception as exc:
            raise FetchError("the file lookup failed") from exc
        if found is None:
            raise PolicyError(f"no file with the id {file_id!r}", http_status=404)
        if isinstance(found, str):
            job.part = replace(job.part, reference=found)
        elif isinstance(found, (bytes, bytearray, memoryview, SourceResult)):
            job.inline = self.connector._checked(found, self._fetch_limit(job))
        else:
            raise FetchError("the file lookup returned something other than a reference or bytes")

    def prepare(self, job: _Job) -> None:
        """Parse and judge a part's reference: every rule that needs no I/O."""
        reference = job.part.reference
        if reference is not None and job.inline is None:
            job.ref = self.connector._parse(reference)
            self.connector._start(job.ref)
        if job.modality == "auto" and reference is not None:
            job.modality = reference_modality(reference) or "auto"

    # -- fetch and decode ---------------------------------------------------------------

    def _fetch_limit(self, job: _Job) -> int:
        policy = self.connector.policy
        if job.modality == "auto":
            return max(policy.max_bytes_for(name) for name in MODALITIES)
        return policy.max_bytes_for(job.modality)

    def _fetch_timeout(self, job: _Job) -> float:
        policy = self.connector.policy
        if job.modality == "auto":
            timeout = max(policy.timeout_for(name) for name in MODALITIES)
        else:
            timeout = policy.timeout_for(job.modality)
        return max(0.001, min(timeout, self.remaining()))

    async def _fetch(self, ref: ParsedURL, timeout: float) -> tuple[SourceResult, bool, float]:
        start = time.perf_counter()
        limit = self.fetch_limits[ref.url]
        # Only downloads count: a data: or file: reference is never capped by the total.
        local = getattr(self.connector._source(ref.scheme), "local", False)
        left = None if local else self.downloads.remaining()
        lowered = left is not None and left < limit
        if lowered:
            if left == 0:
                raise self.downloads.refused(1)
            limit = left  # type: ignore[assignment]
        try:
            fetched, cached = await self.connector._fetch_anywhere(
                ref, limit, timeout, self.downloads
            )
        except TooLargeError as exc:
            if lowered and exc.limit == "max_bytes":
                raise self.downloads.refused(limit + 1) from exc
            raise
        return fetched, cached, time.perf_counter() - start

    def _options(self, modality: str) -> dict[str, Any]:
        """The options that shape a decode of ``modality`` (server's under request's)."""
        options = MediaIO.merge_kwargs(
            self.connector.media_io_kwargs.get(modality), self.media_io_kwargs.get(modality)
        )
        if modality == "video" and self.video_processor is not None:
            options["video_processor"] = self.video_processor
        return options

    def _decode_in_pool(
        self, plan: _Plan[Any], fetched: SourceResult, report: LoadReport
    ) -> tuple[Any, str]:
        """Decode (in a pool thread) and hash the bytes with the options that applied."""
        media = self.connector._decode(plan, fetched, report)
        if isinstance(media, MediaWithBytes):
            data = media.original_bytes
        elif fetched.base64 is not None:
            data = pybase64.b64decode(fetched.base64.strip(), validate=False)
        else:
            data = bytes(fetched.data)
        return media, content_hash(report.modality, data, self._options(report.modality))

    def _plan(self, job: _Job) -> _Plan[Any]:
        connector = self.connector
        options = self.media_io_kwargs
        budget = self.decoded

        def pick(fetched: SourceResult) -> MediaIO[Any]:
            if job.modality == "auto":
                url = job.part.reference or ""
                name: str = guess_modality(url, _head(fetched))
            else:
                name = job.modality
            media_io = connector.media_io(
                name, options.get(name), video_processor=self.video_processor
            )
            media_io.decoded_budget = budget
            return media_io

        return _Plan(self._fetch_limit(job), pick)

    async def _load(self, job: _Job) -> ResolvedItem:
        start = time.perf_counter()
        part = job.part
        if job.ref is not None:
            key = job.ref.url
            fetch = self.fetches.get(key)
            if fetch is None:
                fetch = self.fetches[key] = asyncio.ensure_future(
                    self._fetch(job.ref, self._fetch_timeout(job))
                )
            fetched, cached, fetch_seconds = await fetch
            source = job.ref.scheme
        else:
            assert job.inline is not None
            fetched, cached, fetch_seconds, source = job.inline, False, 0.0, "file_id"
        cacheable = job.ref is not None and (
            cached or self.connector._cache_for(self.connector._source(job.ref.scheme)) is not None
        )
        report = LoadReport(
            source=source, num_bytes=fetched.size, cached=cached, cacheable=cacheable
        )
        report.stages["fetch"] = fetch_seconds
        decode_start = time.perf_counter()
        media, digest = await self.connector._in_pool(
            self._decode_in_pool, self._plan(job), fetched, report
        )
        report.stages["decode"] = time.perf_counter() - decode_start
        if job.ref is not None and not cached and job.ref.url not in self.stored:
            self.stored.add(job.ref.url)
            if self.connector._cache_for(self.connector._source(job.ref.scheme)) is not None:
                await self.connector._in_pool(self.connector._store, job.ref, fetched)
        if part.uuid is not None and self.uuid_namespace is not None:
            digest = _uuid_hash(self.uuid_namespace, report.modality, part.uuid)
        # One report per load: parts that share this decode share it (failures are
        # reported per part when the request is resolved, see ``_reports_failures``).
        report_load(report, None, part.reference)
        return ResolvedItem(
            part, report.modality, media, digest, report, time.perf_counter() - start
        )

    def _embeds(self, job: _Job) -> ResolvedItem:
        start = time.perf_counter()
        part = job.part
        try:
            media_io = self.connector.media_io(job.modality, self.media_io_kwargs.get(job.modality))
        except ImportError as exc:
            raise DecodeError(
                f"{job.part.part_type} parts need torch on this server (install mediagate[torch])",
                http_status=415,
            ) from exc
        media_io.decoded_budget = self.decoded
        payload = part.embeds
        assert payload is not None
        named = {"": payload} if isinstance(payload, str) else dict(payload)
        tensors: dict[str, Any] = {}
        hasher_input = bytearray()
        num_bytes = 0
        for name, data in named.items():
            raw = decode_base64(data, limit=media_io.max_bytes, what="the base64 tensor")
            num_bytes += len(raw)
            tensors[name] = media_io.load_bytes(raw)
            hasher_input += json.dumps(name).encode() + b"\0" + raw
        report = LoadReport(source="inline", num_bytes=num_bytes, modality=job.modality)
        media = tensors[""] if isinstance(payload, str) else tensors
        digest = content_hash(job.modality, bytes(hasher_input), self._options(job.modality))
        if part.uuid is not None and self.uuid_namespace is not None:
            digest = _uuid_hash(self.uuid_namespace, job.modality, part.uuid)
        report_load(report, None, None)
        return ResolvedItem(part, job.modality, media, digest, report, time.perf_counter() - start)

    def _decode_key(self, job: _Job) -> str | None:
        if job.ref is None:
            return None
        return json.dumps(
            [
                job.ref.url,
                job.modality,
                self._options(job.modality)
                if job.modality != "auto"
                else {m: self._options(m) for m in MODALITIES},
            ],
            sort_keys=True,
            default=repr,
        )

    async def resolve(self, job: _Job) -> ResolvedItem:
        """The item of one prepared job (shared with earlier jobs of the same decode)."""
        part = job.part
        if part.embeds is not None:
            return await self.connector._in_pool(self._embeds, job)
        if job.ref is None and job.inline is None:
            if part.uuid is None or self.uuid_namespace is None:
                raise PolicyError(
                    "a part without media is accepted only with a uuid of media sent "
                    "before, where the server gives a uuid namespace",
                    http_status=400,
                )
            digest = _uuid_hash(self.uuid_namespace, job.modality, part.uuid)
            return ResolvedItem(part, job.modality, None, digest)
        key = self._decode_key(job)
        if key is None:
            return await self._load(job)
        shared = self.decodes.get(key)
        if shared is None:
            shared = self.decodes[key] = asyncio.ensure_future(self._load(job))
        item = await asyncio.shield(shared)
        if item.part is not part:
            item = replace(item, part=part)
            if part.uuid is not None and self.uuid_namespace is not None:
                item.content_hash = _uuid_hash(self.uuid_namespace, item.modality, part.uuid)
        return item

    def per_modality_overflow(self, items: Sequence[ResolvedItem]) -> dict[int, MediaError]:
        """Files whose modality showed only once decoded, counted again per modality."""
        errors: dict[int, MediaError] = {}
        per: dict[str, int] = {}
        for item in items:
            if item.error is not None:
                continue
            per[item.modality] = per.get(item.modality, 0) + 1
            allowed = self.limits.max_items_per_modality.get(item.modality)
            if (
                item.part.modality == "auto"
                and allowed is not None
                and per[item.modality] > allowed
            ):
                errors[item.part.index] = _located(
                    TooLargeError(
                        f"the request has more than {allowed} "
                        f"{item.modality.replace('_', ' ')} part(s) (max_items_per_modality)",
                        limit="max_items_per_modality",
                        value=per[item.modality],
                        maximum=allowed,
                    ),
                    item.location,
                )
        return errors


async def _guarded(step: Awaitable[_T], what: str) -> _T:
    try:
        return await step
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise as_media_error(exc, what) from exc


async def _run_all(
    jobs: Sequence[_Job],
    step: Callable[[_Job], Coroutine[Any, Any, Any]],
    resolution: _Resolution,
    errors: dict[int, MediaError],
    fail_fast: bool,
    what: str,
) -> dict[int, Any]:
    """Run ``step`` for every job concurrently until the deadline: results and errors by
    part index. Fail-fast: the first error cancels the others (and is the only one)."""
    tasks = {
        asyncio.ensure_future(_guarded(step(job), what)): job
        for job in jobs
        if job.part.index not in errors
    }
    results: dict[int, Any] = {}
    pending = set(tasks)
    try:
        while pending:
            left = resolution.remaining()
            if left <= 0:
                break
            done, pending = await asyncio.wait(
                pending,
                timeout=None if math.isinf(left) else left,
                return_when=asyncio.FIRST_EXCEPTION if fail_fast else asyncio.ALL_COMPLETED,
            )
            failed = False
            for task in sorted(done, key=lambda t: tasks[t].part.index):
                job = tasks[task]
                exc = task.exception()
                if exc is None:
                    results[job.part.index] = task.result()
                else:
                    error = as_media_error(exc, what)
                    errors[job.part.index] = _located(error, job.part.location)
                    failed = True
            if failed and fail_fast:
                break
        if pending and not (fail_fast and errors):
            for task in pending:
                job = tasks[task]
                errors[job.part.index] = _located(resolution.timed_out(), job.part.location)
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return results


_P = ParamSpec("_P")


def _report_failure(part: MediaPart, modality: str, error: MediaError) -> None:
    """One failed part's report to the hooks and the log."""
    if part.embeds is not None:
        source = "inline"
    elif part.file_id is not None and part.reference is None:
        source = "file_id"
    else:
        source = _source_label(part.reference)
    modality = modality if modality in MODALITIES else ""
    report_load(LoadReport(source=source, modality=modality), error, part.reference)


def _reports_failures(
    resolve: Callable[_P, Coroutine[Any, Any, ResolvedRequest]],
) -> Callable[_P, Coroutine[Any, Any, ResolvedRequest]]:
    """Each part that failed ends in one report to the hooks and the log, as each load
    that succeeded does in ``_Resolution._load``; errors of the request as a whole (bad
    limits or options) are not loads and are not reported."""

    @functools.wraps(resolve)
    async def resolving(*args: _P.args, **kwargs: _P.kwargs) -> ResolvedRequest:
        if not observing():
            return await resolve(*args, **kwargs)
        try:
            resolved = await resolve(*args, **kwargs)
        except MediaError as exc:
            if exc.param is not None:
                request = args[0] if args else kwargs.get("request")
                try:
                    parts = find_media_parts(
                        request,
                        api=kwargs.get("api", "auto"),  # type: ignore[arg-type]
                        unknown_parts=kwargs.get("unknown_parts", "ignore"),  # type: ignore[arg-type]
                    )
                except MediaError:
                    parts = []
                for part in parts:
                    if part.location == exc.param:
                        _report_failure(part, part.modality, exc)
                        break
            raise
        for item in resolved.items:
            if item.error is not None:
                _report_failure(item.part, item.modality or item.part.modality, item.error)
        return resolved

    return resolving


@_reports_failures
async def resolve_chat_request_async(
    request: Any,
    connector: MediaConnector,
    *,
    limits: RequestLimits | None = None,
    request_limits: RequestLimits | Mapping[str, Any] | None = None,
    media_io_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    video_processor: str | None = None,
    file_lookup: FileLookup | None = None,
    uuid_namespace: str | None = None,
    errors: Literal["raise", "collect"] = "raise",
    unknown_parts: Literal["ignore", "refuse"] = "ignore",
    placeholders: Mapping[str, str] | None = None,
    api: Literal["auto", "chat", "responses"] = "auto",
) -> ResolvedRequest:
    """Resolve every media part of an OpenAI Chat Completions request (or its
    ``messages``) or Responses request (its ``input``), concurrently, under one budget.

    Args:
        request: the request body (parsed JSON) or its list of messages.
        connector: the connector whose policy, sources, cache and pool are used.
        limits: the server's ``RequestLimits`` (default ``RequestLimits()``).
        request_limits: this request's limits; each can only lower ``limits``.
        media_io_kwargs: this request's options by modality (over the connector's).
        video_processor: the model's video processor, as in ``fetch_video``.
        file_lookup: turns a ``file_id`` into a reference (a URL of any accepted scheme,
            judged like any other) or the file's bytes; sync or async; ``None`` for an
            unknown id. Without it, ``file_id`` parts are refused.
        uuid_namespace: the tenant the request's ``uuid``s belong to: only with one is a
            part's uuid its identity (so one client cannot name another's media).
        errors: ``"raise"`` — the first error cancels the rest and is raised;
            ``"collect"`` — every part is resolved or carries its error.
        unknown_parts: ``"ignore"`` part types that are not media or text, or
            ``"refuse"`` them (400).
        placeholders: text put in place of each media part in ``texts``, by modality.
        api: ``"chat"`` or ``"responses"`` when a bare list is given (default chat).

    Raises:
        MediaError: with ``errors="raise"``, the first error, its ``param`` the
            location of the part (``messages[2].content[1].image_url.url``).
        OptionError: bad limits or options (always raised).
    """
    if errors not in ("raise", "collect"):
        raise OptionError("errors must be 'raise' or 'collect'", option="errors")
    if uuid_namespace is not None and not isinstance(uuid_namespace, str):
        raise OptionError("uuid_namespace must be a string", option="uuid_namespace")
    if file_lookup is not None and not callable(file_lookup):
        raise OptionError("file_lookup must be callable", option="file_lookup")
    kwargs = _check_media_io_kwargs(media_io_kwargs)
    server = limits if limits is not None else RequestLimits()
    if not isinstance(server, RequestLimits):
        raise OptionError("limits must be RequestLimits", option="limits")
    resolution = _Resolution(
        connector,
        server.lowered(request_limits),
        kwargs,
        video_processor,
        uuid_namespace,
        file_lookup,
    )
    fail_fast = errors == "raise"
    walk = _walk(request, api, unknown_parts)
    jobs = [_Job(part, part.modality) for part in walk.parts]
    failed = _count(walk.parts, resolution.limits)
    _raise_first(failed, fail_fast)
    lookups = [job for job in jobs if job.part.file_id is not None]
    if lookups:
        await _run_all(
            lookups, resolution.look_up, resolution, failed, fail_fast, "the file lookup"
        )
        _raise_first(failed, fail_fast)
    for job in jobs:
        if job.part.index in failed:
            continue
        try:
            resolution.prepare(job)
        except MediaError as exc:
            failed[job.part.index] = _located(exc, job.part.location)
            if fail_fast:
                break
        if job.ref is not None:
            limit = resolution._fetch_limit(job)
            key = job.ref.url
            resolution.fetch_limits[key] = max(limit, resolution.fetch_limits.get(key, 0))
    _raise_first(failed, fail_fast)
    try:
        results = await _run_all(
            jobs, resolution.resolve, resolution, failed, fail_fast, "the media part"
        )
    finally:
        await _settle([*resolution.fetches.values(), *resolution.decodes.values()])
    _raise_first(failed, fail_fast)
    items = [
        results.get(job.part.index)
        or ResolvedItem(
            job.part, job.modality if job.modality != "auto" else "", error=failed[job.part.index]
        )
        for job in jobs
    ]
    failed.update(resolution.per_modality_overflow(items))
    _raise_first(failed, fail_fast)
    for item in items:
        if item.part.index in failed and item.error is None:
            item.error = failed[item.part.index]
            item.media = None
    decoded = resolution.decoded
    return ResolvedRequest(
        items=items,
        texts=_texts(walk, items, placeholders),
        seconds=time.perf_counter() - resolution.start,
        downloaded_bytes=resolution.downloads.used,
        decoded_bytes=decoded.used if decoded is not None else 0,
    )


async def _settle(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel what is still running and take every outcome, so nothing outlives the
    request and no failure goes unretrieved."""
    for future in futures:
        future.cancel()
    if futures:
        await asyncio.gather(*futures, return_exceptions=True)


def _raise_first(failed: Mapping[int, MediaError], fail_fast: bool) -> None:
    if fail_fast and failed:
        raise failed[min(failed)]


def _texts(
    walk: _Walk, items: Sequence[ResolvedItem], placeholders: Mapping[str, str] | None
) -> list[str]:
    marks: dict[str, str] = {
        modality_name(key): value for key, value in (placeholders or {}).items()
    }
    texts = []
    for segments in walk.segments:
        shown: Iterator[str] = (
            segment if isinstance(segment, str) else marks.get(items[segment].modality, "")
            for segment in segments
        )
        texts.append("\n".join(text for text in shown if text))
    return texts


def resolve_chat_request(
    request: Any, connector: MediaConnector, **options: Any
) -> ResolvedRequest:
    """The blocking twin of ``resolve_chat_request_async`` (same arguments), for code
    without an event loop; the parts are still fetched and decoded concurrently."""
    coro = resolve_chat_request_async(request, connector, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from async code that chose the blocking twin: run on a thread of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="mediagate-request") as pool:
        return pool.submit(asyncio.run, coro).result()
