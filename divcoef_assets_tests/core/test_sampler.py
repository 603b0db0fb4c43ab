"""Sample pools: bottom-k by seeded keys, independent of shards, grown as prefixes, read at the sample's cost."""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from divcoef_assets.core import sampler
from divcoef_assets.core.sampler import document_keys, merge, sample_pool, sample_shard
from divcoef_assets.core.sources import CorruptSourceError, DuckDBSource, FilesSource, HuggingFaceSource, SourceDataError


def write_jsonl(path: Path, texts: list[str], *, gz: bool = False) -> Path:
    body = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    path.write_bytes(gzip.compress(body, mtime=0) if gz else body)
    return path


def docs(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix} {i} " + "word " * (i % 7) for i in range(n)]


def test_keys_are_a_fixed_function_of_seed_file_and_position() -> None:
    salt = sampler.shard_salt(0, "a.jsonl")
    keys = document_keys(salt, np.arange(5))
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 5
    assert np.array_equal(keys, document_keys(salt, np.arange(5)))
    assert sampler.document_key(salt, 3) == int(keys[3])
    assert not np.array_equal(keys, document_keys(sampler.shard_salt(1, "a.jsonl"), np.arange(5)))
    assert not np.array_equal(keys, document_keys(sampler.shard_salt(0, "b.jsonl"), np.arange(5)))


def test_the_pool_does_not_depend_on_shard_order_or_count(tmp_path: Path, monkeypatch) -> None:
    texts = docs(3000)
    write_jsonl(tmp_path / "part-0.jsonl", texts[:1700])
    write_jsonl(tmp_path / "part-1.jsonl", texts[1700:])
    spec = FilesSource(path="part-*.jsonl")
    whole = sample_pool(spec, tmp_path, seed=3, k=100, executor="serial")
    assert len(whole.docs) == 100 and whole.n_records == 3000
    for shard_bytes, chunk_bytes in ((20_000, 4096), (7_001, 1000), (50_000, 333)):
        monkeypatch.setattr(sampler, "SHARD_BYTES", shard_bytes)
        monkeypatch.setattr(sampler, "CHUNK_BYTES", chunk_bytes)
        shards = sampler.plan_shards(spec, tmp_path)
        assert len(shards) > 2
        results = [sample_shard(s, spec, 3, 100) for s in shards]
        random.Random(shard_bytes).shuffle(results)
        pool = merge(results, seed=3, k=100, exact=False)
        assert pool.docs == whole.docs  # same documents, keys and line numbers
        assert pool.n_records == 3000
    # A line number is the line in its file, whatever the shard that found it.
    lines = {t: i + 1 for i, t in enumerate(texts[:1700])} | {t: i + 1 for i, t in enumerate(texts[1700:])}
    assert all(d.locator == f"line {lines[d.text]}" for d in whole.docs)
    # Other seeds give other pools; the same seed, the same pool, in random (not file) order.
    assert sample_pool(spec, tmp_path, seed=4, k=100, executor="serial").docs != whole.docs
    assert sorted(d.text for d in whole.docs) != [d.text for d in whole.docs]


def test_pieces_of_any_size_give_the_same_pool_plain_and_gzip(tmp_path: Path, monkeypatch) -> None:
    # Lines of 12 to 300 bytes: pieces of 64 bytes end inside lines and grow, and a gzip stream
    # carries each unfinished line into the next piece.
    texts = [f"doc {i} " + "long " * (i % 60) for i in range(800)]
    for name, gz in (("plain.jsonl", False), ("packed.jsonl.gz", True)):
        write_jsonl(tmp_path / name, texts, gz=gz)
        spec = FilesSource(path=name)
        whole = sample_pool(spec, tmp_path, seed=5, k=50, executor="serial")
        for chunk_bytes in (64, 1000, 4096):
            monkeypatch.setattr(sampler, "CHUNK_BYTES", chunk_bytes)
            pool = sample_pool(spec, tmp_path, seed=5, k=50, executor="serial")
            assert pool.docs == whole.docs, (name, chunk_bytes)  # documents, keys and line numbers
            assert pool.n_records == whole.n_records == 800 and {d.text for d in pool.docs} <= set(texts)
        monkeypatch.undo()


