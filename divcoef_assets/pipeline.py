"""The audit chain: the one sequence of steps that the assets, the API, the CLI and the studies run.

    snapshot -> token_batches -> embeddings -> distance_matrix -> coefficient      (per dataset)
    probe_network                                                                    (per probe)
    cross                                                                            (per probe)

Each step reads its input artifact, writes its output atomically (`core.atomic`) and returns a
typed record (`records`). Heavy arrays stay in Parquet under `Layout.root`:

    snapshots/<dataset>/<snapshot fp>.parquet          texts (or <fp>.json for synthetic specs)
    token_batches/<dataset>/<sampling fp>.parquet      one row per sequence
    embeddings/probe=<probe>/dataset=<dataset>/part.parquet        one row per embedding
    distances/probe=<probe>/dataset=<dataset>/part.parquet         long format (i, j, distance)
    cross/probe=<probe>/part.parquet                               long format, every dataset pair
    cache/embeddings/<key[:2]>/<key>.safetensors                   per-batch cache (core.cache)
    probes/<pretrain fp>/                                          probes pretrained here

Two rules keep every recorded number equal to a clean recomputation, whatever the user
re-materializes or edits in between:

- embeddings are cached under keys made from their content (`core.audit.embedding_key`), never
  from names or partition keys;
- every record carries the `settings_fingerprint` of the probe settings it was made with, and
  each step refuses an upstream record made with other settings (`StaleUpstreamError`), naming
  the step to re-materialize. What is recorded is therefore what was computed.

No Dagster imports here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from divcoef_assets.core.atomic import atomic_path, sweep_temporaries, write_atomic, write_text_atomic
from divcoef_assets.core.audit import (
    DiversityResult,
    EmbedderFactory,
    ProgressCallback,
    audit_embeddings,
    cross_summarize,
    main_vectors,
    summarize,
)
from divcoef_assets.core.baselines import Baseline, batch_baselines, embedding_baselines
from divcoef_assets.core.cache import BatchEmbedding, EmbeddingCache
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.distance import pdist
from divcoef_assets.core.fingerprint import array_digest, digest, texts_digest
from divcoef_assets.core.probe import Probe, load_probe_for, probe_identity, weights_fingerprint
from divcoef_assets.core.sampler import Progress, sample_pool
from divcoef_assets.core.sampling import (
    NotEnoughTextsError,
    batch_indices,
    mixture_batch_rows,
    mixture_needs,
    pool_batch_rows,
)
from divcoef_assets.core.snapshot import (
    EmptySnapshotError,
    PoolRow,
    pool_fingerprint,
    read_pool,
    read_texts,
    source_index,
    snapshot_footer,
    synthetic_snapshot,
    write_pool,
)
from divcoef_assets.core.sources import MixtureSource, SourceError, SyntheticSource, source_version
from divcoef_assets.core.synthetic import default_token_ids, ginc_tokens, lower_bound_tokens, upper_bound_tokens
from divcoef_assets.core.tokenize import TextTokenizer, TokenBatch, encode_fixed, load_tokenizer
from divcoef_assets.core.triage import BatchDocuments, BatchOutlier, batch_label, rank_batches
from divcoef_assets.keys import validate_key
from divcoef_assets.records import (
    CrossRecord,
    DistancesRecord,
    EmbeddingsRecord,
    PoolRecord,
    ProbeRecord,
    SnapshotRecord,
    TokenBatchesRecord,
    from_json,
    to_json,
)
from divcoef_assets.registry import Registry
from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord, ResultsStore

log = logging.getLogger(__name__)

PRETRAIN_PREFIX = "pretrain:"
SNAPSHOT_ATTEMPTS = 2


class StaleUpstreamError(RuntimeError):
    """An upstream artifact was made with other settings than the registry now holds."""


class SourceChangedError(RuntimeError):
    """The source changed while it was being read, on every attempt."""


@dataclass(frozen=True)
class Layout:
    """Where artifacts live under one root folder (keys validated: they become paths)."""

    root: Path
    cache_root: Path | None = None  # default: <root>/cache/embeddings

    def snapshot_dir(self, dataset: str) -> Path:
        return self.root / "snapshots" / validate_key(dataset, "dataset")

    def pool_index(self, dataset: str, seed: int) -> Path:
        """The `PoolRecord` of the largest pool drawn from a text dataset under `seed`."""
        return self.snapshot_dir(dataset) / "pools" / f"seed-{int(seed)}.json"

    def token_batches(self, dataset: str, sampling_fp: str) -> Path:
        return self.root / "token_batches" / validate_key(dataset, "dataset") / f"{sampling_fp}.parquet"

    def embeddings(self, dataset: str, probe: str) -> Path:
        return self.root / "embeddings" / f"probe={validate_key(probe, 'probe')}" / f"dataset={validate_key(dataset, 'dataset')}" / "part.parquet"

    def distances(self, dataset: str, probe: str) -> Path:
        return self.root / "distances" / f"probe={validate_key(probe, 'probe')}" / f"dataset={validate_key(dataset, 'dataset')}" / "part.parquet"

    def cross(self, probe: str) -> Path:
        return self.root / "cross" / f"probe={validate_key(probe, 'probe')}" / "part.parquet"

    def probe_dir(self, pretrain_fp: str) -> Path:
        return self.root / "probes" / pretrain_fp

    @property
    def cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.cache_root or self.root / "cache" / "embeddings")

    def parquet_views(self) -> dict[str, list[Path]]:
        """The files behind the DuckDB views `embeddings` and `distances`."""
        return {name: sorted((self.root / name).glob("probe=*/dataset=*/part.parquet")) for name in ("embeddings", "distances")}


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def require_same_settings(upstream: str, upstream_fp: str, config: ProbeConfig, step: str) -> None:
    """Refuse an upstream artifact made with other probe settings than `config`."""
    if upstream_fp != config.settings_fingerprint():
        raise StaleUpstreamError(
            f"{upstream} was made with other settings of probe {config.name!r} than the registry now holds "
            f"(settings {upstream_fp}, now {config.settings_fingerprint()}); re-materialize {upstream} and "
            f"everything after it before {step}; nothing was written"
        )


# ----------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class SamplingOptions:
    """How a pool is read: `executor` "auto" (a local process pool for large sources, else
    serially), "serial", "process" or "ray" (Ray Data on the cluster at `ray_address`; a run with
    no shard finished for `ray_stall_s` seconds is stalled, None: the sampler's default)."""

    executor: str = "auto"
    workers: int | None = None
    ray_address: str | None = None
    ray_stall_s: float | None = None
    progress: Progress | None = None  # called as each shard of a one-pass source is sampled


def pool_needs(registry: Registry, dataset: str, config: ProbeConfig) -> dict[str, int]:
    """Documents each text source of `dataset` must give for the probe's batches to be disjoint."""
    source = registry.dataset(dataset).source
    if isinstance(source, MixtureSource):
        return mixture_needs(source.weight_map, source.mode, config.batch_size, config.n_batches, config.seed)
    return {dataset: config.batch_size * config.n_batches}


def snapshot(registry: Registry, dataset: str, layout: Layout, probe: str | None = None, *,
             sampling: SamplingOptions = SamplingOptions()) -> SnapshotRecord:
    """The dataset's snapshot for `probe` (default: the registry's default probe).

    A text dataset's snapshot is a sample pool (`core.sampler`): the documents with the smallest
    keys under the probe's seed, as many as its batches need (a mixture: each component's
    share). The pool drawn from each source is kept (`PoolRecord`), so a snapshot of an unchanged
    source reads no document, and a larger need grows the pool, whose first part must be the old
    one. A synthetic dataset's snapshot is its spec.
    """
    spec = registry.dataset(dataset)
    config = registry.probe(probe)
    folder = layout.snapshot_dir(dataset)
    source = spec.source
    swept = sweep_temporaries(layout.root, older_than_s=6 * 3600)
    if swept:
        log.info("removed %d temporary file(s) left under %s by interrupted runs", swept, layout.root)
    common = dict(dataset=dataset, source_type=spec.source_type, description=spec.description,
                  spec_fingerprint=digest(spec.to_dict()))
    if isinstance(source, SyntheticSource):
        fingerprint = synthetic_snapshot(source).fingerprint  # the spec's digest, no file
        info = synthetic_snapshot(source, folder / f"{fingerprint}.json")
        return SnapshotRecord(path=str(info.path), fingerprint=info.fingerprint, content_fingerprint=info.fingerprint,
                              n_documents=info.n_documents, synthetic=True, source_version=registry_source_version(registry, dataset), **common)
    rows: list[PoolRow] = []
    pools: list[tuple[str, PoolRecord, int]] = []
    for name, need in pool_needs(registry, dataset, config).items():
        if need == 0:
            continue
        pool = source_pool(registry, name, layout, config.seed, need, sampling)
        taken = read_pool(pool.path, min(need, pool.n_documents))
        rows += taken
        pools.append((name, pool, len(taken)))
    if not rows:
        raise EmptySnapshotError(
            f"no usable document for dataset {dataset!r}: {sum(p.n_empty_read for _, p, _ in pools)} empty or blank "
            "document(s) and nothing else; check the source's path and text_column"
        )
    weights: tuple[tuple[str, float], ...] = ()
    mode = ""
    content = pool_fingerprint(rows)
    fingerprint = content
    if isinstance(source, MixtureSource):
        # Two mixtures of the same components hold the same texts but draw different batches.
        weights, mode = tuple(source.weight_map.items()), source.mode
        fingerprint = digest({"content": content, "weights": source.weight_map, "mode": mode})
    # The version of what was read: the pool's (checked before and after its read); a mixture's
    # is made from its components' versions.
    version = registry_source_version(registry, dataset) if isinstance(source, MixtureSource) else pools[0][1].source_version
    record = SnapshotRecord(
        path=str(folder / f"{content}.parquet"), fingerprint=fingerprint, content_fingerprint=content, n_documents=len(rows),
        synthetic=False, source_version=version, n_chars=sum(len(r.text) for r in rows),
        source_counts=tuple((n, k) for n, _, k in pools), mixture_weights=weights, mixture_mode=mode,
        pool=True, sample_seed=config.seed, n_source_documents=sum(_usable(p) for _, p, _ in pools),
        n_read=sum(p.n_read for _, p, _ in pools), n_dropped_empty=sum(p.n_empty_read for _, p, _ in pools),
        counts_exact=all(p.exact for _, p, _ in pools), complete_sources=tuple(n for n, p, _ in pools if p.complete),
        **common,
    )
    # The record rides in the file's footer, so the snapshot alone reproduces the coefficient.
    path, _ = write_pool(rows, folder, {"record": to_json(record)})
    assert str(path) == record.path
    log.info("snapshot of %s: %d of about %d usable documents (seed %d), fingerprint %s", dataset, record.n_documents,
             record.n_source_documents, config.seed, record.fingerprint)
    return record


def snapshot_from_file(path: str | Path) -> SnapshotRecord:
    """The record of a pool snapshot, read from its footer (the file alone reproduces the
    coefficient: `audit_partition(..., snap=snapshot_from_file(path))`)."""
    footer = snapshot_footer(path)
    if "record" not in footer:
        raise ArtifactError(f"{path} is not a pool snapshot of this version (its footer holds no record)")
    return dataclasses.replace(from_json(footer["record"]), path=str(path))


def _usable(pool: PoolRecord) -> int:
    if pool.complete:
        return pool.n_documents
    if pool.exact:
        return pool.n_records - pool.n_empty_read
    share = pool.n_empty_read / pool.n_read if pool.n_read else 0.0
    return max(pool.n_documents, round(pool.n_records * (1.0 - share)))


def source_pool(registry: Registry, dataset: str, layout: Layout, seed: int, need: int,
                sampling: SamplingOptions = SamplingOptions()) -> PoolRecord:
    """The pool of a text dataset (not a mixture) under `seed` holding at least `need` documents
    (or all it has): the one kept for this source version when it is large enough, else drawn.

    The source version is taken before the read and again after: a source that changed during
    the read is read again (once), then fails with `SourceChangedError`. A larger pool must begin
    with the kept one; when it does not, the source changed without its version showing it, and
    the step fails with nothing written."""
    spec = registry.dataset(dataset)
    registry.check_allowed(dataset)
    index = layout.pool_index(dataset, seed)
    spec_fp = digest(spec.to_dict())
    kept = _read_pool_record(index)
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        before = registry_source_version(registry, dataset)
        if kept is not None and (kept.spec_fingerprint, kept.source_version) != (spec_fp, before):
            kept = None  # another entry or another version of the source: a new pool
        if kept is not None and (kept.n_documents >= need or kept.complete) and Path(kept.path).is_file():
            log.info("dataset %s: reusing its pool of %d documents (source unchanged)", dataset, kept.n_documents)
            return kept
        k = max(need, kept.n_documents if kept else 0)
        try:
            pool = sample_pool(spec.source, registry.base_dir, seed=seed, k=k, executor=sampling.executor,
                               workers=sampling.workers, ray_address=sampling.ray_address,
                               ray_stall_s=sampling.ray_stall_s, progress=sampling.progress)
        except SourceError as exc:
            # The reader names the file and line; say which dataset it belongs to.
            raise type(exc)(f"dataset {dataset!r}: {exc}") from exc
        if registry_source_version(registry, dataset) == before:
            break
        log.warning("dataset %s: the source changed while it was read (attempt %d of %d)", dataset, attempt, SNAPSHOT_ATTEMPTS)
    else:
        raise SourceChangedError(
            f"dataset {dataset!r}: the source changed while it was being read, {SNAPSHOT_ATTEMPTS} times; "
            "materialize dataset_snapshot again once writers to it have finished; nothing was written"
        )
    rows = [PoolRow(dataset, d.text, f"{d.file} {d.locator}", d.key) for d in pool.docs]
    if kept is not None:
        old = read_pool(kept.path)
        if rows[: len(old)] != old:
            raise SourceChangedError(
                f"dataset {dataset!r}: the larger pool does not begin with the pool drawn before from the same "
                f"source version ({kept.path}): the source's content changed without its size or modification time "
                "changing; touch the changed files (or re-copy them) and materialize dataset_snapshot again; "
                "nothing was written"
            )
    if not rows:
        raise EmptySnapshotError(
            f"no usable document for dataset {dataset!r}: {pool.n_empty_read} empty or blank document(s) and "
            "nothing else; check the source's path and text_column"
        )
    path, fingerprint = write_pool(rows, index.parent, {"dataset": dataset, "seed": seed, "source_version": before})
    record = PoolRecord(
        dataset=dataset, spec_fingerprint=spec_fp, source_version=before, seed=seed, path=str(path),
        fingerprint=fingerprint, n_documents=len(rows), complete=pool.complete, n_records=pool.n_records,
        n_read=pool.n_read, n_empty_read=pool.n_empty_read, exact=pool.exact,
    )
    write_text_atomic(index, to_json(record))
    log.info("dataset %s: drew a pool of %d documents (read %d of %d records, %d empty)", dataset, len(rows),
             pool.n_read, pool.n_records, pool.n_empty_read)
    return record


def _read_pool_record(index: Path) -> PoolRecord | None:
    try:
        record = from_json(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("pool index %s cannot be read (%s): drawing the pool again", index, exc)
        return None
    return record if isinstance(record, PoolRecord) else None


def registry_source_version(registry: Registry, dataset: str) -> str:
    """`core.sources.source_version` of a registered dataset (a mixture through its components)."""
    spec = registry.dataset(dataset)
    components = spec.source.components if isinstance(spec.source, MixtureSource) else ()
    return source_version(spec, registry.base_dir, component_versions=[registry_source_version(registry, c) for c in components])


# ----------------------------------------------------------------------------- token batches


def _synthetic_tokens(path: str, tokenizer: TextTokenizer, seq_len: int) -> np.ndarray:
    from divcoef_assets.core.sources import parse_source

    spec = dict(json.loads(Path(path).read_text(encoding="utf-8"))["spec"])
    source = parse_source(spec.pop("source", "synthetic"), spec)
    common = dict(vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id, seed=source.seed)
    if source.kind == "lower_bound":
        return lower_bound_tokens(source.n_sequences, seq_len, **common)
    if source.kind == "upper_bound":
        return upper_bound_tokens(source.n_sequences, seq_len, **common)
    ids = default_token_ids(source.vocab_size, tokenizer_vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id, seed=source.seed)
    return ginc_tokens(source.n_sequences, seq_len, n_concepts=source.n_concepts, vocab_size=source.vocab_size,
                       n_states=source.n_states, seed=source.seed, token_ids=ids)


def _batch_rows(snap: SnapshotRecord, n_items: int, config: ProbeConfig) -> list[np.ndarray]:
    """The snapshot rows of each of the probe's batches.

    A sample pool's batches are consecutive slices of the pool (`core.sampling.pool_batch_rows`,
    a mixture's per component); generated and pre-tokenized sequences are drawn with
    `default_rng([seed, i])`."""
    if snap.tokens or snap.synthetic:
        if n_items < config.batch_size:
            raise NotEnoughTextsError(
                f"dataset {snap.dataset!r}: {n_items} sequences, but one batch of probe {config.name!r} needs "
                f"batch_size={config.batch_size}; add sequences"
            )
        return [batch_indices(n_items, config.batch_size, i, config.seed) for i in range(config.n_batches)]
    if not snap.pool:
        raise StaleUpstreamError(
            f"dataset_snapshot of {snap.dataset!r} is a full copy made by an earlier version, not a sample pool; "
            "re-materialize dataset_snapshot first; nothing was written"
        )
    if snap.sample_seed != config.seed:
        raise StaleUpstreamError(
            f"dataset_snapshot of {snap.dataset!r} was drawn with seed {snap.sample_seed}, probe {config.name!r} uses "
            f"seed {config.seed}; re-materialize dataset_snapshot for this probe first; nothing was written"
        )
    complete = set(snap.complete_sources)
    if snap.mixture_weights:
        components, first = {}, 0
        for name, count in snap.source_counts:
            components[name] = (first, count, name in complete)
            first += count
        return mixture_batch_rows(components, dict(snap.mixture_weights), snap.mixture_mode, config.batch_size,
                                  config.n_batches, config.seed)
    return pool_batch_rows(f"dataset {snap.dataset!r}", n_items, snap.dataset in complete, config.batch_size,
                           config.n_batches, config.seed)


def draw_batches(snap: SnapshotRecord, config: ProbeConfig) -> list[TokenBatch]:
    """Batch i = rows rng(seed, i) of the snapshot, tokenized and padded to `seq_len`."""
    return draw_batches_with_rows(snap, config)[0]


def draw_batches_with_rows(snap: SnapshotRecord, config: ProbeConfig) -> tuple[list[TokenBatch], list[np.ndarray]]:
    """The batches of `draw_batches` and, for each, the snapshot rows (documents) it holds."""
    tokenizer = load_tokenizer(config.tokenizer)
    if snap.tokens:
        table = pq.read_table(snap.path)
        ids = np.asarray(table.column("input_ids").to_pylist(), dtype=np.int64)
        mask = np.asarray(table.column("attention_mask").to_pylist(), dtype=np.int64)
        if ids.shape[1] < config.seq_len:
            raise ValueError(f"dataset {snap.dataset!r}: sequences of {ids.shape[1]} tokens, fewer than seq_len={config.seq_len}")
        rows = _batch_rows(snap, ids.shape[0], config)
        return [TokenBatch(ids[r, : config.seq_len], mask[r, : config.seq_len]) for r in rows], rows
    if snap.synthetic:
        tokens = _synthetic_tokens(snap.path, tokenizer, config.seq_len)
        rows = _batch_rows(snap, tokens.shape[0], config)
        ones = np.ones((config.batch_size, config.seq_len), dtype=np.int64)
        return [TokenBatch(tokens[r].astype(np.int64), ones) for r in rows], rows
    rows = _batch_rows(snap, snap.n_documents, config)
    return [encode_fixed(tokenizer, read_texts(snap.path, r), config.seq_len) for r in rows], rows


def token_batches(registry: Registry, dataset: str, probe: str, snap: SnapshotRecord, layout: Layout) -> TokenBatchesRecord:
    """Sample and tokenize `n_batches` batches; one Parquet row per sequence."""
    config = registry.probe(probe)
    if snap.spec_fingerprint != digest(registry.dataset(dataset).to_dict()):
        raise StaleUpstreamError(
            f"dataset_snapshot of {dataset!r} was made from another registry entry than the registry now holds; "
            "re-materialize dataset_snapshot first; nothing was written"
        )
    batches, rows = draw_batches_with_rows(snap, config)
    sampling_fp = digest(snap.fingerprint, config.sampling_fields())
    out = layout.token_batches(dataset, sampling_fp)
    table = pa.table({
        "batch_index": pa.array(np.repeat(np.arange(len(batches)), config.batch_size), pa.int32()),
        "doc_index": pa.array(np.concatenate(rows).astype(np.int64), pa.int64()),
        "input_ids": pa.array([row.tolist() for b in batches for row in b.input_ids.astype(np.int32)], pa.list_(pa.int32())),
        "attention_mask": pa.array([row.tolist() for b in batches for row in b.attention_mask.astype(np.int8)], pa.list_(pa.int8())),
    })
    write_table_atomic(table, out)
    n_tokens = int(sum(b.n_tokens for b in batches))
    return TokenBatchesRecord(
        dataset=dataset, probe=probe, path=str(out), snapshot_fingerprint=snap.fingerprint,
        settings_fingerprint=config.settings_fingerprint(), batch_fingerprints=tuple(b.fingerprint() for b in batches),
        batch_size=config.batch_size, seq_len=config.seq_len, n_tokens=n_tokens,
        pad_fraction=1 - n_tokens / (len(batches) * config.batch_size * config.seq_len),
        snapshot_path=snap.path,
    )


class ArtifactError(RuntimeError):
    """A stored artifact cannot be read; the message names the file and what to re-materialize."""


def read_token_batches(path: str | Path) -> dict[int, TokenBatch]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"token batches {path} cannot be read ({exc}); re-materialize token_batches") from exc
    index = table.column("batch_index").to_numpy()
    ids = np.asarray(table.column("input_ids").to_pylist(), dtype=np.int64)
    mask = np.asarray(table.column("attention_mask").to_pylist(), dtype=np.int64)
    return {int(i): TokenBatch(ids[index == i], mask[index == i]) for i in np.unique(index)}


# ----------------------------------------------------------------------------- probe network


def pretrain_fingerprint(config: ProbeConfig) -> str:
    """Identity of a pretrained-here probe's recipe: its pretrain spec and tokenizer only, so
    changing how the probe is *used* (epochs, batch size, estimator) never retrains it."""
    return digest({"pretrain": config.extra.get("pretrain"), "tokenizer": config.tokenizer})


def probe_dir(layout: Layout, config: ProbeConfig) -> Path:
    return layout.probe_dir(pretrain_fingerprint(config))


def _pretrain_config(config: ProbeConfig):
    from divcoef_assets.core.pretrain import PretrainConfig

    spec = {k: v for k, v in config.extra.get("pretrain", {}).items() if k not in ("corpus", "max_documents")}
    return PretrainConfig(**spec)


def probe_network(registry: Registry, probe: str, layout: Layout, *, progress=None) -> ProbeRecord:
    """Pretrain the probe here when it declares `pretrain` (once per recipe); else describe it."""
    from divcoef_assets.core.pretrain import pretrain_probe
    from divcoef_assets.core.tokenize import usable_texts

    config = registry.probe(probe)
    if not config.model.startswith(PRETRAIN_PREFIX):
        return ProbeRecord(probe=probe, model=config.model, weights_fingerprint=weights_fingerprint(config),
                           settings_fingerprint=config.settings_fingerprint(), built_here=False)
    folder = probe_dir(layout, config)
    meta_path = folder / "pretrain.json"
    if not meta_path.exists():
        spec = config.extra["pretrain"]
        texts: list[str] = []
        for corpus in spec["corpus"]:
            kept = usable_texts(text for _, text in registry.iter_dataset_texts(corpus))
            texts += kept[: spec.get("max_documents") or None]
        tokenizer = load_tokenizer(config.tokenizer)
        pretrain_probe(texts, tokenizer, _pretrain_config(config), folder, corpus_fingerprint=texts_digest(texts), progress=progress)
    meta = json.loads(meta_path.read_text())
    resolved = resolve_model(config, layout)
    return ProbeRecord(probe=probe, model=str(folder), weights_fingerprint=weights_fingerprint(resolved),
                       settings_fingerprint=config.settings_fingerprint(), built_here=True,
                       final_loss=meta.get("final_loss"), seconds=meta.get("seconds"),
                       corpus_fingerprint=meta.get("corpus_fingerprint", ""))


def resolve_model(config: ProbeConfig, layout: Layout | None) -> ProbeConfig:
    """The config with a "pretrain:" model replaced by the folder probe_network wrote."""
    if not config.model.startswith(PRETRAIN_PREFIX):
        return config
    folder = probe_dir(layout, config) if layout is not None else None
    if folder is None or not (folder / "pretrain.json").exists():
        raise FileNotFoundError(
            f"probe {config.name!r} is pretrained here but {folder} does not exist yet: materialize "
            f"probe_network[{config.name}] first (divcoef audit does)"
        )
    return config.replace(model=str(folder), init="pretrained")


# ----------------------------------------------------------------------------- embeddings


def embed_batches(
    config: ProbeConfig, batches: dict[int, TokenBatch], layout: Layout | None, *, cache: EmbeddingCache,
    progress: ProgressCallback | None = None, label: str = "", probe_loader: Callable[[], Probe] | None = None,
    embedder: EmbedderFactory | None = None,
) -> tuple[list[BatchEmbedding], str]:
    """Embeddings of `batches` (and the noise repeats) through the content-addressed cache;
    returns them with the probe identity they were computed with. `embedder` computes the
    missing ones elsewhere (`ray_backend.RayEmbedder`); by default they are computed here."""
    resolved = resolve_model(config, layout)
    tokenizer = load_tokenizer(config.tokenizer)
    identity = probe_identity(resolved, tokenizer)
    loader = probe_loader or (lambda: load_probe_for(resolved, tokenizer))
    rows = audit_embeddings(config, lambda i: batches[i], loader, n_batches=min(config.n_batches, len(batches)),
                            probe_identity=identity, cache=cache, progress=progress, label=label,
                            embedder=embedder(resolved, identity) if embedder is not None else None)
    return rows, identity


def embeddings(
    registry: Registry, dataset: str, probe: str, batches: TokenBatchesRecord, layout: Layout,
    *, progress: ProgressCallback | None = None, probe_loader: Callable[[], Probe] | None = None,
    embedder: EmbedderFactory | None = None,
) -> EmbeddingsRecord:
    """Embed every batch (and the noise repeats), through the per-batch cache; the missing ones
    here, or by `embedder` (e.g. on a Ray cluster). Either way the cache and the embeddings file
    are written by this process."""
    config = registry.probe(probe)
    require_same_settings("token_batches", batches.settings_fingerprint, config, "task2vec_embeddings")
    tokens = read_token_batches(batches.path)
    rows, identity = embed_batches(config, tokens, layout, cache=layout.cache, progress=progress,
                                   label=f"{dataset}|{probe}", probe_loader=probe_loader, embedder=embedder)
    out = layout.embeddings(dataset, probe)
    write_table_atomic(embeddings_table(rows, batches.snapshot_fingerprint, batches.settings_fingerprint), out)
    computed = [r for r in rows if not r.cached]
    return EmbeddingsRecord(
        dataset=dataset, probe=probe, path=str(out), snapshot_fingerprint=batches.snapshot_fingerprint,
        settings_fingerprint=batches.settings_fingerprint, probe_identity=identity,
        estimator_fingerprint=config.estimator_fingerprint(), batches_fingerprint=batches_fingerprint(rows),
        n_embeddings=len(rows), n_computed=len(computed), n_cached=len(rows) - len(computed), dim=int(rows[0].vector.size),
        seconds_computed=float(sum(r.seconds_finetune + r.seconds_fisher for r in computed)),
        mean_seconds_per_embedding=float(np.mean([r.seconds_finetune + r.seconds_fisher for r in rows])),
        batches=batches,
    )


def batches_fingerprint(rows: list[BatchEmbedding]) -> str:
    """Digest of the content of the batches behind the repeat-0 embeddings, in batch order."""
    return digest([r.batch_fingerprint for r in sorted(rows, key=lambda r: r.batch_index) if r.repeat == 0])


def embeddings_table(rows: list[BatchEmbedding], snapshot_fingerprint: str, settings_fingerprint: str) -> pa.Table:
    return pa.table({
        "snapshot_fingerprint": [snapshot_fingerprint] * len(rows),
        "settings_fingerprint": [settings_fingerprint] * len(rows),
        "batch_index": pa.array([r.batch_index for r in rows], pa.int32()),
        "repeat": pa.array([r.repeat for r in rows], pa.int16()),
        "seed": pa.array([r.seed for r in rows], pa.int64()),
        "vector": pa.array([r.vector for r in rows], pa.list_(pa.float32())),
        "finetune_loss_first": [r.finetune_loss_first for r in rows],
        "finetune_loss_last": [r.finetune_loss_last for r in rows],
        "fisher_loss": [r.fisher_loss for r in rows],
        "seconds_finetune": [r.seconds_finetune for r in rows],
        "seconds_fisher": [r.seconds_fisher for r in rows],
        "n_scored_tokens": pa.array([r.n_scored_tokens for r in rows], pa.int64()),
        "key": [r.key for r in rows],
        "batch_fingerprint": [r.batch_fingerprint for r in rows],
        "cached": [r.cached for r in rows],
        # Where each embedding was computed (a cached one: where it was computed first).
        "worker_pid": pa.array([r.worker_pid for r in rows], pa.int64()),
        "node_id": [r.node_id for r in rows],
    })


def read_embedding_rows(path: str | Path) -> list[BatchEmbedding]:
    try:
        t = pq.read_table(path).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"embeddings {path} cannot be read ({exc}); re-materialize task2vec_embeddings") from exc
    return [
        BatchEmbedding(
            batch_index=t["batch_index"][k], repeat=t["repeat"][k], seed=t["seed"][k],
            vector=np.asarray(t["vector"][k], dtype=np.float32), finetune_loss_first=t["finetune_loss_first"][k],
            finetune_loss_last=t["finetune_loss_last"][k], fisher_loss=t["fisher_loss"][k],
            seconds_finetune=t["seconds_finetune"][k], seconds_fisher=t["seconds_fisher"][k],
            n_scored_tokens=t["n_scored_tokens"][k], layout="", key=t["key"][k],
            batch_fingerprint=t["batch_fingerprint"][k], cached=t["cached"][k],
            worker_pid=(t.get("worker_pid") or [0] * len(t["batch_index"]))[k] or 0,
            node_id=(t.get("node_id") or [""] * len(t["batch_index"]))[k] or "",
        )
        for k in range(len(t["batch_index"]))
    ]


