"""Vectorized Task2Vec distances agree with the per-pair reference and keep their documented properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from divcoef_assets.core import distance as dist
from divcoef_assets.core.distance import DISTANCES, cdist, get_distance, pairwise_loop, pdist

METRICS = sorted(DISTANCES)


def fisher_like(rng: np.random.Generator, n: int, d: int, scale: float = 1e-9) -> np.ndarray:
    """Skewed non-negative float32 rows at the ~1e-10 scale of real diagonal Fisher embeddings."""
    E = (rng.random((n, d)) ** 4 * scale).astype(np.float32)
    E[:, ::7] = 0.0  # exact zeros occur (e.g. wpe rows past the sequence length)
    return E


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("chunk_bytes", [dist.DEFAULT_CHUNK_BYTES, 4096, 1])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_vectorized_matches_pairwise_loop(metric, chunk_bytes, device):
    rng = np.random.default_rng(0)
    E = fisher_like(rng, 11, 67)
    other = fisher_like(rng, 4, 67)
    expected = pairwise_loop(E, metric)
    got = pdist(E, metric, chunk_bytes=chunk_bytes, device=device)
    assert got.dtype == np.float64 and got.shape == (11, 11)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)
    cross = cdist(E, other, metric, chunk_bytes=chunk_bytes, device=device)
    np.testing.assert_allclose(cross, pairwise_loop(E, metric, other=other), rtol=1e-12, atol=1e-13)
    assert cross.shape == (11, 4)


def test_task2vec_cosine_matches_task2vec_formula_on_float32():
    """The per-pair function is Task2Vec's _normalize + scipy-style cosine, evaluated in float64."""
    rng = np.random.default_rng(1)
    a, b = fisher_like(rng, 2, 500)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    h0, h1 = a64 / (a64 + b64 + 1e-8), b64 / (a64 + b64 + 1e-8)
    expected = 1 - h0 @ h1 / (np.linalg.norm(h0) * np.linalg.norm(h1))
    assert dist.task2vec_cosine(a, b) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_embeddings_are_at_distance_zero(metric):
    rng = np.random.default_rng(2)
    row = fisher_like(rng, 1, 300)[0]
    E = np.stack([row, row, fisher_like(rng, 1, 300)[0]])
    D = pdist(E, metric, chunk_bytes=2048)
    assert D[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert D[0, 2] > 1e-3
    assert cdist(E[:1], E[1:2], metric)[0, 0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_pdist_is_exactly_symmetric_with_zero_diagonal(metric):
    E = fisher_like(np.random.default_rng(3), 23, 41)
    D = pdist(E, metric, chunk_bytes=3000)  # odd block sizes: diagonal blocks are split
    assert np.array_equal(D, D.T)
    assert np.all(np.diagonal(D) == 0.0)
    assert np.all((D >= 0) & (D <= 1))


@pytest.mark.parametrize("metric", ["cosine", "task2vec_cosine_scalefree"])
def test_scale_invariant_metrics(metric):
    E = fisher_like(np.random.default_rng(4), 6, 80).astype(np.float64)
    np.testing.assert_allclose(pdist(E * 1e6, metric), pdist(E, metric), rtol=1e-9, atol=1e-12)
    a, b = E[0], E[1]
    assert dist.distance(a * 1e6, b * 1e6, metric) == pytest.approx(dist.distance(a, b, metric), rel=1e-9)
    assert get_distance(metric).scale_invariant


def test_task2vec_cosine_depends_on_scale_through_its_absolute_epsilon():
    """At the ~1e-10 scale of Fisher entries the 1e-8 epsilon dominates a + b, so rescaling moves the value.

    This is the paper's (and official code's) behaviour, kept on purpose: task2vec_cosine is not scale
    invariant, and the scale-free variant exists for comparisons across probes with different Fisher scales.
    """
    E = fisher_like(np.random.default_rng(5), 6, 200)
    small = pdist(E, "task2vec_cosine")
    large = pdist(E.astype(np.float64) * 1e6, "task2vec_cosine")
    off = ~np.eye(6, dtype=bool)
    change = np.abs(small - large)[off]
    assert change.min() > 0.02 and change.mean() > 0.1
    assert not get_distance("task2vec_cosine").scale_invariant


def test_hand_computed_2x3_example():
    E = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    # task2vec_cosine: s = (1 + e, 1 + e, 2 + e); u = (p, 0, q), v = (0, p, q) with p = 1/(1+e), q = 1/(2+e)
    e = 1e-8
    p, q = 1 / (1 + e), 1 / (2 + e)
    expected = 1 - q**2 / (p**2 + q**2)  # ~ 1 - (1/4) / (5/4) = 0.8
    D = pdist(E, "task2vec_cosine")
    assert D[0, 1] == pytest.approx(expected, rel=1e-14) and D[1, 0] == D[0, 1]
    assert D[0, 1] == pytest.approx(0.8, rel=1e-7)
    # scale-free: e = 1e-8 * (mean(a) + mean(b)) = 1e-8 * 4/3
    e = 1e-8 * 4 / 3
    p, q = 1 / (1 + e), 1 / (2 + e)
    assert pdist(E, "task2vec_cosine_scalefree")[0, 1] == pytest.approx(1 - q**2 / (p**2 + q**2), rel=1e-14)
    # plain cosine: 1 - 1 / (sqrt(2) sqrt(2)) = 0.5
    assert pdist(E, "cosine")[0, 1] == pytest.approx(0.5, rel=1e-15)


def test_tiles_bound_temporaries_for_large_inputs():
    """1,000 x 135,000 embeddings: every tile's [bi, bj, dc] float64 temporaries stay under chunk_bytes."""
    for chunk_bytes in (dist.DEFAULT_CHUNK_BYTES, 2**20, 1000):
        for on_cpu in (True, False):
            plan = dist._plan_tiles(1000, 1000, 135_000, chunk_bytes, on_cpu=on_cpu)
            live = dist._LIVE_TEMPS * 8 * plan.rows * plan.cols * plan.features
            assert live <= max(chunk_bytes, dist._LIVE_TEMPS * 8), (chunk_bytes, on_cpu, plan)
            assert plan.rows >= 1 and plan.cols >= 1 and 1 <= plan.features <= 135_000


def test_nan_row_is_named():
    E = fisher_like(np.random.default_rng(6), 5, 10)
    E[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"row 3 contain NaN or Inf"):
        pdist(E)
    E[3, 4] = np.inf
    with pytest.raises(ValueError, match=r"row 3 "):
        pdist(E, "cosine")


def test_negative_row_is_named_for_task2vec_metrics_only():
    E = fisher_like(np.random.default_rng(7), 5, 10).astype(np.float64)
    E[1, 2] = -1e-12
    E[4, 0] = -1.0
    for metric in ("task2vec_cosine", "task2vec_cosine_scalefree"):
        with pytest.raises(ValueError, match=r"rows 1, 4 .*negative"):
            pdist(E, metric)
    with pytest.raises(ValueError, match=r"B row 1 .*negative"):
        cdist(np.abs(E), E[3:], "task2vec_cosine")
    assert np.isfinite(pdist(E, "cosine")).all()


def test_other_input_errors():
    E = fisher_like(np.random.default_rng(8), 4, 10)
    with pytest.raises(ValueError, match=r"known distances: cosine, task2vec_cosine, task2vec_cosine_scalefree"):
        pdist(E, "euclidean")
    with pytest.raises(ValueError, match=r"2-D"):
        pdist(E[0])
    with pytest.raises(ValueError, match=r"dimension 9, expected 10"):
        cdist(E, E[:, :9])
    zero = E.copy()
    zero[2] = 0.0
    with pytest.raises(ValueError, match=r"row 2 are all zeros"):
        pdist(zero)
    with pytest.raises(ValueError, match=r"chunk_bytes"):
        pdist(E, chunk_bytes=0)
    with pytest.raises(ValueError, match=r"a has negative"):
        dist.task2vec_cosine(-E[0], E[1])


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    E = fisher_like(np.random.default_rng(9), 5, 30)
    np.testing.assert_allclose(pdist(torch.from_numpy(E)), pdist(E), rtol=0, atol=0)


def test_single_row_pdist_is_zero():
    assert pdist(np.ones((1, 3))).tolist() == [[0.0]]


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        DISTANCES["x"] = DISTANCES["cosine"]  # type: ignore[index]
    assert math.isclose(get_distance("cosine").pair([1, 0], [0, 1]), 1.0)