def test_a_process_pool_gives_the_serial_pool_and_both_report_each_shard(tmp_path: Path) -> None:
    for i in range(3):
        write_jsonl(tmp_path / f"s{i}.jsonl.gz", docs(400 + 100 * i, f"s{i}"), gz=True)
    spec = FilesSource(path="s*.jsonl.gz")
    total = sum(p.stat().st_size for p in tmp_path.glob("s*.jsonl.gz"))
    reports: dict[str, list[sampler.SamplingProgress]] = {"serial": [], "process": []}
    serial = sample_pool(spec, tmp_path, seed=0, k=64, executor="serial", progress=reports["serial"].append)
    parallel = sample_pool(spec, tmp_path, seed=0, k=64, executor="process", workers=2, progress=reports["process"].append)
    assert parallel == serial
    for seen in reports.values():
        assert [r.shards_done for r in seen] == [1, 2, 3] and {r.shards for r in seen} == {3}
        assert {r.bytes for r in seen} == {total} and seen[-1].bytes_done == total
        assert all(a.bytes_done < b.bytes_done and a.seconds <= b.seconds for a, b in zip(seen, seen[1:]))
        assert seen[-1].seconds_left == 0 and seen[-1].bytes_per_second > 0


def test_a_failed_shard_in_the_process_pool_fails_the_pool_with_its_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl.gz", docs(300, "a"), gz=True)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "fine"}\n', mtime=0)[:-9])  # cut inside the stream
    with pytest.raises(SourceDataError, match=r"b\.jsonl\.gz: cannot decompress.*truncated"):
        sample_pool(FilesSource(path="*.jsonl.gz"), tmp_path, seed=0, k=10, executor="process", workers=2)


def test_progress_says_how_much_is_left_at_the_rate_so_far() -> None:
    halfway = sampler.SamplingProgress(shards_done=1, shards=4, bytes_done=2**20, bytes=4 * 2**20, seconds=2.0)
    assert halfway.bytes_per_second == 2**19 and halfway.seconds_left == 6.0
    assert sampler.SamplingProgress(0, 4, 0, 4 * 2**20, 0.0).seconds_left is None


def test_a_grown_pool_begins_with_the_old_pool(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "c.jsonl", docs(2000))
    spec = FilesSource(path="c.jsonl")
    small = sample_pool(spec, tmp_path, seed=0, k=50)
    large = sample_pool(spec, tmp_path, seed=0, k=400)
    assert large.docs[:50] == small.docs and len(large.docs) == 400
    assert not small.complete and sample_pool(spec, tmp_path, seed=0, k=5000).complete


def test_the_pool_is_a_uniform_sample(tmp_path: Path) -> None:
    n, k, seeds = 200, 20, 400
    write_jsonl(tmp_path / "u.jsonl", docs(n))
    counts = np.zeros(n)
    for seed in range(seeds):
        for d in sample_pool(FilesSource(path="u.jsonl"), tmp_path, seed=seed, k=k).docs:
            counts[int(d.text.split()[1])] += 1
    # Each document is in a pool with probability k / n = 0.1: 40 of 400 expected, sd about 6.
    assert counts.min() > 15 and counts.max() < 70 and abs(counts.mean() - seeds * k / n) < 1e-9
    chi2 = ((counts - seeds * k / n) ** 2 / (seeds * k / n)).sum()
    assert chi2 < 300, chi2  # 199 degrees of freedom (less: draws without replacement): a mean of about 180


def test_empty_documents_are_dropped_and_counted(tmp_path: Path) -> None:
    texts = [t if i % 4 else ("" if i % 8 else "  \t ") for i, t in enumerate(docs(4000))]
    write_jsonl(tmp_path / "e.jsonl", texts)
    pool = sample_pool(FilesSource(path="e.jsonl"), tmp_path, seed=0, k=200)
    assert len(pool.docs) == 200 and all(d.text.strip() for d in pool.docs)
    assert pool.n_empty_read > 0 and pool.n_read < 4000 and not pool.exact
    assert abs(pool.empty_share - 0.25) < 0.1  # estimated from the documents read
    assert 2600 < pool.n_usable_estimate < 3400  # 3000 usable
    whole = sample_pool(FilesSource(path="e.jsonl"), tmp_path, seed=0, k=5000)
    assert whole.complete and len(whole.docs) == 3000 and whole.n_usable_estimate == 3000


