"""MediaCache: an optional on-disk cache of downloaded media, shared by processes.

Layout of the cache folder (created private, ``0700``)::

    index.sqlite3        one row per entry: size, billed size, CRC-32, times
    data/ab/<key>.<tag>  the bytes of one entry; <key> is the sha256 of the URL
    tmp/                 files being written (same file system, so renames are atomic)

Why SQLite (stdlib ``sqlite3``) plus data files rather than a directory scan or a new
dependency: SQLite gives transactions that several processes can share safely (WAL mode
lets readers run while one writer commits; ``BEGIN IMMEDIATE`` plus ``busy_timeout``
serialise writers without crashing), and indexes on the last-access and creation times
make "evict the least recently used" and "drop the expired" an index walk of
O(log n) per entry rather than a scan. The running total of billed bytes lives in one
row updated in the same transaction as the entry it accounts for, so the budget check
costs nothing and cannot drift. ``diskcache`` is built the same way; using stdlib
``sqlite3`` directly keeps the dependency list short and the on-disk format ours.

Rules:

- Keys are the canonical URL strings; only their sha256 reaches the file system.
- ``put`` writes the bytes to ``tmp/``, then, holding the write lock, records the row,
  unlinks replaced and evicted files, renames the new file into place and commits.
  Putting bytes the entry already holds only renews its times. A reader
  never sees a half-written file, and a crash can at worst leave a row whose file is
  missing (a miss, removed when found) or one unreferenced file.
- ``get`` checks the exact length and a checksum against the row: a corrupt, truncated or
  missing file is a miss and its row is removed, so the next fetch replaces it. The check
  guards against torn writes, truncation and bit rot, not against someone who can write
  into the private folder (they could rewrite the index as well). The checksum is the
  wrapping sum of the payload's 64-bit words (plus a CRC-32 of the last few bytes): any
  flipped bit, zeroed block or cut changes it, and it runs at memory speed (about 20 us
  for 1 MB, where a CRC-32 of the whole payload took 300-400 us and dominated a hit).
- Every entry is billed at least one 4 KiB block (sizes round up to 4 KiB), so a flood of
  tiny entries cannot exceed ``max_bytes`` in real disk use.
- Entries expire ``ttl`` seconds after they were written.
- Any I/O or database fault is logged on ``mediagate.cache`` and reported as a miss (or
  a skipped write): the cache can make a fetch faster, never make it fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._config import cache_kwargs_from_env

__all__ = ["BLOCK_SIZE", "CacheStats", "MediaCache", "on_evictions"]

logger = logging.getLogger("mediagate.cache")

#: Every entry is billed in whole blocks of this many bytes (at least one).
BLOCK_SIZE = 4096

_INDEX = "index.sqlite3"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    billed INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    created REAL NOT NULL,
    accessed REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_access ON entries (accessed);
CREATE INDEX IF NOT EXISTS entries_by_created ON entries (created);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    billed INTEGER NOT NULL,
    entries INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, billed, entries) VALUES (0, 0, 0);
"""
#: Rows looked at per step when evicting or expiring.
_BATCH = 32
#: How long a write waits for another process's transaction before giving up.
_BUSY_SECONDS = 10.0
#: Temporary files older than this are leftovers of a crashed writer.
_STALE_TMP_SECONDS = 3600.0


#: Called with the number of entries a write evicted for room, by any ``MediaCache``
#: (``enable_metrics`` counts them); see ``on_evictions``.
_EVICTION_LISTENERS: list[Callable[[int], object]] = []


def on_evictions(fn: Callable[[int], object]) -> Callable[[], None]:
    """Call ``fn(count)`` after every write that evicted ``count`` entries for room;
    returns the function that unregisters it. A listener that raises is ignored."""
    _EVICTION_LISTENERS.append(fn)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            _EVICTION_LISTENERS.remove(fn)

    return unregister


def _evicted(count: int) -> None:
    for fn in list(_EVICTION_LISTENERS):
        try:
            fn(count)
        except Exception:
            logger.debug("a cache eviction listener raised", exc_info=True)


