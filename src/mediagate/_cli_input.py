"""What ``mediagate fetch`` takes as its reference, read the way people have it.

* a URL (``https://``, ``data:``, ``file:``, ``s3://``, ...), loaded as it is;
* a plain path: a ``file:`` URL, readable under the folder the options or the
  environment allow, else (for this command only) under the file's own folder;
* ``-``: the reference is read from standard input;
* ``@FILE``: the reference is read from ``FILE`` (a ``data:`` URL longer than a command
  line may be);
* ``--stdin-bytes``: standard input holds the media itself.

Every read is bounded: standard input and ``@FILE`` are never read past what the
policy's byte budget allows (a ``data:`` URL's base64 of it, for references) plus a
little, so an endless stream is refused with ``TooLargeError`` instead of filling memory.
A reference read from standard input or a file is never given a folder of its own: a
path there is readable only under a folder the options or the environment allow.
"""

from __future__ import annotations

import binascii
import contextlib
import re
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

from ._errors import TooLargeError
from ._modalities import SNIFF_BYTES, modality_name, sniff_modality
from ._policy import MODALITIES, MediaPolicy

__all__ = ["Reference", "UsageError", "byte_limit", "read_bounded", "reference", "sniffed_head"]

_CHUNK = 1 << 16
#: Room for a ``data:`` URL's header (``data:video/mp4;base64,``) and surrounding blanks.
_HEADER_SLACK = 4096
#: Bytes read to tell a data: URL from any other reference text.
_DATA_PROBE = 64
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BLANKS = re.compile(r"\s+")


class UsageError(Exception):
    """A mistake on the command line or in the environment (exit code 2)."""


@dataclass(frozen=True)
class Reference:
    """A reference ready for the connector.

    Attributes:
        url: what the connector loads.
        shown: what the output names instead of ``url`` (``<stdin>``), if anything.
        local_root: the folder ``file:`` reads are limited to for this reference when
            the command line chose it (the file's folder, or the folder the bytes from
            standard input were spooled to); ``None`` leaves it to the options.
        default_root: ``local_root`` is the file's folder, chosen because no folder
            was configured (the output says so).
        path: the local file the bytes are in, when the command line knows it.
    """

    url: str
    shown: str | None = None
    local_root: Path | None = None
    default_root: bool = False
    path: Path | None = None


def byte_limit(policy: MediaPolicy, modality: str) -> int:
    """The most bytes one item of ``modality`` may have (``auto``: of any modality)."""
    if modality == "auto":
        return max(policy.max_bytes_for(name) for name in MODALITIES)
    return policy.max_bytes_for(modality_name(modality))


