"""The audit's steps as plain functions over files: what each Dagster asset calls.

Each step reads its input artifact, writes its output atomically (temporary file, then rename)
and returns a small JSON-able record (paths, fingerprints, counts) that the asset passes on and
shows as metadata. Heavy arrays stay in Parquet under `Layout.root`:

    snapshots/<dataset>/<snapshot fp>.parquet          texts (or <fp>.json for synthetic specs)
    token_batches/<probe>/<dataset>/<snapshot fp>-<probe fp>.parquet
    embeddings/probe=<probe>/dataset=<dataset>/part.parquet        one row per embedding
    distances/probe=<probe>/dataset=<dataset>/part.parquet         long format (i, j, distance)
    cross/probe=<probe>/part.parquet                               long format, every dataset pair
    cache/embeddings/...                                           per-batch cache (core.cache)
    probes/<pretrain fp>/                                          probes pretrained here

Snapshots are content-addressed, so one file serves every probe. No Dagster imports here.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from divcoef_assets.core.audit import (
    ProgressCallback,
    audit_embeddings,
    cross_summarize,
    noise_from_rows,
)
from divcoef_assets.core.cache import BatchEmbedding, EmbeddingCache
from divcoef_assets.core.coefficient import diversity_from_matrix
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.distance import pdist
from divcoef_assets.core.probe import Probe, load_probe_for
from divcoef_assets.core.sampling import NotEnoughTextsError, batch_indices
from divcoef_assets.core.snapshot import (
    mixture_batch_indices,
    read_texts,
    source_index,
    synthetic_snapshot,
    write_snapshot,
)
from divcoef_assets.core.sources import MixtureSource, SourceError, SyntheticSource
from divcoef_assets.core.synthetic import default_token_ids, ginc_tokens, lower_bound_tokens, upper_bound_tokens
from divcoef_assets.core.tokenize import TextTokenizer, TokenBatch, encode_fixed, load_tokenizer
from divcoef_assets.keys import validate_key
from divcoef_assets.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where artifacts live under one root folder (keys validated: they become paths)."""

    root: Path

    def snapshot_dir(self, dataset: str) -> Path:
        return self.root / "snapshots" / validate_key(dataset, "dataset")

    def token_batches(self, dataset: str, probe: str, snapshot_fp: str, probe_fp: str) -> Path:
        return self.root / "token_batches" / validate_key(probe, "probe") / validate_key(dataset, "dataset") / f"{snapshot_fp}-{probe_fp}.parquet"

    def embeddings(self, dataset: str, probe: str) -> Path:
        return self.root / "embeddings" / f"probe={validate_key(probe, 'probe')}" / f"dataset={validate_key(dataset, 'dataset')}" / "part.parquet"

    def distances(self, dataset: str, probe: str) -> Path:
        return self.root / "distances" / f"probe={validate_key(probe, 'probe')}" / f"dataset={validate_key(dataset, 'dataset')}" / "part.parquet"

    def cross(self, probe: str) -> Path:
        return self.root / "cross" / f"probe={validate_key(probe, 'probe')}" / "part.parquet"

    @property
    def cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.root / "cache" / "embeddings")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- snapshot


def snapshot(registry: Registry, dataset: str, layout: Layout) -> dict[str, Any]:
    """Stream the dataset into a content-addressed snapshot; returns its record."""
    spec = registry.dataset(dataset)
    folder = layout.snapshot_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(spec.source, SyntheticSource):
        pending = folder / f".pending-{uuid.uuid4().hex}.json"
        info = synthetic_snapshot(spec.source, pending)
        final = folder / f"{info.fingerprint}.json"
        os.replace(pending, final)
        record = info.to_metadata()
        record.update(path=str(final), synthetic=True)
    else:
        pending = folder / f".pending-{uuid.uuid4().hex}.parquet"
        try:
            info = write_snapshot(registry.iter_dataset_texts(dataset), pending, name=f"dataset {dataset!r}")
        except SourceError as exc:
            pending.unlink(missing_ok=True)
            # The reader names the file and line; say which dataset it belongs to.
            raise type(exc)(f"dataset {dataset!r}: {exc}") from exc
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        final = folder / f"{info.fingerprint}.parquet"
        os.replace(pending, final)
        record = info.to_metadata()
        record.update(path=str(final), synthetic=False)
        if isinstance(spec.source, MixtureSource):
            # Two mixtures of the same components hold the same texts but draw different batches
            # (weights, mode): the fingerprint that keys batches and embeddings must say how.
            record["content_fingerprint"] = info.fingerprint
            record["fingerprint"] = _mixture_fingerprint(info.fingerprint, spec.source)
    record.update(dataset=dataset, source_type=spec.source_type, description=spec.description,
                  source_version=source_version(registry, dataset))
    return record


