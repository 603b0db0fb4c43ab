"""Correct under change: whatever the user edits or re-materializes in between, a recorded
coefficient equals a clean recomputation with the settings recorded beside it, a step that fails
writes nothing, and one dataset's broken artifact never fails another dataset's steps."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from divcoef_assets import pipeline
from divcoef_assets.api import diversity_coefficient
from divcoef_assets.core.cache import CacheNotWritableError, EmbeddingCache
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.sources import DuckDBSource, FilesSource, source_version
from divcoef_assets.definitions import ASSETS, build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.registry import load_registry
from divcoef_assets.storage import ResultsStore

from .support import db_path, failure, tiny_probe, write_jsonl, write_registry

DOWNSTREAM_OF_BATCHES = ["task2vec_embeddings", "distance_matrix", "diversity_coefficient"]
FULL = ["dataset_snapshot", "token_batches", *DOWNSTREAM_OF_BATCHES]


class Workspace:
    """A registry, its corpus and one Dagster instance in a temporary folder."""

    def __init__(self, folder: Path, model_dir: Path, **probe_fields):
        self.folder = folder
        self.model_dir = model_dir
        self.instance = dg.DagsterInstance.ephemeral()
        self.probe = tiny_probe(model_dir, noise_repeats=2, noise_batches=1, **probe_fields)
        self.datasets = {"corpus-a": {"source": "files", "path": "a.jsonl"}, "corpus-b": {"source": "files", "path": "b.jsonl"}}
        write_jsonl(folder / "a.jsonl", n=16, seed=0)
        write_jsonl(folder / "b.jsonl", n=16, seed=5)
        self.instance.add_dynamic_partitions("dataset", list(self.datasets))
        self.instance.add_dynamic_partitions("probe", ["tiny"])
        self.save()

    @property
    def artifacts(self) -> Path:
        return self.folder / "data" / "artifacts"

    def save(self) -> None:
        self.registry = write_registry(self.folder, self.datasets, {"tiny": self.probe})

    def edit_probe(self, **fields) -> None:
        self.probe.update(fields)
        self.save()

    def materialize(self, dataset: str, selection=FULL):
        defs = build_definitions(registry_path=str(self.registry), data_dir=str(self.folder / "data"), db_path=str(db_path(self.folder)))
        return dg.materialize(
            ASSETS, selection=selection, partition_key=dataset_probe_key(dataset, "tiny"), instance=self.instance,
            resources=defs.resources, raise_on_error=False,
        )

    def rows(self, dataset: str | None = None):
        path = db_path(self.folder)
        return ResultsStore(path).coefficients(dataset) if path.exists() else []


def clean_value(row, registry_path: Path, artifacts: Path, folder: Path) -> float:
    """The coefficient recomputed from scratch (a new artifacts folder, an empty cache) from the
    row's snapshot file alone, with the settings the row records."""
    config = ProbeConfig(**json.loads(row.config_json))
    registry = load_registry(registry_path)
    registry = dataclasses.replace(registry, probes={**registry.probes, config.name: config})
    snap = pipeline.snapshot_from_file(artifacts / "snapshots" / row.dataset / f"{row.snapshot_fingerprint}.parquet")
    layout = pipeline.Layout(folder / "artifacts", cache_root=folder / "cache")
    return pipeline.audit_partition(registry, row.dataset, config.name, layout, snap=snap).result.value