# ----------------------------------------------------------------------------- distances, coefficient


def matrix_table(matrix: np.ndarray, **labels: str) -> pa.Table:
    i, j = np.indices(matrix.shape)
    columns: dict[str, object] = {k: [v] * matrix.size for k, v in labels.items()}
    columns.update(i=i.ravel().astype(np.int32), j=j.ravel().astype(np.int32), distance=matrix.ravel())
    return pa.table(columns)


def read_matrix(path: str | Path) -> np.ndarray:
    try:
        t = pq.read_table(path, columns=["i", "j", "distance"]).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"distances {path} cannot be read ({exc}); re-materialize distance_matrix") from exc
    out = np.zeros((max(t["i"]) + 1, max(t["j"]) + 1))
    out[t["i"], t["j"]] = t["distance"]
    return out


def recorded_embeddings(emb: EmbeddingsRecord) -> list[BatchEmbedding]:
    """The embeddings file of `emb`, refused if it no longer holds what the record describes
    (another run of the partition may have rewritten it since)."""
    rows = read_embedding_rows(emb.path)
    table = pq.read_table(emb.path, columns=["snapshot_fingerprint", "settings_fingerprint"]).to_pydict()
    if set(table["snapshot_fingerprint"]) != {emb.snapshot_fingerprint} or set(table["settings_fingerprint"]) != {emb.settings_fingerprint} \
            or batches_fingerprint(rows) != emb.batches_fingerprint:
        raise StaleUpstreamError(
            f"embeddings {emb.path} were rewritten since task2vec_embeddings of {emb.dataset!r} recorded them; "
            "re-materialize task2vec_embeddings and what follows; nothing was written"
        )
    return rows


