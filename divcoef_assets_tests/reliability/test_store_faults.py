"""The DuckDB results store under faults: a file locked by another process, hostile values,
a write that fails half way, and history that is never deleted."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from divcoef_assets import storage
from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.storage import CoefficientRecord, ResultsStore
from divcoef_assets_tests.reliability.support import (
    coefficient_rows,
    db_path,
    failure,
    tiny_probe,
    write_jsonl,
    write_registry,
)

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS holder (x INTEGER)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """A subprocess holding a write connection to `db` for `seconds`."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def record(**changes) -> CoefficientRecord:
    fields = dict(dataset="bible", probe="gpt2", snapshot_fingerprint="s1", probe_fingerprint="p1", value=0.2,
                  n_batches=4, n_pairs=6, computed_at=T0)
    fields.update(changes)
    return CoefficientRecord(**fields)


# ----------------------------------------------------------------------------- locks


def test_duckdb_lock_message_is_recognised(tmp_path):
    """Whatever wording this DuckDB uses for a file held by another process counts as a lock."""
    db = tmp_path / "r.duckdb"
    holder = hold_lock(db, 30)
    try:
        with pytest.raises(duckdb.Error) as info:
            duckdb.connect(str(db))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert storage._is_lock_conflict(info.value), str(info.value)
    assert storage._is_lock_conflict(duckdb.IOException('IO Error: Could not set lock on file "x": Conflicting lock is held in python (PID 1)'))
    assert not storage._is_lock_conflict(duckdb.IOException("IO Error: Cannot open file: No such file or directory"))


def test_read_waits_for_a_writer_too(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb", lock_timeout_s=20)
    store.upsert_coefficient(record())
    holder = hold_lock(store.db_path, 1.5)
    try:
        started = time.monotonic()
        assert [r.value for r in store.coefficients("bible")] == [0.2]
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(timeout=30)


def _locked_run(tmp_path, small_probe_dir, *, hold_s: float, lock_timeout_s: float):
    write_jsonl(tmp_path / "a.jsonl")
    registry = write_registry(tmp_path, {"corpus": {"source": "files", "path": "a.jsonl"}}, {"tiny": tiny_probe(small_probe_dir)})
    base = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(db_path(tmp_path)))
    divcoef = DivcoefResource(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(db_path(tmp_path)),
                              lock_timeout_s=lock_timeout_s)
    defs = dg.Definitions(assets=base.assets, jobs=base.jobs, resources={**base.resources, "divcoef": divcoef})
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", ["corpus"])
    instance.add_dynamic_partitions("probe", ["tiny"])
    ResultsStore(db_path(tmp_path)).ensure_schema()
    holder = hold_lock(db_path(tmp_path), hold_s)
    try:
        started = time.monotonic()
        result = defs.resolve_job_def("audit").execute_in_process(
            partition_key=dataset_probe_key("corpus", "tiny"), instance=instance, raise_on_error=False
        )
        return result, time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_audit_against_a_locked_store_fails_with_store_locked_and_writes_nothing(tmp_path, small_probe_dir):
    result, _ = _locked_run(tmp_path, small_probe_dir, hold_s=60, lock_timeout_s=1.0)
    assert not result.success
    step, text = failure(result)
    assert step == "diversity_coefficient"
    assert "StoreLockedError" in text and "is locked" in text and "lock_timeout_s" in text
    assert coefficient_rows(tmp_path, "corpus") == 0
    assert ResultsStore(db_path(tmp_path)).query("SELECT count(*) FROM datasets") == [(0,)]


def test_audit_waits_out_a_short_lock_and_records(tmp_path, small_probe_dir):
    result, _ = _locked_run(tmp_path, small_probe_dir, hold_s=2.0, lock_timeout_s=60)
    assert result.success
    assert coefficient_rows(tmp_path, "corpus") == 1


# ----------------------------------------------------------------------------- hostile values, atomic writes

