"""``file:`` references: resolve under the allowed root and read regular files only.

Containment is judged component-wise on the fully resolved path (``..``, percent
escapes and symlinks already applied). That path is then opened one component at a
time with ``O_NOFOLLOW`` relative to its parent, so a symlink swapped in between the
check and the open fails instead of leading outside. Files are opened
non-blocking (a FIFO cannot hang the worker) and must be regular files (no devices,
no directories); their size is capped before and while reading.
"""

from __future__ import annotations

import errno
import os
import stat
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
    return TooLargeError.over_max_bytes("the local file", size, limit)


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


def _resolve(candidate: Path) -> Path:
    """``candidate`` with ``..`` and every symlink resolved (it must exist)."""
    return candidate.resolve(strict=True)


_DIR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _open_beneath(root: Path, resolved: Path) -> int:
    """Open ``resolved`` (already judged to lie in ``root``) one component at a time.

    ``resolved`` holds no symlinks, so any symlink met now was swapped in after the
    check: every component is opened relative to its parent with ``O_NOFOLLOW``, and
    such a swap fails instead of leading outside.
    """
    parts = resolved.relative_to(root).parts
    if not parts:
        return _open_nonblocking(root, nofollow=True)
    fd = os.open(root, _DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        flags = (
            os.O_RDONLY
            | getattr(os, "O_NONBLOCK", 0)
            | getattr(os, "O_NOFOLLOW", 0)
            | getattr(os, "O_CLOEXEC", 0)
        )
        return os.open(parts[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


def _open_checked(root: Path, resolved: Path) -> int:
    if os.open in os.supports_dir_fd:
        return _open_beneath(root, resolved)
    # No openat here: open the path, then compare it with what was judged.
    fd = _open_nonblocking(resolved, nofollow=True)
    now = os.stat(resolved, follow_symlinks=False)
    info = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
        os.close(fd)
        raise PolicyError("the file changed while it was being opened")
    return fd


def read_under_root(root: Path, relative: str, limit: int) -> bytes:
    """Read ``relative`` (an absolute or root-relative path) if it lies inside ``root``.

    ``root`` must already be resolved (see ``check_allowed_root``). Containment is
    judged component-wise, so ``/data/m-private`` is not inside ``/data/m``.

    Raises:
        PolicyError: outside the root, not a regular file, or not readable.
        TooLargeError: larger than ``limit``.
    """
    if "\x00" in relative:
        raise PolicyError("the file path contains a NUL character", http_status=400)
    candidate = Path(relative)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = _resolve(candidate)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = _os_reason(exc) if isinstance(exc, OSError) else "it cannot be resolved"
        raise PolicyError(f"cannot open the file ({reason})", http_status=400) from exc
    if not resolved.is_relative_to(root):
        raise PolicyError("the file is outside allowed_local_media_path")
    try:
        fd = _open_checked(root, resolved)
    except OSError as exc:
        raise PolicyError(f"cannot open the file ({_os_reason(exc)})", http_status=400) from exc
    try:
        return read_fd_capped(fd, limit)
    finally:
        os.close(fd)