def _mixture_fingerprint(content_fp: str, source: MixtureSource) -> str:
    import hashlib
    import json

    payload = json.dumps({"content": content_fp, "weights": source.weight_map, "mode": source.mode}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def source_version(registry: Registry, dataset: str) -> str:
    """A cheap identity of the dataset's source, for deciding whether to re-snapshot.

    Files: names, sizes and modification times of the matched files; DuckDB: the database file's
    stat and the query; local Hugging Face folders: the stat of every file; synthetic: the spec;
    hub datasets cannot be checked cheaply, so their version is the spec (re-snapshot by hand);
    mixtures: their components' versions.
    """
    import glob
    import hashlib
    import json

    from divcoef_assets.core.sources import DuckDBSource, FilesSource, HuggingFaceSource, source_to_dict

    spec = registry.dataset(dataset).source
    parts: list[Any] = [source_to_dict(spec)]
    base = registry.base_dir

    def stat(path: Path) -> list[Any]:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]

    if isinstance(spec, FilesSource):
        pattern = spec.path if os.path.isabs(spec.path) else str(base / spec.path)
        parts += [stat(Path(p)) for p in sorted(glob.glob(pattern))]
    elif isinstance(spec, DuckDBSource):
        db = Path(spec.database) if os.path.isabs(spec.database) else base / spec.database
        parts += [stat(db)] if db.exists() else ["missing"]
    elif isinstance(spec, HuggingFaceSource):
        folder = Path(spec.path) if os.path.isabs(spec.path) else base / spec.path
        if folder.is_dir():
            parts += [stat(p) for p in sorted(folder.rglob("*")) if p.is_file()]
    elif isinstance(spec, MixtureSource):
        parts += [source_version(registry, c) for c in spec.components]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- token batches


def _synthetic_tokens(source: SyntheticSource, tokenizer: TextTokenizer, seq_len: int) -> np.ndarray:
    common = dict(vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id, seed=source.seed)
    if source.kind == "lower_bound":
        return lower_bound_tokens(source.n_sequences, seq_len, **common)
    if source.kind == "upper_bound":
        return upper_bound_tokens(source.n_sequences, seq_len, **common)
    ids = default_token_ids(source.vocab_size, tokenizer_vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id, seed=source.seed)
    return ginc_tokens(
        source.n_sequences, seq_len, n_concepts=source.n_concepts, vocab_size=source.vocab_size,
        n_states=source.n_states, seed=source.seed, token_ids=ids,
    )


def _batch_rows(registry: Registry, dataset: str, snap: Mapping[str, Any], config: ProbeConfig) -> Callable[[int], np.ndarray]:
    spec = registry.dataset(dataset)
    if isinstance(spec.source, MixtureSource):
        sources = source_index(snap["path"])
        weights = spec.source.weight_map
        return lambda i: mixture_batch_indices(sources, weights, spec.source.mode, config.batch_size, i, config.seed)
    n = int(snap["n_documents"])
    if n < config.batch_size:
        raise NotEnoughTextsError(
            f"dataset {dataset!r}: {n} usable documents, but one batch of probe {config.name!r} needs "
            f"batch_size={config.batch_size}; lower batch_size or add documents"
        )
    return lambda i: batch_indices(n, config.batch_size, i, config.seed)