HOSTILE_VALUES = [
    "x'); DROP TABLE coefficients; --",
    "'; DELETE FROM coefficients WHERE '1'='1",
    '"; DROP TABLE datasets; --',
    "bobby\x00tables",
    "\u202eevil\u202c",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_values_are_stored_verbatim_and_the_database_stays_intact(tmp_path, value):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_coefficient(record())
    store.upsert_dataset(value, source_type=value, description=value, spec={value: value})
    store.upsert_probe(value, fingerprint=value, config={"model": value})
    store.upsert_coefficient(record(dataset=value, probe=value, snapshot_fingerprint=value))
    store.record_coefficient(record(dataset="other", snapshot_fingerprint=value), source_type="files",
                             description=value, spec={}, probe_config={})
    assert store.query("SELECT count(*) FROM coefficients") == [(3,)]
    assert store.query("SELECT description FROM datasets WHERE dataset = ?", [value]) == [(value,)]
    assert store.coefficients(value)[0].snapshot_fingerprint == value
    assert store.latest_coefficient("bible", "gpt2").value == 0.2
    names = {row[0] for row in store.query("SELECT table_name FROM information_schema.tables")}
    assert {"coefficients", "datasets", "probes", "cross_coefficients", "latest_coefficients"} <= names


SQL_START = ("SELECT ", "INSERT ", "CREATE ", "DELETE ", "UPDATE ", "DROP ", "ATTACH ", "COPY ", "WITH ")


def test_no_sql_is_built_from_values():
    """Every f-string that builds SQL anywhere in the package formats only constants or
    validated identifiers: table/relation/columns/clause (module constants), name (checked
    against the identifier rule, or a column name quoted as an identifier), literal (a quoted
    path), hive ("true"/"false"), row_list (row numbers, each through int()) and query (a
    registry source's query, checked to be exactly one SELECT: trusted configuration)."""
    import ast

    package = Path(storage.__file__).parent
    found = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.JoinedStr) or not node.values:
                continue
            head = node.values[0]
            if not (isinstance(head, ast.Constant) and head.value.lstrip().upper().startswith(SQL_START)):
                continue
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    for name in ast.walk(value.value):
                        if isinstance(name, ast.Name):
                            found.setdefault(name.id, f"{path.name}:{node.lineno}")
    allowed = {"table", "columns", "len", "relation", "clause", "name", "literal", "hive", "row_list", "query"}
    assert set(found) <= allowed, {k: v for k, v in found.items() if k not in allowed}
    assert found, "the scan found no SQL f-string at all: it is not looking at the right code"


def test_a_failed_record_leaves_no_partial_rows(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_coefficient(record(dataset="kept"))

    def broken(connection, *args):
        raise RuntimeError("disk full while writing the coefficient")

    monkeypatch.setattr(ResultsStore, "_insert_or_replace_in", staticmethod(broken))
    with pytest.raises(RuntimeError, match="disk full"):
        store.record_coefficient(record(dataset="new"), source_type="files", description="d", spec={}, probe_config={})
    monkeypatch.undo()
    assert store.query("SELECT count(*) FROM datasets WHERE dataset = 'new'") == [(0,)]
    assert store.query("SELECT count(*) FROM probes") == [(0,)]
    assert [r.dataset for r in store.coefficients()] == ["kept"]


# ----------------------------------------------------------------------------- idempotence and history


def test_upserting_never_deletes_other_snapshots_rows(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    history = [record(snapshot_fingerprint=f"s{i}", value=i / 4, computed_at=T0 + timedelta(days=i)) for i in range(4)]
    for row in history:
        store.upsert_coefficient(row)
    store.upsert_coefficient(record(probe="other", snapshot_fingerprint="s0"))
    store.upsert_coefficient(record(snapshot_fingerprint="s0", probe_fingerprint="p2", value=0.5))  # changed probe config
    for _ in range(3):  # re-materializing the newest snapshot replaces only its own row
        store.record_coefficient(record(snapshot_fingerprint="s3", value=0.9, computed_at=T0 + timedelta(days=9)),
                                 source_type="files", description="", spec={}, probe_config={})
    rows = {(r.snapshot_fingerprint, r.probe_fingerprint): r.value for r in store.coefficients("bible", "gpt2")}
    assert rows == {("s0", "p1"): 0.0, ("s1", "p1"): 0.25, ("s2", "p1"): 0.5, ("s3", "p1"): 0.9, ("s0", "p2"): 0.5}
    assert len(store.coefficients("bible", "other")) == 1
    assert store.latest_coefficient("bible", "gpt2").value == 0.9
    assert store.query("SELECT count(*) FROM coefficients") == [(6,)]
