"""Per-batch embedding cache: every Task2Vec embedding is computed once.

An embedding costs seconds to minutes, so each one is stored the moment it is computed, under a
key that holds everything its value depends on:

    <root>/<probe fingerprint>/<data fingerprint>/b<batch index>-r<repeat>.safetensors

(the seed is derived from the probe config's seed, batch index and repeat, all in the key).
Files are safetensors (no pickle) with the losses, timings and layout in their metadata, written
to a temporary name and renamed, so a killed run never leaves a half-written entry: a re-run
finds either a whole entry or none and computes only what is missing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

log = logging.getLogger(__name__)

_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class BatchEmbedding:
    """One row of an embedding table: a batch's embedding (repeat 0) or a noise repeat."""

    batch_index: int
    repeat: int  # 0 = the batch's embedding; r > 0 = same batch, another Monte Carlo seed
    seed: int
    vector: np.ndarray  # float32 [n_filters]
    finetune_loss_first: float
    finetune_loss_last: float
    fisher_loss: float
    seconds_finetune: float
    seconds_fisher: float
    n_scored_tokens: int
    layout: str  # JSON list of [module, start, stop]
    cached: bool = False  # True when read from the cache rather than computed in this run


def _check_fingerprint(value: str, what: str) -> str:
    if not value or len(value) > 64 or not set(value) <= _HEX:
        raise ValueError(f"{what} fingerprint must be lowercase hex (got {value!r})")
    return value


class EmbeddingCache:
    """A folder of per-batch embeddings keyed by (probe, data, batch index, repeat)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, probe_fp: str, data_fp: str, batch_index: int, repeat: int) -> Path:
        _check_fingerprint(probe_fp, "probe")
        _check_fingerprint(data_fp, "data")
        if batch_index < 0 or repeat < 0:
            raise ValueError("batch index and repeat must be non-negative")
        return self.root / probe_fp / data_fp / f"b{batch_index:05d}-r{repeat}.safetensors"

    def get(self, probe_fp: str, data_fp: str, batch_index: int, repeat: int) -> BatchEmbedding | None:
        path = self.path(probe_fp, data_fp, batch_index, repeat)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="np") as fh:
                meta = fh.metadata()
                vector = fh.get_tensor("vector")
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s); it will be recomputed", path, exc)
            return None
        return BatchEmbedding(
            batch_index=batch_index,
            repeat=repeat,
            seed=int(meta["seed"]),
            vector=vector,
            finetune_loss_first=float(meta["finetune_loss_first"]),
            finetune_loss_last=float(meta["finetune_loss_last"]),
            fisher_loss=float(meta["fisher_loss"]),
            seconds_finetune=float(meta["seconds_finetune"]),
            seconds_fisher=float(meta["seconds_fisher"]),
            n_scored_tokens=int(meta["n_scored_tokens"]),
            layout=meta["layout"],
            cached=True,
        )

    def put(self, probe_fp: str, data_fp: str, row: BatchEmbedding) -> Path:
        path = self.path(probe_fp, data_fp, row.batch_index, row.repeat)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "seed": str(row.seed),
            "finetune_loss_first": repr(row.finetune_loss_first),
            "finetune_loss_last": repr(row.finetune_loss_last),
            "fisher_loss": repr(row.fisher_loss),
            "seconds_finetune": repr(row.seconds_finetune),
            "seconds_fisher": repr(row.seconds_fisher),
            "n_scored_tokens": str(row.n_scored_tokens),
            "layout": row.layout,
        }
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
        os.close(fd)
        try:
            save_file({"vector": np.ascontiguousarray(row.vector, dtype=np.float32)}, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def count(self, probe_fp: str, data_fp: str) -> int:
        folder = self.root / _check_fingerprint(probe_fp, "probe") / _check_fingerprint(data_fp, "data")
        return len(list(folder.glob("b*-r*.safetensors"))) if folder.exists() else 0
