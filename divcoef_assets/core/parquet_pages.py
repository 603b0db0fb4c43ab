"""Single rows of a Parquet string column, read by decoding only the pages that hold them.

DuckDB, pyarrow and polars all read and decompress a whole column chunk (one row group's column,
often tens of MB) to return one row of it. A sample of a few hundred documents from a corpus of a
few hundred row groups then costs about a full read of the column. Parquet divides a column chunk
into pages of about 1 MB, each with a small header (Thrift compact protocol) that gives its size
and row count. This module walks those headers with positioned reads (no memory map, so the
process's memory does not grow with the file), then decompresses and decodes only the pages that
hold drawn rows, plus the chunk's dictionary page when one of them is dictionary-encoded.

When the file carries a page index (the offset index that `datasets`, Spark and parquet-mr
write by default), each drawn page is found from it directly; without one, a row group's page
headers are read one after another up to the drawn page, a chain of small reads that waits on the
disk when the file is not cached, so row groups are walked side by side on several threads. The
kernel's own read-ahead is turned off for the file (`POSIX_FADV_RANDOM`: each small header read
would otherwise pull in the page body after it); once the pages are known, it is asked to read
their bodies, as far as they will be decompressed, in the background (`POSIX_FADV_WILLNEED`)
while the first ones are decoded. Pages and the dictionary page alike are decompressed and walked
only up to the last value drawn from them.

It decodes what writers emit for a flat string column: data pages v1 and v2, PLAIN and dictionary
(PLAIN_DICTIONARY, RLE_DICTIONARY) values, optional columns with nulls (read as None), and the
codecs pyarrow decompresses (snappy, gzip, brotli, zstd, lz4_raw). Anything else, or anything
that does not add up (a page whose values do not end where its size says), raises `Unsupported`,
and the caller reads that file another way.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import time
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
# A streamed walk to value i first decompresses this share of the bytes before it, were values of one size.
_FIRST_STRETCH = 0.8
_WALKERS = 8  # threads finding pages when their reads wait on the disk
_COLD_READ = 50e-6  # seconds: a header read slower than this came from the disk, not the file cache
_AHEAD_SLACK = 0.05  # compressed bytes are not spread evenly over a page's values
_INDEX_SPAN = 64 << 20  # offset indexes this close together are read in one go


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


class _Prefix:
    """A page's bytes, decompressed only as far as they are read (zstd, gzip, brotli: streaming codecs).

    A drawn row sits on average halfway into its page: the rest of the page is never decompressed.
    The compressed bytes are read by pyarrow from its own descriptor of the file (kernel read-ahead
    off, as for the headers), so reading and decompressing run without the GIL; the bytes go
    straight into one buffer of the page's size; `view[:filled]` holds what is decompressed."""

    STREAMING = {"ZSTD": "zstd", "GZIP": "gzip", "BROTLI": "brotli"}
    STEP = 1 << 16  # bytes decompressed at a time

    def __init__(self, path: str, offset: int, codec: str, size: int) -> None:
        import pyarrow as pa

        self.size = size
        self._buffer = pa.allocate_buffer(size)
        self.view = memoryview(self._buffer)
        self.filled = 0
        self._file = pa.OSFile(path)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            self._file.seek(offset)
            self._stream = pa.CompressedInputStream(self._file, self.STREAMING[codec])
        except BaseException:
            self._file.close()
            raise

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

    def close(self) -> None:
        self._file.close()


