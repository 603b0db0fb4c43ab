"""Single rows of a Parquet string column, read by decoding only the pages that hold them.

DuckDB, pyarrow and polars all read and decompress a whole column chunk (one row group's column,
often tens of MB) to return one row of it. A sample of a few hundred documents from a corpus of a
few hundred row groups then costs about a full read of the column. Parquet divides a column chunk
into pages of about 1 MB, each with a small header (Thrift compact protocol) that gives its size
and row count. This module walks those headers with positioned reads (no memory map, so the
process's memory does not grow with the file), then decompresses and decodes only the pages that
hold drawn rows, plus the chunk's dictionary page when one of them is dictionary-encoded.

It decodes what writers emit for a flat string column: data pages v1 and v2, PLAIN and dictionary
(PLAIN_DICTIONARY, RLE_DICTIONARY) values, optional columns with nulls (read as None), and the
codecs pyarrow decompresses (snappy, gzip, brotli, zstd, lz4_raw). Anything else, or anything
that does not add up (a page whose values do not end where its size says), raises `Unsupported`,
and the caller reads that file another way.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Unsupported", "read_rows"]

_HEADER_READ = 4096  # bytes read for a page header at first (doubled while the header is longer)
# pyarrow names LZ4_RAW "LZ4"; an old Hadoop-framed LZ4 page then fails to decode and raises Unsupported.
_CODECS = {"SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd", "LZ4": "lz4_raw", "LZ4_RAW": "lz4_raw"}
_U32 = struct.Struct("<I")
_MAX_PAGE_BYTES = 1 << 30  # a page header saying more is not believed (its buffer would be allocated whole)
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
# Deeper than this share of a page, decompressing it whole at once is cheaper than streaming a prefix.
_PREFIX_DEPTH = 0.8


class Unsupported(Exception):
    """The column chunk uses a layout this reader does not decode, or does not add up."""


class _Short(Exception):
    """The bytes end inside the Thrift structure being read."""


# ----------------------------------------------------------------------------- Thrift compact protocol


class _Thrift:
    """Just enough of Thrift's compact protocol to read a PageHeader: structs become {field id: value}."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Short
        value = self.data[self.pos]
        self.pos += 1
        return value

    def _varint(self) -> int:
        data, pos = self.data, self.pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise _Short
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:  # (a memoryview of a pyarrow buffer gives signed bytes)
                self.pos = pos
                return result
            shift += 7
            if shift > 70:
                raise Unsupported("a Thrift varint is too long")

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _value(self, kind: int) -> Any:
        if kind in (1, 2):  # booleans inside a struct carry their value in the type
            return kind == 1
        if kind == 3:
            return struct.unpack("b", bytes([self._byte()]))[0]
        if kind in (4, 5, 6):
            return self._zigzag()
        if kind == 7:
            self.pos += 8
            if self.pos > len(self.data):
                raise _Short
            return None
        if kind == 8:
            size = self._varint()
            start, self.pos = self.pos, self.pos + size
            if self.pos > len(self.data):
                raise _Short
            return self.data[start:self.pos]
        if kind in (9, 10):
            head = self._byte()
            size, element = head >> 4, head & 0x0F
            if size == 15:
                size = self._varint()
            if element in (1, 2):  # booleans in a list take a byte each
                return [self._byte() == 1 for _ in range(size)]
            return [self._value(element) for _ in range(size)]
        if kind == 11:
            size = self._varint()
            if size == 0:
                return {}
            types = self._byte()
            return {self._value(types >> 4): self._value(types & 0x0F) for _ in range(size)}
        if kind == 12:
            return self.struct()
        raise Unsupported(f"unknown Thrift type {kind}")

    def struct(self) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        last = 0
        data = self.data
        while True:
            if self.pos >= len(data):
                raise _Short
            head = data[self.pos]
            self.pos += 1
            if head == 0:
                return fields
            delta, kind = head >> 4, head & 0x0F
            last = last + delta if delta else self._zigzag()
            if kind in (5, 6):  # i32, i64: most of a page header
                n = self._varint()
                fields[last] = (n >> 1) ^ -(n & 1)
            else:
                fields[last] = self._value(kind)


