"""``file:`` references: judged inside the allowed root, then read as regular files only.

Containment is decided before anything outside the root is touched. The reference is
first made absolute and its ``.`` and ``..`` components collapsed lexically (no file
system access); a path that is not then inside the root, component-wise, is refused.
Only then are symlinks resolved, one component at a time from the root: each link's
text is read (the link lies inside the root) and its target, collapsed the same way,
is judged before it is followed, so a link leading outside is refused without looking
at what it points to. A refused reference gets one answer whether its target exists or
not: no existence oracle.

The judged path is then opened one component at a time with ``O_NOFOLLOW`` relative to
its parent, so a symlink swapped in between the check and the open fails instead of
leading outside. Files are opened non-blocking (a FIFO cannot hang the worker) and
must be regular files (no devices, no directories); their size is capped before and
while reading.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

from ._errors import PolicyError, TooLargeError

__all__ = [
    "allowed_root",
    "check_allowed_root",
    "read_fd_capped",
    "read_file_capped",
    "read_under_root",
]

_CHUNK = 1 << 20
#: Symlinks followed while resolving one reference (the kernel's own limit on Linux).
_MAX_LINKS = 40
_OUTSIDE = "the file is outside allowed_local_media_path (it must be a subpath of that folder)"

# Each resolved root and the absolute spellings it was configured under (a root given
# through a symlink is also reachable by that spelling, as the link was when the root
# was checked).
_spellings_lock = threading.Lock()
_root_spellings: dict[Path, frozenset[Path]] = {}
# The last resolution of each configured spelling, made when a connector was configured.
_resolved_roots: dict[str, Path] = {}


def _lexical(path: Path) -> Path:
    """``path`` (absolute) with ``.`` and ``..`` collapsed, without touching the disk."""
    return Path(os.path.normpath(path))


def _remember_spelling(resolved: Path, spelling: Path) -> None:
    with _spellings_lock:
        _root_spellings[resolved] = _root_spellings.get(resolved, frozenset()) | {spelling}


def check_allowed_root(root: str | os.PathLike[str]) -> Path:
    """The resolved allowed folder.

    The folder's own spelling (made absolute, collapsed) is remembered, so a reference
    spelled through it (a root configured as a symlink) is judged as inside the
    resolved folder.

    Raises:
        ValueError: it does not exist or is not a directory.
    """
    path = Path(root)
    if not path.exists():
        raise ValueError(f"allowed_local_media_path {os.fspath(root)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"allowed_local_media_path {os.fspath(root)!r} is not a directory")
    resolved = path.resolve(strict=True)
    _remember_spelling(resolved, _lexical(Path(os.path.abspath(path))))
    with _spellings_lock:
        _resolved_roots[os.fspath(root)] = resolved
    return resolved


def allowed_root(root: str) -> Path:
    """The resolved folder configured as ``root``: the resolution made when it was last
    checked (``check_allowed_root``, when a connector was configured), so serving a
    reference never touches anything outside the root.

    Raises:
        ValueError: it was never checked and does not exist or is not a directory.
    """
    with _spellings_lock:
        resolved = _resolved_roots.get(root)
    return resolved if resolved is not None else check_allowed_root(root)


def _outside() -> PolicyError:
    return PolicyError(_OUTSIDE)


def _within(root: Path, path: Path) -> Path | None:
    """``path`` (collapsed) re-spelt under ``root`` when it lies inside it; else None."""
    if path.is_relative_to(root):
        return path
    with _spellings_lock:
        spellings = _root_spellings.get(root, frozenset())
    for spelling in spellings:
        if path.is_relative_to(spelling):
            return root.joinpath(*path.relative_to(spelling).parts)
    return None


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


def _resolve(root: Path, inside: Path) -> Path:
    """``inside`` (collapsed, inside ``root``) with every symlink resolved.

    Nothing outside ``root`` is looked at: components are examined from the root down
    with ``lstat``, and each symlink's target is collapsed and judged before it is
    followed.

    Raises:
        PolicyError: a symlink leads outside the root (whether its target exists or not).
        OSError: a component is missing or not a directory, or too many symlinks.
    """
    pending = list(inside.relative_to(root).parts)
    current = root
    links = 0
    while pending:
        step = current / pending.pop(0)
        if not stat.S_ISLNK(os.lstat(step).st_mode):
            current = step
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many symlinks")
        target = _within(root, _lexical(current / os.readlink(step)))
        if target is None:
            raise _outside()
        pending[:0] = target.relative_to(root).parts
        current = root
    return current


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
    judged component-wise, so ``/data/m-private`` is not inside ``/data/m``, and it is
    judged before anything outside the root is opened or examined: ``..`` is collapsed
    lexically (in the reference and in symlink targets alike), and a symlink is
    followed only when its collapsed target lies inside the root.

    A reference outside the root, or through a symlink leading outside, is always a
    ``PolicyError`` (403) "the file is outside allowed_local_media_path", whether the
    target exists or not. Inside the root, a missing file is a ``PolicyError`` (400)
    saying "no such file": the root's own contents are the caller's to know.

    Raises:
        PolicyError: outside the root (403); missing, not a regular file, not readable
            or a symlink loop inside it (400).
        TooLargeError: larger than ``limit``.
    """
    if "\x00" in relative:
        raise PolicyError("the file path contains a NUL character", http_status=400)
    candidate = Path(relative)
    if not candidate.is_absolute():
        candidate = root / candidate
    inside = _within(root, _lexical(candidate))
    if inside is None:
        raise _outside()
    try:
        resolved = _resolve(root, inside)
        fd = _open_checked(root, resolved)
    except OSError as exc:
        raise PolicyError(f"cannot open the file ({_os_reason(exc)})", http_status=400) from exc
    try:
        return read_fd_capped(fd, limit)
    finally:
        os.close(fd)
