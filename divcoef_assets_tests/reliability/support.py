"""Helpers of the fault-injection tests: a registry in a temporary folder, an audit run in
process with a temporary Dagster instance, and the checks that a failed run left nothing behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from divcoef_assets.definitions import build_definitions
from divcoef_assets.partitions import dataset_probe_key
from divcoef_assets.storage import ResultsStore

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def tiny_probe(model_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """A probe entry that embeds a batch in well under a second."""
    entry = {
        "model": str(model_dir), "init": "pretrained", "seq_len": 8, "batch_size": 4, "n_batches": 3,
        "epochs": 1, "loader_batch_size": 4, "noise_repeats": 0,
    }
    entry.update(overrides)
    return entry


def write_jsonl(path: Path, n: int = 12, seed: int = 0) -> Path:
    lines = []
    for i in range(n):
        words = [WORDS[(seed + i * 3 + k) % len(WORDS)] for k in range(3 + (i + seed) % 5)]
        lines.append(json.dumps({"text": " ".join(words)}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_registry(folder: Path, datasets: dict[str, Any], probes: dict[str, Any], default_probe: str = "tiny") -> Path:
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump({"default_probe": default_probe, "probes": probes, "datasets": datasets}))
    return path


def db_path(folder: Path) -> Path:
    return folder / "results.duckdb"


def cache_root(folder: Path) -> Path:
    return folder / "data" / "artifacts" / "cache" / "embeddings"


def run_audit(folder: Path, registry: Path, dataset: str, probe: str = "tiny", *, instance: dg.DagsterInstance | None = None):
    """Run the audit job of (dataset, probe) in process; failures are returned, not raised."""
    defs = build_definitions(registry_path=str(registry), data_dir=str(folder / "data"), db_path=str(db_path(folder)))
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("dataset", [dataset])
    instance.add_dynamic_partitions("probe", [probe])
    job = defs.resolve_job_def("audit")
    return job.execute_in_process(
        partition_key=dataset_probe_key(dataset, probe), instance=instance, raise_on_error=False
    )


def failure(result) -> tuple[str, str]:
    """(step key, error text with its causes) of the run's first failed step."""
    events = result.get_step_failure_events()
    assert events, "the run was expected to fail but no step failed"
    event = events[0]
    error = event.step_failure_data.error
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return event.step_key, "\n".join(parts)


def coefficient_rows(folder: Path, dataset: str) -> int:
    path = db_path(folder)
    if not path.exists():
        return 0
    store = ResultsStore(path)
    return len(store.coefficients(dataset))


def cache_entries(folder: Path) -> list[Path]:
    root = cache_root(folder)
    return sorted(root.rglob("*.safetensors")) if root.exists() else []


def assert_failed_cleanly(folder: Path, result, dataset: str, *fragments: str, step: str | None = None) -> str:
    """The run failed (at `step` when given) with every fragment in its error, and left no
    coefficient row for `dataset` and no embedding cache entry."""
    assert not result.success
    step_key, text = failure(result)
    if step is not None:
        assert step_key == step, (step_key, text)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in the error:\n{text}"
    assert coefficient_rows(folder, dataset) == 0
    assert cache_entries(folder) == []
    return text