# ----------------------------------------------------------------------------- levels and values


def _hybrid(data: bytes, pos: int, end: int, width: int, count: int) -> np.ndarray:
    """`count` values of Parquet's RLE / bit-packed hybrid encoding at data[pos:end]."""
    out = np.empty(count, dtype=np.int64)
    filled = 0
    reader = _Thrift(data)
    reader.pos = pos
    size = (width + 7) // 8
    while filled < count:
        if reader.pos >= end:
            raise Unsupported("the RLE/bit-packed values end early")
        header = reader._varint()
        if header & 1:  # bit-packed: groups of 8 values, `width` bits each, least significant bit first
            n = (header >> 1) * 8
            nbytes = (header >> 1) * width
            chunk = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=reader.pos)
            reader.pos += nbytes
            if width == 0:
                values = np.zeros(n, dtype=np.int64)
            else:
                bits = np.unpackbits(chunk, bitorder="little").reshape(n, width).astype(np.int64)
                values = bits @ (np.int64(1) << np.arange(width, dtype=np.int64))
        else:  # a run of one value
            n = header >> 1
            value = int.from_bytes(data[reader.pos:reader.pos + size], "little")
            reader.pos += size
            values = np.full(n, value, dtype=np.int64)
        take = min(n, count - filled)
        out[filled:filled + take] = values[:take]
        filled += take
    if reader.pos > end:
        raise Unsupported("the RLE/bit-packed values run past their bytes")
    return out


def _plain_offsets(data: bytes, pos: int, count: int, upto: int | None = None) -> list[int]:
    """Start offsets of the first `upto` (default: all `count`) PLAIN byte arrays at data[pos:], and one past.

    Each value is a 4-byte length and its bytes. A value running past the page raises
    `Unsupported`; so does a full walk that does not end exactly at the page's end.
    """
    n = count if upto is None else min(count, upto)
    starts: list[int] = []
    append = starts.append
    size = len(data)
    unpack = _U32.unpack_from
    try:
        for _ in range(n):
            pos += 4
            append(pos)
            pos += unpack(data, pos - 4)[0]
    except struct.error:  # a length past the end: the value before it ran past the page
        raise Unsupported(f"a PLAIN value runs past its {size}-byte page") from None
    if pos > size:
        raise Unsupported(f"a PLAIN value runs past its {size}-byte page")
    if n == count and pos != size:
        raise Unsupported(f"the PLAIN values end at byte {pos} of a {size}-byte page")
    starts.append(pos + 4)
    return starts


def _plain_value(data: bytes | memoryview, starts: list[int], i: int) -> str:
    return str(data[starts[i]:starts[i + 1] - 4], "utf-8")


class _Prefix:
    """A page's bytes, decompressed only as far as they are read (zstd, gzip, brotli: streaming codecs).

    A drawn row sits on average halfway into its page: the rest of the page is never decompressed.
    The bytes go straight into one buffer of the page's size from pyarrow's memory pool (reused
    from page to page, so not faulted in anew each time); `view[:filled]` holds what is decompressed."""

    STREAMING = {"ZSTD": "zstd", "GZIP": "gzip", "BROTLI": "brotli"}
    STEP = 1 << 16  # bytes decompressed at a time

    def __init__(self, raw: bytes, codec: str, size: int) -> None:
        import pyarrow as pa

        self.size = size
        self._buffer = pa.allocate_buffer(size)
        self.view = memoryview(self._buffer)
        self.filled = 0
        self._stream = pa.CompressedInputStream(pa.BufferReader(raw), self.STREAMING[codec])

    def need(self, end: int) -> None:
        """Decompress at least through byte `end` (raises `Unsupported` past the page's end)."""
        if end > self.size:
            raise Unsupported(f"a value runs past its {self.size}-byte page")
        while self.filled < end:
            upto = min(self.size, max(self.filled + self.STEP, end))
            got = self._stream.readinto(self.view[self.filled:upto])
            if not got:
                raise Unsupported(f"a page ends at byte {self.filled}, before byte {end}")
            self.filled += got


