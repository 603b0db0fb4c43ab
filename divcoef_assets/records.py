"""Typed, frozen records that the audit steps hand each other (and the Dagster IO manager stores).

Each step of `pipeline` returns one of these; the next step takes it as its input. Heavy arrays
stay in the Parquet file a record points to; the record holds the path, the fingerprints that say
what the artifact was computed from, and a few counts for metadata. Every record carries the
`settings_fingerprint` of the probe settings it was made with, so a step can tell when the
registry changed under it (`pipeline.StaleUpstreamError`).

`to_json` / `from_json` are the one serializer: a record becomes `{"type": ..., "fields": ...}`
and comes back as the same class, with tuples restored. No pickle.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

from divcoef_assets.storage import CoefficientRecord, CrossCoefficientRecord


@dataclass(frozen=True)
class SnapshotRecord:
    """dataset_snapshot: the documents an audit samples from."""

    dataset: str
    path: str
    fingerprint: str  # what batches are drawn from: content, plus weights and mode for a mixture
    content_fingerprint: str  # the documents alone
    n_documents: int
    source_type: str
    source_version: str  # of the source as read (taken before reading and checked after)
    spec_fingerprint: str  # the registry entry the snapshot was made from
    synthetic: bool  # token ids generated from a spec (core.synthetic)
    tokens: bool = False  # pre-tokenized sequences (ids and mask) given to the API
    description: str = ""
    n_chars: int = 0
    source_counts: tuple[tuple[str, int], ...] = ()  # documents per source (mixture component)
    mixture_weights: tuple[tuple[str, float], ...] = ()
    mixture_mode: str = ""
    # Sample pools (text sources): the snapshot holds the documents with the smallest keys under
    # `sample_seed` (core.sampler), as many as the probe's batches need.
    pool: bool = False  # a sample pool (every text snapshot since pools; False: an earlier full copy)
    sample_seed: int = 0
    n_source_documents: int = 0  # usable documents in the source: exact when counts_exact, else estimated
    n_read: int = 0  # documents whose text was read to draw the pool
    n_dropped_empty: int = 0  # of those, empty or whitespace-only (dropped)
    counts_exact: bool = True
    complete_sources: tuple[str, ...] = ()  # sources whose every usable document is in the snapshot


@dataclass(frozen=True)
class PoolRecord:
    """The largest sample pool drawn so far from one text dataset under one seed (its index file).

    A later snapshot of the same source version takes its documents from `path` without reading
    the source; a larger need draws a larger pool, whose first `n_documents` must equal these."""

    dataset: str
    spec_fingerprint: str
    source_version: str
    seed: int
    path: str  # a pool snapshot (core.snapshot.write_pool) holding the whole pool
    fingerprint: str
    n_documents: int
    complete: bool  # every usable document of the source is in the pool
    n_records: int
    n_read: int
    n_empty_read: int
    exact: bool


@dataclass(frozen=True)
class ProbeRecord:
    """probe_network: the network every embedding of a probe starts from."""

    probe: str
    model: str  # what loads: a folder or a hub id
    weights_fingerprint: str
    settings_fingerprint: str
    built_here: bool
    final_loss: float | None = None
    seconds: float | None = None
    corpus_fingerprint: str = ""


@dataclass(frozen=True)
class TokenBatchesRecord:
    """token_batches: batch i drawn with rng(seed, i), tokenized and padded."""

    dataset: str
    probe: str
    path: str
    snapshot_fingerprint: str
    settings_fingerprint: str
    batch_fingerprints: tuple[str, ...]  # content (ids and mask) of each batch
    batch_size: int
    seq_len: int
    n_tokens: int
    pad_fraction: float
    # The snapshot the batches were drawn from; its rows are the `doc_index` column of the batches
    # file (empty for records written before that column existed).
    snapshot_path: str = ""


@dataclass(frozen=True)
class EmbeddingsRecord:
    """task2vec_embeddings: one embedding per batch plus the noise repeats."""

    dataset: str
    probe: str
    path: str
    snapshot_fingerprint: str
    settings_fingerprint: str
    probe_identity: str  # weights and special ids
    estimator_fingerprint: str
    batches_fingerprint: str  # digest of the batch fingerprints used, in order
    n_embeddings: int
    n_computed: int
    n_cached: int
    dim: int
    seconds_computed: float
    mean_seconds_per_embedding: float
    batches: TokenBatchesRecord | None = None  # what was embedded: batch -> documents


@dataclass(frozen=True)
class DistancesRecord:
    """distance_matrix: pairwise distances of the batch embeddings."""

    dataset: str
    probe: str
    path: str
    embeddings: EmbeddingsRecord
    distance: str
    n_batches: int
    min: float
    max: float


@dataclass(frozen=True)
class CrossRecord:
    """cross_diversity: every pair of datasets audited with one probe."""

    probe: str
    path: str
    pairs: tuple[CrossCoefficientRecord, ...]
    datasets: tuple[str, ...]
    skipped: tuple[str, ...]  # datasets left out, each with the reason


@dataclass(frozen=True)
class LeaderboardRow:
    """One dataset on a probe's leaderboard (`core.leaderboard`)."""

    probe: str
    dataset: str
    kind: str  # "corpus", or the calibration kind: lower_bound, upper_bound, ginc, mixture
    rank: int  # within its block (real corpora, or calibration sets), most diverse first
    value: float
    ci_low: float
    ci_high: float
    group: int  # tied group of a real corpus (1 = leading); 0 for calibration sets
    tied_with: tuple[str, ...]
    position: float | None  # between the lower (0) and upper (1) bound datasets


@dataclass(frozen=True)
class LeaderboardRecord:
    """leaderboard: every probe's ranking, each over the datasets measured with its newest settings."""

    probes: tuple[tuple[str, str], ...]  # (probe, probe fingerprint)
    rows: tuple[LeaderboardRow, ...]


RECORD_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (SnapshotRecord, PoolRecord, ProbeRecord, TokenBatchesRecord, EmbeddingsRecord, DistancesRecord, CrossRecord,
                CoefficientRecord, CrossCoefficientRecord, LeaderboardRow, LeaderboardRecord)
}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, "fields": {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if hasattr(value, "isoformat"):
        return {"datetime": value.isoformat()}
    return value


def _decode(value: Any, hint: Any) -> Any:
    if isinstance(value, dict) and "type" in value and "fields" in value:
        cls = RECORD_TYPES[value["type"]]
        hints = typing.get_type_hints(cls)
        return cls(**{name: _decode(v, hints.get(name)) for name, v in value["fields"].items()})
    if isinstance(value, dict) and set(value) == {"datetime"}:
        from datetime import datetime

        return datetime.fromisoformat(value["datetime"])
    if isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_decode(v, inner) for v in value)
    return value


def to_json(record: Any) -> str:
    """A record as JSON that `from_json` turns back into an equal record."""
    if type(record).__name__ not in RECORD_TYPES:
        raise TypeError(f"not an audit record: {type(record).__name__}")
    return json.dumps(_encode(record), indent=2, sort_keys=True)


def from_json(text: str) -> Any:
    data = json.loads(text)
    if not (isinstance(data, dict) and data.get("type") in RECORD_TYPES):
        raise ValueError(f"not an audit record: {str(data)[:80]!r}")
    return _decode(data, None)
