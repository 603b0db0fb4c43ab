"""Single rows of a `save_to_disk` folder's string column, read with positioned reads.

A folder written by `Dataset.save_to_disk` holds Arrow IPC *stream* files: no footer, a sequence
of messages (a schema, then record batches of about a thousand rows), each a small FlatBuffers
header followed by its body. `datasets.load_from_disk` memory-maps every file and opens every
record batch; each header it touches makes the kernel map the file pages around it (fault-around,
64 KiB), so a process that only wants 320 rows of a 4 GB folder ends up with hundreds of MB of
the file resident. This module walks the message headers with `os.pread` instead (one small
read per record batch, nothing mapped), keeps where the text column's buffers lie in each batch,
and reads a drawn row as two offsets and its bytes.

It reads what `save_to_disk` writes: little-endian stream files of metadata version 4 or 5,
uncompressed bodies, the text column a top-level `string` or `large_string` (nulls read as None),
the columns before it of the common types. Anything else, or anything that does not add up (a
body past the end of the file, offsets outside their buffer), raises `Unsupported`, and the
caller reads the folder through `datasets` instead.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SavedColumn", "Unsupported", "open_saved_column"]

_CONTINUATION = 0xFFFFFFFF
_FIRST_READ = 2048  # bytes read for a message's prefix and header at once (more when it is longer)
_WALKERS = 8  # files walked at once when their reads wait on the disk
_CACHED_BATCH_S = 30e-6  # a batch header walked faster than this came from the OS's file cache
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3
_UTF8, _LARGE_UTF8 = 5, 20
_DICT_DATASET_FILE, _STATE_FILE = "dataset_dict.json", "state.json"

# Buffers of a (not dictionary-encoded) field of each FlatBuffers type id, its children's apart:
# null 0; int, float, bool, decimal, date, time, timestamp, interval, fixed-size binary,
# duration 2; binary and string (small and large) 3; list, large list, map 2; struct and
# fixed-size list 1; run-end encoded 0. Unions and view types are not walked.
_BUFFERS = {1: 0, 2: 2, 3: 2, 4: 3, 5: 3, 6: 2, 7: 2, 8: 2, 9: 2, 10: 2, 11: 2, 12: 2, 13: 1, 15: 2, 16: 1,
            17: 2, 18: 2, 19: 3, 20: 3, 21: 2, 22: 0}


class Unsupported(Exception):
    """The folder or a file uses a layout this reader does not walk, or does not add up."""


# ----------------------------------------------------------------------------- FlatBuffers


class _Table:
    """A FlatBuffers table at `pos` of `buf`: fields by index, read as the Arrow schema defines them."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _at(self, i: int) -> int | None:
        slot = 4 + 2 * i
        if slot + 2 > self.vsize:
            return None
        off = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + off if off else None

    def scalar(self, i: int, fmt: str, default: int) -> int:
        at = self._at(i)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, i: int) -> int | None:
        at = self._at(i)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, i: int) -> _Table | None:
        at = self._target(i)
        return None if at is None else _Table(self.buf, at)

    def present(self, i: int) -> bool:
        return self._at(i) is not None

    def string(self, i: int) -> str:
        at = self._target(i)
        if at is None:
            return ""
        n = struct.unpack_from("<I", self.buf, at)[0]
        return bytes(self.buf[at + 4:at + 4 + n]).decode("utf-8")

    def tables(self, i: int) -> list[_Table]:
        at = self._target(i)
        if at is None:
            return []
        n = struct.unpack_from("<I", self.buf, at)[0]
        slots = range(at + 4, at + 4 + 4 * n, 4)
        return [_Table(self.buf, s + struct.unpack_from("<I", self.buf, s)[0]) for s in slots]

    def struct_at(self, i: int, index: int, fmt: str) -> tuple[int, ...]:
        """Element `index` of a vector of 16-byte structs (FieldNode, Buffer), unpacked from `fmt`."""
        at = self._target(i)
        n = 0 if at is None else struct.unpack_from("<I", self.buf, at)[0]
        size = struct.calcsize(fmt)
        if at is None or not (0 <= index and index * 16 + size <= 16 * n) or at + 4 + 16 * n > len(self.buf):
            raise Unsupported("a record batch has fewer columns than its schema")
        return struct.unpack_from(fmt, self.buf, at + 4 + 16 * index)


# ----------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Target:
    """Where the text column's node and buffers are in each record batch."""

    node: int
    buffer: int  # its validity buffer; offsets and data follow
    large: bool


