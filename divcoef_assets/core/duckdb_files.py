"""Opening DuckDB files safely: no extension downloads, and a clear word when a file is not one.

DuckDB auto-installs and auto-loads "known" extensions by default: handed a SQLite file, it tries
to download `sqlite_scanner` from the network. Every connection this project opens passes
`NO_EXTENSION_AUTOLOAD`, so nothing is downloaded or loaded behind the caller's back, and
`not_duckdb_reason` says what a file that DuckDB refused actually is. `random_reads` keeps the
kernel from reading ahead of DuckDB's point reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

# Connection config for duckdb.connect(..., config=NO_EXTENSION_AUTOLOAD).
NO_EXTENSION_AUTOLOAD: dict[str, bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

# Every DuckDB database file starts with an 8-byte checksum followed by the magic bytes "DUCK".
_MAGIC_OFFSET = 8
_MAGIC = b"DUCK"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def not_duckdb_reason(path: str | Path) -> str | None:
    """What the file at `path` is when it is not a DuckDB database ("empty (0 bytes)", "a SQLite
    database", "a file without the DuckDB header"), or None when it is missing, unreadable or starts
    like a DuckDB database. Call it after DuckDB refused a file, to say why."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError:
        return None
    if not head:
        return "empty (0 bytes)"
    if head[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] == _MAGIC:
        return None
    if head == _SQLITE_MAGIC:
        return "a SQLite database"
    return "a file without the DuckDB header"


@contextlib.contextmanager
def random_reads(path: str | Path) -> Iterator[int]:
    """While open, the kernel does not read ahead on this process's descriptors of the file at
    `path` (yields how many it found).

    DuckDB reads a database in 256 KB blocks with positioned reads on a descriptor it keeps
    open; reading single rows by rowid touches one block here and one there, and the kernel's
    read-ahead (up to `read_ahead_kb`, 8 MB on some disks) turns each into megabytes read from
    the disk. DuckDB has no setting for it, so its descriptors are found in /proc/self/fd and
    advised `POSIX_FADV_RANDOM`, and back to normal on the way out. Only a hint: where there is
    no /proc (not Linux), nothing is advised and reads stay correct.
    """
    advised: list[int] = []
    if hasattr(os, "posix_fadvise") and os.path.isdir("/proc/self/fd"):
        try:
            target = os.stat(path)
            names = os.listdir("/proc/self/fd")
        except OSError:
            names = []
        for name in names:
            try:
                fd = int(name)
                found = os.fstat(fd)
                if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                    advised.append(fd)
            except (OSError, ValueError):
                continue  # closed since it was listed, or not a file
    try:
        yield len(advised)
    finally:
        for fd in advised:
            with contextlib.suppress(OSError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_NORMAL)
