"""The DuckDB results store: idempotent upserts with history, views, locks, hostile values."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from divcoef_assets.storage import (
    CoefficientRecord,
    CrossCoefficientRecord,
    ResultsStore,
    StoreLockedError,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = "x'); DROP TABLE coefficients; --"


def record(**changes) -> CoefficientRecord:
    values = dict(
        dataset="bible",
        probe="gpt2",
        snapshot_fingerprint="s1",
        probe_fingerprint="p1",
        value=0.2,
        stderr=0.01,
        ci_low=0.18,
        ci_high=0.22,
        n_batches=10,
        n_pairs=45,
        code_version="abc",
        run_id="run-1",
        computed_at=T0,
    )
    values.update(changes)
    return CoefficientRecord(**values)


def cross(**changes) -> CrossCoefficientRecord:
    values = dict(
        dataset_a="bible",
        dataset_b="jargon",
        probe="gpt2",
        snapshot_a="s1",
        snapshot_b="t1",
        probe_fingerprint="p1",
        value=0.3,
        n_batches_a=5,
        n_batches_b=5,
        n_pairs=25,
        computed_at=T0,
    )
    values.update(changes)
    return CrossCoefficientRecord(**values)


def tables(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def test_ensure_schema_is_idempotent(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "sub" / "r.duckdb")
    store.ensure_schema()
    store.ensure_schema()
    assert tables(store.db_path) >= {
        "datasets",
        "probes",
        "coefficients",
        "cross_coefficients",
        "latest_coefficients",
        "latest_cross_coefficients",
    }


def test_reads_of_a_missing_store_are_empty(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "none.duckdb")
    assert store.coefficients() == [] and store.latest_coefficient("bible", "gpt2") is None
    assert not store.db_path.exists()
    with pytest.raises(FileNotFoundError, match="does not exist yet"):
        store.query("SELECT 1")


def test_upsert_is_idempotent_and_keeps_history(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_coefficient(record())
    store.upsert_coefficient(record(value=0.25, run_id="run-2"))
    rows = store.coefficients("bible", "gpt2")
    assert len(rows) == 1 and rows[0].value == 0.25 and rows[0].run_id == "run-2"

    store.upsert_coefficient(
        record(snapshot_fingerprint="s2", value=0.4, computed_at=T0 + timedelta(hours=1))
    )
    assert [r.snapshot_fingerprint for r in store.coefficients("bible", "gpt2")] == ["s1", "s2"]
    # A changed probe config under the same probe key is another measurement, kept as history.
    store.upsert_coefficient(record(probe_fingerprint="p2", value=0.1, computed_at=T0 - timedelta(hours=1)))
    assert len(store.coefficients(probe="gpt2")) == 3
    store.upsert_coefficient(record(dataset="jargon", value=0.3))

    latest = store.latest_coefficient("bible", "gpt2")
    assert latest is not None and latest.snapshot_fingerprint == "s2" and latest.value == 0.4
    assert latest.computed_at == T0 + timedelta(hours=1)
    assert store.query("SELECT dataset, value FROM latest_coefficients ORDER BY dataset") == [
        ("bible", 0.4),
        ("jargon", 0.3),
    ]
    assert store.query("SELECT count(*) FROM coefficients") == [(4,)]


def test_record_round_trips_every_field(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    original = record(noise_floor=0.05, noise_floor_stderr=0.002, noise_corrected=0.15, distance="cosine")
    store.upsert_coefficient(original)
    assert store.coefficients() == [original]


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="value must be a finite number"):
        record(value=float("nan"))
    with pytest.raises(ValueError, match="stderr must be finite"):
        record(stderr=float("inf"))
    assert record(stderr=float("nan")).stderr is None
    with pytest.raises(ValueError, match="n_pairs must be a non-negative integer"):
        record(n_pairs=-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        record(computed_at=datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="dataset must be a string"):
        record(dataset=3)


def test_cross_upsert_and_latest_view(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_cross(cross())
    store.upsert_cross(cross(value=0.31))
    store.upsert_cross(cross(snapshot_a="s2", value=0.35, computed_at=T0 + timedelta(days=1)))
    assert [c.value for c in store.cross_coefficients("gpt2")] == [0.31, 0.35]
    assert store.query("SELECT snapshot_a, value FROM latest_cross_coefficients") == [("s2", 0.35)]


def test_dataset_and_probe_registration(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_dataset("bible", source_type="files", description="KJV", spec={"path": "a.jsonl"})
    first = store.query("SELECT registered_at FROM datasets")[0][0]
    time.sleep(0.01)
    store.upsert_dataset("bible", source_type="files", description="King James", spec={"path": "b.jsonl"})
    rows = store.query("SELECT description, spec_json, registered_at, updated_at FROM datasets")
    assert len(rows) == 1
    description, spec_json, registered_at, updated_at = rows[0]
    assert description == "King James" and json.loads(spec_json) == {"path": "b.jsonl"}
    assert registered_at == first and updated_at > first
    store.upsert_probe("gpt2", fingerprint="f1", config={"model": "gpt2"})
    store.upsert_probe("gpt2", fingerprint="f2", config={"model": "gpt2", "epochs": 5})
    assert store.query("SELECT probe, fingerprint FROM probes") == [("gpt2", "f2")]


def test_hostile_names_are_stored_as_plain_values(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_coefficient(record())
    store.upsert_coefficient(record(dataset=HOSTILE, probe="'; DELETE FROM coefficients; --"))
    store.upsert_dataset(
        HOSTILE, source_type="files'--", description='"); DROP TABLE datasets; --', spec={HOSTILE: 1}
    )
    store.upsert_probe(HOSTILE, fingerprint="'", config={})
    store.upsert_cross(cross(dataset_a=HOSTILE))
    assert tables(store.db_path) >= {"coefficients", "datasets", "probes", "cross_coefficients"}
    assert store.query("SELECT count(*) FROM coefficients") == [(2,)]
    assert store.coefficients(HOSTILE)[0].dataset == HOSTILE
    assert store.query("SELECT dataset FROM datasets") == [(HOSTILE,)]
    assert store.latest_coefficient("bible", "gpt2") is not None


def test_register_parquet_view(tmp_path: Path) -> None:
    folder = tmp_path / "it's here"
    folder.mkdir()
    pq.write_table(pa.table({"batch": [0, 1], "x": [0.5, 0.25]}), folder / "a.parquet")
    pq.write_table(pa.table({"batch": [2], "x": [0.125], "extra": ["e"]}), folder / "b.parquet")
    store = ResultsStore(tmp_path / "r.duckdb")
    store.register_parquet_view("embeddings", folder / "*.parquet")
    assert store.query("SELECT count(*), sum(x) FROM embeddings") == [(3, 0.875)]
    store.register_parquet_view("embeddings", folder / "a.parquet")  # replaced, not duplicated
    assert store.query("SELECT count(*) FROM embeddings") == [(2,)]


@pytest.mark.parametrize(
    "name, message",
    [
        ("emb; DROP TABLE coefficients", "invalid view name"),
        ('e"x', "invalid view name"),
        ("1x", "invalid view name"),
        ("coefficients", "taken by the store"),
        ("Latest_Coefficients", "taken by the store"),
    ],
)
def test_register_parquet_view_rejects_bad_names(tmp_path: Path, name: str, message: str) -> None:
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_coefficient(record())
    with pytest.raises(ValueError, match=message):
        store.register_parquet_view(name, tmp_path / "a.parquet")
    assert store.query("SELECT count(*) FROM coefficients") == [(1,)]


def test_register_parquet_view_rejects_bad_globs(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb")
    with pytest.raises(ValueError, match="control characters"):
        store.register_parquet_view("v", str(tmp_path / "a\n.parquet"))
    with pytest.raises(FileNotFoundError, match="no readable Parquet files match"):
        store.register_parquet_view("v", tmp_path / "none" / "*.parquet")
    with pytest.raises(FileNotFoundError):
        store.register_parquet_view("v", str(tmp_path / "x'); DROP TABLE coefficients; --"))
    assert "coefficients" in tables(store.db_path)


# ----------------------------------------------------------------------------- locks

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_upsert_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=30)
    store.ensure_schema()
    holder = hold_lock(store.db_path, 3)
    try:
        start = time.monotonic()
        store.upsert_coefficient(record())
        waited = time.monotonic() - start
    finally:
        holder.wait(timeout=30)
    assert waited > 1.0
    assert len(store.coefficients()) == 1


def test_lock_held_too_long_raises_store_locked(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=0.5)
    store.ensure_schema()
    holder = hold_lock(store.db_path, 30)
    try:
        start = time.monotonic()
        with pytest.raises(StoreLockedError) as info:
            store.upsert_coefficient(record())
        assert 0.4 < time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait(timeout=30)
    message = str(info.value)
    assert str(store.db_path) in message and "another process holds it" in message
    assert isinstance(info.value, TimeoutError)
    store.upsert_coefficient(record())  # usable again once the holder is gone