def _count(field: _Table) -> tuple[int, int]:
    """Nodes and buffers a field takes in a record batch, its children included."""
    if field.present(4):  # dictionary-encoded: its indices only; the values come in dictionary batches
        return 1, 2
    kind = field.scalar(2, "B", 0)
    if kind not in _BUFFERS:
        raise Unsupported(f"a column of Arrow type id {kind}")
    nodes, buffers = 1, _BUFFERS[kind]
    for child in field.tables(5):
        n, b = _count(child)
        nodes += n
        buffers += b
    return nodes, buffers


def _target(schema: _Table, column: str) -> _Target:
    if schema.scalar(0, "h", 0) != 0:
        raise Unsupported("a big-endian file")
    node = buffer = 0
    for field in schema.tables(1):
        if field.string(0) == column:
            kind = field.scalar(2, "B", 0)
            if field.present(4) or kind not in (_UTF8, _LARGE_UTF8):
                raise Unsupported(f"column {column!r} is not a plain string column")
            return _Target(node, buffer, kind == _LARGE_UTF8)
        n, b = _count(field)
        node += n
        buffer += b
    raise Unsupported(f"no column {column!r}")


# ----------------------------------------------------------------------------- one stream file


@dataclass(frozen=True)
class _File:
    """One stream file's record batches: rows, and the text column's buffers as absolute byte ranges."""

    path: Path
    large: bool
    rows: np.ndarray  # rows per batch
    null_count: np.ndarray
    validity: np.ndarray  # (batch, [offset, length]) in the file
    offsets: np.ndarray
    data: np.ndarray


def _open(path: Path) -> int:
    """A descriptor for positioned reads; the kernel is told not to read ahead of them."""
    fd = os.open(path, os.O_RDONLY)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd


def _walk(path: Path, column: str) -> _File:
    try:
        fd = _open(path)
    except OSError as exc:
        raise Unsupported(f"{path}: {exc}") from None
    try:
        size = os.fstat(fd).st_size
        pos = 0
        target: _Target | None = None
        rows: list[int] = []
        nulls: list[int] = []
        spans: list[tuple[int, ...]] = []
        while pos < size:
            head = os.pread(fd, _FIRST_READ, pos)
            if len(head) < 4:
                raise Unsupported(f"the stream ends inside a message prefix at byte {pos}")
            (length,) = struct.unpack_from("<I", head, 0)
            skip = 4
            if length == _CONTINUATION:
                if len(head) < 8:
                    raise Unsupported(f"the stream ends inside a message prefix at byte {pos}")
                (length,) = struct.unpack_from("<I", head, 4)
                skip = 8
            if length == 0:
                break
            if pos + skip + length > size:
                raise Unsupported(f"a message header at byte {pos} runs past the end of the file")
            meta = head[skip:skip + length]
            if len(meta) < length:
                meta = os.pread(fd, length, pos + skip)
            message = _Table(meta, struct.unpack_from("<I", meta, 0)[0])
            if message.scalar(0, "h", 0) < 3:
                raise Unsupported("an Arrow metadata version before V4")
            kind = message.scalar(1, "B", 0)
            body = pos + skip + length
            body_length = message.scalar(3, "q", 0)
            if body_length < 0 or body + body_length > size:
                raise Unsupported(f"a message body at byte {body} runs past the end of the file")
            header = message.table(2)
            if kind == _SCHEMA and header is not None and target is None:
                target = _target(header, column)
            elif kind == _RECORD_BATCH and header is not None:
                if target is None:
                    raise Unsupported("a record batch before the schema")
                if header.present(3):
                    raise Unsupported("compressed record batch bodies")
                n = header.scalar(0, "q", 0)
                length, null_count = header.struct_at(1, target.node, "<qq")
                span = header.struct_at(2, target.buffer, "<6q")  # validity, offsets, data: (offset, length) each
                if length != n:
                    raise Unsupported(f"a record batch at byte {pos} does not match its schema")
                if min(span) < 0 or any(span[j] + span[j + 1] > body_length for j in (0, 2, 4)):
                    raise Unsupported(f"a buffer of the record batch at byte {pos} runs past its body")
                rows.append(n)
                nulls.append(null_count)
                spans.append((body + span[0], span[1], body + span[2], span[3], body + span[4], span[5]))
            elif kind != _DICTIONARY_BATCH:
                raise Unsupported(f"a message of type {kind} at byte {pos}")
            pos = body + body_length
    except (OSError, struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise Unsupported(f"{path}: {type(exc).__name__}: {exc}") from None
    finally:
        os.close(fd)
    if target is None:
        raise Unsupported("no schema message")
    stacked = np.array(spans, dtype=np.int64).reshape(-1, 3, 2)
    return _File(path, target.large, np.array(rows, dtype=np.int64), np.array(nulls, dtype=np.int64),
                 stacked[:, 0], stacked[:, 1], stacked[:, 2])


def _read(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise Unsupported(f"the file ends before byte {offset + length}")
    return data


def _row(fd: int, f: _File, batch: int, r: int) -> str | None:
    if f.null_count[batch] and f.validity[batch, 1]:
        byte = _read(fd, int(f.validity[batch, 0]) + r // 8, 1)[0]
        if not byte >> (r % 8) & 1:
            return None
    width = 8 if f.large else 4
    if (r + 2) * width > f.offsets[batch, 1]:
        raise Unsupported(f"row {r} of a record batch is past its offsets buffer")
    start, end = struct.unpack("<qq" if f.large else "<ii", _read(fd, int(f.offsets[batch, 0]) + r * width, 2 * width))
    if not 0 <= start <= end <= f.data[batch, 1]:
        raise Unsupported(f"offsets {start}..{end} outside a {int(f.data[batch, 1])}-byte data buffer")
    return _read(fd, int(f.data[batch, 0]) + start, end - start).decode("utf-8")


# ----------------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class SavedColumn:
    """A `save_to_disk` split's text column, its rows numbered across its files in their order."""

    files: tuple[_File, ...]
    starts: np.ndarray  # first row of each (file, batch), in order, then the row count
    batches: np.ndarray  # (file index, batch index in its file) of each, in the same order

    @property
    def num_rows(self) -> int:
        return int(self.starts[-1])

    def read_rows(self, rows: Sequence[int]) -> dict[int, str | None]:
        """The drawn rows' values (None for a null), each read as its offsets and bytes, on several
        threads (each row is two or three small reads that wait on the disk when it is not cached)."""
        wanted = sorted(set(rows))
        for row in wanted:
            if not 0 <= row < self.num_rows:
                raise IndexError(f"row {row} is outside the split's {self.num_rows} rows")
        places = (np.searchsorted(self.starts, wanted, side="right") - 1).tolist()
        fds: dict[int, int] = {}

        def one(row: int, at: int) -> str | None:
            i, b = (int(x) for x in self.batches[at])
            try:
                return _row(fds[i], self.files[i], b, row - int(self.starts[at]))
            except Unsupported as exc:
                raise Unsupported(f"{self.files[i].path}: {exc}") from None
            except (OSError, struct.error, UnicodeDecodeError) as exc:
                raise Unsupported(f"{self.files[i].path}: {type(exc).__name__}: {exc}") from None

        try:
            for at in places:
                i = int(self.batches[at][0])
                if i not in fds:
                    try:
                        fds[i] = _open(self.files[i].path)
                    except OSError as exc:
                        raise Unsupported(f"{self.files[i].path}: {type(exc).__name__}: {exc}") from None
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(wanted), _WALKERS))) as pool:
                return dict(zip(wanted, pool.map(one, wanted, places)))
        finally:
            for fd in fds.values():
                os.close(fd)