# ----------------------------------------------------------------------------- one column chunk


@dataclass(frozen=True)
class _Page:
    offset: int  # of the page's header
    header_size: int
    header: dict[int, Any]
    first_row: int  # within the row group
    n_rows: int


class _Chunk:
    """One row group's column chunk of one open file."""

    def __init__(self, fd: int, start: int, end: int, codec: str, max_def: int) -> None:
        self.fd, self.end, self.codec, self.max_def = fd, end, codec, max_def
        self.next_offset = start
        self.next_row = 0
        self.pages: list[_Page] = []
        self.dictionary_page: tuple[int, int, dict[int, Any]] | None = None
        self.dictionary: tuple[bytes, list[int]] | None = None

    def _header(self, offset: int) -> tuple[dict[int, Any], int]:
        size = _HEADER_READ
        while True:
            data = os.pread(self.fd, min(size, self.end - offset), offset)
            reader = _Thrift(data)
            try:
                return reader.struct(), reader.pos
            except _Short:
                if offset + size >= self.end:
                    raise Unsupported(f"a page header at byte {offset} runs past its column chunk") from None
                size *= 4

    def _walk_to(self, row: int) -> _Page:
        """The data page holding `row`, reading headers up to it (the dictionary page on the way)."""
        for page in self.pages:
            if page.first_row <= row < page.first_row + page.n_rows:
                return page
        while self.next_offset < self.end:
            header, size = self._header(self.next_offset)
            kind, compressed, plain = header.get(1), header.get(3), header.get(2)
            if not isinstance(compressed, int) or compressed < 0:
                raise Unsupported(f"a page header at byte {self.next_offset} has no size")
            if not isinstance(plain, int) or not 0 <= plain <= _MAX_PAGE_BYTES:
                raise Unsupported(f"a page header at byte {self.next_offset} gives {plain!r} bytes uncompressed")
            offset, self.next_offset = self.next_offset, self.next_offset + size + compressed
            if kind == _DICTIONARY_PAGE:
                self.dictionary_page = (offset, size, header)
                continue
            if kind == _DATA_PAGE:
                n_rows = header[5][1]  # flat column: one value (or null) per row
            elif kind == _DATA_PAGE_V2:
                n_rows = header[8][3]
            else:
                continue  # index pages carry no rows
            page = _Page(offset, size, header, self.next_row, n_rows)
            self.pages.append(page)
            self.next_row += n_rows
            if page.first_row <= row < page.first_row + page.n_rows:
                return page
        raise Unsupported(f"row {row} is past the column chunk's pages ({self.next_row} rows)")

    def _body(self, offset: int, header_size: int, header: dict[int, Any], compressed_from: int = 0) -> bytes | memoryview:
        raw = os.pread(self.fd, header[3], offset + header_size)
        if len(raw) != header[3]:
            raise Unsupported(f"a page at byte {offset} is cut short")
        if self.codec == "UNCOMPRESSED" or compressed_from >= len(raw):
            return raw
        import pyarrow as pa

        codec = _CODECS.get(self.codec)
        if codec is None:
            raise Unsupported(f"compression {self.codec}")
        head, body = raw[:compressed_from], raw[compressed_from:]
        plain = pa.decompress(body, decompressed_size=header[2] - compressed_from, codec=codec)
        return head + plain.to_pybytes() if head else memoryview(plain)  # no copy of the page where none is needed

    def _dictionary(self) -> tuple[bytes, list[int]]:
        if self.dictionary is None:
            found = self.dictionary_page
            if found is None:
                raise Unsupported("dictionary-encoded values without a dictionary page")
            offset, size, header = found
            info = header.get(7) or {}
            if info.get(2, _PLAIN) not in (_PLAIN, _PLAIN_DICTIONARY):
                raise Unsupported(f"dictionary page encoding {info.get(2)}")
            data = self._body(offset, size, header)
            self.dictionary = (data, _plain_offsets(data, 0, info[1]))
        return self.dictionary

    def read(self, rows: Sequence[int]) -> dict[int, str | None]:
        """Values of `rows` (positions within the row group, sorted)."""
        out: dict[int, str | None] = {}
        by_page: dict[int, list[int]] = {}
        pages: dict[int, _Page] = {}
        for row in rows:
            page = self._walk_to(row)
            by_page.setdefault(page.offset, []).append(row)
            pages[page.offset] = page
        for offset, wanted in by_page.items():
            out.update(self._read_page(pages[offset], wanted))
        return out

    def _read_page(self, page: _Page, rows: list[int]) -> dict[int, str | None]:
        header = page.header
        depth = (max(rows) - page.first_row + 1) / page.n_rows  # how far into the page the last drawn row is
        if header[1] == _DATA_PAGE and header[5][2] == _PLAIN and self.codec in _Prefix.STREAMING and depth <= _PREFIX_DEPTH:
            return self._read_plain_prefix(page, rows)
        if header[1] == _DATA_PAGE:
            info = header[5]
            encoding = info[2]
            data = self._body(page.offset, page.header_size, header)
            pos = 0
            if self.max_def:
                if info.get(3, _RLE) != _RLE:
                    raise Unsupported(f"definition level encoding {info.get(3)}")
                (length,) = struct.unpack_from("<I", data, 0)
                levels = _hybrid(data, 4, 4 + length, self.max_def.bit_length(), page.n_rows)
                pos = 4 + length
            else:
                levels = None
        else:
            info = header[8]
            encoding = info[4]
            def_bytes, rep_bytes = info.get(5, 0), info.get(6, 0)
            levels_end = def_bytes + rep_bytes
            data = self._body(page.offset, page.header_size, header, levels_end if info.get(7, True) else header[3])
            if self.max_def:
                levels = _hybrid(data, rep_bytes, levels_end, self.max_def.bit_length(), page.n_rows)
            else:
                levels = None
            pos = levels_end
        defined = np.ones(page.n_rows, dtype=bool) if levels is None else levels == self.max_def
        n_values = int(defined.sum())
        value_index = np.cumsum(defined) - 1
        values = data[pos:]
        if encoding == _PLAIN:
            needed = [int(value_index[r - page.first_row]) for r in rows if defined[r - page.first_row]]
            starts = _plain_offsets(values, 0, n_values, (max(needed) + 1) if needed else 0)

            def value(i: int) -> str:
                return _plain_value(values, starts, i)
        elif encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
            dictionary, dict_starts = self._dictionary()
            width = values[0] if values else 0
            indices = _hybrid(values, 1, len(values), width, n_values) if n_values else np.empty(0, np.int64)
            if n_values and (indices.min() < 0 or indices.max() >= len(dict_starts) - 1):
                raise Unsupported("a dictionary index is out of range")

            def value(i: int) -> str:
                return _plain_value(dictionary, dict_starts, int(indices[i]))
        else:
            raise Unsupported(f"value encoding {encoding}")
        out: dict[int, str | None] = {}
        for row in rows:
            local = row - page.first_row
            out[row] = value(int(value_index[local])) if defined[local] else None
        return out

    def _read_plain_prefix(self, page: _Page, rows: list[int]) -> dict[int, str | None]:
        """A v1 PLAIN page read by decompressing it only up to its last drawn value."""
        header, info = page.header, page.header[5]
        raw = os.pread(self.fd, header[3], page.offset + page.header_size)
        if len(raw) != header[3]:
            raise Unsupported(f"a page at byte {page.offset} is cut short")
        prefix = _Prefix(raw, self.codec, header[2])
        pos = 0
        defined = np.ones(page.n_rows, dtype=bool)
        if self.max_def:
            if info.get(3, _RLE) != _RLE:
                raise Unsupported(f"definition level encoding {info.get(3)}")
            prefix.need(4)
            (length,) = _U32.unpack_from(prefix.view, 0)
            prefix.need(4 + length)
            levels = _hybrid(bytes(prefix.view[:4 + length]), 4, 4 + length, self.max_def.bit_length(), page.n_rows)
            defined = levels == self.max_def
            pos = 4 + length
        value_index = np.cumsum(defined) - 1
        wanted = {int(value_index[r - page.first_row]) for r in rows if defined[r - page.first_row]}
        texts: dict[int, str] = {}
        unpack = _U32.unpack_from
        view, filled = prefix.view, prefix.filled  # the page's buffer, valid up to `filled`
        i = 0
        for target in sorted(wanted):
            while i <= target:
                if pos + 4 > filled:
                    prefix.need(pos + 4)
                    filled = prefix.filled
                (length,) = unpack(view, pos)
                pos += 4 + length
                i += 1
            if pos > filled:
                prefix.need(pos)
                filled = prefix.filled
            texts[target] = str(view[pos - length:pos], "utf-8")
        if pos > header[2]:
            raise Unsupported(f"the PLAIN values run past their {header[2]}-byte page")
        return {r: texts[int(value_index[r - page.first_row])] if defined[r - page.first_row] else None for r in rows}


