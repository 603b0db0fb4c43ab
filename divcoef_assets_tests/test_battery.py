"""The validity battery runs unchanged on a registry of other corpora (corpora are parameters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import write_word_corpora

ROOT = Path(__file__).resolve().parents[1]


def test_battery_runs_on_any_registry_and_reports_every_property(tmp_path, tiny_gpt2_dir):
    write_word_corpora(tmp_path, {"a": ["red", "green", "blue", "cyan"], "b": ["one", "two", "three", "four", "five"],
                                  "c": ["x", "y", "z"]}, n=300, words_per_text=12)
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "default_probe": "tiny",
        "probes": {"tiny": {"model": str(tiny_gpt2_dir), "seq_len": 16, "batch_size": 4, "n_batches": 3, "epochs": 1,
                            "loader_batch_size": 4, "noise_repeats": 2, "noise_batches": 1}},
        "datasets": {n: {"source": "files", "path": f"{n}.jsonl"} for n in "abc"},
    }))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "battery.py"), "--registry", str(registry), "--data-dir", str(tmp_path / "data"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "out" / "battery.md").read_text()
    assert all(f"| {k} |" in report for k in range(1, 9)) and "of 7 required properties hold" in report
    data = json.loads((tmp_path / "out" / "battery.json").read_text())
    assert data["real"] == ["a", "b", "c"] and set(data["properties"]) == {str(k) for k in range(1, 8)}
    assert {"battery-mix-k2", "battery-mix-k3", "battery-repeat-4", "battery-ginc-c32"} <= set(data["results"])
    assert data["n_embeddings"] > 0 and data["seconds_per_embedding"] > 0 and data["config"]["distance"] == "task2vec_cosine"

