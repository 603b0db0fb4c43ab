"""Diversity coefficients: the mean keeps zero distances, and the jackknife intervals are honest."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from divcoef_assets.core.coefficient import (
    CoefficientEstimate,
    NoiseFloor,
    cross_diversity_from_matrix,
    diversity_from_matrix,
    noise_corrected,
    noise_floor,
    student_t_quantile,
)

POPULATION_MEAN_ABS_DIFF = 2 / math.sqrt(math.pi)  # E|X - Y| for independent X, Y ~ N(0, 1)


def symmetric(upper_values: list[float], n: int) -> np.ndarray:
    D = np.zeros((n, n))
    D[np.triu_indices(n, 1)] = upper_values
    return D + D.T


def random_distances(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 3))
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_value_includes_zero_distances():
    # pairs (0,1)=0, (0,2)=.2, (0,3)=.4, (1,2)=.6, (1,3)=0, (2,3)=.8: mean over 6 pairs = 2.0 / 6
    D = symmetric([0.0, 0.2, 0.4, 0.6, 0.0, 0.8], 4)
    est = diversity_from_matrix(D)
    assert est.value == pytest.approx(2.0 / 6, rel=1e-15)  # dropping zeros would give 0.5
    assert (est.n_batches, est.n_pairs, est.kind, est.method) == (4, 6, "diversity", "jackknife-batches")
    assert est.n_batches_a is None and est.n_batches_b is None


def test_jackknife_equals_brute_force_leave_one_batch_out():
    rng = np.random.default_rng(0)
    n = 9
    D = random_distances(rng, n)
    thetas = []
    for i in range(n):
        keep = [k for k in range(n) if k != i]
        sub = D[np.ix_(keep, keep)]
        thetas.append(sub[np.triu_indices(n - 1, 1)].mean())
    thetas = np.array(thetas)
    se = math.sqrt((n - 1) / n * np.sum((thetas - thetas.mean()) ** 2))
    est = diversity_from_matrix(D, confidence=0.9)
    assert est.value == pytest.approx(D[np.triu_indices(n, 1)].mean(), rel=1e-14)
    assert est.stderr == pytest.approx(se, rel=1e-12)
    stats = pytest.importorskip("scipy.stats")
    half = stats.t.ppf(0.95, n - 1) * se
    assert (est.ci_low, est.ci_high) == pytest.approx((est.value - half, est.value + half), rel=1e-9)
    assert est.confidence == 0.9


def test_two_batches_have_a_value_but_no_interval():
    est = diversity_from_matrix(symmetric([0.3], 2))
    assert est.value == 0.3 and est.n_pairs == 1
    assert math.isnan(est.stderr) and math.isnan(est.ci_low) and math.isnan(est.ci_high)


def test_interval_covers_population_value_for_iid_batches():
    """|x_i - x_j| with x_i ~ N(0, 1) mimics distances between i.i.d. batches; the truth is 2 / sqrt(pi)."""
    rng = np.random.default_rng(2024)
    reps, covered, covered_cross = 200, 0, 0
    for _ in range(reps):
        x = rng.standard_normal(30)
        est = diversity_from_matrix(np.abs(x[:, None] - x[None, :]))
        covered += est.ci_low <= POPULATION_MEAN_ABS_DIFF <= est.ci_high
        y = rng.standard_normal(20)
        cross = cross_diversity_from_matrix(np.abs(x[:, None] - y[None, :]))
        covered_cross += cross.ci_low <= POPULATION_MEAN_ABS_DIFF <= cross.ci_high
    assert covered / reps >= 0.85
    assert covered_cross / reps >= 0.85


def test_naive_pair_standard_error_would_undercover():
    """The trap the jackknife avoids: std over dependent pairs / sqrt(#pairs) is several times too small."""
    rng = np.random.default_rng(7)
    ratios = []
    for _ in range(20):
        x = rng.standard_normal(30)
        D = np.abs(x[:, None] - x[None, :])
        pairs = D[np.triu_indices(30, 1)]
        ratios.append(diversity_from_matrix(D).stderr / (pairs.std(ddof=1) / math.sqrt(pairs.size)))
    assert np.median(ratios) > 2


def test_cross_diversity_on_known_matrix():
    C = np.array([[0.1, 0.2, 0.3], [0.0, 0.5, 0.1]])
    est = cross_diversity_from_matrix(C)
    assert est.value == pytest.approx(1.2 / 6, rel=1e-15)
    assert (est.n_batches, est.n_batches_a, est.n_batches_b, est.n_pairs) == (5, 2, 3, 6)
    assert est.kind == "cross_diversity"
    theta_a = np.array([C[1].mean(), C[0].mean()])
    theta_b = np.array([np.delete(C, j, axis=1).mean() for j in range(3)])
    var = 1 / 2 * np.sum((theta_a - theta_a.mean()) ** 2) + 2 / 3 * np.sum((theta_b - theta_b.mean()) ** 2)
    assert est.stderr == pytest.approx(math.sqrt(var), rel=1e-12)
    assert est.ci_low < est.value < est.ci_high


def test_cross_diversity_with_one_batch_on_a_side_has_no_interval():
    est = cross_diversity_from_matrix(np.array([[0.2, 0.4, 0.6]]))
    assert est.value == pytest.approx(0.4)
    assert math.isnan(est.stderr) and math.isnan(est.ci_low)


def test_student_t_quantile_against_table_and_scipy():
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062047, rel=1e-7)
    assert student_t_quantile(0.975, 9) == pytest.approx(2.2621572, rel=1e-7)
    assert student_t_quantile(0.025, 9) == pytest.approx(-2.2621572, rel=1e-7)
    assert student_t_quantile(0.975, math.inf) == pytest.approx(1.9599640, rel=1e-7)
    stats = pytest.importorskip("scipy.stats")
    for df in [1, 2, 3, 4, 7, 30, 199, 200, 201, 350, 5000]:
        for p in (0.6, 0.95, 0.975, 0.9995):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8), (p, df)
    with pytest.raises(ValueError):
        student_t_quantile(1.0, 3)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.zeros((2, 3)), "square"),
        (symmetric([0.1, 0.2, 0.3], 3) + np.diag([0, 0.1, 0]), r"zero diagonal.*D\[1, 1\]"),
        (np.array([[0, 0.1, 0.2], [0.1, 0, 0.3], [0.2, 0.31, 0]]), r"symmetric.*D\[2, 1\]"),
        (symmetric([0.1, np.nan, 0.3], 3), "NaN or Inf"),
        (symmetric([0.1, -0.2, 0.3], 3), "negative"),
        (np.zeros((1, 1)), "at least 2 batches"),
        (np.zeros(3), "2-D"),
    ],
)
def test_invalid_matrices_are_rejected(matrix, message):
    with pytest.raises(ValueError, match=message):
        diversity_from_matrix(matrix)


