"""Diversity coefficient, cross-diversity coefficient and their uncertainty, from distance matrices.

Diversity. Given the symmetric [n, n] matrix D of distances between the Task2Vec embeddings of n
batches drawn from one dataset,

    div = (2 / (n (n - 1))) * sum_{i < j} D[i, j],

the mean over all pairs of distinct batches, *zero distances included* (the official code dropped
zeros, which biases the mean upward whenever two batches embed identically).

Its uncertainty cannot come from the spread of the n (n - 1) / 2 distances: pairs that share a batch
are dependent, so "std over pairs / sqrt(#pairs)" is far too small. ``div`` is a U-statistic of degree
2 in the batches, and the delete-one-batch jackknife is a consistent variance estimator for it
(Arvesen 1969). With r_i = sum_j D[i, j] and S = sum_{i<j} D[i, j],

    theta_(i) = (S - r_i) / ((n - 1)(n - 2) / 2)        (mean over the pairs not involving batch i)
    se^2      = ((n - 1) / n) * sum_i (theta_(i) - mean_k theta_(k))^2
    interval  = div +- t_{n-1, (1 + confidence) / 2} * se.

With n = 2 there is a single pair and no pair survives deleting a batch: the jackknife is undefined,
so se and the interval are NaN (the value itself is still reported).

Cross-diversity. Given the [na, nb] matrix C of distances between batches of dataset A (rows) and
dataset B (columns), cross_div = mean(C). The two samples of batches are independent, so the
two-sample jackknife adds one variance term per sample::

    theta_A(i) = mean of C without row i,   theta_B(j) = mean of C without column j
    se^2 = ((na - 1) / na) sum_i (theta_A(i) - mean theta_A)^2 + ((nb - 1) / nb) sum_j (theta_B(j) - mean theta_B)^2

If na or nb is 1 its term is undefined and se is NaN. The t quantile uses the Welch-Satterthwaite
degrees of freedom of the two terms (with na - 1 and nb - 1 degrees of freedom), rounded down.

Student-t quantiles. scipy is not a runtime dependency, so :func:`student_t_quantile` is computed
here: for integer degrees of freedom up to 200 it inverts the exact finite-series CDF (Abramowitz &
Stegun 26.7.3-4) by bisection, which is exact to rounding; beyond 200 it uses the Cornish-Fisher
expansion around the normal quantile (A&S 26.7.5, four terms; error far below 1e-9 there).
Non-integer degrees of freedom are rounded down, which widens the interval slightly (conservative).

Noise floor. Embedding the *same* batch twice with different Monte Carlo seeds gives a non-zero
distance; its mean is the floor that the coefficient of a perfectly homogeneous dataset would reach.
:func:`noise_floor` summarises such repeat distances and :func:`noise_corrected` subtracts it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

_EXACT_T_MAX_DF = 200
_SYMMETRY_RTOL = 1e-9


@dataclass(frozen=True)
class CoefficientEstimate:
    """A (cross-)diversity coefficient with its jackknife standard error and confidence interval."""

    value: float
    stderr: float  # NaN when the jackknife is undefined (too few batches)
    ci_low: float
    ci_high: float
    n_batches: int  # for cross-diversity: n_batches_a + n_batches_b
    n_pairs: int
    kind: str  # "diversity" | "cross_diversity"
    method: str  # how stderr and the interval were computed
    confidence: float = 0.95
    n_batches_a: int | None = None  # cross-diversity only
    n_batches_b: int | None = None  # cross-diversity only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NoiseFloor:
    """Mean distance between repeat embeddings of the same batch (different Monte Carlo seeds).

    ``n`` counts the independent units behind ``stderr``: the number of distances for a list of
    per-batch repeat distances, the number of repeats for a matrix of one batch's repeats.
    """

    value: float
    stderr: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Student-t quantile without scipy
# --------------------------------------------------------------------------------------------------


def _t_central_probability(theta: float, df: int) -> float:
    """P(|T| < sqrt(df) tan(theta)) for T ~ Student-t(df), integer df >= 1 (A&S 26.7.3 / 26.7.4)."""
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term = total = 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= (2 * k) / (2 * k + 1) * c2
            total += term
        return 2.0 / math.pi * (theta + s * math.cos(theta) * total)
    term = total = 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return s * total


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (df rounded down to an integer)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if p == 0.5:
        return 0.0
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    nu = int(math.floor(df))
    central = abs(2.0 * p - 1.0)  # P(|T| < t) for the |quantile| t
    if nu > _EXACT_T_MAX_DF:
        z = NormalDist().inv_cdf((1.0 + central) / 2.0)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
        t = z + g1 / nu + g2 / nu**2 + g3 / nu**3 + g4 / nu**4
    else:
        lo, hi = 0.0, math.pi / 2  # bisection on theta = atan(t / sqrt(nu)); the CDF is monotone in it
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if _t_central_probability(mid, nu) < central:
                lo = mid
            else:
                hi = mid
        t = math.sqrt(nu) * math.tan(0.5 * (lo + hi))
    return t if p > 0.5 else -t


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _as_distances(M: Any, name: str) -> np.ndarray:
    arr = np.asarray(M, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D distance matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(arr))[:, 0]})
        raise ValueError(f"{name} has NaN or Inf in rows {bad[:10]}")
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise ValueError(f"{name} has negative distances, e.g. [{i}, {j}] = {arr[i, j]}")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_square(D: Any, name: str = "D") -> np.ndarray:
    arr = _as_distances(D, name)
    n = arr.shape[0]
    if arr.shape != (n, n):
        raise ValueError(f"{name} must be square, got shape {arr.shape}")
    tol = _SYMMETRY_RTOL * max(1.0, float(np.abs(arr).max(initial=0.0)))
    diag = np.abs(np.diagonal(arr))
    if (diag > tol).any():
        i = int(np.argmax(diag))
        raise ValueError(f"{name} must have a zero diagonal, but {name}[{i}, {i}] = {arr[i, i]}")
    asym = np.abs(arr - arr.T)
    if (asym > tol).any():
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise ValueError(
            f"{name} must be symmetric, but {name}[{i}, {j}] = {arr[i, j]} != {name}[{j}, {i}] = {arr[j, i]}"
        )
    return arr


def _interval(value: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    if not math.isfinite(se):
        return math.nan, math.nan
    half = student_t_quantile((1.0 + confidence) / 2.0, df) * se
    return value - half, value + half


def _jackknife_variance(thetas: np.ndarray) -> float:
    n = thetas.size
    return (n - 1) / n * float(np.sum((thetas - thetas.mean()) ** 2))


# --------------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------------


def diversity_from_matrix(D: Any, *, confidence: float = 0.95) -> CoefficientEstimate:
    """Diversity coefficient of n >= 2 batches from their symmetric, zero-diagonal distance matrix."""
    _check_confidence(confidence)
    arr = _check_square(D)
    n = arr.shape[0]
    if n < 2:
        raise ValueError(f"the diversity coefficient needs at least 2 batches, got {n}")
    # use the upper triangle only, so that tolerated asymmetry cannot leak into the value
    upper = np.triu(arr, 1)
    sym = upper + upper.T
    n_pairs = n * (n - 1) // 2
    total = float(upper.sum())
    value = total / n_pairs
    if n == 2:
        se = math.nan
    else:
        thetas = (total - sym.sum(axis=1)) / ((n - 1) * (n - 2) / 2)
        se = math.sqrt(_jackknife_variance(thetas))
    low, high = _interval(value, se, n - 1, confidence)
    logger.debug("diversity of %d batches: %.6g (se %.3g)", n, value, se)
    return CoefficientEstimate(
        value=value, stderr=se, ci_low=low, ci_high=high, n_batches=n, n_pairs=n_pairs,
        kind="diversity", method="jackknife-batches", confidence=confidence,
    )


def cross_diversity_from_matrix(C: Any, *, confidence: float = 0.95) -> CoefficientEstimate:
    """Cross-diversity from the [na, nb] distances between batches of dataset A (rows) and B (columns)."""
    _check_confidence(confidence)
    arr = _as_distances(C, "C")
    na, nb = arr.shape
    if na < 1 or nb < 1:
        raise ValueError(f"C needs at least one batch on each side, got shape {arr.shape}")
    total = float(arr.sum())
    value = total / (na * nb)
    if na < 2 or nb < 2:
        se, df = math.nan, math.nan
    else:
        var_a = _jackknife_variance((total - arr.sum(axis=1)) / ((na - 1) * nb))
        var_b = _jackknife_variance((total - arr.sum(axis=0)) / (na * (nb - 1)))
        se = math.sqrt(var_a + var_b)
        denominator = var_a**2 / (na - 1) + var_b**2 / (nb - 1)
        df = (var_a + var_b) ** 2 / denominator if denominator > 0 else min(na, nb) - 1
        df = max(1.0, df)
    low, high = _interval(value, se, df, confidence)
    logger.debug("cross-diversity of %d x %d batches: %.6g (se %.3g)", na, nb, value, se)
    return CoefficientEstimate(
        value=value, stderr=se, ci_low=low, ci_high=high, n_batches=na + nb, n_pairs=na * nb,
        kind="cross_diversity", method="jackknife-two-sample", confidence=confidence,
        n_batches_a=na, n_batches_b=nb,
    )


def noise_floor(D_same: np.ndarray | Sequence[float]) -> NoiseFloor:
    """Noise floor from repeat embeddings of the same batch.

    ``D_same`` is either a 1-D sequence of distances, each between two repeat embeddings of one batch
    (independent across batches: stderr = sample std / sqrt(n)), or the [r, r] distance matrix of r
    repeats of one batch (value = mean over i < j, stderr from the delete-one-repeat jackknife).
    """
    arr = np.asarray(D_same, dtype=np.float64)
    if arr.ndim == 2:
        estimate = diversity_from_matrix(arr)
        return NoiseFloor(value=estimate.value, stderr=estimate.stderr, n=estimate.n_batches)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"D_same must be a non-empty 1-D sequence or a square matrix, got shape {arr.shape}")
    _as_distances(arr[None, :], "D_same")
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return NoiseFloor(value=float(arr.mean()), stderr=stderr, n=int(arr.size))


def noise_corrected(estimate: CoefficientEstimate, floor: NoiseFloor) -> float:
    """The coefficient minus the noise floor: the part of the distance that batches, not seeds, explain."""
    return estimate.value - floor.value
