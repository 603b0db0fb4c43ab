"""The shipped-probe build: a tokenizer trained here and a probe pretrained on it, reproducible,
and usable by the audit chain as a local model folder."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from divcoef_assets import pipeline
from divcoef_assets.core.pretrain import PretrainConfig, train_tokenizer
from divcoef_assets.core.tokenize import load_tokenizer
from divcoef_assets.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]


def _build_module():
    spec = importlib.util.spec_from_file_location("build_probe", ROOT / "studies" / "build_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["north", "south", "east", "west", "river", "hill", "stone", "tree", "lantern", "harbour"]
    with open(tmp_path / "a.jsonl", "w") as fh:
        for _ in range(60):
            fh.write(json.dumps({"text": " ".join(rng.choice(words, size=int(rng.integers(8, 20))))}) + "\n")
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "datasets": {"a": {"source": "files", "path": "a.jsonl", "format": "jsonl"}},
        "probes": {"built": {"model": "./probe", "tokenizer": "./probe", "init": "pretrained", "seq_len": 16, "batch_size": 8,
                             "n_batches": 3, "epochs": 1, "fisher": "mc_head_exact", "noise_repeats": 2, "noise_batches": 1}},
        "default_probe": "built",
    }))
    return registry


def test_tokenizer_is_trained_with_eos_as_id_zero_and_pad(tmp_path):
    folder = train_tokenizer(["the river runs north", "a stone on the hill"] * 20, 300, tmp_path / "tok")
    tok = load_tokenizer(str(folder))
    assert (tok.eos_id, tok.pad_id) == (0, 0)
    assert 257 <= tok.vocab_size <= 300
    ids = tok.encode(["the river runs north"])[0]
    assert tok.decode(ids) == "the river runs north" and len(ids) < len("the river runs north")
    with pytest.raises(ValueError, match="more than the 256 byte tokens"):
        train_tokenizer(["x"], 100, tmp_path / "bad")


def test_build_is_reproducible_and_the_audit_reads_the_folder(tmp_path):
    registry_path = _corpus(tmp_path)
    build = _build_module()
    config = PretrainConfig(n_layer=1, n_embd=8, n_head=2, n_positions=16, block_len=16, batch_size=4, steps=4, warmup_steps=2)
    meta = build.build(tmp_path / "probe", registry_path=str(registry_path), corpora=["a"], vocab=300, config=config)
    again = build.build(tmp_path / "again", registry_path=str(registry_path), corpora=["a"], vocab=300, config=config)
    for name in ("tokenizer.json", "model.safetensors"):
        assert (tmp_path / "probe" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert meta["tokenizer_vocab"] == 300 and meta["corpora"] == ["a"] and again["final_loss"] == meta["final_loss"]

    registry = load_registry(str(registry_path))
    layout = pipeline.Layout(tmp_path / "artifacts", cache_root=tmp_path / "cache")
    outcome = pipeline.audit_partition(registry, "a", "built", layout)
    assert 0.0 < outcome.record.value < 1.0
    assert outcome.record.n_batches == 3 and outcome.record.noise_floor is not None
    with pytest.raises(SystemExit, match="not a dataset"):
        build.build(tmp_path / "x", registry_path=str(registry_path), corpora=["missing"], vocab=300,
                    config=dataclasses.replace(config, steps=1))
