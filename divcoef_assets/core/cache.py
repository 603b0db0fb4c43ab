"""Per-batch embedding cache, addressed by content: every Task2Vec embedding is computed once.

An embedding costs seconds to minutes, so each one is stored the moment it is computed. Its key
is derived from exactly what determines its value (`core.audit.embedding_key`): the token batch's
bytes (ids and mask), the probe's weights and special ids, every estimator field, the engine
version and the embedding's Monte Carlo seed. Names, partition keys and registry labels are not
part of it, so an entry is reused only for the same computation, whatever it is called:

    <root>/<key[:2]>/<key>.safetensors

Files are safetensors (no pickle) with the losses, timings and the process (and Ray node) that
computed the embedding in their metadata, written through
`core.atomic` (temporary name, then rename), so a killed run never leaves a half-written entry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from divcoef_assets.core.atomic import TMP_PREFIX, write_atomic
from divcoef_assets.core.fingerprint import is_fingerprint

log = logging.getLogger(__name__)



class CacheNotWritableError(OSError):
    """The embedding cache folder cannot be written; the message names it and how to move it."""


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
    key: str = ""  # the cache key: what this embedding was computed from
    batch_fingerprint: str = ""  # content of the token batch (ids and mask)
    cached: bool = False  # True when read from the cache rather than computed in this run
    worker_pid: int = 0  # process that computed the embedding (0: not recorded)
    node_id: str = ""  # Ray node that computed it; empty when computed outside Ray


_META_FLOATS = ("finetune_loss_first", "finetune_loss_last", "fisher_loss", "seconds_finetune", "seconds_fisher")


class EmbeddingCache:
    """A folder of per-batch embeddings addressed by content keys."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not is_fingerprint(key) or len(key) < 16:
            raise ValueError(f"an embedding cache key is 16 to 64 lowercase hex digits, got {key!r}")
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, *, batch_index: int, repeat: int, batch_fingerprint: str = "") -> BatchEmbedding | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="np") as fh:
                meta = fh.metadata()
                vector = fh.get_tensor("vector")
            values = {name: float(meta[name]) for name in _META_FLOATS}
            seed, n_scored, layout = int(meta["seed"]), int(meta["n_scored_tokens"]), meta["layout"]
            where = dict(worker_pid=int(meta.get("worker_pid", 0)), node_id=meta.get("node_id", ""))
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s); it will be recomputed", path, exc)
            return None
        return BatchEmbedding(
            batch_index=batch_index, repeat=repeat, seed=seed, vector=vector, n_scored_tokens=n_scored,
            layout=layout, key=key, batch_fingerprint=batch_fingerprint, cached=True, **where, **values,
        )

    def put(self, row: BatchEmbedding) -> Path:
        meta = {name: repr(getattr(row, name)) for name in _META_FLOATS}
        meta.update(seed=str(row.seed), n_scored_tokens=str(row.n_scored_tokens), layout=row.layout,
                    worker_pid=str(row.worker_pid), node_id=row.node_id)
        vector = {"vector": np.ascontiguousarray(row.vector, dtype=np.float32)}
        return write_atomic(self.path(row.key), lambda tmp: save_file(vector, tmp, metadata=meta))

    def ensure_writable(self) -> None:
        """Fail before any computation if entries could not be stored."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TMP_PREFIX}write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CacheNotWritableError(
                f"the embedding cache {self.root} is not writable ({exc.strerror or exc}); point it at a writable "
                f"folder with $DIVCOEF_CACHE or --cache-dir (the Dagster resource's cache_dir)"
            ) from exc

    def count(self) -> int:
        return sum(1 for p in self.root.glob("*/*.safetensors") if not p.name.startswith(".")) if self.root.exists() else 0