class _PlainValues:
    """PLAIN byte arrays (each a 4-byte length, then its bytes), walked only as far as asked.

    Over a streamed page (`_Prefix`) the walk decompresses as it goes; over whole bytes it reads
    them in place. Value i's bytes are view[heads[i] + 4:heads[i + 1]] once walked through. A
    value running past the page raises `Unsupported`."""

    def __init__(self, source: _Prefix | bytes | memoryview, pos: int, count: int) -> None:
        if isinstance(source, _Prefix):
            self.prefix: _Prefix | None = source
            self.view, self.size, self.filled = source.view, source.size, source.filled
        else:
            self.prefix = None
            self.view = memoryview(source)
            self.size = self.filled = len(source)
        self.count = count
        self.heads = [pos]

    def _need(self, end: int) -> None:
        if end > self.size or self.prefix is None:
            raise Unsupported(f"a PLAIN value runs past its {self.size}-byte page")
        self.prefix.need(end)
        self.filled = self.prefix.filled

    def through(self, i: int) -> None:
        """Walk through value `i` (its bytes decompressed)."""
        if not 0 <= i < self.count:
            raise Unsupported(f"value {i} of a page of {self.count}")
        if self.prefix is not None and len(self.heads) == 1:
            # Most of the way to value i in one call (without the GIL), not a step at a time.
            guess = int(_FIRST_STRETCH * self.size * i / self.count)
            if guess > self.filled + _Prefix.STEP:
                self._need(guess)
        heads, view, unpack, filled = self.heads, self.view, _U32.unpack_from, self.filled
        append = heads.append
        pos = heads[-1]
        for _ in range(i + 2 - len(heads)):
            if pos + 4 > filled:
                self._need(pos + 4)
                filled = self.filled
            pos += 4 + unpack(view, pos)[0]
            append(pos)
        if pos > filled:
            self._need(pos)

    def text(self, i: int) -> str:
        """Value `i`, walked through already."""
        return str(self.view[self.heads[i] + 4:self.heads[i + 1]], "utf-8")


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

    def __init__(self, path: str, fd: int, start: int, end: int, codec: str, max_def: int,
                 locations: list[_Location] | None = None) -> None:
        self.path = path
        self.fd, self.start, self.end, self.codec, self.max_def = fd, start, end, codec, max_def
        self.next_offset = start
        self.next_row = 0
        self.pages: list[_Page] = []
        self.dictionary_page: tuple[int, int, dict[int, Any]] | None = None
        self.dictionary: _PlainValues | None = None
        self.dictionary_body = (0, 0)  # offset and compressed length of the dictionary page's body
        self.locations = locations
        self.first_rows = [loc.first_row for loc in locations or []]
        self.located: dict[int, _Page] = {}  # index into `locations` -> its page, header read
        self.lock = threading.Lock()
        self.reads, self.read_seconds = 0, 0.0  # header reads, and the time they waited

    def _header(self, offset: int) -> tuple[dict[int, Any], int]:
        """The page header at `offset` and its size, its page sizes checked, without the page's
        statistics (min and max values: kilobytes of text a page, not needed here)."""
        size = _HEADER_READ
        while True:
            started = time.perf_counter()
            data = os.pread(self.fd, min(size, self.end - offset), offset)
            self.read_seconds += time.perf_counter() - started
            self.reads += 1
            reader = _Thrift(data)
            try:
                header = reader.struct()
            except _Short:
                if offset + size >= self.end:
                    raise Unsupported(f"a page header at byte {offset} runs past its column chunk") from None
                size *= 4
                continue
            compressed, plain = header.get(3), header.get(2)
            if not isinstance(compressed, int) or compressed < 0:
                raise Unsupported(f"a page header at byte {offset} has no size")
            if not isinstance(plain, int) or not 0 <= plain <= _MAX_PAGE_BYTES:
                raise Unsupported(f"a page header at byte {offset} gives {plain!r} bytes uncompressed")
            for kind, statistics in ((5, 5), (8, 8)):  # DataPageHeader(V2).statistics
                if isinstance(header.get(kind), dict):
                    header[kind].pop(statistics, None)
            return header, reader.pos

    def _indexed(self, row: int) -> _Page:
        """The data page holding `row`, found in the offset index (its header read alone)."""
        assert self.locations is not None
        i = self._index_of(row)
        page = self.located.get(i)
        if page is None:
            where = self.locations[i]
            header, size = self._header(where.offset)
            if header.get(1) not in (_DATA_PAGE, _DATA_PAGE_V2) or size + header[3] != where.size:
                raise Unsupported(f"the offset index's page at byte {where.offset} is not the data page there")
            n_rows = header[5][1] if header[1] == _DATA_PAGE else header[8][3]
            if n_rows != where.n_rows:
                raise Unsupported(f"the page at byte {where.offset} holds {n_rows} rows, its offset index says {where.n_rows}")
            page = self.located[i] = _Page(where.offset, size, header, where.first_row, n_rows)
        return page

    def _index_of(self, row: int) -> int:
        """The position in the offset index of the page holding `row`."""
        return bisect.bisect_right(self.first_rows, row) - 1

    def _walk_to(self, row: int) -> _Page:
        """The data page holding `row`, reading headers up to it (the dictionary page on the way)."""
        if self.locations is not None:
            return self._indexed(row)
        for page in self.pages:
            if page.first_row <= row < page.first_row + page.n_rows:
                return page
        while self.next_offset < self.end:
            header, size = self._header(self.next_offset)
            kind = header.get(1)
            offset, self.next_offset = self.next_offset, self.next_offset + size + header[3]
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

    def _dictionary(self) -> _PlainValues:
        """The chunk's dictionary page, opened (its entries are walked as far as drawn rows need)."""
        if self.dictionary is None:
            if self.dictionary_page is None and self.locations and self.start < self.locations[0].offset:
                header, size = self._header(self.start)  # with an offset index, no walk passed it
                if header.get(1) == _DICTIONARY_PAGE:
                    self.dictionary_page = (self.start, size, header)
            found = self.dictionary_page
            if found is None:
                raise Unsupported("dictionary-encoded values without a dictionary page")
            offset, size, header = found
            info = header.get(7) or {}
            if info.get(2, _PLAIN) not in (_PLAIN, _PLAIN_DICTIONARY):
                raise Unsupported(f"dictionary page encoding {info.get(2)}")
            if self.codec in _Prefix.STREAMING:
                source: _Prefix | bytes | memoryview = _Prefix(self.path, offset + size, self.codec, header[2])
            else:
                source = self._body(offset, size, header)
            self.dictionary = _PlainValues(source, 0, info[1])
            self.dictionary_body = (offset + size, header[3])
        return self.dictionary

    def locate(self, rows: Sequence[int]) -> list[tuple[_Page, list[int]]]:
        """The data pages holding `rows` (positions within the row group, sorted), each with its rows.

        Each page is read ahead as far as it will be decompressed: with an offset index before its
        header is read (as far as its last drawn row, in proportion), the rest once the header
        says the page is decompressed whole; without one, once its header is found."""
        if self.locations is not None:
            last: dict[int, int] = {}
            for row in rows:
                last[self._index_of(row)] = row
            for i, row in sorted(last.items()):
                where = self.locations[i]
                _read_ahead(self.fd, where.offset, _ahead((row - where.first_row + 1) / where.n_rows, where.size))
        by_page: dict[int, tuple[_Page, list[int]]] = {}
        for row in rows:
            page = self._walk_to(row)
            by_page.setdefault(page.offset, (page, []))[1].append(row)
        for page, wanted in by_page.values():
            depth = self._prefix_depth(page, wanted)
            if self.locations is None or depth is None:
                body = page.header[3] if depth is None else _ahead(depth, page.header[3])
                _read_ahead(self.fd, page.offset + page.header_size, body)
        return list(by_page.values())

    def _prefix_depth(self, page: _Page, rows: list[int]) -> float | None:
        """How far into the page its last drawn row is, when the page is read by a streamed
        prefix (a v1 PLAIN page of a streaming codec, not too deep); None when it is read whole."""
        header = page.header
        depth = (max(rows) - page.first_row + 1) / page.n_rows
        if header[1] == _DATA_PAGE and header[5][2] == _PLAIN and self.codec in _Prefix.STREAMING and depth <= _PREFIX_DEPTH:
            return depth
        return None

    def close(self) -> None:
        """Close the dictionary page's stream, when one was opened."""
        if self.dictionary is not None and self.dictionary.prefix is not None:
            self.dictionary.prefix.close()

    def read(self, page: _Page, rows: list[int]) -> dict[int, str | None]:
        """Values of `rows` of a located page (pages of one chunk may be read on several threads)."""
        return self._read_page(page, rows)

    def _read_page(self, page: _Page, rows: list[int]) -> dict[int, str | None]:
        header = page.header
        if self._prefix_depth(page, rows) is not None:
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
        needed = [int(value_index[r - page.first_row]) for r in rows if defined[r - page.first_row]]
        if encoding == _PLAIN:
            plain = _PlainValues(values, 0, n_values)
            if needed:
                plain.through(max(needed))
            value = plain.text
        elif encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
            width = values[0] if values else 0
            indices = _hybrid(values, 1, len(values), width, n_values) if n_values else np.empty(0, np.int64)
            with self.lock:  # pages of one chunk share its dictionary, walked as far as the deepest entry drawn
                dictionary = self._dictionary()
                if needed:
                    deepest = int(indices[needed].max())
                    if indices[needed].min() < 0 or deepest >= dictionary.count:
                        raise Unsupported("a dictionary index is out of range")
                    if dictionary.prefix is not None and len(dictionary.heads) <= deepest + 1:
                        body, length = self.dictionary_body
                        _read_ahead(self.fd, body, _ahead((deepest + 1) / dictionary.count, length))
                    dictionary.through(deepest)

            def value(i: int) -> str:
                return dictionary.text(int(indices[i]))
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
        prefix = _Prefix(self.path, page.offset + page.header_size, self.codec, header[2])
        try:
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
            values = _PlainValues(prefix, pos, int(defined.sum()))
            wanted = [int(value_index[r - page.first_row]) for r in rows if defined[r - page.first_row]]
            if wanted:
                values.through(max(wanted))
            return {r: values.text(int(value_index[r - page.first_row])) if defined[r - page.first_row] else None for r in rows}
        finally:
            prefix.close()