#: Connections a forked child inherited: kept alive, never used or closed there.
_INHERITED: list[sqlite3.Connection] = []


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    connections.clear()


def billed_size(size: int) -> int:
    """The bytes an entry of ``size`` bytes counts against the budget."""
    return max(1, -(-size // BLOCK_SIZE)) * BLOCK_SIZE


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache.

    ``hits``, ``misses`` and ``evictions`` count what this ``MediaCache`` object did;
    ``entries`` and ``bytes_stored`` (billed bytes, in whole 4 KiB blocks) describe the
    folder as all processes sharing it left it.
    """

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes_stored: int


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _checksum(data: bytes) -> int:
    """Wrapping sum of the 64-bit words of ``data``, mixed with a CRC-32 of its tail.

    Kept within SQLite's signed 64-bit integers.
    """
    whole = len(data) // 8 * 8
    words = int(np.frombuffer(data, dtype="<u8", count=whole // 8).sum(dtype=np.uint64))
    folded = (words & 0x7FFF_FFFF_FFFF_FFFF) ^ (words >> 63)  # keep the top bit's say
    return folded ^ (zlib.crc32(data[whole:]) << 31)


def _owned_private_dir(path: Path) -> None:
    """Create ``path`` private, or repair an existing cache folder to ``0700``.

    Raises:
        ValueError: ``path`` is not a directory, belongs to another user, or is a
            non-empty folder that is not a mediagate cache.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"MediaCache directory {str(path)!r} is not a directory")
    if info.st_uid != os.getuid():
        raise ValueError(f"MediaCache directory {str(path)!r} belongs to another user")
    if stat.S_IMODE(info.st_mode) == 0o700:
        return
    if not (path / _INDEX).exists() and any(path.iterdir()):
        raise ValueError(
            f"MediaCache directory {str(path)!r} is not private and holds other files; "
            "point it at a new or empty folder"
        )
    os.chmod(path, 0o700)


def _with_retries(step: Callable[[], object]) -> object:
    """Run ``step`` again while another process holds the lock it needs.

    Switching a fresh index to WAL takes an exclusive lock that SQLite's busy handler
    does not wait for: processes opening one new folder together would otherwise fail.

    Raises:
        sqlite3.OperationalError: still locked after ``_BUSY_SECONDS``.
    """
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class MediaCache:
    """A size- and age-bounded download cache in a private folder.

    Example::

        cache = MediaCache("/var/cache/mediagate", max_bytes=2 * 2**30, ttl=6 * 3600)
        connector = MediaConnector(cache=cache)
        connector.fetch_image(url)            # downloaded, decoded, then cached

    Args:
        directory: the cache folder; created ``0700`` if missing. An existing cache
            folder is repaired to ``0700``.
        max_bytes: the budget in billed bytes (each entry rounds up to 4 KiB blocks);
            past it the least recently used entries are evicted.
        ttl: seconds after which an entry expires.
        clock: the wall clock (seconds); replaceable for tests.

    Raises:
        ValueError: a bad ``max_bytes`` or ``ttl``, or an unusable ``directory``.
        OSError: the folder cannot be created or opened.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 5 * 2**30,
        ttl: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer (bytes)")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        self.directory = Path(directory).expanduser().absolute()
        self.max_bytes = max_bytes
        self.ttl = float(ttl)
        self._clock = clock
        self._local = threading.local()
        self._pid = os.getpid()
        self._connections: list[sqlite3.Connection] = []
        self._finalizer = weakref.finalize(self, _close_all, self._connections)
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0
        _owned_private_dir(self.directory)
        for sub in ("data", "tmp"):
            (self.directory / sub).mkdir(mode=0o700, exist_ok=True)
        self._init_schema()
        self._sweep_tmp()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MediaCache | None:
        """The cache ``MEDIAGATE_MEDIA_CACHE*`` describe, or ``None`` when unset."""
        kwargs = cache_kwargs_from_env(environ)
        return None if kwargs is None else cls(**kwargs)

    def __repr__(self) -> str:
        return f"MediaCache({str(self.directory)!r}, max_bytes={self.max_bytes}, ttl={self.ttl:g})"

    # -- the index ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A forked child must neither use nor close its parent's connections.
            _INHERITED.extend(self._connections)
            self._connections.clear()
            self._local = threading.local()
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.directory / _INDEX,
                timeout=_BUSY_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _init_schema(self) -> None:
        index = self.directory / _INDEX
        if not index.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(index, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        index_conn = self._connection()
        mode = _with_retries(lambda: index_conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            logger.warning("the cache index could not switch to WAL mode (got %s)", mode)
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise ValueError(
                    f"MediaCache directory {str(self.directory)!r} has an index of an "
                    f"unknown version ({version}); use another folder or delete it"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _sweep_tmp(self) -> None:
        horizon = time.time() - _STALE_TMP_SECONDS
        with os.scandir(self.directory / "tmp") as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < horizon:
                        os.unlink(entry.path)

    def close(self) -> None:
        """Close this object's index connections (it reopens them if used again)."""
        with self._lock:
            self._local = threading.local()
            _close_all(self._connections)

    def __enter__(self) -> MediaCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- get --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes cached for ``key``, or ``None`` (missing, expired, corrupt or faulty)."""
        if not isinstance(key, str):
            raise TypeError("MediaCache keys are URL strings")
        try:
            data = self._get(_key_hash(key))
        except Exception:
            logger.warning("media cache read failed; treating it as a miss", exc_info=True)
            data = None
        with self._lock:
            if data is None:
                self._misses += 1
            else:
                self._hits += 1
        return data

    def _get(self, hashed: str) -> bytes | None:
        conn = self._connection()
        row = conn.execute(
            "SELECT file, size, crc, created FROM entries WHERE key = ?", (hashed,)
        ).fetchone()
        if row is None:
            return None
        file, size, crc, created = row
        now = self._clock()
        if now - created > self.ttl:
            self._drop(hashed, file)
            return None
        try:
            with open(self.directory / "data" / file, "rb") as handle:
                data = handle.read(size + 1)
        except FileNotFoundError:
            # Replaced or evicted since the row was read, or lost in a crash.
            self._drop(hashed, file)
            return None
        if len(data) != size or _checksum(data) != crc:
            logger.warning("media cache entry %s.. failed its integrity check", hashed[:12])
            self._drop(hashed, file)
            return None
        try:
            conn.execute(
                "UPDATE entries SET accessed = ? WHERE key = ? AND file = ?", (now, hashed, file)
            )
        except sqlite3.OperationalError:
            # Recency is a hint; a busy index must not turn a good hit into a miss.
            logger.debug("media cache could not record an access", exc_info=True)
        return data

    def _drop(self, hashed: str, file: str) -> None:
        """Remove the entry ``hashed`` if it still points at ``file``."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT billed FROM entries WHERE key = ? AND file = ?", (hashed, file)
            ).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM entries WHERE key = ?", (hashed,))
            conn.execute(
                "UPDATE totals SET billed = billed - ?, entries = entries - 1 WHERE id = 0",
                (row[0],),
            )
            self._unlink(file)

    def _unlink(self, file: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / "data" / file)

    # -- put --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Cache ``data`` for ``key``, evicting the least recently used past the budget.

        Data larger than the whole budget is not cached. Faults are logged, not raised.
        """
        if not isinstance(key, str):
            raise TypeError("MediaCache keys are URL strings")
        data = bytes(data)
        billed = billed_size(len(data))
        if billed > self.max_bytes:
            logger.debug("media cache skipped an entry larger than max_bytes")
            return
        try:
            self._put(_key_hash(key), data, billed)
        except Exception:
            logger.warning("media cache write failed; the entry was not cached", exc_info=True)

    def _put(self, hashed: str, data: bytes, billed: int) -> None:
        crc = _checksum(data)
        if self._refresh_if_same(hashed, len(data), crc):
            return
        file = f"{hashed[:2]}/{hashed}.{secrets.token_hex(8)}"
        final = self.directory / "data" / file
        fd = -1
        tmp = self.directory / "tmp" / f"{hashed[:16]}.{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb", closefd=True) as handle:
                fd = -1
                handle.write(data)
            final.parent.mkdir(mode=0o700, exist_ok=True)
            now = self._clock()
            with self._write() as conn:
                evicted = self._record(conn, hashed, file, len(data), billed, crc, now)
                os.replace(tmp, final)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self._evictions += evicted
        if evicted:
            _evicted(evicted)

    def _refresh_if_same(self, hashed: str, size: int, crc: int) -> bool:
        """Renew an entry that already holds these bytes (concurrent fetches of one URL)."""
        conn = self._connection()
        row = conn.execute(
            "SELECT file, size, crc FROM entries WHERE key = ?", (hashed,)
        ).fetchone()
        if row is None or (row[1], row[2]) != (size, crc):
            return False
        now = self._clock()
        updated = conn.execute(
            "UPDATE entries SET created = ?, accessed = ? WHERE key = ? AND file = ?",
            (now, now, hashed, row[0]),
        )
        return updated.rowcount == 1

    def _record(
        self,
        conn: sqlite3.Connection,
        hashed: str,
        file: str,
        size: int,
        billed: int,
        crc: int,
        now: float,
    ) -> int:
        """Insert one row and restore the budget inside the caller's write transaction.

        Returns the number of entries evicted for room.
        """
        billed_total, entries = conn.execute(
            "SELECT billed, entries FROM totals WHERE id = 0"
        ).fetchone()
        gone: list[str] = []
        old = conn.execute("SELECT file, billed FROM entries WHERE key = ?", (hashed,)).fetchone()
        if old is not None:
            conn.execute("DELETE FROM entries WHERE key = ?", (hashed,))
            gone.append(old[0])
            billed_total -= old[1]
            entries -= 1
        conn.execute(
            "INSERT INTO entries (key, file, size, billed, crc, created, accessed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (hashed, file, size, billed, crc, now, now),
        )
        billed_total += billed
        entries += 1
        # A few expired entries go on every write, so dead bytes do not linger.
        expired = conn.execute(
            "SELECT key, file, billed FROM entries WHERE created < ? ORDER BY created LIMIT ?",
            (now - self.ttl, _BATCH),
        ).fetchall()
        for victim, victim_file, victim_billed in expired:
            conn.execute("DELETE FROM entries WHERE key = ?", (victim,))
            gone.append(victim_file)
            billed_total -= victim_billed
            entries -= 1
        evicted = 0
        while billed_total > self.max_bytes:
            oldest = conn.execute(
                "SELECT key, file, billed FROM entries WHERE key != ? ORDER BY accessed LIMIT ?",
                (hashed, _BATCH),
            ).fetchall()
            if not oldest:
                break
            for victim, victim_file, victim_billed in oldest:
                conn.execute("DELETE FROM entries WHERE key = ?", (victim,))
                gone.append(victim_file)
                billed_total -= victim_billed
                entries -= 1
                evicted += 1
                if billed_total <= self.max_bytes:
                    break
        conn.execute(
            "UPDATE totals SET billed = ?, entries = ? WHERE id = 0", (billed_total, entries)
        )
        for name in gone:
            self._unlink(name)
        return evicted

    # -- whole-cache operations -------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Counters of this object and the folder's current size (see ``CacheStats``)."""
        try:
            billed, entries = (
                self._connection()
                .execute("SELECT billed, entries FROM totals WHERE id = 0")
                .fetchone()
            )
        except Exception:
            logger.warning("media cache statistics could not be read", exc_info=True)
            billed = entries = 0
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                entries=int(entries),
                bytes_stored=int(billed),
            )

    def clear(self) -> None:
        """Remove every entry (for every process sharing the folder)."""
        with self._write() as conn:
            files = [row[0] for row in conn.execute("SELECT file FROM entries")]
            conn.execute("DELETE FROM entries")
            conn.execute("UPDATE totals SET billed = 0, entries = 0 WHERE id = 0")
            for name in files:
                self._unlink(name)
