"""The probe_network asset: a probe pretrained here on a tiny budget, cached, then used."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import yaml

from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.pipeline import Layout, probe_dir
from divcoef_assets.registry import load_registry


def test_pretrained_probe_is_built_once_and_used_by_the_audit(tmp_path):
    rng = np.random.default_rng(0)
    words = ["north", "south", "east", "west", "river", "hill", "stone", "tree"]
    with open(tmp_path / "a.jsonl", "w") as fh:
        for _ in range(40):
            fh.write(json.dumps({"text": " ".join(rng.choice(words, size=12))}) + "\n")
    registry_path = tmp_path / "registry.yaml"
    registry_path.write_text(yaml.safe_dump({
        "default_probe": "mini",
        "probes": {"mini": {
            "pretrain": {"corpus": ["a"], "n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 16,
                         "block_len": 16, "batch_size": 4, "steps": 6, "warmup_steps": 2, "seed": 0},
            "seq_len": 16, "batch_size": 8, "n_batches": 3, "epochs": 1, "fisher": "mc_head_exact",
            "noise_repeats": 2, "noise_batches": 1,
        }},
        "datasets": {"a": {"source": "files", "path": "a.jsonl"}},
    }))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", ["a"])
    instance.add_dynamic_partitions("probe", ["mini"])
    defs = build_definitions(registry_path=str(registry_path), data_dir=str(tmp_path / "data"), db_path=str(tmp_path / "r.duckdb"))

    first = defs.resolve_job_def("probe").execute_in_process(partition_key="mini", instance=instance)
    record = first.output_for_node("probe_network")
    folder = probe_dir(Layout(tmp_path / "data" / "artifacts"), load_registry(registry_path).probe("mini"))
    assert record.built_here and record.model == str(folder)
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    meta = json.loads((folder / "pretrain.json").read_text())
    assert meta["pretrain_config"]["steps"] == 6 and np.isfinite(meta["final_loss"])
    assert meta["final_loss"] < meta["first_loss"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    again = defs.resolve_job_def("probe").execute_in_process(partition_key="mini", instance=instance)
    assert again.output_for_node("probe_network").final_loss == record.final_loss
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not retrained

    audit = defs.resolve_job_def("audit").execute_in_process(partition_key=dataset_probe_key("a", "mini"), instance=instance)
    coefficient = audit.output_for_node("diversity_coefficient")
    assert 0 <= coefficient.value <= 1 and coefficient.noise_floor is not None


def test_audit_before_the_probe_exists_is_a_clear_error(tmp_path):
    from divcoef_assets.pipeline import resolve_model
    import pytest

    config = load_registry_with_pretrain(tmp_path)
    with pytest.raises(FileNotFoundError, match="materialize probe_network"):
        resolve_model(config, Layout(tmp_path / "nowhere"))


def load_registry_with_pretrain(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x y z"}\n')
    path = tmp_path / "r.yaml"
    path.write_text("default_probe: p\nprobes:\n  p:\n    pretrain:\n      corpus: [a]\ndatasets:\n  a:\n    source: files\n    path: a.jsonl\n")
    return load_registry(path).probe("p")
