"""Crash and resume: a run killed with SIGKILL in the middle of its embeddings leaves only whole
cache entries, and the next run computes exactly the missing ones and reaches the same number."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from divcoef_assets.api import diversity_coefficient
from divcoef_assets.core import cache as cache_module
from divcoef_assets.core.cache import BatchEmbedding, EmbeddingCache
from divcoef_assets.core.config import ProbeConfig

N_BATCHES = 8
ENTRY = re.compile(r"[0-9a-f]{32}\.safetensors")

SCRIPT = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[4]))  # same float reduction order as the test process
from divcoef_assets.api import diversity_coefficient
from divcoef_assets.core.config import ProbeConfig
texts = json.loads(open(sys.argv[1]).read())
config = ProbeConfig(**json.loads(sys.argv[2]))
diversity_coefficient(texts, probe=config, cache_dir=sys.argv[3])
print("finished", flush=True)
"""


def _config(model_dir) -> ProbeConfig:
    return ProbeConfig(name="tiny", model=str(model_dir), seq_len=16, batch_size=8, n_batches=N_BATCHES, epochs=1,
                       loader_batch_size=8, noise_repeats=0)


def _texts() -> list[str]:
    rng = np.random.default_rng(0)
    words = ["river", "stone", "cloud", "ember", "quartz", "meadow", "signal", "harbor", "lantern", "orbit"]
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 20)))) for _ in range(64)]


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.safetensors") if ENTRY.fullmatch(p.name))


def test_sigkill_mid_run_then_resume_computes_only_the_missing_batches(tmp_path, small_probe_dir):
    texts, config = _texts(), _config(small_probe_dir)
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(texts))
    cache_dir = tmp_path / "cache"
    fields = {k: v for k, v in config.to_dict().items()}
    import torch

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(texts_file), json.dumps(fields), str(cache_dir), str(torch.get_num_threads())],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_entries(cache_dir)) < 2:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no cache entries appeared within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    cached_before = _entries(cache_dir)
    assert 2 <= len(cached_before) < N_BATCHES, "the kill came too late to test a resume"
    for path in cache_dir.rglob("*"):
        if path.is_file():
            # Anything left that is not a whole entry is a temporary file, which no lookup reads.
            assert ENTRY.fullmatch(path.name) or path.name.startswith(".tmp-"), path
    for path in cached_before:
        with safe_open(str(path), framework="np") as fh:
            assert fh.get_tensor("vector").ndim == 1 and "seed" in fh.metadata()

    resumed = diversity_coefficient(texts, probe=config, cache_dir=cache_dir)
    assert resumed.n_computed == N_BATCHES - len(cached_before)
    assert len(_entries(cache_dir)) == N_BATCHES

    fresh = diversity_coefficient(texts, probe=config, cache_dir=tmp_path / "fresh-cache")
    assert fresh.n_computed == N_BATCHES
    assert resumed.value == fresh.value
    np.testing.assert_array_equal(resumed.matrix, fresh.matrix)


KEY_A, KEY_B = "ab" * 16, "cd" * 16


def _row(batch_index=0, key=KEY_A) -> BatchEmbedding:
    return BatchEmbedding(batch_index=batch_index, repeat=0, seed=1, vector=np.arange(4, dtype=np.float32),
                          finetune_loss_first=1.0, finetune_loss_last=0.5, fisher_loss=2.0, seconds_finetune=0.1,
                          seconds_fisher=0.1, n_scored_tokens=10, layout="[]", key=key)


def test_put_leaves_no_file_when_the_write_fails(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)  # half written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "save_file", failing_save)
    with pytest.raises(OSError, match="No space left"):
        cache.put(_row())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert cache.get(KEY_A, batch_index=0, repeat=0) is None


def test_put_leaves_no_file_when_interrupted(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)

    def interrupted_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "save_file", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        cache.put(_row())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_get_ignores_temporary_and_unreadable_files(tmp_path):
    cache = EmbeddingCache(tmp_path)
    path = cache.put(_row(0))
    (path.parent / ".tmp-killed.safetensors").write_bytes(b"\x00" * 7)  # a run killed mid-write
    assert cache.count() == 1
    assert cache.get(KEY_A, batch_index=0, repeat=0).cached
    torn = cache.path(KEY_B)
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(path.read_bytes()[:20])  # a torn entry (e.g. a crash without fsync)
    assert cache.get(KEY_B, batch_index=1, repeat=0) is None
