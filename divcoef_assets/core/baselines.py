"""Simple diversity measures of a set of documents, to set beside the Task2Vec coefficient.

Each is a pure function of a list of texts returning a plain number (higher = more diverse):

- `compression_ratio`: raw bytes over gzip-compressed bytes of the concatenated texts, inverted
  so that text gzip cannot shrink much (less repetition) scores higher: compressed / raw;
- `distinct_n`: distinct word n-grams over all word n-grams (n = 1..4);
- `unigram_entropy`: Shannon entropy (bits) of the word distribution;
- `vendi_tfidf`: the Vendi score (Friedman and Dieng, 2023), exp of the entropy of the eigenvalues
  of K / n, with K the cosine similarity of the documents' TF-IDF vectors: the effective number
  of distinct documents, between 1 and n.

- `guiraud_r`: distinct words over the square root of the word count (Guiraud's type-token
  index, which depends less on text length than the plain type-token ratio; the plain ratio is
  `distinct_1`);
- `vendi_embeddings`: the Vendi score of the batches' Task2Vec embeddings, K the cosine similarity
  of the L2-normalized vectors: the effective number of distinct batches as the probe sees them.

Words are lowercase whitespace-separated tokens. TF-IDF comes from scikit-learn's
`TfidfVectorizer` (sparse, smooth idf, L2-normalized rows); the Vendi score itself is the five
lines below rather than the `vendi-score` package, which ships only a source archive (last
release 2023) and reaches into a scipy module path that scipy has deprecated.

`batch_baselines` computes the text measures on each batch's documents, the same batches the
coefficient was computed from, and reports each as the mean over batches with a 95% Student-t
interval (batches are independent draws). No Dagster imports.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from divcoef_assets.core.coefficient import student_t_quantile

TEXT_METRICS = ("compression_ratio", "distinct_1", "distinct_2", "distinct_3", "distinct_4", "guiraud_r",
                "unigram_entropy", "vendi_tfidf")
EMBEDDING_METRICS = ("vendi_task2vec",)


@dataclass(frozen=True)
class Baseline:
    """One measure of one dataset's batches: the mean over batches with its 95% interval
    (None when it is one number over all batches, or there are fewer than 2 batches)."""

    metric: str
    value: float
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n_batches: int


def _words(text: str) -> list[str]:
    return text.lower().split()


def compression_ratio(texts: Sequence[str]) -> float:
    raw = "\n".join(texts).encode("utf-8")
    return len(gzip.compress(raw, compresslevel=9, mtime=0)) / max(len(raw), 1)


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = _words(text)
        if len(words) >= n:
            grams.update(zip(*(words[i:] for i in range(n))))  # the n-grams of this text, not across texts
            total += len(words) - n + 1
    return len(grams) / total if total else 0.0


def unigram_entropy(texts: Sequence[str]) -> float:
    counts = Counter(w for text in texts for w in _words(text))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def tfidf_matrix(texts: Sequence[str]):
    """[n_docs, n_terms] sparse TF-IDF of the documents' words (smooth idf, L2-normalized rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(lowercase=True, token_pattern=r"\S+", smooth_idf=True, norm="l2").fit_transform(list(texts))


def vendi_score(similarity: np.ndarray) -> float:
    """exp(-sum(l log l)) over the eigenvalues l of K / n (K: n x n, unit diagonal, PSD)."""
    k = np.asarray(similarity, dtype=float)
    eig = np.clip(np.linalg.eigvalsh(k / k.shape[0]), 0, None)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def vendi_tfidf(texts: Sequence[str]) -> float:
    if not any(_words(t) for t in texts):
        return 1.0  # no words at all: every document is the same (empty) one
    x = tfidf_matrix(texts)
    k = (x @ x.T).toarray()
    empty = np.diag(k) == 0  # a document without words is its own kind of document
    k[empty, empty] = 1.0
    return vendi_score(k)


def guiraud_r(texts: Sequence[str]) -> float:
    words = [w for text in texts for w in _words(text)]
    return len(set(words)) / math.sqrt(len(words)) if words else 0.0


def vendi_embeddings(vectors: np.ndarray) -> float:
    x = np.asarray(vectors, dtype=float)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1)
    return vendi_score(x @ x.T)


def all_baselines(texts: Sequence[str]) -> dict[str, float]:
    """Every measure above, by name."""
    out = {"compression_ratio": compression_ratio(texts), "unigram_entropy": unigram_entropy(texts),
           "vendi_tfidf": vendi_tfidf(texts)}
    out.update({f"distinct_{n}": distinct_n(texts, n) for n in range(1, 5)})
    return out


def text_measures(texts: Sequence[str]) -> dict[str, float]:
    """Every text measure of `TEXT_METRICS` on one set of documents."""
    out = all_baselines(texts)
    out["guiraud_r"] = guiraud_r(texts)
    return {m: out[m] for m in TEXT_METRICS}


def mean_interval(metric: str, values: Sequence[float], confidence: float = 0.95) -> Baseline:
    """Mean of per-batch values with a Student-t interval."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return Baseline(metric, float(v.mean()), None, None, None, int(v.size))
    se = float(v.std(ddof=1) / math.sqrt(v.size))
    half = student_t_quantile((1 + confidence) / 2, v.size - 1) * se
    return Baseline(metric, float(v.mean()), se, float(v.mean() - half), float(v.mean() + half), int(v.size))


def batch_baselines(batch_texts: Sequence[Sequence[str]]) -> tuple[Baseline, ...]:
    """Each text measure on each batch's documents: mean over batches with its interval."""
    if not batch_texts:
        raise ValueError("batch_baselines needs at least one batch of documents")
    per_batch = [text_measures(texts) for texts in batch_texts]
    return tuple(mean_interval(m, [b[m] for b in per_batch]) for m in TEXT_METRICS)


def embedding_baselines(vectors: np.ndarray) -> tuple[Baseline, ...]:
    """The Vendi score of the batch embeddings ([n_batches, d]), one number over all batches."""
    return (Baseline("vendi_task2vec", vendi_embeddings(vectors), None, None, None, int(np.asarray(vectors).shape[0])),)