# ----------------------------------------------------------------------------- the page index


@dataclass(frozen=True)
class _Location:
    """One data page as a file's offset index gives it."""

    offset: int  # of its header
    size: int  # header and body
    first_row: int  # within the row group
    n_rows: int


def _ahead(depth: float, size: int) -> int:
    """Bytes of a `size`-byte page worth reading ahead when it is decompressed `depth` of the way in."""
    return min(size, int(size * (depth + _AHEAD_SLACK)) + _Prefix.STEP)


def _read_ahead(fd: int, offset: int, length: int) -> None:
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def _offset_indexes(fd: int, leaf: int, groups: Sequence[int], group_rows: Sequence[int],
                    spans: Sequence[tuple[int, int]]) -> dict[int, list[_Location]]:
    """The offset index of column `leaf` in each of `groups` that has one (the footer parsed for
    where they are; indexes lying close together read in one go). A group whose index does not
    add up (pages out of order, outside its column chunk, rows not covering the group) is left
    out, and its headers are walked instead."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, 8, size - 8)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        raise Unsupported("the file does not end in a plain Parquet footer")
    (length,) = _U32.unpack_from(tail, 0)
    try:
        row_groups = _Thrift(os.pread(fd, length, size - 8 - length)).struct().get(4) or []
    except _Short:
        raise Unsupported("the footer ends inside its metadata") from None
    wanted: dict[int, tuple[int, int]] = {}
    for g in groups:
        try:
            chunk = row_groups[g][1][leaf]
        except (IndexError, KeyError, TypeError):
            raise Unsupported(f"the footer has no column chunk {leaf} in row group {g}") from None
        offset, span = chunk.get(4), chunk.get(5)
        if isinstance(offset, int) and isinstance(span, int) and offset > 0 and span > 0 and offset + span <= size:
            wanted[g] = (offset, span)
    found: dict[int, list[_Location]] = {}
    pending = sorted(wanted.items(), key=lambda item: item[1][0])
    while pending:
        first = pending[0][1][0]
        batch = [item for item in pending if item[1][0] + item[1][1] - first <= _INDEX_SPAN] or pending[:1]
        pending = pending[len(batch):]
        end = max(offset + span for _, (offset, span) in batch)
        data = os.pread(fd, end - first, first)
        for g, (offset, span) in batch:
            try:
                entries = _Thrift(data[offset - first:offset - first + span]).struct().get(1) or []
                starts = [(int(e[1]), int(e[2]), int(e[3])) for e in entries]
            except (_Short, KeyError, TypeError, ValueError):
                continue
            begin, stop = spans[g]
            rows = [first_row for _, _, first_row in starts] + [int(group_rows[g])]
            if (not starts or rows[0] != 0 or any(a >= b for a, b in zip(rows, rows[1:]))
                    or any(not begin <= o and o + n <= stop for o, n, _ in starts)):
                continue
            found[g] = [_Location(o, n, r, rows[i + 1] - r) for i, (o, n, r) in enumerate(starts)]
    return found


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
        indexed = False
        for g in groups:
            info = meta.row_group(g).column(leaves[0])
            begin = info.dictionary_page_offset if info.has_dictionary_page and info.dictionary_page_offset else info.data_page_offset
            chunks[g] = (int(begin), int(begin) + int(info.total_compressed_size), str(info.compression))
            indexed = indexed or info.has_offset_index
    out: dict[int, str | None] = {}
    opened: dict[int, _Chunk] = {}
    fd = os.open(path, os.O_RDONLY)
    if hasattr(os, "posix_fadvise"):
        # Each header read would otherwise pull in the kernel's read-ahead window (128 KB or
        # more) of the page body it skips: at 4 GB that was most of the bytes read from the
        # disk. The bodies needed are asked for explicitly (`_read_ahead`).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    try:
        spans = {g: chunks[g][:2] for g in groups}
        group_rows = np.diff(starts)
        locations = _offset_indexes(fd, leaves[0], list(groups), group_rows, spans) if indexed else {}
        opened = {g: _Chunk(str(path), fd, *chunks[g], leaf.max_definition_level, locations.get(g)) for g in groups}
        order = list(groups)
        cores = os.cpu_count() or 1

        def locate(g: int) -> list[tuple[_Page, list[int]]]:
            return opened[g].locate([r - int(starts[g]) for r in groups[g]])

        def decode(g: int, page: _Page, rows: list[int]) -> dict[int, str | None]:
            return {r + int(starts[g]): v for r, v in opened[g].read(page, rows).items()}

        decoding = threading.Semaphore(cores)

        def whole(g: int) -> dict[int, str | None]:
            found: dict[int, str | None] = {}
            located = locate(g)
            with decoding:
                for page, rows in located:
                    found.update(decode(g, page, rows))
            opened.pop(g).close()  # its pages' headers are not kept past the row group
            return found

        if len(order) <= cores:  # few row groups (or one): their pages are decoded side by side
            pages = [(g, page, rows) for g in order for page, rows in locate(g)]
            with ThreadPoolExecutor(max_workers=cores) as pool:
                for local in pool.map(lambda item: decode(*item), pages):
                    out.update(local)
        else:
            # Each row group on one thread, its pages found, then decoded (decompression releases
            # the GIL). As many threads as cores while the header reads come from the file cache
            # (more would only contend for the GIL); more once the first row group's reads wait on
            # the disk, since finding a page is then a chain of small reads that wait.
            first = opened[order[0]]
            out.update(whole(order[0]))
            cold = first.reads and first.read_seconds / first.reads > _COLD_READ
            with ThreadPoolExecutor(max_workers=_WALKERS if cold else cores) as pool:
                for local in pool.map(whole, order[1:]):
                    out.update(local)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError, OSError, ArrowException) as exc:
        raise Unsupported(f"{type(exc).__name__}: {exc}") from None
    finally:
        for chunk in list(opened.values()):
            chunk.close()
        os.close(fd)
    return out