def _data_files(folder: Path, split: str) -> list[Path]:
    """The stream files of the split, in order, as `datasets.load_from_disk` finds them."""
    if (folder / _DICT_DATASET_FILE).is_file():
        try:
            splits = json.loads((folder / _DICT_DATASET_FILE).read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unsupported(f"{_DICT_DATASET_FILE}: {exc}") from None
        if split not in splits:
            raise Unsupported(f"no split {split!r}")
        folder = folder / split
    try:
        state = json.loads((folder / _STATE_FILE).read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
        if state.get("_indices_data_files"):
            raise Unsupported(f"{_STATE_FILE}: an indices mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Unsupported(f"{_STATE_FILE}: {type(exc).__name__}: {exc}") from None
    if not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..") for n in names):
        raise Unsupported(f"{_STATE_FILE}: data file names {names}")
    return [folder / n for n in names]


def open_saved_column(folder: str | Path, split: str, column: str) -> SavedColumn:
    """Walk the split's stream files once: the record batches where the column's rows lie.

    Files are walked one by one while their headers come from the OS's file cache (a few
    microseconds a batch), where threads would only contend for the GIL. Once a file's reads
    waited on the disk, the files left are walked side by side, their reads (which release the
    GIL) overlapping."""
    paths = _data_files(Path(folder), split)
    if not paths:
        raise Unsupported(f"{_STATE_FILE}: no data files")
    files: list[_File] = []
    for i, path in enumerate(paths):
        start = time.perf_counter()
        files.append(_walk(path, column))
        if (time.perf_counter() - start) / max(1, len(files[-1].rows)) > _CACHED_BATCH_S and i + 1 < len(paths):
            rest = paths[i + 1:]
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(rest), _WALKERS)) as pool:
                files.extend(pool.map(lambda p: _walk(p, column), rest))
            break
    counts = np.concatenate([f.rows for f in files])
    batches = np.array([(i, b) for i, f in enumerate(files) for b in range(len(f.rows))], dtype=np.int64).reshape(-1, 2)
    return SavedColumn(tuple(files), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), batches)
