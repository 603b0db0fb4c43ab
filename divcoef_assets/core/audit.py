"""One diversity audit: batches -> cached embeddings -> distances -> coefficient + noise floor.

This is the orchestration shared by the Python API, the command line and the Dagster assets.
It never computes an embedding twice: each (probe, data, batch, repeat) is looked up in the
`EmbeddingCache` first and stored as soon as it is computed, and the probe network is only
loaded when something is missing. Progress (batch i of n, seconds per batch, ETA) goes to the
log and to an optional callback.

Where: a missing embedding is an `EmbeddingTask` (plain values and the token batch) and
`embed_task` computes it, the one function that does, here (`LocalEmbedder`, the default) or in
another process (`divcoef_assets.ray_backend` passes an `Embedder` that runs it on Ray workers).
Whatever computes them, the results are cached and returned by the caller of `compute_embeddings`.

Seeds: batch i of a dataset is drawn with rng(seed, i) (see `core.sampling`), and its
embedding uses `embedding_seed(seed, i, repeat)` for dropout and Monte Carlo draws; repeat 0
is the batch's embedding, repeats 1.. are the extra embeddings of the same batch that measure
the noise floor (the distance between two estimates of the *same* batch's embedding).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from divcoef_assets.core.cache import BatchEmbedding, EmbeddingCache
from divcoef_assets.core.coefficient import (
    CoefficientEstimate,
    NoiseFloor,
    cross_diversity_from_matrix,
    diversity_from_matrix,
    noise_corrected,
    noise_floor,
)
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.distance import cdist, pdist
from divcoef_assets.core.fingerprint import digest
from divcoef_assets.core.probe import Probe
from divcoef_assets.core.task2vec import FisherNotFiniteError, embed_batch
from divcoef_assets.core.tokenize import TokenBatch

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float], None]  # (done, total, seconds of the last embedding)


def embedding_seed(seed: int, batch_index: int, repeat: int) -> int:
    """Seed of one embedding's dropout and Monte Carlo draws (63-bit, machine independent)."""
    state = np.random.SeedSequence([seed, batch_index, repeat, 0x7A5C]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


@dataclass(frozen=True)
class EmbeddingJob:
    batch_index: int
    repeat: int


def plan_jobs(config: ProbeConfig, n_batches: int | None = None) -> list[EmbeddingJob]:
    """Every embedding an audit needs: one per batch, plus the noise-floor repeats."""
    n = config.n_batches if n_batches is None else n_batches
    jobs = [EmbeddingJob(i, 0) for i in range(n)]
    if config.noise_repeats >= 2:
        for i in range(min(config.noise_batches, n)):
            jobs += [EmbeddingJob(i, r) for r in range(1, config.noise_repeats)]
    return jobs


def embedding_key(*, batch: str, probe: str, estimator: str, seed: int) -> str:
    """Cache key of one embedding: the batch's content, the probe's identity (weights, special
    ids), the estimator fingerprint (fields and engine version) and the Monte Carlo seed."""
    return digest("embedding", batch, probe, estimator, seed, width=32)


@dataclass(frozen=True)
class EmbeddingTask:
    """Everything one missing embedding needs besides the probe: plain values and arrays, so a
    task can be shipped to another process or machine (`divcoef_assets.ray_backend`) and give
    there what it gives here."""

    batch_index: int
    repeat: int
    seed: int  # embedding_seed(config.seed, batch_index, repeat)
    key: str  # embedding_key of the computation: where the result is cached
    batch_fingerprint: str
    batch: TokenBatch


# Computes the embeddings of `tasks` with `config`'s probe; yields each row as soon as it is done
# (in any order). The local embedder is `LocalEmbedder`; `divcoef_assets.ray_backend` has one that
# fans the tasks out to a Ray cluster.
Embedder = Callable[[ProbeConfig, Sequence[EmbeddingTask]], Iterator[BatchEmbedding]]
# Given the probe config with its model resolved to what is loaded and the probe's identity (the
# probe part of every cache key), an embedder for that probe.
EmbedderFactory = Callable[[ProbeConfig, str], Embedder]


def embed_task(probe: Probe, config: ProbeConfig, task: EmbeddingTask, *, node_id: str = "", label: str = "") -> BatchEmbedding:
    """One batch embedding: the one function that computes an embedding, locally or in a worker.
    The row records the process (and Ray node, when there is one) that computed it."""
    try:
        emb = embed_batch(probe, task.batch, config, seed=task.seed)
    except FisherNotFiniteError as exc:
        # Nothing is cached: a re-run after fixing the probe recomputes this embedding.
        raise FisherNotFiniteError(
            f"{label}batch {task.batch_index}, repeat {task.repeat} with probe "
            f"{config.name!r} ({config.model}): {exc}; nothing was cached or recorded"
        ) from exc
    return BatchEmbedding(
        batch_index=task.batch_index,
        repeat=task.repeat,
        seed=task.seed,
        vector=emb.vector,
        finetune_loss_first=emb.finetune_loss_first,
        finetune_loss_last=emb.finetune_loss_last,
        fisher_loss=emb.fisher_loss,
        seconds_finetune=emb.seconds_finetune,
        seconds_fisher=emb.seconds_fisher,
        n_scored_tokens=emb.n_scored_tokens,
        layout=json.dumps([[e.module, e.start, e.stop] for e in emb.layout]),
        key=task.key,
        batch_fingerprint=task.batch_fingerprint,
        worker_pid=os.getpid(),
        node_id=node_id,
    )


class LocalEmbedder:
    """Embeds tasks one after the other in this process; the probe is loaded on first use and
    kept across calls (sequential stopping calls again for every added batch)."""

    def __init__(self, probe_loader: Callable[[], Probe], *, label: str = ""):
        self._loader = probe_loader
        self._probe: Probe | None = None
        self._label = label

    def __call__(self, config: ProbeConfig, tasks: Sequence[EmbeddingTask]) -> Iterator[BatchEmbedding]:
        for task in tasks:
            if self._probe is None:
                self._probe = self._loader()
            yield embed_task(self._probe, config, task, label=self._label)


def compute_embeddings(
    config: ProbeConfig,
    jobs: Sequence[EmbeddingJob],
    batch_for: Callable[[int], TokenBatch],
    probe_loader: Callable[[], Probe],
    *,
    probe_identity: str,
    cache: EmbeddingCache,
    progress: ProgressCallback | None = None,
    label: str = "",
    embedder: Embedder | None = None,
) -> list[BatchEmbedding]:
    """Embeddings for `jobs`, from the cache where the same computation was done before; the
    missing ones are computed by `embedder` (default: here, `LocalEmbedder`) and each is cached
    the moment it arrives. The probe is loaded only when something is missing."""
    estimator = config.estimator_fingerprint()
    batches: dict[int, TokenBatch] = {}
    batch_fps: dict[int, str] = {}
    keys: list[str] = []
    for job in jobs:
        if job.batch_index not in batches:
            batches[job.batch_index] = batch_for(job.batch_index)
            batch_fps[job.batch_index] = batches[job.batch_index].fingerprint()
        seed = embedding_seed(config.seed, job.batch_index, job.repeat)
        keys.append(embedding_key(batch=batch_fps[job.batch_index], probe=probe_identity, estimator=estimator, seed=seed))
    rows: list[BatchEmbedding | None] = [
        cache.get(key, batch_index=j.batch_index, repeat=j.repeat, batch_fingerprint=batch_fps[j.batch_index])
        for j, key in zip(jobs, keys)
    ]
    missing = [k for k, row in enumerate(rows) if row is None]
    prefix = f"{label}: " if label else ""
    log.info(
        "%s%d embeddings needed, %d cached, %d to compute (probe %s)",
        prefix, len(jobs), len(jobs) - len(missing), len(missing), config.name,
    )
    if not missing:
        return [row for row in rows if row is not None]
    cache.ensure_writable()
    tasks = [
        EmbeddingTask(batch_index=jobs[k].batch_index, repeat=jobs[k].repeat, seed=embedding_seed(config.seed, jobs[k].batch_index, jobs[k].repeat),
                      key=keys[k], batch_fingerprint=batch_fps[jobs[k].batch_index], batch=batches[jobs[k].batch_index])
        for k in missing
    ]
    slot = {keys[k]: k for k in missing}
    embed = embedder or LocalEmbedder(probe_loader, label=prefix)
    started = last = time.perf_counter()
    done = 0
    for row in embed(config, tasks):
        k = slot.pop(row.key, None)
        if k is None or row.batch_index != jobs[k].batch_index or row.repeat != jobs[k].repeat:
            raise RuntimeError(f"{prefix}the embedder returned an embedding nobody asked for (batch {row.batch_index}, "
                               f"repeat {row.repeat}, key {row.key}); nothing more was cached")
        cache.put(row)
        rows[k] = row
        done += 1
        now = time.perf_counter()
        seconds, last = now - last, now
        eta = (now - started) / done * (len(missing) - done)
        log.info(
            "%sembedding %d/%d (batch %d, repeat %d) in %.1fs (fine-tune %.1fs, Fisher %.1fs, pid %d%s); ETA %.0fs",
            prefix, done, len(missing), row.batch_index, row.repeat, seconds, row.seconds_finetune, row.seconds_fisher,
            row.worker_pid, f", node {row.node_id[:12]}" if row.node_id else "", eta,
        )
        if progress is not None:
            progress(done, len(missing), seconds)
    if slot:
        raise RuntimeError(f"{prefix}the embedder ended with {len(slot)} embedding(s) not computed; the others are cached")
    return [row for row in rows if row is not None]


def audit_embeddings(
    config: ProbeConfig,
    batch_for: Callable[[int], TokenBatch],
    probe_loader: Callable[[], Probe],
    *,
    n_batches: int | None = None,
    **common,
) -> list[BatchEmbedding]:
    """The embeddings an audit needs: `n_batches` (default `config.n_batches`) plus the noise
    repeats; or, for sequential stopping (`config.target_half_width` > 0), `min_batches` batches
    and the repeats, then one batch at a time until the jackknife 95% half-width is at most the
    target or `n_batches` is reached. Every embedding goes through the cache, so a re-run stops
    at the same batch and computes nothing."""
    limit = config.n_batches if n_batches is None else n_batches
    if config.target_half_width <= 0:
        return compute_embeddings(config, plan_jobs(config, limit), batch_for, probe_loader, **common)
    n = min(config.min_batches, limit)
    loaded: list[Probe] = []

    def loader() -> Probe:  # load the probe once across rounds
        if not loaded:
            loaded.append(probe_loader())
        return loaded[0]

    rows = compute_embeddings(config, plan_jobs(config, n), batch_for, loader, **common)
    while True:
        estimate = diversity_from_matrix(pdist(main_vectors(rows), metric=config.distance))
        half = (estimate.ci_high - estimate.ci_low) / 2
        if half <= config.target_half_width or n >= limit:
            log.info(
                "%ssequential stopping at %d batches: half-width %.4f (target %.4f, limit %d)",
                f"{common.get('label')}: " if common.get("label") else "", n, half, config.target_half_width, limit,
            )
            return rows
        rows += compute_embeddings(config, [EmbeddingJob(n, 0)], batch_for, loader, **common)
        n += 1


@dataclass(frozen=True)
class DiversityResult:
    """A dataset's diversity coefficient with its uncertainty, noise floor and provenance."""

    estimate: CoefficientEstimate
    noise: NoiseFloor | None
    distance: str
    probe: ProbeConfig
    matrix: np.ndarray = field(repr=False)  # [n_batches, n_batches]
    embeddings: tuple[BatchEmbedding, ...] = field(repr=False)
    data_fingerprint: str = ""
    probe_fingerprint: str = ""  # the probe as measured (settings and weights); default: the config's

    @property
    def value(self) -> float:
        return self.estimate.value

    @property
    def noise_corrected(self) -> float | None:
        """Coefficient minus noise floor (`core.coefficient.noise_corrected`); None when not measured."""
        return None if self.noise is None else noise_corrected(self.estimate, self.noise)

    @property
    def n_computed(self) -> int:
        return sum(not row.cached for row in self.embeddings)

    def to_dict(self) -> dict:
        return {
            **self.estimate.to_dict(),
            "noise_floor": None if self.noise is None else self.noise.value,
            "noise_floor_stderr": None if self.noise is None else self.noise.stderr,
            "noise_corrected": self.noise_corrected,
            "distance": self.distance,
            "probe": self.probe.name,
            "probe_fingerprint": self.probe_fingerprint or self.probe.fingerprint(),
            "data_fingerprint": self.data_fingerprint,
            "seed": self.probe.seed,
        }


def main_vectors(rows: Sequence[BatchEmbedding]) -> np.ndarray:
    """[n_batches, d] matrix of the repeat-0 embeddings, ordered by batch index."""
    main = sorted((r for r in rows if r.repeat == 0), key=lambda r: r.batch_index)
    return np.stack([r.vector for r in main])


def noise_from_rows(rows: Sequence[BatchEmbedding], distance: str) -> NoiseFloor | None:
    """Mean distance between embeddings of the same batch (different Monte Carlo seeds)."""
    by_batch: dict[int, list[BatchEmbedding]] = {}
    for row in rows:
        by_batch.setdefault(row.batch_index, []).append(row)
    per_batch = []
    for group in by_batch.values():
        if len(group) < 2:
            continue
        d = pdist(np.stack([r.vector for r in sorted(group, key=lambda r: r.repeat)]), metric=distance)
        per_batch.append(float(d[np.triu_indices(len(group), k=1)].mean()))
    return noise_floor(per_batch) if per_batch else None


def summarize(config: ProbeConfig, rows: Sequence[BatchEmbedding], data_fingerprint: str) -> DiversityResult:
    matrix = pdist(main_vectors(rows), metric=config.distance)
    return DiversityResult(
        estimate=diversity_from_matrix(matrix),
        noise=noise_from_rows(rows, config.distance),
        distance=config.distance,
        probe=config,
        matrix=matrix,
        embeddings=tuple(rows),
        data_fingerprint=data_fingerprint,
    )


@dataclass(frozen=True)
class CrossResult:
    estimate: CoefficientEstimate
    distance: str
    probe: ProbeConfig
    matrix: np.ndarray = field(repr=False)  # [n_a, n_b]

    @property
    def value(self) -> float:
        return self.estimate.value


def cross_summarize(config: ProbeConfig, rows_a: Sequence[BatchEmbedding], rows_b: Sequence[BatchEmbedding]) -> CrossResult:
    matrix = cdist(main_vectors(rows_a), main_vectors(rows_b), metric=config.distance)
    return CrossResult(estimate=cross_diversity_from_matrix(matrix), distance=config.distance, probe=config, matrix=matrix)