def token_batches(registry: Registry, dataset: str, probe: str, snap: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Sample and tokenize `n_batches` batches; one Parquet row per sequence."""
    config = registry.probe(probe)
    tokenizer = load_tokenizer(config.tokenizer)
    out = layout.token_batches(dataset, probe, snap["fingerprint"], config.fingerprint())
    if snap.get("synthetic"):
        spec = registry.dataset(dataset).source
        all_tokens = _synthetic_tokens(spec, tokenizer, config.seq_len)
        rows_of = _batch_rows_for_count(dataset, all_tokens.shape[0], config)
        batches = [TokenBatch(all_tokens[rows_of(i)], np.ones((config.batch_size, config.seq_len), dtype=np.int64)) for i in range(config.n_batches)]
    else:
        rows_of = _batch_rows(registry, dataset, snap, config)
        batches = [encode_fixed(tokenizer, read_texts(snap["path"], rows_of(i)), config.seq_len) for i in range(config.n_batches)]
    table = pa.table({
        "batch_index": pa.array(np.repeat(np.arange(len(batches)), config.batch_size), pa.int32()),
        "input_ids": pa.array([row.tolist() for b in batches for row in b.input_ids.astype(np.int32)], pa.list_(pa.int32())),
        "attention_mask": pa.array([row.tolist() for b in batches for row in b.attention_mask.astype(np.int8)], pa.list_(pa.int8())),
    })
    write_table_atomic(table, out)
    n_tokens = int(sum(b.n_tokens for b in batches))
    return {
        "path": str(out), "dataset": dataset, "probe": probe, "snapshot_fingerprint": snap["fingerprint"],
        "probe_fingerprint": config.fingerprint(), "n_batches": len(batches), "batch_size": config.batch_size,
        "seq_len": config.seq_len, "n_tokens": n_tokens, "pad_fraction": 1 - n_tokens / (len(batches) * config.batch_size * config.seq_len),
    }


def _batch_rows_for_count(dataset: str, n: int, config: ProbeConfig) -> Callable[[int], np.ndarray]:
    if n < config.batch_size:
        raise NotEnoughTextsError(f"dataset {dataset!r}: {n} sequences, fewer than batch_size={config.batch_size}")
    return lambda i: batch_indices(n, config.batch_size, i, config.seed)


def read_token_batches(path: str | Path) -> dict[int, TokenBatch]:
    table = pq.read_table(path)
    index = table.column("batch_index").to_numpy()
    ids = np.asarray(table.column("input_ids").to_pylist(), dtype=np.int64)
    mask = np.asarray(table.column("attention_mask").to_pylist(), dtype=np.int64)
    return {int(i): TokenBatch(ids[index == i], mask[index == i]) for i in np.unique(index)}


# ----------------------------------------------------------------------------- probe network


PRETRAIN_PREFIX = "pretrain:"


def pretrain_config(config: ProbeConfig):
    from divcoef_assets.core.pretrain import PretrainConfig

    spec = {k: v for k, v in config.extra.get("pretrain", {}).items() if k not in ("corpus", "max_documents")}
    return PretrainConfig(**spec)


def pretrain_fingerprint(config: ProbeConfig) -> str:
    """Identity of a pretrained-here probe's weights: its pretrain spec and tokenizer only, so
    changing how the probe is *used* (epochs, batch size, estimator) never retrains it."""
    import hashlib
    import json

    payload = json.dumps({"pretrain": config.extra.get("pretrain"), "tokenizer": config.tokenizer}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def probe_dir(layout: Layout, config: ProbeConfig) -> Path:
    """Folder of a pretrained-here probe, named by the pretrain fingerprint (shared across probe
    names and usage settings that pretrain identically)."""
    return layout.root / "probes" / pretrain_fingerprint(config)


def probe_network(registry: Registry, probe: str, layout: Layout, *, progress=None) -> dict[str, Any]:
    """Pretrain the probe here when it declares `pretrain` (once per config); else describe it."""
    import json

    from divcoef_assets.api import texts_fingerprint
    from divcoef_assets.core.pretrain import pretrain_probe
    from divcoef_assets.core.tokenize import usable_texts

    config = registry.probe(probe)
    if not config.model.startswith(PRETRAIN_PREFIX):
        return {"probe": probe, "model": config.model, "init": config.init, "built_here": False, "probe_fingerprint": config.fingerprint()}
    folder = probe_dir(layout, config)
    meta_path = folder / "pretrain.json"
    if not meta_path.exists():
        spec = config.extra["pretrain"]
        texts: list[str] = []
        for corpus in spec["corpus"]:
            kept = usable_texts(text for _, text in registry.iter_dataset_texts(corpus))
            texts += kept[: spec.get("max_documents") or None]
        tokenizer = load_tokenizer(config.tokenizer)
        pretrain_probe(texts, tokenizer, pretrain_config(config), folder, corpus_fingerprint=texts_fingerprint(texts), progress=progress)
    meta = json.loads(meta_path.read_text())
    return {"probe": probe, "model": str(folder), "built_here": True, "probe_fingerprint": config.fingerprint(),
            "pretrain_fingerprint": pretrain_fingerprint(config), **meta}


def resolve_model(config: ProbeConfig, layout: Layout) -> ProbeConfig:
    """The config with a "pretrain:" model replaced by the folder probe_network wrote."""
    if not config.model.startswith(PRETRAIN_PREFIX):
        return config
    folder = probe_dir(layout, config)
    if not (folder / "pretrain.json").exists():
        raise FileNotFoundError(
            f"probe {config.name!r} is pretrained here but {folder} does not exist yet: materialize "
            f"probe_network[{config.name}] first (divcoef audit does)"
        )
    return config.replace(model=str(folder), init="pretrained")


# ----------------------------------------------------------------------------- embeddings


def probe_loader_for(config: ProbeConfig, layout: Layout | None = None) -> Callable[[], Probe]:
    def load() -> Probe:
        resolved = resolve_model(config, layout) if layout is not None else config
        return load_probe_for(resolved, load_tokenizer(config.tokenizer))

    return load


def embeddings(
    registry: Registry, dataset: str, probe: str, batches: Mapping[str, Any], layout: Layout,
    *, progress: ProgressCallback | None = None, probe_loader: Callable[[], Probe] | None = None,
) -> dict[str, Any]:
    """Embed every batch (and the noise repeats), through the per-batch cache."""
    config = registry.probe(probe)
    token = read_token_batches(batches["path"])
    common = dict(data_fingerprint=batches["snapshot_fingerprint"], cache=layout.cache, progress=progress, label=f"{dataset}|{probe}")
    loader = probe_loader or probe_loader_for(config, layout)
    rows = audit_embeddings(config, lambda i: token[i], loader, n_batches=len(token), **common)
    out = layout.embeddings(dataset, probe)
    write_table_atomic(embeddings_table(rows, batches["snapshot_fingerprint"]), out)
    computed = [r for r in rows if not r.cached]
    return {
        "path": str(out), "dataset": dataset, "probe": probe, "snapshot_fingerprint": batches["snapshot_fingerprint"],
        "probe_fingerprint": config.fingerprint(), "n_embeddings": len(rows), "n_computed": len(computed),
        "n_cached": len(rows) - len(computed), "dim": int(rows[0].vector.size),
        "seconds_computed": float(sum(r.seconds_finetune + r.seconds_fisher for r in computed)),
        "mean_seconds_per_embedding": float(np.mean([r.seconds_finetune + r.seconds_fisher for r in rows])),
        "fisher_loss_mean": float(np.mean([r.fisher_loss for r in rows])),
    }


def embeddings_table(rows: list[BatchEmbedding], snapshot_fingerprint: str) -> pa.Table:
    return pa.table({
        "snapshot_fingerprint": [snapshot_fingerprint] * len(rows),
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
        "cached": [r.cached for r in rows],
    })


def read_embedding_rows(path: str | Path) -> list[BatchEmbedding]:
    t = pq.read_table(path).to_pydict()
    return [
        BatchEmbedding(
            batch_index=t["batch_index"][k], repeat=t["repeat"][k], seed=t["seed"][k],
            vector=np.asarray(t["vector"][k], dtype=np.float32), finetune_loss_first=t["finetune_loss_first"][k],
            finetune_loss_last=t["finetune_loss_last"][k], fisher_loss=t["fisher_loss"][k],
            seconds_finetune=t["seconds_finetune"][k], seconds_fisher=t["seconds_fisher"][k],
            n_scored_tokens=t["n_scored_tokens"][k], layout="", cached=t["cached"][k],
        )
        for k in range(len(t["batch_index"]))
    ]


# ----------------------------------------------------------------------------- distances, coefficient


def matrix_table(matrix: np.ndarray, **labels: Any) -> pa.Table:
    i, j = np.indices(matrix.shape)
    columns = {k: [v] * matrix.size for k, v in labels.items()}
    columns.update(i=i.ravel().astype(np.int32), j=j.ravel().astype(np.int32), distance=matrix.ravel())
    return pa.table(columns)


def read_matrix(path: str | Path) -> np.ndarray:
    t = pq.read_table(path, columns=["i", "j", "distance"]).to_pydict()
    n = max(t["i"]) + 1
    m = max(t["j"]) + 1
    out = np.zeros((n, m))
    out[t["i"], t["j"]] = t["distance"]
    return out


def distance_matrix(registry: Registry, dataset: str, probe: str, emb: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    config = registry.probe(probe)
    rows = [r for r in read_embedding_rows(emb["path"]) if r.repeat == 0]
    rows.sort(key=lambda r: r.batch_index)
    matrix = pdist(np.stack([r.vector for r in rows]), metric=config.distance)
    out = layout.distances(dataset, probe)
    write_table_atomic(matrix_table(matrix), out)
    upper = matrix[np.triu_indices(len(rows), k=1)]
    return {
        "path": str(out), "dataset": dataset, "probe": probe, "snapshot_fingerprint": emb["snapshot_fingerprint"],
        "distance": config.distance, "n_batches": len(rows), "min": float(upper.min()) if upper.size else 0.0,
        "max": float(upper.max()) if upper.size else 0.0, "embeddings_path": emb["path"],
    }


def coefficient(registry: Registry, dataset: str, probe: str, dist: Mapping[str, Any]) -> dict[str, Any]:
    config = registry.probe(probe)
    estimate = diversity_from_matrix(read_matrix(dist["path"]))
    noise = noise_from_rows(read_embedding_rows(dist["embeddings_path"]), config.distance)
    return {
        "dataset": dataset, "probe": probe, "snapshot_fingerprint": dist["snapshot_fingerprint"],
        "probe_fingerprint": config.fingerprint(), **estimate.to_dict(),
        "noise_floor": None if noise is None else noise.value,
        "noise_floor_stderr": None if noise is None else noise.stderr,
        "noise_corrected": None if noise is None else estimate.value - noise.value,
        "distance": config.distance,
    }


def snapshot_of(path: str | Path) -> str:
    column = pq.read_table(path, columns=["snapshot_fingerprint"]).column(0)
    return column[0].as_py() if len(column) else ""


def cross(registry: Registry, probe: str, layout: Layout) -> dict[str, Any]:
    """Cross-diversity of every pair of registered datasets whose embeddings exist for `probe`
    (built from the stored embeddings: nothing is embedded again)."""
    config = registry.probe(probe)
    paths = {name: layout.embeddings(name, probe) for name in sorted(registry.datasets)}
    paths = {name: path for name, path in paths.items() if path.exists()}
    rows = {name: read_embedding_rows(path) for name, path in paths.items()}
    snapshots = {name: snapshot_of(path) for name, path in paths.items()}
    names = list(rows)
    pairs, tables = [], []
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            result = cross_summarize(config, rows[a], rows[b])
            pairs.append({"dataset_a": a, "dataset_b": b, "snapshot_a": snapshots[a], "snapshot_b": snapshots[b], **result.estimate.to_dict()})
            tables.append(matrix_table(result.matrix, dataset_a=a, dataset_b=b))
    out = layout.cross(probe)
    if tables:
        write_table_atomic(pa.concat_tables(tables), out)
    return {"probe": probe, "probe_fingerprint": config.fingerprint(), "distance": config.distance,
            "path": str(out) if tables else None, "pairs": pairs, "datasets": names}