def distance_matrix(registry: Registry, dataset: str, probe: str, emb: EmbeddingsRecord, layout: Layout) -> DistancesRecord:
    config = registry.probe(probe)
    require_same_settings("task2vec_embeddings", emb.settings_fingerprint, config, "distance_matrix")
    rows = sorted((r for r in recorded_embeddings(emb) if r.repeat == 0), key=lambda r: r.batch_index)
    matrix = pdist(np.stack([r.vector for r in rows]), metric=config.distance)
    out = write_table_atomic(matrix_table(matrix), layout.distances(dataset, probe))
    upper = matrix[np.triu_indices(len(rows), k=1)]
    return DistancesRecord(
        dataset=dataset, probe=probe, path=str(out), embeddings=emb, distance=config.distance, n_batches=len(rows),
        min=float(upper.min()) if upper.size else 0.0, max=float(upper.max()) if upper.size else 0.0,
    )


def coefficient(registry: Registry, dataset: str, probe: str, dist: DistancesRecord, *, code_version: str = "", run_id: str = "") -> CoefficientRecord:
    """The coefficient row, with everything it was computed from (settings, weights, batches)."""
    return coefficient_result(registry, dataset, probe, dist, code_version=code_version, run_id=run_id)[0]


def coefficient_result(
    registry: Registry, dataset: str, probe: str, dist: DistancesRecord, *, code_version: str = "", run_id: str = "",
) -> tuple[CoefficientRecord, DiversityResult]:
    """The coefficient row and the full result (matrix, embeddings, noise floor) behind it."""
    config = registry.probe(probe)
    emb = dist.embeddings
    require_same_settings("distance_matrix", emb.settings_fingerprint, config, "diversity_coefficient")
    result = summarize(config, recorded_embeddings(emb), emb.snapshot_fingerprint)
    stored = read_matrix(dist.path)
    if result.matrix.shape != stored.shape or not np.allclose(result.matrix, stored, rtol=0, atol=1e-12):
        raise StaleUpstreamError(
            f"distances {dist.path} do not belong to embeddings {emb.path}; re-materialize distance_matrix; nothing was recorded"
        )
    result = dataclasses.replace(result, probe_fingerprint=measurement_fingerprint(config, emb.probe_identity))
    estimate = result.estimate
    record = CoefficientRecord(
        dataset=dataset, probe=probe, snapshot_fingerprint=emb.snapshot_fingerprint,
        probe_fingerprint=measurement_fingerprint(config, emb.probe_identity), value=estimate.value,
        stderr=estimate.stderr, ci_low=estimate.ci_low, ci_high=estimate.ci_high,
        noise_floor=None if result.noise is None else result.noise.value,
        noise_floor_stderr=None if result.noise is None else result.noise.stderr,
        noise_corrected=result.noise_corrected, n_batches=estimate.n_batches, n_pairs=estimate.n_pairs,
        distance=config.distance, code_version=code_version, run_id=run_id,
        weights_fingerprint=emb.probe_identity, batches_fingerprint=emb.batches_fingerprint,
        estimator_fingerprint=emb.estimator_fingerprint, config_json=json.dumps(config.to_dict(), sort_keys=True, default=str),
    )
    return record, result


