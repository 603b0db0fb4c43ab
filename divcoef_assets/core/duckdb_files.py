"""Opening DuckDB files safely: no extension downloads, and a clear word when a file is not one.

DuckDB auto-installs and auto-loads "known" extensions by default: handed a SQLite file, it tries
to download `sqlite_scanner` from the network. Every connection this project opens passes
`NO_EXTENSION_AUTOLOAD`, so nothing is downloaded or loaded behind the caller's back, and
`not_duckdb_reason` says what a file that DuckDB refused actually is.
"""

from __future__ import annotations

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
