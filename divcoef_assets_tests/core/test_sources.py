"""Source specs and streaming readers: good inputs read in order, bad inputs say what and where."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from divcoef_assets.core.sources import (
    DatasetSpec,
    DuckDBSource,
    FilesSource,
    HubUnavailableError,
    HuggingFaceSource,
    MixtureSource,
    SourceDataError,
    SourceNotFoundError,
    SourceSpecError,
    SyntheticSource,
    iter_texts,
    parse_source,
    source_to_dict,
)


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read(spec, base: Path) -> list[str]:
    return list(iter_texts(spec, base))


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_reads_in_order_skipping_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + b'{"text": "one", "id": 1}\n\n   \n{"text": "two"}\r\n{"text": null}\n{"text": ""}'
    )
    assert read(FilesSource(path="a.jsonl"), tmp_path) == ["one", "two", "", ""]


def test_jsonl_custom_column_and_max_documents(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [{"body": f"doc {i}"} for i in range(10)])
    spec = FilesSource(path="b.jsonl", text_column="body", max_documents=3)
    assert read(spec, tmp_path) == ["doc 0", "doc 1", "doc 2"]


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n{"text": "d"}\n', encoding="utf-8")
    texts = iter_texts(FilesSource(path="bad.jsonl"), tmp_path)
    assert next(texts) == "a"
    with pytest.raises(SourceDataError, match=r"bad\.jsonl, line 3: malformed JSON"):
        list(texts)


def test_jsonl_missing_column_lists_available_fields(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"content": "x", "id": 1}])
    with pytest.raises(SourceDataError, match=r"c\.jsonl, line 1: no field 'text'.*\['content', 'id'\]"):
        read(FilesSource(path="c.jsonl"), tmp_path)


@pytest.mark.parametrize("value", [12, 1.5, ["a"], {"a": 1}, True])
def test_jsonl_non_string_text_names_file_and_line(tmp_path: Path, value: object) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, {"text": value}])
    with pytest.raises(SourceDataError, match=r"d\.jsonl, line 2: the text is a .*not a string"):
        read(FilesSource(path="d.jsonl"), tmp_path)


def test_jsonl_non_object_line(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n["text"]\n', encoding="utf-8")
    with pytest.raises(SourceDataError, match=r"e\.jsonl, line 2: expected a JSON object"):
        read(FilesSource(path="e.jsonl"), tmp_path)


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "f.jsonl").write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(SourceDataError, match=r"f\.jsonl, line 2: invalid UTF-8 at byte 13"):
        read(FilesSource(path="f.jsonl"), tmp_path)


def test_nul_byte_in_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "g.txt").write_bytes(b"fine line\nbin\x00ary\n")
    with pytest.raises(SourceDataError, match=r"g\.txt, line 2: NUL byte at column 4"):
        read(FilesSource(path="g.txt"), tmp_path)


def test_escaped_nul_in_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "h.jsonl").write_text('{"text": "a\\u0000b"}\n', encoding="utf-8")
    with pytest.raises(SourceDataError, match=r"h\.jsonl, line 1: .*NUL"):
        read(FilesSource(path="h.jsonl"), tmp_path)


def test_enormous_single_document_passes_whole(tmp_path: Path) -> None:
    big = "word " * 2_000_000  # 10 MB on one line
    write_jsonl(tmp_path / "big.jsonl", [{"text": "small"}, {"text": big}])
    texts = read(FilesSource(path="big.jsonl"), tmp_path)
    assert texts[0] == "small" and len(texts[1]) == len(big)


# ----------------------------------------------------------------------------- paths


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"'nope\.jsonl' not found.*relative to"):
        read(FilesSource(path="nope.jsonl"), tmp_path)


def test_glob_matching_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"glob 'parts/\*\.jsonl'.*matches no files"):
        read(FilesSource(path="parts/*.jsonl"), tmp_path)


def test_glob_reads_files_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write_jsonl(tmp_path / "parts" / "b.jsonl", [{"text": "b1"}])
    write_jsonl(tmp_path / "parts" / "a.jsonl", [{"text": "a1"}, {"text": "a2"}])
    assert read(FilesSource(path="parts/*.jsonl", max_documents=2), tmp_path) == ["a1", "a2"]
    assert read(FilesSource(path="parts/*.jsonl"), tmp_path) == ["a1", "a2", "b1"]


def test_folder_instead_of_file_asks_for_a_glob(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(SourceSpecError, match="is a folder: use a glob"):
        read(FilesSource(path="dir.jsonl"), tmp_path)


def test_absolute_path_ignores_base_dir(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "abs.jsonl", [{"text": "x"}])
    assert read(FilesSource(path=str(path)), tmp_path / "elsewhere") == ["x"]


# ----------------------------------------------------------------------------- Parquet


def test_parquet_streams_row_groups(tmp_path: Path) -> None:
    table = pa.table({"text": [f"t{i}" for i in range(2500)] + [None], "n": list(range(2501))})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=1000)
    texts = read(FilesSource(path="p.parquet"), tmp_path)
    assert texts[:2] == ["t0", "t1"] and texts[2499] == "t2499" and texts[-1] == "" and len(texts) == 2501


def test_parquet_missing_column_lists_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["a"], "id": [1]}), tmp_path / "q.parquet")
    with pytest.raises(SourceDataError, match=r"q\.parquet: no column 'text'.*\['body', 'id'\]"):
        read(FilesSource(path="q.parquet"), tmp_path)


def test_parquet_non_string_column_names_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "r.parquet")
    with pytest.raises(SourceDataError, match=r"r\.parquet, row 1: column 'text' holds int64"):
        read(FilesSource(path="r.parquet"), tmp_path)


def test_truncated_parquet_names_file(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["x" * 100] * 1000}), tmp_path / "s.parquet")
    data = (tmp_path / "s.parquet").read_bytes()
    (tmp_path / "s.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        SourceDataError, match=r"s\.parquet: not a readable Parquet file.*truncated or corrupt"
    ):
        read(FilesSource(path="s.parquet"), tmp_path)


def test_corrupt_parquet_body_names_file(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"text": [f"row {i} " * 20 for i in range(5000)]}),
        tmp_path / "u.parquet",
        compression="none",
        row_group_size=1000,
    )
    data = bytearray((tmp_path / "u.parquet").read_bytes())
    data[4 : len(data) // 2] = b"\xff" * (len(data) // 2 - 4)
    (tmp_path / "u.parquet").write_bytes(bytes(data))
    with pytest.raises(SourceDataError, match=r"u\.parquet"):
        read(FilesSource(path="u.parquet"), tmp_path)


# ----------------------------------------------------------------------------- CSV


def test_csv_with_quotes_commas_newlines_and_huge_field(tmp_path: Path) -> None:
    huge = "y" * 1_000_000
    with open(tmp_path / "c.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerow([1, "plain"])
        writer.writerow([2, 'has, comma and "quotes"\nand a second line'])
        writer.writerow([3, huge])
        writer.writerow([4, ""])
    texts = read(FilesSource(path="c.csv"), tmp_path)
    assert texts == ["plain", 'has, comma and "quotes"\nand a second line', huge, ""]


def test_csv_missing_column_lists_header(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(SourceDataError, match=r"d\.csv: no column 'text'.*\['id', 'body'\]"):
        read(FilesSource(path="d.csv"), tmp_path)


def test_csv_ragged_row_names_line(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text('id,text\n1,"a\nb"\n2,x,extra\n', encoding="utf-8")
    with pytest.raises(SourceDataError, match=r"e\.csv, line 4 \(row 2\): 3 fields"):
        read(FilesSource(path="e.csv"), tmp_path)


def test_csv_invalid_utf8_names_line(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_bytes(b"id,text\n1,ok\n2,\xff\xfe\n")
    with pytest.raises(SourceDataError, match=r"f\.csv, line 3: invalid UTF-8"):
        read(FilesSource(path="f.csv"), tmp_path)


# ----------------------------------------------------------------------------- plain text


def test_text_lines_and_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("first\nsecond\n\n  \nthird\r\nfourth\n", encoding="utf-8")
    assert read(FilesSource(path="t.txt"), tmp_path) == ["first", "second", "third", "fourth"]
    assert read(FilesSource(path="t.txt", split="paragraphs"), tmp_path) == ["first\nsecond", "third\nfourth"]


def test_text_invalid_utf8_names_line(tmp_path: Path) -> None:
    (tmp_path / "u.txt").write_bytes(b"good\n\xc3\x28 bad\n")
    with pytest.raises(SourceDataError, match=r"u\.txt, line 2: invalid UTF-8 at byte 0"):
        read(FilesSource(path="u.txt"), tmp_path)


# ----------------------------------------------------------------------------- gzip


def write_gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return path


def test_gzip_jsonl_reads_like_the_plain_file(tmp_path: Path) -> None:
    records = [{"text": f"doc {i}", "id": i} for i in range(3000)]
    plain = write_jsonl(tmp_path / "a.jsonl", records)
    write_gzip(tmp_path / "a.jsonl.gz", plain.read_bytes())
    assert read(FilesSource(path="a.jsonl.gz"), tmp_path) == read(FilesSource(path="a.jsonl"), tmp_path)
    assert read(FilesSource(path="a.jsonl.gz", max_documents=2), tmp_path) == ["doc 0", "doc 1"]


def test_gzip_csv_keeps_multiline_fields(tmp_path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerows([["id", "text"], [1, "plain"], [2, "two\nlines, and a comma"]])
    write_gzip(tmp_path / "c.csv.gz", buffer.getvalue().encode("utf-8"))
    assert read(FilesSource(path="c.csv.gz"), tmp_path) == ["plain", "two\nlines, and a comma"]


def test_gzip_text_lines_and_paragraphs(tmp_path: Path) -> None:
    write_gzip(tmp_path / "t.txt.gz", b"first\nsecond\n\nthird\n")
    assert read(FilesSource(path="t.txt.gz"), tmp_path) == ["first", "second", "third"]
    assert read(FilesSource(path="t.txt.gz", split="paragraphs"), tmp_path) == ["first\nsecond", "third"]


def test_glob_mixes_plain_and_gzip_files(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write_jsonl(tmp_path / "parts" / "a.jsonl", [{"text": "a1"}])
    write_gzip(tmp_path / "parts" / "b.jsonl.gz", b'{"text": "b1"}\n')
    assert read(FilesSource(path="parts/*", format="jsonl"), tmp_path) == ["a1", "b1"]


def test_gzip_format_inference_looks_before_gz() -> None:
    assert FilesSource(path="x.jsonl.gz").format == "jsonl"
    assert FilesSource(path="x/*.CSV.GZ").format == "csv"
    assert FilesSource(path="x.txt.gz").format == "text"
    assert FilesSource(path="x.gz", format="jsonl").format == "jsonl"
    with pytest.raises(SourceSpecError, match=r"cannot infer the format of 'x\.gz'"):
        FilesSource(path="x.gz")
    with pytest.raises(SourceSpecError, match=r"'x\.parquet\.gz': gzip-compressed files are read for the jsonl"):
        FilesSource(path="x.parquet.gz")


def test_gzip_errors_keep_file_line_and_byte(tmp_path: Path) -> None:
    write_gzip(tmp_path / "bad.jsonl.gz", b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(SourceDataError, match=r"bad\.jsonl\.gz, line 2: invalid UTF-8 at byte 13"):
        read(FilesSource(path="bad.jsonl.gz"), tmp_path)
    write_gzip(tmp_path / "m.jsonl.gz", b'{"text": "a"}\n{"text": \n')
    with pytest.raises(SourceDataError, match=r"m\.jsonl\.gz, line 2: malformed JSON"):
        read(FilesSource(path="m.jsonl.gz"), tmp_path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    data = "".join(json.dumps({"text": f"document number {i} " * 5}) + "\n" for i in range(20000))
    compressed = gzip.compress(data.encode("utf-8"), mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(compressed[: len(compressed) // 2])
    texts = iter_texts(FilesSource(path="cut.jsonl.gz"), tmp_path)
    assert next(texts).startswith("document number 0 ")
    with pytest.raises(SourceDataError) as info:
        list(texts)
    message = str(info.value)
    assert str(tmp_path / "cut.jsonl.gz") in message
    assert "may be truncated" in message and "cannot decompress after line" in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("plain.jsonl.gz", b'{"text": "not compressed"}\n'),  # a .gz suffix on a plain file
        ("crc.jsonl.gz", None),  # a flipped byte in the compressed body
    ],
)
def test_corrupt_gzip_names_the_file(tmp_path: Path, name: str, content: bytes | None) -> None:
    if content is None:
        good = bytearray(gzip.compress(b'{"text": "x"}\n' * 1000, mtime=0))
        good[len(good) // 2] ^= 0xFF
        content = bytes(good)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceDataError, match=rf"{re.escape(name)}: cannot decompress.*may be truncated or corrupt"):
        read(FilesSource(path=name), tmp_path)


# ----------------------------------------------------------------------------- Hugging Face


def test_huggingface_folder_saved_to_disk(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(2100)], "label": list(range(2100))})
    ds.save_to_disk(str(tmp_path / "saved"))
    texts = read(HuggingFaceSource(path="saved"), tmp_path)
    assert texts[0] == "doc 0" and texts[-1] == "doc 2099" and len(texts) == 2100
    assert read(HuggingFaceSource(path="saved", max_documents=5), tmp_path)[-1] == "doc 4"
    with pytest.raises(SourceDataError, match=r"no column 'body'.*\['text', 'label'\]"):
        read(HuggingFaceSource(path="saved", text_column="body"), tmp_path)


def test_huggingface_dataset_dict_split(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["tr"]}),
            "test": datasets.Dataset.from_dict({"text": ["te"]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert read(HuggingFaceSource(path="dd", split="test"), tmp_path) == ["te"]
    with pytest.raises(SourceDataError, match=r"no split 'validation'.*\['test', 'train'\]"):
        read(HuggingFaceSource(path="dd", split="validation"), tmp_path)


def test_huggingface_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="folder './missing' not found"):
        read(HuggingFaceSource(path="./missing"), tmp_path)


def test_huggingface_hub_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError) as info:
        read(HuggingFaceSource(path="wikitext", name="wikitext-103-raw-v1"), tmp_path)
    message = str(info.value)
    assert "could not reach the Hugging Face hub for dataset 'wikitext'" in message
    assert "save_to_disk" in message


# ----------------------------------------------------------------------------- DuckDB


def make_db(path: Path) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE posts (id INTEGER, body VARCHAR, lang VARCHAR)")
        con.execute(
            "INSERT INTO posts SELECT i, 'post ' || i, CASE WHEN i % 2 = 1 THEN 'en' ELSE 'fr' END FROM range(?) t(i)",
            [3000],
        )
    return path


def test_duckdb_query_streams_rows(tmp_path: Path) -> None:
    make_db(tmp_path / "f.duckdb")
    spec = DuckDBSource(
        database="f.duckdb", query="SELECT body AS text FROM posts WHERE lang = 'en' ORDER BY id"
    )
    texts = read(spec, tmp_path)
    assert len(texts) == 1500 and texts[0] == "post 1" and texts[-1] == "post 2999"


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM posts",
        "SELECT 1 AS text; DROP TABLE posts",
        "COPY posts TO 'out.csv'",
        "CREATE TABLE x (a INT)",
    ],
)
def test_duckdb_refuses_anything_but_one_select(tmp_path: Path, query: str) -> None:
    make_db(tmp_path / "f.duckdb")
    with pytest.raises(SourceDataError, match="exactly one SELECT"):
        read(DuckDBSource(database="f.duckdb", query=query), tmp_path)
    with duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM posts").fetchone() == (3000,)
    assert not (tmp_path / "out.csv").exists()


def test_duckdb_cannot_read_other_files(tmp_path: Path) -> None:
    make_db(tmp_path / "f.duckdb")
    (tmp_path / "secret.csv").write_text("text\nsecret\n")
    spec = DuckDBSource(database="f.duckdb", query=f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")
    with pytest.raises(SourceDataError, match="the query failed"):
        read(spec, tmp_path)


def test_duckdb_missing_column_and_database(tmp_path: Path) -> None:
    make_db(tmp_path / "f.duckdb")
    with pytest.raises(SourceDataError, match=r"no column 'text'; it returns \['id', 'body'\]"):
        read(DuckDBSource(database="f.duckdb", query="SELECT id, body FROM posts"), tmp_path)
    with pytest.raises(SourceNotFoundError, match="'none.duckdb' not found"):
        read(DuckDBSource(database="none.duckdb", query="SELECT 1"), tmp_path)


def test_duckdb_non_string_value_names_row(tmp_path: Path) -> None:
    make_db(tmp_path / "f.duckdb")
    with pytest.raises(SourceDataError, match=r"f\.duckdb, query row 1: the text is a int"):
        read(DuckDBSource(database="f.duckdb", query="SELECT id AS text FROM posts"), tmp_path)


# ----------------------------------------------------------------------------- specs


def test_synthetic_has_no_texts_and_fills_ginc_defaults(tmp_path: Path) -> None:
    spec = SyntheticSource(kind="ginc")
    assert spec.is_synthetic and (spec.n_concepts, spec.vocab_size, spec.n_states) == (8, 50, 10)
    assert spec == SyntheticSource(kind="ginc", n_concepts=8, vocab_size=50, n_states=10)
    with pytest.raises(SourceSpecError, match="token ids, not texts"):
        read(spec, tmp_path)
    with pytest.raises(SourceSpecError, match="n_concepts applies to kind ginc only"):
        SyntheticSource(kind="lower_bound", n_concepts=3)
    with pytest.raises(SourceSpecError, match="kind must be one of"):
        SyntheticSource(kind="random")  # type: ignore[arg-type]
    with pytest.raises(SourceSpecError, match="n_sequences must be a positive integer"):
        SyntheticSource(kind="upper_bound", n_sequences=0)


def test_mixture_spec_validation(tmp_path: Path) -> None:
    spec = MixtureSource(components=("a", "b"), weights=(3, 1))
    assert spec.weight_map == {"a": 3.0, "b": 1.0} and not spec.is_synthetic
    assert MixtureSource(components=["a", "b"], weights=[3, 1]) == spec  # type: ignore[arg-type]
    with pytest.raises(SourceSpecError, match="components must be a non-empty list"):
        MixtureSource(components="ab", weights=(1, 1))  # type: ignore[arg-type]
    with pytest.raises(SourceSpecError, match="no texts of its own"):
        read(spec, tmp_path)
    with pytest.raises(SourceSpecError, match="one number per component"):
        MixtureSource(components=("a", "b"), weights=(1,))
    with pytest.raises(SourceSpecError, match="positive finite"):
        MixtureSource(components=("a", "b"), weights=(1, 0))
    with pytest.raises(SourceSpecError, match="repeat"):
        MixtureSource(components=("a", "a"), weights=(1, 1))
    with pytest.raises(SourceSpecError, match="mode must be one of"):
        MixtureSource(components=("a",), weights=(1,), mode="zip")  # type: ignore[arg-type]


def test_format_inference() -> None:
    assert FilesSource(path="x/*.parquet").format == "parquet"
    assert FilesSource(path="x.CSV").format == "csv"
    assert FilesSource(path="x.md").format == "text"
    with pytest.raises(SourceSpecError, match="cannot infer the format of 'x.dat'.*set `format`"):
        FilesSource(path="x.dat")
    with pytest.raises(SourceSpecError, match="split applies to the `text` format only"):
        FilesSource(path="x.jsonl", split="paragraphs")


def test_parse_source_errors_name_the_place() -> None:
    with pytest.raises(
        SourceSpecError, match=r"here: unknown source type 'ftp'; known types: files, huggingface"
    ):
        parse_source("ftp", {}, where="here")
    with pytest.raises(SourceSpecError, match=r"here: unknown field\(s\) 'colum' for a files source"):
        parse_source("files", {"path": "a.jsonl", "colum": "x"}, where="here")
    with pytest.raises(SourceSpecError, match=r"here: a duckdb source needs field\(s\) 'query'"):
        parse_source("duckdb", {"database": "x.duckdb"}, where="here")
    with pytest.raises(SourceSpecError, match=r"here: max_documents must be a positive integer"):
        parse_source("files", {"path": "a.jsonl", "max_documents": -1}, where="here")
    spec = parse_source("mixture", {"components": ["a", "b"], "weights": [1, 2]})
    assert spec == MixtureSource(components=("a", "b"), weights=(1, 2))


def test_to_dict_round_trips_through_parse() -> None:
    for spec in (
        FilesSource(path="a/*.csv", text_column="body"),
        HuggingFaceSource(path="wikitext", name="wikitext-2-raw-v1"),
        DuckDBSource(database="x.duckdb", query="SELECT 1 AS text"),
        SyntheticSource(kind="ginc", n_concepts=4),
        MixtureSource(components=("a", "b"), weights=(1.0, 2.0), mode="concat"),
    ):
        data = source_to_dict(spec)
        assert parse_source(data.pop("source"), data) == spec


def test_mixture_spec_is_a_mixture() -> None:
    mixture = DatasetSpec(name="m", source=MixtureSource(components=("a", "b"), weights=(3, 1)))
    assert mixture.is_mixture and mixture.source_type == "mixture"
