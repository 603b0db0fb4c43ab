"""The page reader returns what pyarrow reads, row for row, for every writer setting it claims to decode."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from divcoef_assets.core import parquet_pages
from divcoef_assets.core.parquet_pages import Unsupported, read_rows


def texts(n: int, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "béta", "gamma", "δέλτα", "epsilon", "", "zeta\nline", "ηλιος"]
    out: list[str | None] = []
    for i in range(n):
        if i % 17 == 5:
            out.append(None)
        elif i % 5 == 0:  # repeats, so dictionary pages get used before they fall back
            out.append(words[i % len(words)])
        else:
            out.append(" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) + f" {i}")
    return out


SETTINGS = [
    dict(compression="zstd"),
    dict(compression="snappy", use_dictionary=False),
    dict(compression="gzip", data_page_version="2.0"),
    dict(compression="brotli", data_page_version="2.0", use_dictionary=False),
    dict(compression="lz4", dictionary_pagesize_limit=2048),
    dict(compression="none", write_page_index=True),
    dict(compression="zstd", data_page_version="2.0", dictionary_pagesize_limit=2048, write_statistics=False),
    dict(compression="zstd", use_dictionary=False),  # pages decompressed only up to their last drawn value
    dict(compression="gzip", dictionary_pagesize_limit=2048),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()], ids=str)
def test_rows_match_pyarrow(tmp_path: Path, settings: dict, kind: pa.DataType) -> None:
    values = texts(6000)
    table = pa.table({"id": pa.array(range(len(values))), "text": pa.array(values, kind)})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=2500, data_page_size=1024, **settings)
    assert pq.ParquetFile(path).metadata.row_group(0).column(1).total_compressed_size > 4096  # many pages
    rows = sorted(np.random.default_rng(1).choice(len(values), 300, replace=False).tolist()) + [0, 2499, 2500, 5999]
    got = read_rows(path, "text", rows)
    assert got == {r: values[r] for r in rows}
    assert read_rows(path, "text", range(len(values))) == dict(enumerate(values))


def test_required_columns_and_unsupported_layouts(tmp_path: Path) -> None:
    values = [f"doc {i} " * (i % 7) for i in range(3000)]
    schema = pa.schema([pa.field("text", pa.string(), nullable=False)])
    path = tmp_path / "required.parquet"
    pq.write_table(pa.table({"text": values}, schema=schema), path, data_page_size=512)
    assert read_rows(path, "text", [0, 1234, 2999]) == {0: values[0], 1234: values[1234], 2999: values[2999]}
    delta = tmp_path / "delta.parquet"
    pq.write_table(pa.table({"text": values}), delta, use_dictionary=False,
                   column_encoding={"text": "DELTA_LENGTH_BYTE_ARRAY"})
    with pytest.raises(Unsupported, match="value encoding 6"):
        read_rows(delta, "text", [5])
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"text": [["a"], ["b"]]}), nested)
    with pytest.raises(Unsupported):
        read_rows(nested, "text", [1])


def test_a_damaged_page_does_not_pass_as_text(tmp_path: Path) -> None:
    values = [f"document number {i} " * 5 for i in range(2000)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": values}), path, compression="none", use_dictionary=False, data_page_size=4096)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"\xff" * 8  # a length prefix (or text) in the middle of the column
    path.write_bytes(bytes(data))
    try:
        got = read_rows(path, "text", range(2000))
    except Unsupported:
        return
    assert got != dict(enumerate(values))  # only text bytes were hit: the damage shows in the values
    assert sum(got[i] != values[i] for i in range(2000)) <= 2


def test_streamed_page_prefixes_are_used_and_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = texts(4000, seed=3)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": values}), path, compression="zstd", use_dictionary=False, data_page_size=2048,
                   write_batch_size=64)  # pages of at most 64 rows
    calls = []
    original = parquet_pages._Chunk._read_plain_prefix

    def counted(self: object, page: object, rows: list[int]) -> dict:
        calls.append(len(rows))
        return original(self, page, rows)

    monkeypatch.setattr(parquet_pages._Chunk, "_read_plain_prefix", counted)
    rows = list(range(3, 4000, 64))  # the fourth row of each page
    assert read_rows(path, "text", rows) == {r: values[r] for r in rows}
    assert len(calls) >= 10
    calls.clear()
    assert read_rows(path, "text", range(4000)) == dict(enumerate(values))  # every page read to its end: whole
    assert not calls


def _offset_index_span(path: Path, group: int, leaf: int) -> tuple[int, int]:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, len(data) - 8)
    footer = parquet_pages._Thrift(data[len(data) - 8 - length:len(data) - 8]).struct()
    chunk = footer[4][group][1][leaf]
    return chunk[4], chunk[5]


def test_the_offset_index_finds_pages_without_walking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = texts(6000, seed=5)
    table = pa.table({"id": pa.array(range(len(values))), "text": pa.array(values)})
    indexed, plain = tmp_path / "indexed.parquet", tmp_path / "plain.parquet"
    for path, index in ((indexed, True), (plain, False)):
        pq.write_table(table, path, row_group_size=3000, data_page_size=1024, compression="zstd",
                       use_dictionary=False, write_batch_size=64, write_page_index=index)
    headers: list[int] = []
    original = parquet_pages._Chunk._header

    def counted(self: object, offset: int) -> tuple:
        headers.append(offset)
        return original(self, offset)

    monkeypatch.setattr(parquet_pages._Chunk, "_header", counted)
    rows = [17, 2999, 5999]
    expected = {r: values[r] for r in rows}
    assert read_rows(indexed, "text", rows) == expected
    assert len(headers) == 3  # one header per drawn page, nothing walked
    headers.clear()
    assert read_rows(plain, "text", rows) == expected
    assert len(headers) > 40  # without the index, each row group's headers up to the last drawn page
    assert read_rows(indexed, "text", range(6000)) == dict(enumerate(values))


def test_a_damaged_offset_index_never_gives_wrong_text(tmp_path: Path) -> None:
    values = [f"row {i} " + "word " * (i % 13) for i in range(4000)]
    path = tmp_path / "indexed.parquet"
    pq.write_table(pa.table({"text": values}), path, row_group_size=2000, data_page_size=512,
                   compression="snappy", use_dictionary=False, write_batch_size=50, write_page_index=True)
    offset, length = _offset_index_span(path, 0, 0)
    original = path.read_bytes()
    rows = list(range(0, 2000, 97)) + [1999, 2000, 3999]
    outcomes = set()
    for at in range(offset, offset + length):
        data = bytearray(original)
        data[at] ^= 0x5A
        path.write_bytes(bytes(data))
        try:
            got = read_rows(path, "text", rows)
        except Unsupported:
            outcomes.add("refused")
            continue
        assert got == {r: values[r] for r in rows}, f"byte {at} of the offset index"
        outcomes.add("read")
    assert outcomes == {"refused", "read"}  # some damage is caught, the rest is walked around or harmless


@pytest.mark.parametrize("cold", [True, False], ids=["reads-wait", "reads-cached"])
def test_row_groups_on_many_threads_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cold: bool) -> None:
    values = texts(12000, seed=7)
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"text": values}), path, row_group_size=500, data_page_size=1024, write_batch_size=50,
                   compression="zstd")
    monkeypatch.setattr(parquet_pages, "_COLD_READ", 0.0 if cold else 1e9)  # every read counts as cold, or none
    rows = sorted(np.random.default_rng(2).choice(len(values), 400, replace=False).tolist())
    assert read_rows(path, "text", rows) == {r: values[r] for r in rows}