def read_rows(path: str | Path, column: str, rows: Sequence[int]) -> dict[int, str | None]:
    """The values of `column` at file rows `rows` (0-based), None for nulls.

    Raises `Unsupported` when the file's layout is one this module does not decode (the caller
    then reads the file another way), pyarrow's errors when the footer cannot be read.
    """
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    wanted = sorted(set(int(r) for r in rows))
    with pq.ParquetFile(path) as parquet:
        meta = parquet.metadata
        leaves = [i for i in range(meta.num_columns) if parquet.schema.column(i).path == column]
        if len(leaves) != 1:
            raise Unsupported(f"column {column!r} is not one flat leaf column")
        leaf = parquet.schema.column(leaves[0])
        if leaf.max_repetition_level != 0 or leaf.physical_type != "BYTE_ARRAY":
            raise Unsupported(f"column {column!r} is repeated or not stored as byte arrays")
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        groups: dict[int, list[int]] = {}
        for row in wanted:
            if not 0 <= row < starts[-1]:
                raise IndexError(f"row {row} is outside the file's {int(starts[-1])} rows")
            groups.setdefault(int(np.searchsorted(starts, row, side="right")) - 1, []).append(row)
        chunks = {}
        for g in groups:
            info = meta.row_group(g).column(leaves[0])
            begin = info.dictionary_page_offset if info.has_dictionary_page and info.dictionary_page_offset else info.data_page_offset
            chunks[g] = (int(begin), int(begin) + int(info.total_compressed_size), str(info.compression))
    out: dict[int, str | None] = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        def group(g: int) -> dict[int, str | None]:
            begin, end, codec = chunks[g]
            chunk = _Chunk(fd, begin, end, codec, leaf.max_definition_level)
            local = chunk.read([r - int(starts[g]) for r in groups[g]])
            return {r + int(starts[g]): v for r, v in local.items()}

        # Decompression releases the GIL: row groups are decoded on as many threads as there are cores.
        with ThreadPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 1) or 1) as pool:
            for local in pool.map(group, groups):
                out.update(local)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError, OSError, ArrowException) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from None
    finally:
        os.close(fd)
    return out
