"""Per-batch triage: which batches make a corpus score high, and which documents they hold.

The coefficient is the mean of the batch-to-batch distances, so a batch's share of it is its mean
distance to the other batches. `rank_batches` scores every batch by that mean and by its z-score
among the batches (how many standard deviations it lies above the batches' average), ranks them
farthest first, and attaches the batch's document ids (snapshot rows), the source(s) they came
from and a short preview of their texts. A curator reads the top rows to go from "this corpus
scores high" to "these documents make it so".

`BatchDocuments` is what the triage (and the baselines) know about the batches: for each batch,
in batch-index order, its snapshot rows, a source label and its texts (None for synthetic or
pre-tokenized snapshots, which have no texts). No Dagster imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PREVIEW_CHARS = 160
MIXED = "mixed"


@dataclass(frozen=True)
class BatchDocuments:
    """The documents of each batch, in batch-index order."""

    doc_indices: tuple[tuple[int, ...], ...]
    labels: tuple[str, ...]  # the batch's source, or MIXED when its documents come from several
    texts: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.doc_indices) or (self.texts is not None and len(self.texts) != len(self.doc_indices)):
            raise ValueError(
                f"BatchDocuments: {len(self.doc_indices)} batches of documents but {len(self.labels)} labels"
                + ("" if self.texts is None else f" and {len(self.texts)} batches of texts")
            )


@dataclass(frozen=True)
class BatchOutlier:
    """One batch, scored by its mean distance to the other batches."""

    batch_index: int
    rank: int  # 1 = farthest from the rest
    mean_distance: float
    z_score: float  # 0 when every batch is equally far
    label: str
    doc_indices: tuple[int, ...]
    preview: str


def batch_label(sources: Sequence[str]) -> str:
    distinct = set(sources)
    return next(iter(distinct)) if len(distinct) == 1 else MIXED


def preview(texts: Sequence[str], chars: int = PREVIEW_CHARS) -> str:
    """The first `chars` characters of the batch's texts, one document after another, with
    whitespace collapsed."""
    joined = " / ".join(" ".join(t.split()) for t in texts)
    return joined if len(joined) <= chars else joined[: chars - 3].rstrip() + "..."


def mean_distances(matrix: np.ndarray) -> np.ndarray:
    """Mean distance of each batch to the others (the diagonal left out)."""
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n < 2:
        raise ValueError(f"triage needs a square matrix of at least 2 batches, got shape {matrix.shape}")
    return (matrix.sum(axis=1) - np.diag(matrix)) / (n - 1)


def rank_batches(matrix: np.ndarray, documents: BatchDocuments) -> tuple[BatchOutlier, ...]:
    """Every batch scored and ranked, farthest from the rest first (ties: lower batch index)."""
    means = mean_distances(matrix)
    if len(documents.doc_indices) != means.size:
        raise ValueError(f"triage: {means.size} batches in the distances but {len(documents.doc_indices)} in the documents")
    spread = float(means.std(ddof=1)) if means.size > 1 else 0.0
    z = (means - means.mean()) / spread if spread > 0 else np.zeros_like(means)
    order = sorted(range(means.size), key=lambda i: (-means[i], i))
    out = []
    for rank, i in enumerate(order, start=1):
        texts = documents.texts[i] if documents.texts is not None else ()
        out.append(BatchOutlier(
            batch_index=i, rank=rank, mean_distance=float(means[i]), z_score=float(z[i]), label=documents.labels[i],
            doc_indices=documents.doc_indices[i], preview=preview(texts) if texts else "(no texts: token ids)",
        ))
    return tuple(out)