def _text_limit(policy: MediaPolicy, limit: int) -> int:
    """The longest reference text: a ``data:`` URL holding ``limit`` bytes, or a URL."""
    return max(policy.max_url_length, 4 * -(-limit // 3) + _HEADER_SLACK)


def read_bounded(
    stream: BinaryIO, limit: int, refusal: str, *, limit_name: str = "max_bytes"
) -> bytes:
    """All of ``stream``, refused once it holds more than ``limit`` bytes (it is never
    read further than one byte past ``limit``).

    Raises:
        TooLargeError: more than ``limit`` bytes (``refusal`` is the message).
    """
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise TooLargeError(refusal, limit=limit_name, maximum=limit)


def _over(what: str, limit: int) -> str:
    return (
        f"{what} holds more than {limit} bytes, over max_bytes (reading stopped there; "
        "--max-bytes N raises the budget)"
    )


def _read_reference_text(stream: BinaryIO, policy: MediaPolicy, limit: int, where: str) -> bytes:
    """The reference text ``stream`` holds: as long as a ``data:`` URL of ``limit`` bytes
    may be when it starts like one, else as long as a URL may be."""
    start = stream.read(_DATA_PROBE)
    if start.lstrip()[:5].lower() == b"data:":
        cap = _text_limit(policy, limit)
        refusal = (
            f"{where} holds a data: URL of more than {cap} characters, more than "
            "max_bytes allows (reading stopped there; --max-bytes N raises the budget)"
        )
        return start + read_bounded(stream, max(0, cap - len(start)), refusal)
    cap = policy.max_url_length + _HEADER_SLACK
    refusal = (
        f"{where} holds more than {cap} bytes, longer than a URL may be "
        f"(max_url_length={policy.max_url_length}); it should hold one URL"
    )
    return start + read_bounded(
        stream, max(0, cap - len(start)), refusal, limit_name="max_url_length"
    )


@contextlib.contextmanager
def _interrupts_seen() -> Iterator[None]:
    """A Ctrl-C during the block raises ``KeyboardInterrupt`` at its end at the latest.

    SIGINT may be taken by another thread (a native library's) while the main one
    blocks in a read; its end of input (the sender closing the pipe) then comes before
    the main thread runs Python's handler, and would read as no input at all. The
    signal's wakeup byte says it came.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)
        with contextlib.suppress(OSError):
            if signal.SIGINT in reader.recv(512):
                raise KeyboardInterrupt


def _spool(stream: BinaryIO, folder: Path, limit: int) -> Path:
    """Copy ``stream`` into a file in ``folder``, at most ``limit`` bytes."""
    path = folder / "stdin"
    total = 0
    with path.open("wb") as out:
        while True:
            chunk = stream.read(min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise TooLargeError(
                    _over("standard input", limit), limit="max_bytes", maximum=limit
                )
            out.write(chunk)
    if total == 0:
        raise UsageError("--stdin-bytes: standard input is empty (pipe the media into it)")
    return path


def _looks_like_url(text: str) -> bool:
    match = _SCHEME.match(text)
    if match is None:
        return False
    scheme = match.group(1).lower()
    return text[match.end() : match.end() + 2] == "//" or scheme in {"data", "file"}


def _text_reference(raw: bytes, where: str) -> str:
    """The one reference a file or standard input holds.

    Raises:
        UsageError: empty, binary media rather than a reference, not text, or several
            references.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        kind = sniff_modality(raw[:SNIFF_BYTES])
        if kind is not None:
            shown = kind.replace("_", "-")
            raise UsageError(
                f"{where} holds {shown} bytes, not a reference: pass the file's path itself "
                "(without @), or pipe the bytes with --stdin-bytes"
            ) from None
        raise UsageError(f"{where} is not UTF-8 text (it should hold one URL)") from None
    if not text:
        raise UsageError(f"{where} is empty (it should hold one URL)")
    if text[:5].lower() == "data:":
        # Base64 wrapped over lines (as `base64` writes it) is one payload.
        return _BLANKS.sub("", text)
    if len(text.split()) > 1:
        raise UsageError(f"{where} holds more than one reference (fetch loads one)")
    return text


def _as_file_url(path: Path) -> str:
    return path.as_uri()


def _local_file(argument: str, configured_root: bool) -> Reference:
    """The plain path typed on the command line, as a ``file:`` reference.

    Raises:
        UsageError: no such file, a directory, or not a regular file.
    """
    path = Path(argument)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(
            f"no such file: {argument} (a URL needs its scheme, such as https://)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {argument}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{argument} is a directory (fetch loads one file)")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(
            f"{argument} is not a regular file (pipe its bytes with --stdin-bytes instead)"
        )
    if configured_root:
        absolute = path.absolute()
        return Reference(_as_file_url(absolute), path=absolute)
    real = path.resolve()
    return Reference(_as_file_url(real), local_root=real.parent, default_root=True, path=real)


def _read_reference_file(argument: str, policy: MediaPolicy, limit: int) -> bytes:
    name = argument[1:]
    if not name:
        raise UsageError("@ needs a file name (@FILE reads the reference from FILE)")
    try:
        with open(name, "rb") as stream:  # any readable file, a pipe too
            return _read_reference_text(stream, policy, limit, argument)
    except FileNotFoundError:
        raise UsageError(f"{argument}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{argument} is a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {argument}: {exc.strerror}") from None


@contextlib.contextmanager
def reference(
    argument: str | None,
    *,
    stdin: BinaryIO,
    stdin_bytes: bool,
    policy: MediaPolicy,
    modality: str,
    configured_root: bool,
) -> Iterator[Reference]:
    """The reference ``argument`` stands for (see the module docstring), valid inside
    the block (bytes from standard input live in a temporary folder until it ends).

    Args:
        argument: the positional argument (``None`` when left out).
        stdin: standard input, binary.
        stdin_bytes: standard input holds the media itself.
        policy: the byte budgets reads are bounded by.
        modality: the modality asked for (``auto`` bounds by the largest budget).
        configured_root: the options or the environment name a local media folder.

    Raises:
        UsageError: no reference, or one that cannot be read as one.
        TooLargeError: standard input or ``@FILE`` is over the byte budget.
    """
    limit = byte_limit(policy, modality)
    if stdin_bytes:
        if argument not in (None, "-"):
            raise UsageError("--stdin-bytes reads the media from standard input: drop the URL")
        with tempfile.TemporaryDirectory(prefix="mediagate-stdin-") as folder:
            spooled = _spool(stdin, Path(folder), limit)
            yield Reference(_as_file_url(spooled), "<stdin>", Path(folder), path=spooled)
        return
    if argument is None:
        raise UsageError(
            "fetch needs a reference: a URL, a file path, - (read it from standard input), "
            "@FILE (read it from FILE), or --stdin-bytes with the media on standard input"
        )
    if argument == "-" or argument.startswith("@"):
        if argument == "-":
            where = "standard input"
            with _interrupts_seen():
                raw = _read_reference_text(stdin, policy, limit, where)
        else:
            where = argument
            raw = _read_reference_file(argument, policy, limit)
        text = _text_reference(raw, where)
        if not _looks_like_url(text):
            # A path read from a stream gets no folder of its own: only a configured one.
            text = _as_file_url(Path(text).absolute())
        yield Reference(text)
        return
    if _looks_like_url(argument):
        yield Reference(argument)
        return
    yield _local_file(argument, configured_root)


def sniffed_head(ref: Reference) -> bytes | None:
    """The first bytes of what ``ref`` holds when they are at hand without a fetch (a
    local file the command line resolved, a ``data:`` URL); ``None`` otherwise."""
    if ref.path is not None:
        try:
            with ref.path.open("rb") as stream:
                return stream.read(SNIFF_BYTES)
        except OSError:
            return None
    if ref.url[:5].lower() == "data:":
        header, _, payload = ref.url.partition(",")
        if not header.lower().endswith(";base64"):
            return unquote_to_bytes(payload[: 3 * SNIFF_BYTES])[:SNIFF_BYTES]
        try:
            return binascii.a2b_base64(payload[: SNIFF_BYTES // 3 * 4])
        except (binascii.Error, ValueError):
            return None
    return None