def measurement_fingerprint(config: ProbeConfig, identity: str) -> str:
    """The probe as measured: its settings and the weights it started from. A coefficient row is
    keyed by it, so a probe whose weights changed under the same name adds history."""
    return digest(config.fingerprint(), identity)


# ----------------------------------------------------------------------------- triage and baselines


def batch_documents(emb: EmbeddingsRecord, rows: list[BatchEmbedding] | tuple[BatchEmbedding, ...] | None = None,
                    *, texts: bool = True) -> BatchDocuments:
    """The documents of each embedded batch (repeat 0, in batch order): snapshot rows from the
    token batches file, the source of each batch, and (`texts`, text snapshots only) the texts.
    Refused when the token batches no longer hold what was embedded."""
    batches = emb.batches
    if batches is None or not batches.snapshot_path:
        raise StaleUpstreamError(
            f"task2vec_embeddings of {emb.dataset!r} was recorded before batches kept their document ids; "
            "re-materialize token_batches and what follows"
        )
    rows = sorted((r for r in (recorded_embeddings(emb) if rows is None else rows) if r.repeat == 0), key=lambda r: r.batch_index)
    try:
        table = pq.read_table(batches.path, columns=["batch_index", "doc_index"]).to_pydict()
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise ArtifactError(f"token batches {batches.path} hold no document ids ({exc}); re-materialize token_batches") from exc
    by_batch: dict[int, list[int]] = {}
    for i, doc in zip(table["batch_index"], table["doc_index"]):
        by_batch.setdefault(int(i), []).append(int(doc))
    for r in rows:
        if r.batch_index >= len(batches.batch_fingerprints) or batches.batch_fingerprints[r.batch_index] != r.batch_fingerprint \
                or r.batch_index not in by_batch:
            raise StaleUpstreamError(
                f"token batches {batches.path} do not hold batch {r.batch_index} as it was embedded; "
                "re-materialize token_batches and what follows"
            )
    docs = tuple(tuple(by_batch[r.batch_index]) for r in rows)
    path = Path(batches.snapshot_path)
    columns = pq.read_schema(path).names if path.suffix == ".parquet" else []
    if "source" in columns:
        sources = source_index(path)
        labels = tuple(batch_label([str(sources[d]) for d in ds]) for ds in docs)
    else:
        labels = (emb.dataset,) * len(docs)
    batch_texts = None
    if texts and "text" in columns:
        flat = read_texts(path, [d for ds in docs for d in ds])
        starts = np.cumsum([0] + [len(ds) for ds in docs])
        batch_texts = tuple(tuple(flat[starts[k]:starts[k + 1]]) for k in range(len(docs)))
    return BatchDocuments(doc_indices=docs, labels=labels, texts=batch_texts)


