"""Simple diversity measures of a set of documents, to set beside the Task2Vec coefficient.

Each is a pure function of a list of texts returning a plain number (higher = more diverse):

- `compression_ratio`: raw bytes over gzip-compressed bytes of the concatenated texts, inverted
  so that text gzip cannot shrink much (less repetition) scores higher: compressed / raw;
- `distinct_n`: distinct word n-grams over all word n-grams (n = 1..4);
- `unigram_entropy`: Shannon entropy (bits) of the word distribution;
- `vendi_tfidf`: the Vendi score (Friedman and Dieng, 2023), exp of the entropy of the eigenvalues
  of K / n, with K the cosine similarity of the documents' TF-IDF vectors: the effective number
  of distinct documents, between 1 and n.

Words are lowercase whitespace-separated tokens. No Dagster imports.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _words(text: str) -> list[str]:
    return text.lower().split()


def compression_ratio(texts: Sequence[str]) -> float:
    raw = "\n".join(texts).encode("utf-8")
    return len(gzip.compress(raw, compresslevel=9, mtime=0)) / max(len(raw), 1)


def distinct_n(texts: Sequence[str], n: int) -> float:
    grams: Counter = Counter()
    for text in texts:
        words = _words(text)
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def unigram_entropy(texts: Sequence[str]) -> float:
    counts = Counter(w for text in texts for w in _words(text))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def tfidf_matrix(texts: Sequence[str]) -> np.ndarray:
    """[n_docs, n_terms] TF-IDF (smooth idf, L2-normalized rows)."""
    vocab: dict[str, int] = {}
    rows = [Counter(vocab.setdefault(w, len(vocab)) for w in _words(text)) for text in texts]
    tf = np.zeros((len(texts), len(vocab)))
    for i, row in enumerate(rows):
        for j, count in row.items():
            tf[i, j] = count
    df = (tf > 0).sum(axis=0)
    x = tf * (np.log((1 + len(texts)) / (1 + df)) + 1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def vendi_score(similarity: np.ndarray) -> float:
    """exp(-sum(l log l)) over the eigenvalues l of K / n (K: n x n, unit diagonal, PSD)."""
    k = np.asarray(similarity, dtype=float)
    eig = np.clip(np.linalg.eigvalsh(k / k.shape[0]), 0, None)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def vendi_tfidf(texts: Sequence[str]) -> float:
    x = tfidf_matrix(texts)
    return vendi_score(x @ x.T)


def all_baselines(texts: Sequence[str]) -> dict[str, float]:
    """Every measure above, by name."""
    out = {"compression_ratio": compression_ratio(texts), "unigram_entropy": unigram_entropy(texts),
           "vendi_tfidf": vendi_tfidf(texts)}
    out.update({f"distinct_{n}": distinct_n(texts, n) for n in range(1, 5)})
    return out