def test_blank_lines_are_not_documents_and_crlf_is_read(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "one"}\r\n\r\n\n{"text": "two"}\n   \n{"text": "three"}')
    pool = sample_pool(FilesSource(path="b.jsonl"), tmp_path, seed=0, k=10)
    assert sorted(d.text for d in pool.docs) == ["one", "three", "two"] and pool.n_records == 3
    assert sorted(d.locator for d in pool.docs) == ["line 1", "line 4", "line 6"]


def test_a_bad_sampled_record_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(SourceDataError, match=r"bad.jsonl, line 2: malformed JSON"):
        sample_pool(FilesSource(path="bad.jsonl"), tmp_path, seed=0, k=10)
    (tmp_path / "nokey.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(SourceDataError, match=r"nokey.jsonl, line 1: no field 'text'"):
        sample_pool(FilesSource(path="nokey.jsonl"), tmp_path, seed=0, k=10)


def test_a_damaged_gzip_file_names_the_file(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "z.jsonl.gz", docs(3000), gz=True).read_bytes()
    (tmp_path / "z.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceDataError, match=r"z.jsonl.gz: cannot decompress after byte \d+"):
        sample_pool(FilesSource(path="z.jsonl.gz"), tmp_path, seed=0, k=10)


def test_text_csv_and_max_documents(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("alpha\n\nbeta\ngamma\n")
    assert sorted(d.text for d in sample_pool(FilesSource(path="t.txt"), tmp_path, seed=0, k=9).docs) == ["alpha", "beta", "gamma"]
    paragraphs = sample_pool(FilesSource(path="t.txt", split="paragraphs"), tmp_path, seed=0, k=9)
    assert sorted(d.text for d in paragraphs.docs) == ["alpha", "beta\ngamma"] and paragraphs.exact
    (tmp_path / "c.csv").write_text('id,text\n1,"a, b"\n2,\n3,c\n')
    pool = sample_pool(FilesSource(path="c.csv"), tmp_path, seed=0, k=9)
    assert sorted(d.text for d in pool.docs) == ["a, b", "c"] and pool.n_empty_read == 1
    write_jsonl(tmp_path / "m.jsonl", docs(100))
    capped = sample_pool(FilesSource(path="m.jsonl", max_documents=10), tmp_path, seed=0, k=50)
    assert sorted(d.text for d in capped.docs) == sorted(docs(10)) and capped.complete


def parquet_corpus(path: Path, texts: list[str | None], row_group_size: int = 100) -> Path:
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path, row_group_size=row_group_size)
    return path


def test_parquet_reads_only_the_drawn_rows(tmp_path: Path) -> None:
    texts = [None if i % 10 == 0 else t for i, t in enumerate(docs(5000))]
    parquet_corpus(tmp_path / "p0.parquet", texts[:3000])
    parquet_corpus(tmp_path / "p1.parquet", texts[3000:])
    spec = FilesSource(path="p*.parquet")
    pool = sample_pool(spec, tmp_path, seed=0, k=100)
    assert len(pool.docs) == 100 and pool.n_records == 5000 and pool.n_read < 200
    by_text = {t: i for i, t in enumerate(texts) if t}
    for d in pool.docs:  # the row a document names holds that document
        row = int(d.locator.split()[1]) - 1
        assert by_text[d.text] == row + (3000 if d.file == "p1.parquet" else 0)
    assert sample_pool(spec, tmp_path, seed=0, k=300).docs[:100] == pool.docs
    whole = sample_pool(spec, tmp_path, seed=0, k=6000)
    assert whole.complete and len(whole.docs) == 4500 and whole.n_usable_estimate == 4500


def test_parquet_pages_and_whole_row_groups_give_the_same_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from divcoef_assets.core import parquet_pages

    texts = [None if i % 10 == 0 else t for i, t in enumerate(docs(4000))]
    pq.write_table(pa.table({"text": texts}), tmp_path / "a.parquet", row_group_size=1000, data_page_size=2048)
    pq.write_table(pa.table({"text": texts}), tmp_path / "b.parquet", column_encoding={"text": "DELTA_LENGTH_BYTE_ARRAY"},
                   use_dictionary=False)  # not decoded by pages: read by row group
    spec = FilesSource(path="*.parquet")
    pages = sample_pool(spec, tmp_path, seed=5, k=200)
    assert {d.file for d in pages.docs} == {"a.parquet", "b.parquet"}

    def unsupported(*args: object) -> None:
        raise parquet_pages.Unsupported("switched off")

    monkeypatch.setattr(parquet_pages, "read_rows", unsupported)
    assert sample_pool(spec, tmp_path, seed=5, k=200) == pages


def test_a_parquet_file_damaged_inside_a_page_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": docs(3000)}), path, compression="zstd", row_group_size=3000)
    data = bytearray(path.read_bytes())
    data[200:4000] = bytes(3800)  # zeroes over the first pages of the text column
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSourceError, match=r"bad.parquet: reading rows failed"):
        sample_pool(FilesSource(path="bad.parquet"), tmp_path, seed=0, k=2000)


def test_a_corrupt_parquet_footer_names_the_file(tmp_path: Path) -> None:
    parquet_corpus(tmp_path / "good.parquet", docs(50))
    data = parquet_corpus(tmp_path / "bad.parquet", docs(50)).read_bytes()
    (tmp_path / "bad.parquet").write_bytes(data[:-12] + b"garbage!PAR1")
    with pytest.raises(CorruptSourceError, match=r"bad.parquet: not a readable Parquet file: its footer cannot be read"):
        sample_pool(FilesSource(path="*.parquet"), tmp_path, seed=0, k=10)


def test_arrow_folders_read_selected_rows_and_a_corrupt_file_is_named(tmp_path: Path) -> None:
    import datasets

    texts = docs(500)
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "hf"))
    spec = HuggingFaceSource(path="hf")
    pool = sample_pool(spec, tmp_path, seed=0, k=40)
    assert len(pool.docs) == 40 and pool.n_read == 40 and pool.n_records == 500
    assert all(texts[int(d.locator.split()[1]) - 1] == d.text for d in pool.docs)
    arrow = next((tmp_path / "hf").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:200])
    with pytest.raises(CorruptSourceError, match=rf"{arrow.name}: cannot be read as an Arrow file"):
        sample_pool(spec, tmp_path, seed=0, k=40)