@dataclass(frozen=True)
class Extras:
    """What the coefficient step adds for people: the batches ranked by distance from the rest,
    and the baseline measures of the same batches."""

    documents: BatchDocuments
    outliers: tuple[BatchOutlier, ...]
    baselines: tuple[Baseline, ...]
    repeated: tuple[int, ...]  # batches embedded more than once (noise repeats)


def coefficient_extras(result: DiversityResult, emb: EmbeddingsRecord) -> Extras:
    """Triage and baselines of the batches behind `result` (the texts' measures for text
    snapshots, the Vendi score of the embeddings for every dataset)."""
    docs = batch_documents(emb, result.embeddings)
    outliers = rank_batches(result.matrix, docs)
    found = batch_baselines(docs.texts) if docs.texts is not None else ()
    found += embedding_baselines(main_vectors(result.embeddings))
    repeated = tuple(sorted({r.batch_index for r in result.embeddings if r.repeat > 0}))
    return Extras(documents=docs, outliers=outliers, baselines=found, repeated=repeated)


# ----------------------------------------------------------------------------- cross-diversity


def cross(registry: Registry, probe: str, layout: Layout, *, code_version: str = "", run_id: str = "") -> tuple[CrossRecord, pa.Table | None]:
    """Cross-diversity of every pair of registered datasets whose stored embeddings were made
    with the probe's current settings (built from them: nothing is embedded again). A dataset
    whose embeddings are missing, unreadable or stale is left out and named in `skipped`.
    Returns the record and the distance matrices (long format), which `record_cross` stores."""
    config = registry.probe(probe)
    resolved = resolve_model(config, layout)
    identity = probe_identity(resolved, load_tokenizer(config.tokenizer))
    estimator = config.estimator_fingerprint()
    rows: dict[str, list[BatchEmbedding]] = {}
    snapshots: dict[str, str] = {}
    skipped: list[str] = []
    for name in sorted(registry.datasets):
        path = layout.embeddings(name, probe)
        if not path.exists():
            continue
        try:
            table_rows = read_embedding_rows(path)
            columns = pq.read_table(path, columns=["snapshot_fingerprint", "settings_fingerprint"]).to_pydict()
            snapshots[name] = columns["snapshot_fingerprint"][0]
        except (ArtifactError, OSError, pa.ArrowException, IndexError, KeyError) as exc:
            skipped.append(f"{name}: unreadable embeddings ({exc})")
            continue
        if set(columns["settings_fingerprint"]) != {config.settings_fingerprint()} or any(
            not r.key or _key_mismatch(r, config, identity, estimator) for r in table_rows
        ):
            skipped.append(f"{name}: embeddings made with other probe settings or weights; re-materialize its audit")
            continue
        rows[name] = table_rows
    for reason in skipped:
        log.warning("cross_diversity[%s] leaves out %s", probe, reason)
    names = list(rows)
    pairs, tables = [], []
    measured = measurement_fingerprint(config, identity)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            result = cross_summarize(config, rows[a], rows[b])
            e = result.estimate
            pairs.append(CrossCoefficientRecord(
                dataset_a=a, dataset_b=b, probe=probe, snapshot_a=snapshots[a], snapshot_b=snapshots[b],
                probe_fingerprint=measured, value=e.value, stderr=e.stderr, ci_low=e.ci_low, ci_high=e.ci_high,
                n_batches_a=e.n_batches_a, n_batches_b=e.n_batches_b, n_pairs=e.n_pairs, distance=config.distance,
                code_version=code_version, run_id=run_id,
            ))
            tables.append(matrix_table(result.matrix, dataset_a=a, dataset_b=b))
    record = CrossRecord(probe=probe, path=str(layout.cross(probe)) if tables else "", pairs=tuple(pairs),
                         datasets=tuple(names), skipped=tuple(skipped))
    return record, pa.concat_tables(tables) if tables else None


