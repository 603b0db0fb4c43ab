"""Dataset snapshots: the documents an audit samples from, frozen in one Parquet file.

A coefficient is only reproducible if the documents it was computed on are, so every audit reads
a snapshot rather than the live source. A text snapshot is a *sample pool* (`core.sampler`): the
documents with the smallest seeded keys, as many as the probe's batches need, written by
`write_pool` with columns

    doc_index  int64         0..n-1, the pool's order (smallest key first)
    source     string        the dataset (or mixture component) the document came from
    text       large_string  the document, unmodified
    origin     string        where it is in the source: "<file> line 12", "<file> row 3"
    key        uint64        its seeded key

The content fingerprint is sha256 over every (source, text) pair in pool order, with length
framing, so no two different sequences of documents share a digest; its first 16 hex digits name
the snapshot in cache keys and in the results store. The fingerprint and counts are also kept in
the file's footer (key `divcoef.snapshot`, JSON), readable with any Parquet tool without scanning
the rows. Files are written beside their destination and moved into place atomically
(`core.atomic`), so a crash never leaves a half-written snapshot.

`write_snapshot` streams a whole corpus into the same layout (without origin and key): it was the
snapshot before sample pools, and `benchmarks/corpus_scale.py` measures it as the baseline.
Sampling helpers live here too: `read_texts` fetches selected rows by row group, and `source_index`
gives every row's component.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from divcoef_assets.core.atomic import atomic_path, write_text_atomic
from divcoef_assets.core.fingerprint import digest
from divcoef_assets.core.sources import SyntheticSource, source_to_dict

logger = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = pa.schema([("doc_index", pa.int64()), ("source", pa.string()), ("text", pa.large_string())])
# Flush a row group early once its texts reach this many characters, whatever `chunk_rows` says.
_MAX_CHUNK_CHARS = 64 * 1024 * 1024
_FINGERPRINT_TAG = b"divcoef-snapshot-v1\x00"
_POOL_TAG = b"divcoef-pool-snapshot-v2\x00"
POOL_SCHEMA = pa.schema([("doc_index", pa.int64()), ("source", pa.string()), ("text", pa.large_string()),
                         ("origin", pa.string()), ("key", pa.uint64())])
_SYNTHETIC_TAG = "divcoef-synthetic-v1"
_META_KEY = b"divcoef.snapshot"


class EmptySnapshotError(ValueError):
    """A source yielded no usable document: there is nothing to measure."""


class CorruptSnapshotError(ValueError):
    """A snapshot file cannot be read (truncated, overwritten, not Parquet); re-materialize it."""


def _unreadable(path: Path, exc: BaseException) -> CorruptSnapshotError:
    detail = " ".join(str(exc).split())
    return CorruptSnapshotError(
        f"snapshot {path} cannot be read: it is truncated or corrupt ({type(exc).__name__}: {detail}); "
        "re-materialize the dataset_snapshot asset for this dataset to write it again"
    )


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot holds; `fingerprint` identifies its content."""

    path: Path
    fingerprint: str  # first 16 hex digits of the content sha256
    n_documents: int  # usable documents written
    n_dropped_empty: int  # None, empty or whitespace-only documents dropped
    n_chars: int  # characters over the usable documents
    source_counts: Mapping[str, int] = field(default_factory=dict)  # documents per source, first-seen order
    n_row_groups: int = 0

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata and the Parquet footer."""
        return {
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "n_documents": self.n_documents,
            "n_dropped_empty": self.n_dropped_empty,
            "n_chars": self.n_chars,
            "source_counts": dict(self.source_counts),
            "n_row_groups": self.n_row_groups,
        }


@dataclass(frozen=True)
class SyntheticSnapshotInfo:
    """The snapshot of a synthetic source is its spec: the generator is deterministic in it."""

    fingerprint: str
    kind: str
    n_documents: int  # sequences the generator will produce
    params: Mapping[str, Any]
    path: Path | None = None  # the JSON record of the spec, when one was written

    def to_metadata(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "n_documents": self.n_documents,
            "params": dict(self.params),
        }


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def write_snapshot(
    texts: Iterable[tuple[str, str | None]],
    out_path: str | Path,
    *,
    chunk_rows: int = 8192,
    name: str | None = None,
) -> SnapshotInfo:
    """Stream (source, text) pairs into a Parquet snapshot at `out_path`; return what it holds.

    Raises `EmptySnapshotError` (and writes nothing) when no document is usable, and `TypeError`
    naming the position when a pair is not (non-empty str, str or None); `ValueError` naming the
    position and character when a text holds a lone surrogate. `name` says what is
    being snapshotted in error messages (default: the file name of `out_path`).
    """
    if not isinstance(chunk_rows, int) or chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    out_path = Path(out_path)
    content = hashlib.sha256(_FINGERPRINT_TAG)
    counts: dict[str, int] = {}
    n_documents = n_dropped = n_chars = n_row_groups = 0
    sources: list[str] = []
    bodies: list[str] = []
    chunk_chars = 0

    def flush(writer: pq.ParquetWriter) -> None:
        nonlocal sources, bodies, chunk_chars, n_row_groups
        start = n_documents - len(bodies)
        table = pa.table(
            [
                pa.array(np.arange(start, n_documents, dtype=np.int64)),
                pa.array(sources, pa.string()),
                pa.array(bodies, pa.large_string()),
            ],
            schema=SNAPSHOT_SCHEMA,
        )
        writer.write_table(table, row_group_size=len(bodies))
        n_row_groups += 1
        sources, bodies, chunk_chars = [], [], 0

    with atomic_path(out_path) as temp_path:
        with pq.ParquetWriter(temp_path, SNAPSHOT_SCHEMA, compression="zstd") as writer:
            for position, pair in enumerate(texts):
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise TypeError(
                        f"item {position} of the snapshot input is {pair!r}, expected (source, text)"
                    )
                source, text = pair
                if not isinstance(source, str) or not source:
                    raise TypeError(f"item {position}: source must be a non-empty string, got {source!r}")
                if text is None or (isinstance(text, str) and not text.strip()):
                    n_dropped += 1
                    continue
                if not isinstance(text, str):
                    raise TypeError(
                        f"item {position} (source {source!r}): text is a {type(text).__name__}, not a string"
                    )
                try:
                    encoded = text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(
                        f"item {position} (source {source!r}): the text holds a lone surrogate at "
                        f"character {exc.start}, which UTF-8 cannot store; fix the record"
                    ) from None
                content.update(_frame(source.encode("utf-8")))
                content.update(_frame(encoded))
                counts[source] = counts.get(source, 0) + 1
                n_documents += 1
                n_chars += len(text)
                sources.append(source)
                bodies.append(text)
                chunk_chars += len(text)
                if len(bodies) >= chunk_rows or chunk_chars >= _MAX_CHUNK_CHARS:
                    flush(writer)
            if bodies:
                flush(writer)
            if n_documents == 0:
                raise EmptySnapshotError(
                    f"no usable document for {name or out_path.name}: {n_dropped} empty or blank document(s) and "
                    "nothing else; check the source's path and text_column"
                )
            info = SnapshotInfo(
                path=out_path,
                fingerprint=content.hexdigest()[:16],
                n_documents=n_documents,
                n_dropped_empty=n_dropped,
                n_chars=n_chars,
                source_counts=MappingProxyType(counts),
                n_row_groups=n_row_groups,
            )
            footer = info.to_metadata()
            footer.pop("path")
            writer.add_key_value_metadata({_META_KEY: json.dumps(footer).encode()})
    logger.info(
        "snapshot %s: %d documents (%d empty dropped), %d chars, fingerprint %s",
        out_path,
        n_documents,
        n_dropped,
        n_chars,
        info.fingerprint,
    )
    return info


def read_texts(path: str | Path, doc_indices: Sequence[int] | np.ndarray) -> list[str]:
    """The texts of rows `doc_indices`, in the order requested (repeats allowed).

    Only the row groups that hold a requested row are read, one at a time, and only their `text`
    column: a batch of 512 from a large snapshot touches at most 512 row groups. A file that cannot
    be read raises `CorruptSnapshotError` naming it.
    """
    path = Path(path)
    wanted = np.asarray(doc_indices, dtype=np.int64).reshape(-1)
    if wanted.size == 0:
        return []
    try:
        return _read_texts(path, wanted)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _unreadable(path, exc) from exc


def _read_texts(path: Path, wanted: np.ndarray) -> list[str]:
    with pq.ParquetFile(path) as parquet:
        metadata = parquet.metadata
        n_rows = metadata.num_rows
        if wanted.min() < 0 or wanted.max() >= n_rows:
            bad = wanted[(wanted < 0) | (wanted >= n_rows)][0]
            raise IndexError(
                f"{path}: document index {int(bad)} is out of range (the snapshot has {n_rows} rows)"
            )
        # starts[g] = first row of row group g
        starts = np.cumsum([0] + [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
        unique = np.unique(wanted)
        groups = np.searchsorted(starts, unique, side="right") - 1
        found: dict[int, str] = {}
        for group in np.unique(groups):
            rows = unique[groups == group]
            column = parquet.read_row_group(int(group), columns=["text"]).column("text")
            for row, text in zip(rows, column.take(pa.array(rows - starts[group])).to_pylist()):
                found[int(row)] = text
    return [found[int(i)] for i in wanted]


def source_index(path: str | Path) -> np.ndarray:
    """The `source` of every row, as an array of str aligned with doc_index.

    A file that cannot be read raises `CorruptSnapshotError` naming it."""
    path = Path(path)
    try:
        table = pq.read_table(path, columns=["source"])
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _unreadable(path, exc) from exc
    return np.asarray(table.column("source").to_pylist(), dtype=object)


def synthetic_snapshot(spec: SyntheticSource, out_path: str | Path | None = None) -> SyntheticSnapshotInfo:
    """Fingerprint a synthetic source by its spec; optionally record the spec as JSON at `out_path`."""
    if not isinstance(spec, SyntheticSource):
        raise TypeError(f"synthetic_snapshot needs a SyntheticSource, got {type(spec).__name__}")
    params = source_to_dict(spec)
    fingerprint = digest({"tag": _SYNTHETIC_TAG, **params})
    path = None
    if out_path is not None:
        path = write_text_atomic(out_path, json.dumps({"fingerprint": fingerprint, "spec": params}, sort_keys=True, indent=2))
    return SyntheticSnapshotInfo(
        fingerprint=fingerprint,
        kind=spec.kind,
        n_documents=spec.n_sequences,
        params=MappingProxyType(params),
        path=path,
    )


@dataclass(frozen=True)
class PoolRow:
    """One document of a pool snapshot."""

    source: str
    text: str
    origin: str
    key: int


def pool_fingerprint(rows: Sequence[PoolRow]) -> str:
    """The content fingerprint of a pool snapshot: its (source, text) pairs in order."""
    content = hashlib.sha256(_POOL_TAG)
    for row in rows:
        content.update(_frame(row.source.encode("utf-8")))
        content.update(_frame(row.text.encode("utf-8", "surrogatepass")))
    return content.hexdigest()[:16]


def write_pool(rows: Sequence[PoolRow], folder: str | Path, footer: Mapping[str, Any]) -> tuple[Path, str]:
    """Write a pool snapshot as `<folder>/<fingerprint>.parquet` (kept when it already exists);
    return its path and fingerprint. `footer` goes into the file's metadata with the fingerprint."""
    if not rows:
        raise EmptySnapshotError(f"no usable document to write into {folder}")
    for i, row in enumerate(rows):
        try:
            row.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{row.origin} (source {row.source!r}): the text holds a lone surrogate at character {exc.start}, "
                "which UTF-8 cannot store; fix the record"
            ) from None
    fingerprint = pool_fingerprint(rows)
    path = Path(folder) / f"{fingerprint}.parquet"
    if path.exists() and _footer_fingerprint(path) == fingerprint:
        return path, fingerprint
    table = pa.table(
        [
            pa.array(np.arange(len(rows), dtype=np.int64)),
            pa.array([r.source for r in rows], pa.string()),
            pa.array([r.text for r in rows], pa.large_string()),
            pa.array([r.origin for r in rows], pa.string()),
            pa.array([r.key for r in rows], pa.uint64()),
        ],
        schema=POOL_SCHEMA.with_metadata({_META_KEY: json.dumps({**footer, "fingerprint": fingerprint}).encode()}),
    )
    with atomic_path(path) as temp_path:
        pq.write_table(table, temp_path, compression="zstd", row_group_size=4096)
    return path, fingerprint


def _footer_fingerprint(path: Path) -> str | None:
    try:
        return snapshot_footer(path).get("fingerprint")
    except CorruptSnapshotError:
        return None


def snapshot_footer(path: str | Path) -> dict[str, Any]:
    """The JSON a snapshot keeps in its footer (key `divcoef.snapshot`); read without the rows."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
        return dict(json.loads(meta.get(_META_KEY, b"{}")))
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _unreadable(path, exc) from exc


def read_pool(path: str | Path, n_rows: int | None = None) -> list[PoolRow]:
    """The first `n_rows` rows (all when None) of a pool snapshot; a file that cannot be read raises
    `CorruptSnapshotError` naming it."""
    path = Path(path)
    try:
        with pq.ParquetFile(path) as parquet:
            table = parquet.read(columns=["source", "text", "origin", "key"])
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _unreadable(path, exc) from exc
    if n_rows is not None:
        table = table.slice(0, n_rows)
    columns = [table.column(name).to_pylist() for name in ("source", "text", "origin", "key")]
    return [PoolRow(*values) for values in zip(*columns)]
