"""``file:`` references: resolve under the allowed root and read regular files only.

Containment is judged component-wise on the fully resolved path (``..``, percent
escapes and symlinks already applied), then judged again on the opened descriptor, so
a path swapped between the check and the open is still caught. Files are opened
non-blocking (a FIFO cannot hang the worker) and must be regular files (no devices,
no directories); their size is capped before and while reading.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

from ._errors import PolicyError, TooLargeError

__all__ = ["check_allowed_root", "read_fd_capped", "read_file_capped", "read_under_root"]

_CHUNK = 1 << 20


def check_allowed_root(root: str | os.PathLike[str]) -> Path:
    """The resolved allowed folder.

    Raises:
        ValueError: it does not exist or is not a directory.
    """
    path = Path(root)
    if not path.exists():
        raise ValueError(f"allowed_local_media_path {os.fspath(root)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"allowed_local_media_path {os.fspath(root)!r} is not a directory")
    return path.resolve(strict=True)


def _too_large(size: int, limit: int) -> TooLargeError:
    return TooLargeError(
        f"local file is larger than max_bytes={limit} bytes (raise MediaPolicy.max_bytes)",
        limit="max_bytes",
        value=size,
        maximum=limit,
    )


def read_fd_capped(fd: int, limit: int) -> bytes:
    """Read a regular file's descriptor, refusing more than ``limit`` bytes.

    Raises:
        PolicyError: the descriptor is not a regular file.
        TooLargeError: the file is (or grows) larger than ``limit``.
    """
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise PolicyError("only regular files can be loaded", http_status=400)
    if info.st_size > limit:
        raise _too_large(info.st_size, limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit)
    return b"".join(chunks)


def _open_nonblocking(path: Path, *, nofollow: bool) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags)


def read_file_capped(path: str | os.PathLike[str], limit: int) -> bytes:
    """Read a regular file of at most ``limit`` bytes (no FIFO, device or directory)."""
    try:
        fd = _open_nonblocking(Path(path), nofollow=False)
    except OSError as exc:
        raise PolicyError(f"cannot open the file ({_os_reason(exc)})", http_status=400) from exc
    try:
        return read_fd_capped(fd, limit)
    finally:
        os.close(fd)


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "a symlink loop or a symlink where none is allowed"
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    return exc.strerror or "I/O error"


def _fd_path(fd: int) -> Path | None:
    if sys.platform.startswith("linux"):
        try:
            return Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return None
    return None


def read_under_root(root: Path, relative: str, limit: int) -> bytes:
    """Read ``relative`` (an absolute or root-relative path) if it lies inside ``root``.

    ``root`` must already be resolved (see ``check_allowed_root``).

    Raises:
        PolicyError: outside the root, not a regular file, or not readable.
        TooLargeError: larger than ``limit``.
    """
    candidate = Path(relative)
    if not candidate.is_absolute():
        candidate = root / candidate
    if "\x00" in relative:
        raise PolicyError("the file path contains a NUL character", http_status=400)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        reason = _os_reason(exc) if isinstance(exc, OSError) else "a symlink loop"
        raise PolicyError(f"cannot open the file ({reason})", http_status=400) from exc
    if not resolved.is_relative_to(root):
        raise PolicyError("the file is outside allowed_local_media_path")
    try:
        fd = _open_nonblocking(resolved, nofollow=True)
    except OSError as exc:
        raise PolicyError(f"cannot open the file ({_os_reason(exc)})", http_status=400) from exc
    try:
        opened = _fd_path(fd)
        if opened is not None:
            if not opened.is_relative_to(root):
                raise PolicyError("the file is outside allowed_local_media_path")
        else:
            # No descriptor path on this platform: compare identities instead.
            now = os.stat(resolved, follow_symlinks=False)
            info = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                raise PolicyError("the file changed while it was being opened")
        return read_fd_capped(fd, limit)
    finally:
        os.close(fd)