def _key_mismatch(row: BatchEmbedding, config: ProbeConfig, identity: str, estimator: str) -> bool:
    from divcoef_assets.core.audit import embedding_key

    return row.key != embedding_key(batch=row.batch_fingerprint, probe=identity, estimator=estimator, seed=row.seed)


# ----------------------------------------------------------------------------- the whole chain


@dataclass(frozen=True)
class AuditOutcome:
    """What one pass through the per-dataset steps produced."""

    record: CoefficientRecord
    result: DiversityResult
    snapshot: SnapshotRecord
    distances: DistancesRecord


def audit_partition(
    registry: Registry, dataset: str, probe: str, layout: Layout, *, snap: SnapshotRecord | None = None,
    progress: ProgressCallback | None = None, probe_loader: Callable[[], Probe] | None = None,
) -> AuditOutcome:
    """Every per-dataset step in order, as the `audit` job runs them (the probe must be built).
    `snap` replaces the snapshot step (the API's pre-tokenized input)."""
    snap = snap or snapshot(registry, dataset, layout, probe)
    batches = token_batches(registry, dataset, probe, snap, layout)
    emb = embeddings(registry, dataset, probe, batches, layout, progress=progress, probe_loader=probe_loader)
    dist = distance_matrix(registry, dataset, probe, emb, layout)
    record, result = coefficient_result(registry, dataset, probe, dist)
    return AuditOutcome(record, result, snap, dist)


