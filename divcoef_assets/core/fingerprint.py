"""The one way this project fingerprints things: canonical JSON or raw bytes through SHA-256.

Every cache key, snapshot identity, config fingerprint and source version is made here, so two
places can never disagree on how a value is hashed. `digest` takes JSON-able parts (dicts are
key-sorted); `array_digest` frames each array with its dtype and shape; `file_digest` hashes a
file's bytes once per (inode, size, mtime) in this process, so a 500 MB probe is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

HEX_WIDTH = 16
_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def digest(*parts: Any, width: int = HEX_WIDTH) -> str:
    """Hex SHA-256 of the parts as canonical JSON (sorted keys; non-JSON values via str)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:width]


def array_digest(*arrays: np.ndarray, width: int = HEX_WIDTH) -> str:
    """Hex SHA-256 of arrays' bytes, each framed by its dtype and shape (so [2,3] != [3,2])."""
    h = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:width]


def file_digest(path: str | os.PathLike, width: int = HEX_WIDTH) -> str:
    """Hex SHA-256 of a file's bytes, remembered per (path, inode, size, mtime) in this process."""
    path = Path(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if memo_key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_DIGESTS[memo_key] = h.hexdigest()
    return _FILE_DIGESTS[memo_key][:width]


def is_fingerprint(value: object) -> bool:
    """True for a non-empty lowercase hex string of at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and all(c in "0123456789abcdef" for c in value)


def texts_digest(texts: Iterable[str], width: int = HEX_WIDTH) -> str:
    """Hex SHA-256 of an ordered sequence of texts, each length-framed (so unambiguous)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:width]