def test_bad_confidence_is_rejected():
    with pytest.raises(ValueError, match="confidence"):
        diversity_from_matrix(symmetric([0.1, 0.2, 0.3], 3), confidence=95)


def test_noise_floor_from_list_and_matrix():
    floor = noise_floor([0.8, 0.9, 1.0])
    assert floor.value == pytest.approx(0.9) and floor.n == 3
    assert floor.stderr == pytest.approx(0.1 / math.sqrt(3))
    repeats = symmetric([0.8, 0.9, 1.0], 3)
    from_matrix = noise_floor(repeats)
    assert from_matrix.value == pytest.approx(0.9) and from_matrix.n == 3
    assert from_matrix.stderr == pytest.approx(diversity_from_matrix(repeats).stderr)
    assert math.isnan(noise_floor([0.5]).stderr)
    with pytest.raises(ValueError, match="negative"):
        noise_floor([0.1, -0.1])
    est = diversity_from_matrix(symmetric([1.0, 1.0, 0.97], 3))
    assert noise_corrected(est, floor) == pytest.approx(0.99 - 0.9)


def test_results_are_frozen_and_serialisable():
    est = diversity_from_matrix(symmetric([0.1, 0.2, 0.3], 3))
    d = est.to_dict()
    assert CoefficientEstimate(**d) == est
    assert set(d) >= {"value", "stderr", "ci_low", "ci_high", "n_batches", "n_pairs", "kind", "method"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.value = 1.0  # type: ignore[misc]
    assert NoiseFloor(**noise_floor([0.1, 0.2]).to_dict()).value == pytest.approx(0.15)