def texts_of(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def ws(tmp_path, tiny_gpt2_dir):
    return Workspace(tmp_path, tiny_gpt2_dir)


@pytest.mark.parametrize("edit", [{"seq_len": 12}, {"batch_size": 5}, {"seed": 3}, {"epochs": 2}])
def test_a_registry_edit_then_a_partial_rematerialization_records_nothing_stale(ws, tmp_path, edit):
    assert ws.materialize("corpus-a").success
    before = ws.rows("corpus-a")
    ws.edit_probe(**edit)
    partial = ws.materialize("corpus-a", DOWNSTREAM_OF_BATCHES)
    step, text = failure(partial)
    assert step == "task2vec_embeddings" and "StaleUpstreamError" in text and "re-materialize token_batches" in text
    assert [r.value for r in ws.rows("corpus-a")] == [r.value for r in before]  # nothing written
    assert ws.materialize("corpus-a").success
    latest = max(ws.rows("corpus-a"), key=lambda r: r.computed_at)
    assert json.loads(latest.config_json)[next(iter(edit))] == next(iter(edit.values()))
    assert latest.value == pytest.approx(clean_value(latest, ws.registry, ws.artifacts, tmp_path / "clean"), rel=1e-6)


def test_an_estimator_edit_between_embeddings_and_coefficient_is_refused(ws):
    assert ws.materialize("corpus-a").success
    ws.edit_probe(lr=1e-3)
    step, text = failure(ws.materialize("corpus-a", ["diversity_coefficient"]))
    assert step == "diversity_coefficient" and "re-materialize distance_matrix" in text
    assert len(ws.rows("corpus-a")) == 1


def test_new_weights_in_the_same_folder_are_never_served_from_the_cache(tmp_path):
    from ..conftest import save_tiny_gpt2

    model = save_tiny_gpt2(tmp_path / "model", seed=0)
    ws = Workspace(tmp_path, model)
    assert ws.materialize("corpus-a").success
    save_tiny_gpt2(model, seed=1)  # same path and name, other weights
    again = ws.materialize("corpus-a")
    assert again.success and again.output_for_node("task2vec_embeddings").n_computed == 4
    rows = ws.rows("corpus-a")
    assert len(rows) == 2 and rows[0].weights_fingerprint != rows[1].weights_fingerprint
    assert rows[1].value == pytest.approx(clean_value(rows[1], ws.registry, ws.artifacts, tmp_path / "clean"), rel=1e-6)


def test_the_same_content_under_another_name_reuses_the_cache(ws):
    ws.datasets["copy-of-a"] = {"source": "files", "path": "a.jsonl"}
    ws.save()
    ws.instance.add_dynamic_partitions("dataset", ["copy-of-a"])
    assert ws.materialize("corpus-a").success
    copy = ws.materialize("copy-of-a")
    assert copy.output_for_node("task2vec_embeddings").n_computed == 0
    assert ws.rows("copy-of-a")[0].value == ws.rows("corpus-a")[0].value


def test_one_datasets_corrupt_embeddings_fail_no_other_dataset(ws):
    assert ws.materialize("corpus-a").success
    broken = Path(ws.materialize("corpus-a").output_for_node("task2vec_embeddings").path)
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    result = ws.materialize("corpus-b")
    assert result.success
    assert len(ws.rows("corpus-b")) == 1
    store = ResultsStore(db_path(ws.folder))
    assert store.query("SELECT DISTINCT dataset FROM embeddings") == [("corpus-b",)]
    defs = build_definitions(registry_path=str(ws.registry), data_dir=str(ws.folder / "data"), db_path=str(db_path(ws.folder)))
    cross = defs.resolve_job_def("cross_audit").execute_in_process(partition_key="tiny", instance=ws.instance)
    record = cross.output_for_node("cross_diversity")
    assert record.datasets == ("corpus-b",) and "corpus-a: unreadable embeddings" in record.skipped[0]


def test_a_failed_coefficient_step_leaves_no_row(ws):
    assert ws.materialize("corpus-a").success
    dist = Path(ws.materialize("corpus-a", ["distance_matrix"]).output_for_node("distance_matrix").path)
    matrix = pipeline.read_matrix(dist)
    matrix[0, 1] = matrix[1, 0] = 0.99  # the matrix no longer belongs to its embeddings
    pipeline.write_table_atomic(pipeline.matrix_table(matrix), dist)
    before = ws.rows("corpus-a")
    step, text = failure(ws.materialize("corpus-a", ["diversity_coefficient"]))
    assert step == "diversity_coefficient" and "do not belong to embeddings" in text
    assert [(r.value, r.run_id) for r in ws.rows("corpus-a")] == [(r.value, r.run_id) for r in before]


def test_a_source_replaced_during_the_snapshot_is_read_again(ws, monkeypatch):
    registry = load_registry(ws.registry)
    source = ws.folder / "a.jsonl"
    original = pipeline.sample_pool
    calls = []

    def replacing(*args, **kwargs):
        calls.append(1)
        pool = original(*args, **kwargs)
        if len(calls) == 1:  # a writer replaces the file (write, then rename) while it is read
            write_jsonl(ws.folder / "new.jsonl", n=20, seed=9)
            os.replace(ws.folder / "new.jsonl", source)
        return pool

    monkeypatch.setattr(pipeline, "sample_pool", replacing)
    layout = pipeline.Layout(ws.folder / "data" / "artifacts")
    snap = pipeline.snapshot(registry, "corpus-a", layout)
    assert len(calls) == 2 and snap.n_source_documents == 20 and snap.n_documents == 12  # 3 batches of 4
    assert set(snap_texts(snap)) <= set(texts_of(source))  # what was read is the new version
    assert snap.source_version == pipeline.registry_source_version(registry, "corpus-a")
    assert sorted(p.name for p in layout.snapshot_dir("corpus-a").iterdir()) == [f"{snap.fingerprint}.parquet", "pools"]


def snap_texts(snap) -> list[str]:
    from divcoef_assets.core.snapshot import read_pool

    return [row.text for row in read_pool(snap.path)]


def test_a_source_that_keeps_changing_fails_and_writes_nothing(ws, monkeypatch):
    registry = load_registry(ws.registry)
    original = pipeline.sample_pool
    counter = iter(range(100))

    def always_changing(*args, **kwargs):
        pool = original(*args, **kwargs)
        write_jsonl(ws.folder / "next.jsonl", n=16, seed=next(counter) + 1)  # a new version arrives every time
        os.replace(ws.folder / "next.jsonl", ws.folder / "a.jsonl")
        return pool

    monkeypatch.setattr(pipeline, "sample_pool", always_changing)
    layout = pipeline.Layout(ws.folder / "data" / "artifacts")
    with pytest.raises(pipeline.SourceChangedError, match="changed while it was being read"):
        pipeline.snapshot(registry, "corpus-a", layout)
    assert not layout.snapshot_dir("corpus-a").exists() or list(layout.snapshot_dir("corpus-a").rglob("*")) == []


def test_an_unchanged_source_is_not_read_again(ws, monkeypatch):
    registry = load_registry(ws.registry)
    layout = pipeline.Layout(ws.folder / "data" / "artifacts")
    first = pipeline.snapshot(registry, "corpus-a", layout)

    def no_read(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(pipeline, "sample_pool", no_read)
    assert pipeline.snapshot(registry, "corpus-a", layout) == first
    os.utime(ws.folder / "a.jsonl", ns=(1, 1))  # a new version: drawn again
    with pytest.raises(AssertionError, match="read again"):
        pipeline.snapshot(registry, "corpus-a", layout)


def grow_workspace(tmp_path, model_dir, n: int = 200) -> tuple[Workspace, pipeline.Layout]:
    ws = Workspace(tmp_path, model_dir)
    write_jsonl(tmp_path / "a.jsonl", n=n, seed=0)
    ws.probes = {"tiny": ws.probe, "wide": dict(ws.probe, n_batches=12)}
    ws.registry = write_registry(tmp_path, ws.datasets, ws.probes)
    return ws, pipeline.Layout(tmp_path / "data" / "artifacts")


def test_a_larger_probe_grows_the_pool_and_the_smaller_probe_keeps_its_documents(tmp_path, tiny_gpt2_dir):
    ws, layout = grow_workspace(tmp_path, tiny_gpt2_dir)
    registry = load_registry(ws.registry)
    small = pipeline.snapshot(registry, "corpus-a", layout, "tiny")
    large = pipeline.snapshot(registry, "corpus-a", layout, "wide")
    assert large.n_documents > small.n_documents and not large.complete_sources
    assert snap_texts(large)[: small.n_documents] == snap_texts(small)
    again = pipeline.snapshot(registry, "corpus-a", layout, "tiny")  # served from the grown pool
    assert (again.fingerprint, again.path, again.n_documents) == (small.fingerprint, small.path, small.n_documents)


def test_a_source_changed_between_the_pool_and_its_extension_fails_and_writes_nothing(tmp_path, tiny_gpt2_dir):
    ws, layout = grow_workspace(tmp_path, tiny_gpt2_dir)
    registry = load_registry(ws.registry)
    pipeline.snapshot(registry, "corpus-a", layout, "tiny")
    source = tmp_path / "a.jsonl"
    stat = source.stat()
    body = source.read_bytes()
    version = pipeline.registry_source_version(registry, "corpus-a")
    source.write_bytes(body.replace(b"a", b"e"))  # same size, same inode, other documents
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert pipeline.registry_source_version(registry, "corpus-a") == version  # the version cannot see it
    files = sorted(p.relative_to(layout.root) for p in layout.root.rglob("*"))
    with pytest.raises(pipeline.SourceChangedError, match="does not begin with the pool drawn before.*nothing was written"):
        pipeline.snapshot(registry, "corpus-a", layout, "wide")
    assert sorted(p.relative_to(layout.root) for p in layout.root.rglob("*")) == files


def test_duckdb_rows_still_in_the_write_ahead_log_change_the_version(tmp_path):
    db = tmp_path / "forum.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute("CREATE TABLE posts (body VARCHAR)")
        connection.execute("INSERT INTO posts VALUES ('first post')")
    spec = DuckDBSource(database="forum.duckdb", query="SELECT body AS text FROM posts")
    before = source_version(spec, tmp_path)
    writer = duckdb.connect(str(db))
    try:
        writer.execute("INSERT INTO posts VALUES ('committed, not checkpointed')")
        assert Path(f"{db}.wal").exists()
        assert source_version(spec, tmp_path) != before
    finally:
        writer.close()


def test_edits_in_nested_folders_and_home_paths_change_the_version(tmp_path, monkeypatch):
    nested = tmp_path / "docs" / "a" / "b"
    nested.mkdir(parents=True)
    write_jsonl(nested / "deep.jsonl")
    spec = FilesSource(path="docs/**/*.jsonl")
    before = source_version(spec, tmp_path)
    write_jsonl(nested / "deep.jsonl", seed=4, n=13)
    assert source_version(spec, tmp_path) != before
    monkeypatch.setenv("HOME", str(tmp_path))
    home_spec = FilesSource(path="~/docs/a/b/deep.jsonl")
    first = source_version(home_spec, "/nonexistent")
    write_jsonl(nested / "deep.jsonl", seed=5, n=14)
    assert source_version(home_spec, "/nonexistent") != first and "unreadable" not in first


def test_every_source_type_has_a_version_rule():
    from divcoef_assets.core.sources import SOURCE_TYPES, _VERSION_RULES, MixtureSource

    covered = {cls.type for cls in _VERSION_RULES} | {MixtureSource.type}
    assert covered == set(SOURCE_TYPES), f"source types without a version rule: {set(SOURCE_TYPES) - covered}"


def test_an_unwritable_cache_fails_before_anything_is_computed(tmp_path, tiny_gpt2_dir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    texts = texts_of(write_jsonl(tmp_path / "t.jsonl", n=16))
    config = ProbeConfig(**{"name": "tiny", **tiny_probe(tiny_gpt2_dir)})
    with pytest.raises(CacheNotWritableError, match=r"not-a-folder.*DIVCOEF_CACHE or --cache-dir"):
        diversity_coefficient(texts, probe=config, cache_dir=blocker / "cache")


def test_one_cache_setting_governs_the_api_and_the_assets(ws, tmp_path, monkeypatch):
    shared = tmp_path / "one-cache"
    monkeypatch.setenv("DIVCOEF_CACHE", str(shared))
    assert ws.materialize("corpus-a").success
    assert EmbeddingCache(shared).count() == 4
    config = ProbeConfig(**{"name": "tiny", **ws.probe})
    texts = texts_of(ws.folder / "a.jsonl")
    first = diversity_coefficient(texts, probe=config)  # its own sample of the texts, into the same cache
    assert first.n_computed == 4 and EmbeddingCache(shared).count() == 8
    assert diversity_coefficient(texts, probe=config).n_computed == 0


def test_leftover_temporaries_of_killed_runs_are_swept(ws):
    stale = ws.folder / "data" / "artifacts" / "cache" / "embeddings" / "ab" / ".tmp-killed.safetensors"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 8)
    fresh = stale.with_name(".tmp-live.safetensors")
    fresh.write_bytes(b"\0" * 8)
    old = stale.stat().st_mtime - 7 * 3600
    os.utime(stale, (old, old))
    assert ws.materialize("corpus-a").success
    assert not stale.exists() and fresh.exists()


def test_cross_leaves_out_embeddings_made_with_other_settings(ws):
    assert ws.materialize("corpus-a").success and ws.materialize("corpus-b").success
    ws.edit_probe(batch_size=5)
    assert ws.materialize("corpus-b").success  # corpus-a's stored embeddings keep the old settings
    defs = build_definitions(registry_path=str(ws.registry), data_dir=str(ws.folder / "data"), db_path=str(db_path(ws.folder)))
    record = defs.resolve_job_def("cross_audit").execute_in_process(partition_key="tiny", instance=ws.instance).output_for_node("cross_diversity")
    assert record.datasets == ("corpus-b",) and "corpus-a: embeddings made with other probe settings" in record.skipped[0]


def test_an_embeddings_file_rewritten_since_its_record_is_refused(ws):
    first = ws.materialize("corpus-a")
    old = first.output_for_node("task2vec_embeddings")
    write_jsonl(ws.folder / "a.jsonl", n=16, seed=7)  # another run re-audits a new snapshot meanwhile
    assert ws.materialize("corpus-a", ["dataset_snapshot", "token_batches", "task2vec_embeddings"]).success
    registry = load_registry(ws.registry)
    with pytest.raises(pipeline.StaleUpstreamError, match="were rewritten since task2vec_embeddings"):
        pipeline.distance_matrix(registry, "corpus-a", "tiny", old, pipeline.Layout(ws.folder / "data" / "artifacts"))


def test_the_api_checks_names_before_any_work(tmp_path, tiny_gpt2_dir):
    from divcoef_assets.keys import InvalidKeyError

    texts = texts_of(write_jsonl(tmp_path / "t.jsonl", n=16))
    config = ProbeConfig(**{"name": "Tiny Probe", **tiny_probe(tiny_gpt2_dir)})
    with pytest.raises(InvalidKeyError):
        diversity_coefficient(texts, probe=config, cache_dir=tmp_path / "c", name="../../escape")
    assert not (tmp_path / "c").exists()
    assert diversity_coefficient(texts, probe=config, cache_dir=tmp_path / "c").estimate.n_batches == 3


def test_a_failed_cross_commit_leaves_the_previous_matrices(ws, monkeypatch):
    assert ws.materialize("corpus-a").success and ws.materialize("corpus-b").success
    registry, layout = load_registry(ws.registry), pipeline.Layout(ws.folder / "data" / "artifacts")
    store = ResultsStore(db_path(ws.folder))
    record, matrices = pipeline.cross(registry, "tiny", layout)
    pipeline.record_cross(store, record, matrices, layout)
    before = layout.cross("tiny").read_bytes()

    def locked(self, records, views=None):
        raise RuntimeError("the store is locked")

    monkeypatch.setattr(ResultsStore, "record_cross", locked)
    changed = matrices.set_column(matrices.schema.get_field_index("distance"), "distance", [[0.5] * len(matrices)])
    with pytest.raises(RuntimeError, match="locked"):
        pipeline.record_cross(store, record, changed, layout)
    assert layout.cross("tiny").read_bytes() == before
    assert [p.name for p in layout.cross("tiny").parent.iterdir()] == ["part.parquet"]