def test_arrow_rows_read_by_positioned_reads_match_the_datasets_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    texts = docs(3000)
    dataset = datasets.Dataset.from_dict({"id": list(range(3000)), "text": texts})
    dataset.save_to_disk(str(tmp_path / "hf"), max_shard_size="20KB")  # several Arrow files and record batches
    spec = HuggingFaceSource(path="hf")
    direct = sample_pool(spec, tmp_path, seed=4, k=100)
    assert all(texts[int(d.locator.split()[1]) - 1] == d.text for d in direct.docs)

    def unsupported(*args: object) -> None:
        raise sampler.arrow_ipc.Unsupported("forced")

    monkeypatch.setattr(sampler.arrow_ipc, "open_saved_column", unsupported)  # read through `datasets`
    assert sample_pool(spec, tmp_path, seed=4, k=100) == direct
    loaded = sampler.load_saved_dataset(spec, tmp_path / "hf")
    mapped = loaded.select(range(2999, -1, -1))  # the rows reversed behind an indices mapping: read through `datasets`
    assert loaded._indices is None and mapped._indices is not None
    monkeypatch.setattr(sampler, "load_saved_dataset", lambda *args: mapped)
    through = sample_pool(spec, tmp_path, seed=4, k=100)
    assert [(d.key, d.locator) for d in through.docs] == [(d.key, d.locator) for d in direct.docs]
    assert all(texts[3000 - int(d.locator.split()[1])] == d.text for d in through.docs)


def test_duckdb_queries_are_sampled_by_result_row(tmp_path: Path) -> None:
    import duckdb

    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        con.execute("CREATE TABLE docs AS SELECT i AS id, 'row ' || i AS body FROM range(3000) t(i)")
    spec = DuckDBSource(database="d.duckdb", query="SELECT body FROM docs WHERE id % 2 = 0", text_column="body")
    pool = sample_pool(spec, tmp_path, seed=0, k=30)
    assert len(pool.docs) == 30 and pool.n_records == 1500
    assert all(d.text == f"row {2 * (int(d.locator.split()[1]) - 1)}" for d in pool.docs)
    assert sample_pool(spec, tmp_path, seed=0, k=60).docs[:30] == pool.docs


