"""Asset checks: the invariants every audit artifact must satisfy, as pure functions.

Each function takes the artifact (or its record) and returns a `dg.AssetCheckResult`; the assets
yield them next to their output, so a check always describes the partition just materialized.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np

EMBEDDINGS_FINITE = "finite_nonnegative"
MATRIX_WELL_FORMED = "symmetric_zero_diagonal"
COEFFICIENT_IN_RANGE = "within_unit_interval"
COEFFICIENT_BETWEEN_BOUNDS = "between_bound_datasets"
COEFFICIENT_DRIFT = "drift_from_previous_snapshot"


def check_embeddings(vectors: Sequence[np.ndarray]) -> dg.AssetCheckResult:
    bad = [k for k, v in enumerate(vectors) if not np.isfinite(v).all() or (v < 0).any()]
    return dg.AssetCheckResult(
        check_name=EMBEDDINGS_FINITE,
        passed=not bad,
        metadata={"n_embeddings": len(vectors), "bad_rows": bad[:20]},
        description="every embedding entry is finite and non-negative (a diagonal Fisher)",
    )


def check_matrix(matrix: np.ndarray, tol: float = 1e-9) -> dg.AssetCheckResult:
    matrix = np.asarray(matrix, dtype=float)
    square = matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]
    asym = float(np.abs(matrix - matrix.T).max()) if square and matrix.size else math.inf
    diag = float(np.abs(np.diag(matrix)).max()) if square and matrix.size else math.inf
    finite = bool(np.isfinite(matrix).all())
    passed = square and finite and asym <= tol and diag <= tol and bool((matrix >= -tol).all())
    return dg.AssetCheckResult(
        check_name=MATRIX_WELL_FORMED,
        passed=passed,
        metadata={"max_asymmetry": asym if math.isfinite(asym) else -1.0, "max_abs_diagonal": diag if math.isfinite(diag) else -1.0, "finite": finite},
        description="distance matrix is square, finite, symmetric, non-negative, with a zero diagonal",
    )


def check_range(record: Mapping[str, Any]) -> dg.AssetCheckResult:
    value = record["value"]
    return dg.AssetCheckResult(
        check_name=COEFFICIENT_IN_RANGE, passed=bool(0.0 <= value <= 1.0), metadata={"value": value},
    )


def check_bounds(value: float, lower: float | None, upper: float | None) -> dg.AssetCheckResult:
    known = {k: v for k, v in (("lower_bound", lower), ("upper_bound", upper)) if v is not None}
    passed = (lower is None or value >= lower) and (upper is None or value <= upper)
    return dg.AssetCheckResult(
        check_name=COEFFICIENT_BETWEEN_BOUNDS,
        passed=bool(passed),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"value": value, **known, "bounds_known": len(known)},
        description="between the probe's conceptual lower- and upper-bound datasets, where those have been audited",
    )


def check_drift(value: float, half_width: float, previous: float | None) -> dg.AssetCheckResult:
    if previous is None:
        return dg.AssetCheckResult(check_name=COEFFICIENT_DRIFT, passed=True, metadata={"previous": "none"})
    moved = abs(value - previous)
    limit = half_width if math.isfinite(half_width) else math.inf
    return dg.AssetCheckResult(
        check_name=COEFFICIENT_DRIFT,
        passed=bool(moved <= limit),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"value": value, "previous": previous, "moved": moved, "interval_half_width": half_width},
        description="a re-audit that moves by more than its interval from the previous snapshot is flagged",
    )
