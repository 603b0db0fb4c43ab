"""Snapshots: streamed Parquet with a content fingerprint, row reads, mixture batch sampling."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from divcoef_assets.core import snapshot as snapshot_module
from divcoef_assets.core.sampling import (
    NotEnoughTextsError,
    PoolTooSmallError,
    mixture_batch_rows,
    mixture_needs,
    mixture_plan,
)
from divcoef_assets.core.snapshot import (
    EmptySnapshotError,
    read_texts,
    source_index,
    synthetic_snapshot,
    write_snapshot,
)
from divcoef_assets.core.sources import FilesSource, SyntheticSource, iter_texts

PAIRS = [("a", "first"), ("a", ""), ("b", "second"), ("a", None), ("b", "  \n\t"), ("a", "third doc")]


def test_write_snapshot_drops_empties_and_counts(tmp_path: Path) -> None:
    info = write_snapshot(PAIRS, tmp_path / "snap.parquet")
    table = pq.read_table(info.path)
    assert table.schema.field("doc_index").type == pa.int64()
    assert pa.types.is_string(table.schema.field("source").type)
    assert pa.types.is_large_string(table.schema.field("text").type)
    assert table.column("doc_index").to_pylist() == [0, 1, 2]
    assert table.column("source").to_pylist() == ["a", "b", "a"]
    assert table.column("text").to_pylist() == ["first", "second", "third doc"]
    assert (info.n_documents, info.n_dropped_empty, info.n_chars) == (3, 3, len("firstsecondthird doc"))
    assert dict(info.source_counts) == {"a": 2, "b": 1}
    assert len(info.fingerprint) == 16 and int(info.fingerprint, 16) >= 0


def test_fingerprint_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    def fp(pairs, name: str) -> str:
        return write_snapshot(pairs, tmp_path / f"{name}.parquet").fingerprint

    base = fp(PAIRS, "one")
    assert fp(list(PAIRS), "two") == base
    assert fp(PAIRS, "three") == base
    # Dropped empties do not change the content.
    assert fp([p for p in PAIRS if p[1] and p[1].strip()], "four") == base
    assert fp([("a", "first"), ("b", "second"), ("a", "third doC")], "five") != base
    assert fp([("a", "first"), ("a", "second"), ("a", "third doc")], "six") != base
    assert fp([("b", "second"), ("a", "first"), ("a", "third doc")], "seven") != base
    # Framing: moving a boundary between source and text, or between documents, changes the digest.
    assert fp([("ab", "c")], "eight") != fp([("a", "bc")], "nine")
    assert fp([("a", "xy"), ("a", "z")], "ten") != fp([("a", "x"), ("a", "yz")], "eleven")
    # Chunking does not enter the fingerprint.
    assert write_snapshot(PAIRS, tmp_path / "chunk.parquet", chunk_rows=1).fingerprint == base


def _footer(path: Path) -> dict:
    return json.loads(pq.read_metadata(path).metadata[b"divcoef.snapshot"])


def test_footer_holds_the_fingerprint_and_counts(tmp_path: Path) -> None:
    info = write_snapshot(PAIRS, tmp_path / "s.parquet", chunk_rows=2)
    assert info.n_row_groups == 2
    expected = info.to_metadata()
    expected.pop("path")
    assert _footer(tmp_path / "s.parquet") == expected


def test_failure_midstream_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    old = write_snapshot([("a", "old")], out)

    def broken():
        for i in range(50):
            yield "a", f"doc {i}"
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_snapshot(broken(), out, chunk_rows=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet"]
    assert _footer(out)["fingerprint"] == old.fingerprint and read_texts(out, [0]) == ["old"]


def test_empty_input_raises_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(EmptySnapshotError, match="2 empty or blank"):
        write_snapshot([("a", ""), ("a", " ")], tmp_path / "e.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        (["text only"], "expected \\(source, text\\)"),
        ([("", "x")], "source must be a non-empty string"),
        ([("a", 3)], "text is a int"),
        ([("a", "bad \ud800 surrogate")], "lone surrogate"),
    ],
)
def test_bad_pairs_raise_with_position(tmp_path: Path, bad, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        write_snapshot(bad, tmp_path / "b.parquet")
    assert list(tmp_path.iterdir()) == []


def write_big_jsonl(path: Path, n: int) -> int:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"text": f"document number {i} " + "lorem ipsum " * 4}) + "\n")
    return path.stat().st_size


def test_200k_line_jsonl_streams_in_many_row_groups(tmp_path: Path) -> None:
    n = 200_000
    write_big_jsonl(tmp_path / "big.jsonl", n)
    texts = (("big", t) for t in iter_texts(FilesSource(path="big.jsonl"), tmp_path))
    info = write_snapshot(texts, tmp_path / "big.parquet")
    assert info.n_documents == n and info.n_row_groups == -(-n // 8192)
    assert pq.ParquetFile(info.path).metadata.num_row_groups == info.n_row_groups
    assert read_texts(info.path, [n - 1, 0]) == [
        f"document number {n - 1} " + "lorem ipsum " * 4,
        "document number 0 " + "lorem ipsum " * 4,
    ]


def test_snapshot_memory_stays_flat(tmp_path: Path) -> None:
    # tracemalloc slows allocation-heavy code several-fold, so this measures a smaller file with
    # small chunks: the peak must track one chunk, not the input.
    size = write_big_jsonl(tmp_path / "mid.jsonl", 40_000)
    # Warm up first: lazy imports inside pyarrow would otherwise count as the snapshot's memory.
    write_snapshot(iter([("w", "warm up")]), tmp_path / "warm.parquet")
    texts = (("mid", t) for t in iter_texts(FilesSource(path="mid.jsonl"), tmp_path))
    tracemalloc.start()
    try:
        info = write_snapshot(texts, tmp_path / "mid.parquet", chunk_rows=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.n_row_groups == 40
    # A chunk of 1000 short documents is ~0.15 MB of Python objects; the input is ~2.6 MB.
    assert peak < size / 4, f"peak traced memory {peak} bytes for a {size}-byte input"


def test_read_texts_returns_requested_rows_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.parquet"
    write_snapshot(((("s"), f"doc {i}") for i in range(1000)), out, chunk_rows=100)
    calls: list[int] = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        calls.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    wanted = [999, 5, 250, 5, 0, 101]
    assert read_texts(out, wanted) == [f"doc {i}" for i in wanted]
    assert sorted(calls) == [0, 1, 2, 9]
    assert read_texts(out, np.array([], dtype=np.int64)) == []
    with pytest.raises(IndexError, match="document index 1000 is out of range"):
        read_texts(out, [3, 1000])
    with pytest.raises(IndexError, match="-1"):
        read_texts(out, [-1])


def test_source_index_is_aligned_with_rows(tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    write_snapshot(PAIRS, out)
    assert source_index(out).tolist() == ["a", "b", "a"]


def test_synthetic_snapshot_fingerprints_the_spec(tmp_path: Path) -> None:
    spec = SyntheticSource(kind="ginc", n_concepts=8)
    info = synthetic_snapshot(spec)
    assert info.path is None and info.n_documents == 4096 and info.kind == "ginc"
    assert (
        synthetic_snapshot(SyntheticSource(kind="ginc", n_concepts=8, vocab_size=50, n_states=10)).fingerprint
        == info.fingerprint
    )
    assert synthetic_snapshot(SyntheticSource(kind="ginc", n_concepts=16)).fingerprint != info.fingerprint
    assert (
        synthetic_snapshot(SyntheticSource(kind="ginc", n_concepts=8, seed=1)).fingerprint != info.fingerprint
    )
    assert (
        synthetic_snapshot(SyntheticSource(kind="lower_bound")).fingerprint
        != synthetic_snapshot(SyntheticSource(kind="upper_bound")).fingerprint
    )
    written = synthetic_snapshot(spec, tmp_path / "sub" / "ginc.json")
    assert written.fingerprint == info.fingerprint
    assert json.loads((tmp_path / "sub" / "ginc.json").read_text())["spec"]["n_concepts"] == 8
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["ginc.json"]
    with pytest.raises(TypeError):
        synthetic_snapshot(FilesSource(path="x.jsonl"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- mixtures


def components(n_a: int = 3000, n_b: int = 1000, complete: bool = False) -> dict[str, tuple[int, int, bool]]:
    # Component a's pool rows come first, then b's: (first row, rows, complete).
    return {"a": (0, n_a, complete), "b": (n_a, n_b, complete)}


def label(rows: np.ndarray, parts: dict[str, tuple[int, int, bool]]) -> list[str]:
    return ["a" if r < parts["b"][0] else "b" for r in rows.tolist()]


def test_interleave_shares_are_the_largest_remainder_allocation() -> None:
    def shares(weights, batch_size):
        plan = mixture_plan(weights, "interleave", batch_size, 3, 0)
        assert all(batch == plan[0] for batch in plan)
        return {name: dict(plan[0]).get(name, 0) for name in weights}

    assert shares({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert shares({"a": 2, "b": 1}, 1) == {"a": 1, "b": 0}
    assert shares({"a": 0.3, "b": 0.3, "c": 0.4}, 7) == {"a": 2, "b": 2, "c": 3}


def test_interleave_batches_are_disjoint_exact_and_deterministic() -> None:
    parts = components()
    weights = {"a": 3.0, "b": 1.0}
    batches = mixture_batch_rows(parts, weights, "interleave", 512, 5, 0)
    flat = np.concatenate(batches)
    assert flat.dtype == np.int64 and len(set(flat.tolist())) == 5 * 512  # no document in two batches
    for batch in batches:
        labels = label(batch, parts)
        assert labels.count("a") == 384 and labels.count("b") == 128
        assert sum(x != y for x, y in zip(labels, labels[1:])) > 10  # shuffled, not two blocks
    again = mixture_batch_rows(parts, weights, "interleave", 512, 5, 0)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    # Each component's share is the next slice of its pool: the first batch takes its first rows.
    assert sorted(r for r in batches[0].tolist() if r < 3000) == list(range(384))
    assert mixture_needs(weights, "interleave", 512, 5, 0) == {"a": 5 * 384, "b": 5 * 128}


def test_concat_batches_come_from_one_component_in_weight_proportion() -> None:
    weights = {"a": 3.0, "b": 1.0}
    plan = mixture_plan(weights, "concat", 64, 400, 0)
    assert all(len(batch) == 1 and batch[0][1] == 64 for batch in plan)
    share = sum(batch[0][0] == "a" for batch in plan) / len(plan)
    assert 0.65 < share < 0.85, share
    needs = mixture_needs(weights, "concat", 64, 400, 0)
    parts = components(needs["a"], needs["b"])
    batches = mixture_batch_rows(parts, weights, "concat", 64, 400, 0)
    assert all(len(set(label(b, parts))) == 1 for b in batches)
    assert len(set(np.concatenate(batches).tolist())) == 400 * 64
    assert mixture_plan(weights, "concat", 64, 400, 1) != plan


def test_a_component_smaller_than_its_need_is_drawn_with_overlap_only_when_complete() -> None:
    weights = {"a": 3.0, "b": 1.0}
    small = components(3000, 40, complete=True)  # b needs 5 x 8 = 40: enough, disjoint
    assert len(set(np.concatenate(mixture_batch_rows(small, weights, "interleave", 32, 5, 0)).tolist())) == 160
    smaller = components(3000, 20, complete=True)  # b's whole corpus is 20 documents: drawn with overlap
    batches = mixture_batch_rows(smaller, weights, "interleave", 32, 5, 0)
    assert all(label(b, smaller).count("b") == 8 and len(set(b.tolist())) == 32 for b in batches)
    with pytest.raises(PoolTooSmallError, match="materialize dataset_snapshot for this probe again"):
        mixture_batch_rows(components(3000, 20, complete=False), weights, "interleave", 32, 5, 0)


def test_mixture_errors() -> None:
    with pytest.raises(NotEnoughTextsError, match="component 'b' has 10 usable documents, but one batch needs 32"):
        mixture_batch_rows(components(3000, 10, complete=True), {"a": 3, "b": 1}, "interleave", 128, 3, 0)
    with pytest.raises(ValueError, match="component 'c' has no rows"):
        mixture_batch_rows(components(), {"a": 1, "c": 1}, "interleave", 8, 3, 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        mixture_plan({"a": 1}, "zip", 8, 3, 0)
    with pytest.raises(ValueError, match="positive finite"):
        mixture_plan({"a": 1, "b": 0}, "interleave", 8, 3, 0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        mixture_plan({"a": 1}, "concat", 0, 3, 0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        mixture_plan({"a": 1}, "concat", 8, 3, -1)


def test_module_has_no_dagster_import() -> None:
    source = Path(snapshot_module.__file__).read_text()
    assert "dagster" not in source