def token_snapshot(registry: Registry, dataset: str, input_ids: np.ndarray, attention_mask: np.ndarray, layout: Layout) -> SnapshotRecord:
    """A snapshot of pre-tokenized sequences ([n, >= seq_len] ids and mask), content-addressed."""
    ids = np.ascontiguousarray(input_ids, dtype=np.int64)
    mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
    TokenBatch(ids, mask)  # validates shapes, ids and mask values
    fingerprint = array_digest(ids, mask)
    path = layout.snapshot_dir(dataset) / f"{fingerprint}.parquet"
    write_table_atomic(pa.table({"input_ids": pa.array(list(ids), pa.list_(pa.int64())),
                                 "attention_mask": pa.array(list(mask.astype(np.int8)), pa.list_(pa.int8()))}), path)
    spec = registry.dataset(dataset)
    return SnapshotRecord(dataset=dataset, path=str(path), fingerprint=fingerprint, content_fingerprint=fingerprint,
                          n_documents=int(ids.shape[0]), source_type=spec.source_type, source_version=fingerprint,
                          spec_fingerprint=digest(spec.to_dict()), synthetic=False, tokens=True)


# ----------------------------------------------------------------------------- results store


def record_coefficient(store: ResultsStore, registry: Registry, record: CoefficientRecord, layout: Layout,
                       extras: Extras | None = None) -> list[str]:
    """Write the coefficient row (with its dataset and probe rows, and the baselines and batch
    outliers of `extras`) and refresh the Parquet views, in one transaction; returns the artifact
    files the views had to leave out."""
    spec = registry.dataset(record.dataset)
    store.ensure_schema()
    return store.record_coefficient(
        record, source_type=spec.source_type, description=spec.description, spec=spec.to_dict(),
        probe_config=registry.probe(record.probe).to_dict(), views=layout.parquet_views(),
        baselines=None if extras is None else extras.baselines, outliers=None if extras is None else extras.outliers,
    )