def test_duckdb_plain_table_scans_read_drawn_rows_by_rowid_with_the_streamed_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import duckdb

    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        con.execute("CREATE TABLE docs AS SELECT i AS id, 'doc ' || i AS body FROM range(5000) t(i)")
        con.execute("CREATE VIEW every AS SELECT body FROM docs")
        con.execute("CREATE TABLE gaps AS SELECT * FROM docs")
        con.execute("DELETE FROM gaps WHERE id % 3 = 0")
    plain = ["SELECT body FROM docs", 'SELECT * FROM main."docs" AS d; -- trailing comment', "SELECT id, body AS body FROM docs"]
    streamed = ["SELECT body FROM every", "SELECT body FROM docs ORDER BY id", "SELECT body FROM docs LIMIT 5000",
                "SELECT * EXCLUDE (id) FROM (SELECT * FROM docs)", "SELECT body FROM gaps"]
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        for query in plain + streamed:
            total = 3333 if "gaps" in query else 5000
            assert (sampler._table_scan(con, con.extract_statements(query)[0].query, total) is not None) == (query in plain), query
    by_rowid = {q: sample_pool(DuckDBSource(database="d.duckdb", query=q, text_column="body"), tmp_path, seed=3, k=50) for q in plain}
    monkeypatch.setattr(sampler, "_table_scan", lambda *args: None)
    for query in plain + streamed:
        pool = sample_pool(DuckDBSource(database="d.duckdb", query=query, text_column="body"), tmp_path, seed=3, k=50)
        assert len(pool.docs) == 50 and pool.n_records == (3333 if "gaps" in query else 5000)
        if query in plain:
            assert pool == by_rowid[query]
        if "gaps" not in query:
            assert all(d.text == f"doc {int(d.locator.split()[1]) - 1}" for d in pool.docs)
        else:
            assert all(int(d.text.split()[1]) % 3 != 0 for d in pool.docs)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir() or not hasattr(os, "posix_fadvise"), reason="needs /proc and posix_fadvise")
def test_random_reads_advises_duckdbs_own_descriptor_of_the_database_and_no_other(tmp_path: Path) -> None:
    import duckdb

    from divcoef_assets.core.duckdb_files import random_reads

    database = tmp_path / "d.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE docs AS SELECT 'doc ' || i AS body FROM range(100) t(i)")
    (tmp_path / "other").write_text("x")
    with duckdb.connect(str(database), read_only=True) as con:
        with random_reads(database) as advised:
            assert advised >= 1  # the descriptor DuckDB keeps open on the file
            assert con.execute("SELECT body FROM docs WHERE rowid = 7").fetchone() == ("doc 7",)
        with random_reads(tmp_path / "other") as advised:
            assert advised == 0  # open nowhere in this process
    with random_reads(tmp_path / "missing") as advised:
        assert advised == 0


def test_sampler_module_has_no_dagster_import() -> None:
    assert "dagster" not in Path(sampler.__file__).read_text()


@pytest.mark.parametrize("bounded", [True, False])
def test_row_selection_is_the_exact_bottom_k_of_every_key(monkeypatch: pytest.MonkeyPatch, bounded: bool) -> None:
    if not bounded:  # a bound under which too few keys fall: every key is kept instead
        monkeypatch.setattr(sampler, "_KEY_BLOCK", 256)
        monkeypatch.setattr(sampler, "_key_bound", lambda want, total: 1 << 40)
    rng = np.random.default_rng(1)
    for trial in range(20):
        counts = [int(x) for x in rng.integers(0, 3000, size=int(rng.integers(1, 4)))]
        salts = [sampler.shard_salt(trial, f"f{i}") for i in range(len(counts))]
        want = int(rng.integers(1, 400))
        every = sorted((int(key), f, row) for f, n in enumerate(counts)
                       for row, key in enumerate(document_keys(salts[f], np.arange(n))))
        assert sampler._select_rows(counts, salts, want) == every[:want]
