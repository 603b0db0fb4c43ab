"""The weekly_reaudit schedule's evaluation, and the registry sensor's partition deletions."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import dagster as dg
import yaml

from divcoef_assets.assets.snapshots import dataset_snapshot
from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.resources import DivcoefResource
from divcoef_assets.schedules import weekly_reaudit
from divcoef_assets.sensors import registry_sensor

MONDAY = datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)


def _corpus(path, words, n=20):
    path.write_text("".join(json.dumps({"text": f"{words[i % len(words)]} {words[(i * 3) % len(words)]} {i}"}) + "\n" for i in range(n)))


def _registry(folder, probe_dir, datasets, probes=("tiny",)):
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump({
        "default_probe": probes[0],
        "probes": {p: {"model": str(probe_dir), "init": "pretrained", "seq_len": 8, "batch_size": 4, "n_batches": 3} for p in probes},
        "datasets": {d: {"source": "files", "path": f"{d}.jsonl"} for d in datasets},
    }))
    return path


def _schedule(instance, resource, when=MONDAY):
    # `with`: the context opens its own handle on a persistent instance and must close it
    with dg.build_schedule_context(instance=instance, resources={"divcoef": resource}, scheduled_execution_time=when) as context:
        return weekly_reaudit(context)


def test_weekly_reaudit_requests_a_run_only_for_a_corpus_that_changed(tmp_path, tiny_gpt2_dir):
    _corpus(tmp_path / "a.jsonl", ["red", "green", "blue"])
    _corpus(tmp_path / "b.jsonl", ["one", "two", "three", "four"])
    registry = _registry(tmp_path, tiny_gpt2_dir, ["a", "b"])
    defs = build_definitions(registry_path=str(registry), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))
    resource = defs.resources["divcoef"]
    with dg.instance_for_test() as instance:  # persistent: a schedule context needs an instance reference
        instance.add_dynamic_partitions("dataset", ["a", "b"])
        instance.add_dynamic_partitions("probe", ["tiny"])

        # never snapshotted: both corpora are due
        first = _schedule(instance, resource)
        assert sorted(r.partition_key for r in first) == [dataset_probe_key("a", "tiny"), dataset_probe_key("b", "tiny")]

        for name in ("a", "b"):
            result = dg.materialize([dataset_snapshot], partition_key=str(dataset_probe_key(name, "tiny")), instance=instance,
                                    resources=dict(defs.resources))
            assert result.success

        unchanged = _schedule(instance, resource)
        assert isinstance(unchanged, dg.SkipReason)
        assert "no registered corpus changed" in unchanged.skip_message

        _corpus(tmp_path / "b.jsonl", ["five", "six", "seven"], n=25)
        stat = os.stat(tmp_path / "b.jsonl")
        os.utime(tmp_path / "b.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        changed = _schedule(instance, resource)
        assert isinstance(changed, list) and len(changed) == 1
        request = changed[0]
        assert request.partition_key == dataset_probe_key("b", "tiny")
        assert request.tags["reaudit"] == "weekly"
        assert request.run_key.startswith("reaudit-b-tiny-") and request.run_key.endswith("-20260302")
        # a later week's tick asks again (a new run key) until the corpus has been re-snapshotted
        later = _schedule(instance, resource, datetime(2026, 3, 9, 3, 0, tzinfo=timezone.utc))
        assert [r.partition_key for r in later] == [dataset_probe_key("b", "tiny")] and later[0].run_key != request.run_key


def test_registry_sensor_deletes_the_partitions_of_removed_datasets_and_probes(tmp_path, tiny_gpt2_dir):
    _corpus(tmp_path / "a.jsonl", ["red", "green", "blue"])
    _corpus(tmp_path / "b.jsonl", ["one", "two", "three", "four"])
    registry = _registry(tmp_path, tiny_gpt2_dir, ["a", "b"])
    resource = DivcoefResource(registry_path=str(registry))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", ["a", "b", "gone"])
    instance.add_dynamic_partitions("probe", ["tiny", "retired"])

    with dg.build_sensor_context(instance=instance, resources={"divcoef": resource}) as context:
        result = registry_sensor(context)
    requests = result.dynamic_partitions_requests
    assert all(isinstance(r, dg.DeleteDynamicPartitionsRequest) for r in requests)  # nothing to add
    assert {(r.partitions_def_name, tuple(r.partition_keys)) for r in requests} == {("dataset", ("gone",)), ("probe", ("retired",))}
    for request in requests:
        for key in request.partition_keys:
            instance.delete_dynamic_partition(request.partitions_def_name, key)

    registry.write_text(registry.read_text().replace("  b:\n    path: b.jsonl\n    source: files\n", ""))
    assert "b.jsonl" not in registry.read_text()
    with dg.build_sensor_context(instance=instance, resources={"divcoef": resource}) as context:
        later = registry_sensor(context)
    assert [(type(r), r.partitions_def_name, list(r.partition_keys)) for r in later.dynamic_partitions_requests] == [
        (dg.DeleteDynamicPartitionsRequest, "dataset", ["b"])
    ]
    assert [r.partition_key for r in later.run_requests] == [dataset_probe_key("a", "tiny")]  # never snapshotted
