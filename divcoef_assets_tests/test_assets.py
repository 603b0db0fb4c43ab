"""The Dagster asset graph end to end, in process, with a temporary instance and tmp paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pytest
import yaml

from divcoef_assets.assets.snapshots import dataset_snapshot
from divcoef_assets.core.sampling import mixture_needs
from divcoef_assets.core.snapshot import read_pool
from divcoef_assets.definitions import ASSETS, build_definitions
from divcoef_assets.jobs import AUDIT_ASSETS
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.registry import load_registry
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.schedules import changed_requests
from divcoef_assets.sensors import registry_sensor
from divcoef_assets.storage import ResultsStore

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def _write_corpus(path, seed, n=40):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS, size=rng.integers(4, 14)))}) + "\n")


def _write_registry(folder, probe_dir, *, n_batches=3, extra_datasets=None):
    datasets = {
        "corpus-a": {"source": "files", "path": "a.jsonl"},
        "lower-bound": {"source": "synthetic", "kind": "lower_bound", "n_sequences": 64},
    }
    datasets.update(extra_datasets or {})
    registry = {
        "default_probe": "tiny",
        "probes": {
            "tiny": {
                "model": str(probe_dir), "init": "pretrained", "seq_len": 16, "batch_size": 8,
                "n_batches": n_batches, "epochs": 1, "noise_repeats": 2, "noise_batches": 1,
            }
        },
        "datasets": datasets,
    }
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path


@pytest.fixture()
def env(tmp_path, tiny_gpt2_dir):
    _write_corpus(tmp_path / "a.jsonl", 0)
    _write_corpus(tmp_path / "b.jsonl", 1)
    registry = _write_registry(tmp_path, tiny_gpt2_dir)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", ["corpus-a", "lower-bound", "corpus-b"])
    instance.add_dynamic_partitions("probe", ["tiny"])
    return tmp_path, registry, instance


def _materialize(tmp_path, registry, instance, dataset, selection=AUDIT_ASSETS):
    defs = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    job = defs.resolve_job_def("audit")
    result = job.execute_in_process(partition_key=dataset_probe_key(dataset, "tiny"), instance=instance)
    assert result.success
    return result


def _record(result, asset):
    return result.output_for_node(asset)


def test_chain_writes_one_record_and_rematerializing_recomputes_nothing(env):
    tmp_path, registry, instance = env
    first = _materialize(tmp_path, registry, instance, "corpus-a")
    emb = _record(first, "task2vec_embeddings")
    assert emb.n_computed == 4 and emb.n_embeddings == 4  # 3 batches + 1 noise repeat
    store = ResultsStore(tmp_path / "r.duckdb")
    assert store.query("SELECT count(*) FROM coefficients")[0][0] == 1
    checks_run = first.get_asset_check_evaluations()
    assert checks_run and all(c.passed for c in checks_run if c.severity == dg.AssetCheckSeverity.ERROR)

    def sampling_logs(result):
        return [e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith("sampling:")]

    [line] = sampling_logs(first)  # one shard: reported once, when done
    kb = round((tmp_path / "a.jsonl").stat().st_size / 1024)
    assert line.startswith(f"sampling: 1/1 shards, {kb} KB of {kb} KB read in ") and "left" not in line

    again = _materialize(tmp_path, registry, instance, "corpus-a")
    assert sampling_logs(again) == []  # the kept pool: nothing read
    assert _record(again, "task2vec_embeddings").n_computed == 0
    assert store.query("SELECT count(*) FROM coefficients")[0][0] == 1
    assert _record(again, "diversity_coefficient").value == _record(first, "diversity_coefficient").value

    reg = yaml.safe_load(registry.read_text())
    reg["probes"]["tiny"]["n_batches"] = 5
    registry.write_text(yaml.safe_dump(reg))
    more = _materialize(tmp_path, registry, instance, "corpus-a")
    assert _record(more, "task2vec_embeddings").n_computed == 2
    assert _record(more, "diversity_coefficient").n_batches == 5
    # Five batches need a larger pool, whose first part is the three batches' pool: a new
    # snapshot, so a new row beside the first.
    old_pool = read_pool(_record(first, "dataset_snapshot").path)
    assert read_pool(_record(more, "dataset_snapshot").path)[: len(old_pool)] == old_pool
    assert store.query("SELECT count(*) FROM coefficients")[0][0] == 2
    _materialize(tmp_path, registry, instance, "corpus-a")
    assert store.query("SELECT count(*) FROM coefficients")[0][0] == 2  # same snapshot: replaced


def test_new_snapshot_adds_history_and_cross_uses_stored_embeddings(env):
    tmp_path, registry, instance = env
    reg = yaml.safe_load(registry.read_text())
    reg["datasets"]["corpus-b"] = {"source": "files", "path": "b.jsonl"}
    registry.write_text(yaml.safe_dump(reg))
    _materialize(tmp_path, registry, instance, "corpus-a")
    _materialize(tmp_path, registry, instance, "corpus-b")
    _materialize(tmp_path, registry, instance, "lower-bound")
    store = ResultsStore(tmp_path / "r.duckdb")

    defs = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    cross = defs.resolve_job_def("cross_audit").execute_in_process(partition_key="tiny", instance=instance)
    assert cross.success
    assert store.query("SELECT count(*) FROM cross_coefficients")[0][0] == 3
    assert store.query("SELECT count(*) FROM cross_distances")[0][0] == 3 * 9

    _write_corpus(tmp_path / "a.jsonl", 7)  # the corpus changes: a new snapshot
    _materialize(tmp_path, registry, instance, "corpus-a")
    rows = store.query("SELECT snapshot_fingerprint FROM coefficients WHERE dataset = ? ORDER BY computed_at", ["corpus-a"])
    assert len(rows) == 2 and rows[0] != rows[1]
    assert store.query("SELECT count(*) FROM latest_coefficients WHERE dataset = ?", ["corpus-a"])[0][0] == 1


def test_sensor_adds_new_datasets_and_requests_runs_only_for_missing_or_changed_snapshots(env, tiny_gpt2_dir):
    tmp_path, registry, instance = env
    resource = DivcoefResource(registry_path=str(registry))

    def tick():
        with dg.build_sensor_context(instance=instance, resources={"divcoef": resource}) as context:
            return registry_sensor(context)

    instance.delete_dynamic_partition("dataset", "corpus-a")
    result = tick()
    assert [(type(r).__name__, r.partitions_def_name, set(r.partition_keys)) for r in result.dynamic_partitions_requests] == [
        ("AddDynamicPartitionsRequest", "dataset", {"corpus-a"}), ("DeleteDynamicPartitionsRequest", "dataset", {"corpus-b"})]
    assert {r.partition_key for r in result.run_requests} == {dataset_probe_key("corpus-a", "tiny"), dataset_probe_key("lower-bound", "tiny")}
    assert {r.run_key for r in tick().run_requests} == {r.run_key for r in result.run_requests}  # one key per source version
    instance.add_dynamic_partitions("dataset", ["corpus-a"])
    instance.delete_dynamic_partition("dataset", "corpus-b")
    defs = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    for name in ("corpus-a", "lower-bound"):  # a snapshot is what the sensor compares with
        assert dg.materialize([dataset_snapshot], partition_key=str(dataset_probe_key(name, "tiny")), instance=instance,
                              resources=dict(defs.resources)).success
    assert isinstance(tick(), dg.SkipReason)

    reg = yaml.safe_load(registry.read_text())
    reg["datasets"]["corpus-b"] = {"source": "files", "path": "b.jsonl"}
    registry.write_text(yaml.safe_dump(reg))
    later = tick()
    assert [r.partition_key for r in later.run_requests] == [dataset_probe_key("corpus-b", "tiny")]
    assert [set(r.partition_keys) for r in later.dynamic_partitions_requests] == [{"corpus-b"}]


def test_reaudit_schedule_requests_only_changed_snapshots(env):
    tmp_path, registry, instance = env
    _materialize(tmp_path, registry, instance, "corpus-a")
    _materialize(tmp_path, registry, instance, "lower-bound")
    resource = DivcoefResource(registry_path=str(registry))
    assert changed_requests(instance, resource, "t1") == []
    time.sleep(0.01)
    _write_corpus(tmp_path / "a.jsonl", 9)
    requests = changed_requests(instance, resource, "t2")
    assert [r.partition_key for r in requests] == [dataset_probe_key("corpus-a", "tiny")]


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "divcoef_assets.definitions"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_all_assets_are_documented_and_versioned():
    for asset in ASSETS:
        spec = next(iter(asset.specs))
        assert spec.description and spec.code_version and spec.kinds, spec.key


@pytest.mark.parametrize("mode", ["interleave", "concat"])
def test_mixture_datasets_materialize(env, mode):
    tmp_path, registry, instance = env
    reg = yaml.safe_load(registry.read_text())
    reg["datasets"]["corpus-b"] = {"source": "files", "path": "b.jsonl"}
    reg["datasets"]["mix"] = {"source": "mixture", "components": ["corpus-a", "corpus-b"], "weights": [3, 1], "mode": mode}
    registry.write_text(yaml.safe_dump(reg))
    instance.add_dynamic_partitions("dataset", ["mix"])
    result = _materialize(tmp_path, registry, instance, "mix")
    snapshot = _record(result, "dataset_snapshot")
    probe = load_registry(registry).probe("tiny")
    needs = mixture_needs({"corpus-a": 3, "corpus-b": 1}, mode, probe.batch_size, probe.n_batches, probe.seed)
    # Each component gives its share of the batches, drawn from a pool of its 40 documents.
    assert dict(snapshot.source_counts) == {k: v for k, v in needs.items() if v} and snapshot.complete_sources == ()
    assert _record(result, "diversity_coefficient").n_batches == 3


def test_mixtures_of_the_same_components_do_not_share_embeddings(env):
    tmp_path, registry, instance = env
    reg = yaml.safe_load(registry.read_text())
    reg["datasets"]["corpus-b"] = {"source": "files", "path": "b.jsonl"}
    reg["datasets"]["mix"] = {"source": "mixture", "components": ["corpus-a", "corpus-b"], "weights": [3, 1], "mode": "interleave"}
    reg["datasets"]["blocks"] = {"source": "mixture", "components": ["corpus-a", "corpus-b"], "weights": [3, 1], "mode": "concat"}
    registry.write_text(yaml.safe_dump(reg))
    instance.add_dynamic_partitions("dataset", ["mix", "blocks"])
    mix = _materialize(tmp_path, registry, instance, "mix")
    blocks = _materialize(tmp_path, registry, instance, "blocks")
    assert _record(mix, "dataset_snapshot").fingerprint != _record(blocks, "dataset_snapshot").fingerprint
    assert _record(blocks, "task2vec_embeddings").n_computed == 4  # nothing borrowed from "mix"


def test_the_definitions_load_as_the_ui_loads_them():
    """The repository the code location builds (job and asset names must not collide), its sensors
    on by default: registering a dataset and refreshing after a coefficient need no click."""
    with dg.instance_for_test():  # a live instance: loading definitions reads its state storage
        repo = build_definitions().get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"audit", "cross_audit", "probe", "refresh_leaderboard"}
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {"registry_sensor", "refresh_after_coefficients"}
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    graph = repo.asset_graph
    automated = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).automation_condition is not None}
    assert automated == {"cross_diversity", "leaderboard"}


def test_sampling_progress_is_logged_every_ten_seconds_and_when_done():
    from types import SimpleNamespace

    from divcoef_assets.assets.common import sampling_progress_logger
    from divcoef_assets.core.sampler import SamplingProgress

    logged: list[str] = []
    report = sampling_progress_logger(SimpleNamespace(log=SimpleNamespace(info=logged.append)))
    gb = 2**30
    for done, seconds in ((1, 4.0), (2, 9.0), (3, 15.0), (4, 20.0), (5, 24.0), (6, 26.0)):
        report(SamplingProgress(done, 6, done * 50 * gb, 300 * gb, seconds))
    # At most one line every 10 s: 4 s, then 15 s (9 s skipped), then the last shard's line.
    assert [line.split(",")[0] for line in logged] == ["sampling: 1/6 shards", "sampling: 3/6 shards", "sampling: 6/6 shards"]
    assert logged[0] == "sampling: 1/6 shards, 50.0 GB of 300.0 GB read in 4 s (12.5 GB/s), about 20 s left"
    assert logged[1].endswith("(10.0 GB/s), about 15 s left") and logged[2].endswith("read in 26 s (11.5 GB/s)")