@dataclass(frozen=True)
class Neighbours:
    """Earlier measurements a new coefficient is checked against, every one `comparable` with it
    (same probe, settings and weights, estimator and distance): the dataset's previous snapshot,
    and the latest row of each registered bound dataset. `lower_name` and `upper_name` are the
    registered bound datasets (None when the registry has none), so a check can say which one has
    not been measured comparably yet."""

    previous: CoefficientRecord | None
    lower_name: str | None
    upper_name: str | None
    lower_bound: CoefficientRecord | None
    upper_bound: CoefficientRecord | None


def comparable(a: CoefficientRecord, b: CoefficientRecord) -> bool:
    """Whether two coefficient rows measure with the same instrument: probe name, probe settings
    and weights (`probe_fingerprint`), estimator and engine version (`estimator_fingerprint`,
    which a row without one never matches) and distance. Only such rows are compared."""
    return (a.probe == b.probe and a.probe_fingerprint == b.probe_fingerprint and a.distance == b.distance
            and bool(a.estimator_fingerprint) and a.estimator_fingerprint == b.estimator_fingerprint)


def bound_datasets(registry: Registry) -> dict[str, str]:
    """The first registered dataset of each synthetic bound kind: {"lower_bound": name, ...}."""
    names: dict[str, str] = {}
    for name, spec in registry.datasets.items():
        kind = getattr(spec.source, "kind", None)
        if kind in ("lower_bound", "upper_bound"):
            names.setdefault(kind, name)
    return names


def bounds_first(registry: Registry, names: list[str]) -> list[str]:
    """`names` with the bound datasets first, the others in their given order: audited in this
    order, every other dataset's bounds check has both references."""
    bounds = set(bound_datasets(registry).values())
    return sorted(names, key=lambda n: n not in bounds)


def neighbours(store: ResultsStore, registry: Registry, record: CoefficientRecord) -> Neighbours:
    return neighbours_of(store, record, bound_datasets(registry))


def neighbours_of(store: ResultsStore, record: CoefficientRecord, bounds: dict[str, str]) -> Neighbours:
    """`record`'s previous snapshot and the latest rows of the bound datasets `bounds`
    ({"lower_bound": name, "upper_bound": name}), all measured comparably."""
    same = [r for r in store.coefficients(probe=record.probe) if comparable(r, record)]

    def latest(rows: list[CoefficientRecord]) -> CoefficientRecord | None:
        return max(rows, key=lambda r: r.computed_at) if rows else None

    previous = latest([r for r in same if r.dataset == record.dataset and r.snapshot_fingerprint != record.snapshot_fingerprint])
    lower, upper = bounds.get("lower_bound"), bounds.get("upper_bound")
    return Neighbours(
        previous=previous, lower_name=lower, upper_name=upper,
        lower_bound=latest([r for r in same if r.dataset == lower]) if lower else None,
        upper_bound=latest([r for r in same if r.dataset == upper]) if upper else None,
    )


def record_cross(store: ResultsStore, record: CrossRecord, matrices: pa.Table | None, layout: Layout) -> list[str]:
    """Store the cross rows, then the matrices beside them: the Parquet file is written to a
    temporary name first and moved into place only once the rows are committed, so a failed
    commit leaves the previous file and rows as they were. The view is refreshed last; returns
    the files it had to leave out."""
    store.ensure_schema()
    out = layout.cross(record.probe)
    if matrices is None:
        out.unlink(missing_ok=True)  # no pair left: earlier matrices no longer describe the datasets
    else:
        with atomic_path(out) as pending:
            pq.write_table(matrices, pending)
            store.record_cross(record.pairs)
    files = sorted((layout.root / "cross").glob("probe=*/part.parquet"))
    return store.record_cross((), views={"cross_distances": files}) if files else []
